"""Tracking: where MLflow stores runs, what each run is tagged with, how the model is logged."""

import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
import skops.io
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from .. import TEMPLATE_VERSION
from ..config import PROJECT_ROOT, PROJECT_SLUG, Config
from ..core.profile import Profile, write_profile
from ..errors import StoreError
from ..settings import DEFAULT_TRACKING_URI, tracking_uri
from .versioning import CodeVersion, DataVersion, relative, remote_url

DEFAULT_ARTIFACT_LOCATION = (PROJECT_ROOT / "mlartifacts").as_uri()

# What the logged model needs to be served; pinned to the versions it was trained
# with, so MLflow does not spend seconds inferring them on every run.
SERVING_DISTRIBUTIONS = ["mlflow-skinny", "scikit-learn", "skops", "pandas", "numpy", "scipy"]


def use_tracking_store(uri: str | None = None) -> str:
    """Point this process' MLflow at the tracking store (`uri`, else the environment's).

    The one place that sets MLflow's tracking URI.
    """
    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def require_server() -> None:
    """Refuse the local store: a release exports what the team's tracking server promoted."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://", "databricks")):
        raise StoreError(
            f"MLFLOW_TRACKING_URI is {uri!r}, not your team's tracking server: a release exports "
            "the model its registry promoted, never one trained here. Set MLFLOW_TRACKING_URI "
            "(and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN) "
            "as CI secrets."
        )


def setup() -> MlflowClient:
    """Point MLflow at the tracking store and the project's experiment, creating it if needed."""
    uri = use_tracking_store()
    client = MlflowClient(uri)
    if client.get_experiment_by_name(PROJECT_SLUG) is None:
        # A local store keeps artifacts beside it, whatever the working directory;
        # a tracking server decides for itself.
        location = DEFAULT_ARTIFACT_LOCATION if uri == DEFAULT_TRACKING_URI else None
        try:
            client.create_experiment(PROJECT_SLUG, artifact_location=location)
        except MlflowException as error:
            # Another process (a second `tune` on a shared study) created it meanwhile.
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
    mlflow.set_experiment(PROJECT_SLUG)
    return client


def run_tags(code: CodeVersion, data: DataVersion, problem: str | None) -> dict[str, str]:
    """Tags that tie a run to its code, its data and its template, and say if it can be rebuilt.

    `problem` is why it could not be (`versioning.reproducibility`), or None.
    """
    return {
        "git_commit": code.commit,
        "git_dirty": str(code.dirty).lower(),
        "data_path": data.path,
        "data_sha256": data.fingerprint.sha256,
        **({"data_dvc_md5": data.dvc_md5} if data.dvc_md5 else {}),
        "dvc_remote": remote_url(),
        "reproducible": str(problem is None).lower(),
        **({"not_reproducible_because": problem} if problem else {}),
        "template_version": TEMPLATE_VERSION,
    }


def serving_requirements() -> list[str]:
    """Pin the distributions serving needs to their installed versions."""
    return [f"{name}=={version(name)}" for name in SERVING_DISTRIBUTIONS]


def trusted_types(model: Any) -> list[str]:
    """List the types skops must trust to load `model`: the ones it was built from."""
    types: list[str] = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return types


def log_model(model: Any, x_sample: pd.DataFrame, profile: Profile) -> ModelInfo:
    """Log a fitted model without pickle, with signature, example, requirements and profile.

    Requirements are pinned; the monitoring profile goes into the model's
    `extra_files/`, so that it travels with every registered version.
    """
    with tempfile.TemporaryDirectory() as folder:
        return _log_model(model, x_sample, write_profile(profile, Path(folder)))


def _log_model(model: Any, x_sample: pd.DataFrame, profile_file: Path) -> ModelInfo:
    info: ModelInfo = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(x_sample, model.predict(x_sample)),
        input_example=x_sample.head(5),
        pip_requirements=serving_requirements(),
        serialization_format="skops",
        skops_trusted_types=trusted_types(model),
        extra_files=[str(profile_file)],
    )
    return info


def log_dataset(frame: pd.DataFrame, path: Path, target: str, digest: str) -> None:
    """Log the training data as the run's input: its source, schema, size and digest.

    The digest is the whole file's (MLflow's own hashes only its first rows).
    """
    with warnings.catch_warnings():
        # MLflow registers its local-file source twice and warns that the two are ambiguous.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        dataset = from_pandas(
            frame, source=path.as_uri(), targets=target, name=path.name, digest=digest
        )
    mlflow.log_input(dataset, context="training")


# The run's configuration, logged by `train`, read back by `rebuild`.
CONFIG_ARTIFACT = "config.json"


def config_record(config: Config) -> dict[str, Any]:
    """The run's configuration as `rebuild` reads it back, its data path relative to the project."""
    record = config.model_dump(mode="json")
    record["data"]["path"] = relative(config.data.path)
    return record
