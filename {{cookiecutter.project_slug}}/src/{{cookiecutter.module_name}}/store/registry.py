"""Registry: register each model, move its aliases (promote, roll back), export a version.

Promotion and rollback move aliases; no version is ever deleted, but for one whose
registration failed half-way (`register`).
https://mlflow.org/docs/latest/ml/model-registry/#deploy-and-organize-models-with-aliases-and-tags
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

from ..config import MODEL_INFO_FILE, PROJECT_SLUG, registered_model_uri
from ..errors import RegistryError

CHAMPION = "champion"
CHALLENGER = "challenger"
# The version that was champion before the last promotion: where rollback goes.
PREVIOUS = "previous-champion"
# The tag of each version that says why the gate promoted it or kept it back.
PROMOTION_TAG = "promotion"


@dataclass(frozen=True)
class Decision:
    """The promotion gate's verdict on a new version, and why."""

    promote: bool
    reason: str


def register(client: MlflowClient, model: ModelInfo, decision: Decision) -> ModelVersion:
    """Register a finished run's model as a new version, as the gate decided.

    The version is created with the gate's reason as a tag (one request: no version
    exists without it), then becomes `challenger`, and `champion` if the gate says so.
    If a step fails (a tracking server that goes away), the new version is deleted
    again and the aliases it took are given back; if even that fails, the error names
    the version to delete.
    """
    held = {alias: version_by_alias(client, alias) for alias in (CHALLENGER, CHAMPION, PREVIOUS)}
    ensure_registered_model(client)
    model_version = client.create_model_version(
        PROJECT_SLUG, model.model_uri, model.run_id, tags={PROMOTION_TAG: decision.reason},
        model_id=model.model_id,
    )  # fmt: skip
    version = str(model_version.version)
    try:
        client.set_registered_model_alias(PROJECT_SLUG, CHALLENGER, version)
        if decision.promote:
            promote(client, version)
    except Exception as error:
        try:
            client.delete_model_version(PROJECT_SLUG, version)
            for alias, holder in held.items():
                now = version_by_alias(client, alias)
                if holder is not None and (now is None or now.version != holder.version):
                    client.set_registered_model_alias(PROJECT_SLUG, alias, str(holder.version))
        except Exception:
            raise RegistryError(
                f"Registering version {version} failed ({error}) and could not be undone: "
                f"delete it by hand (MLflow UI, or `MlflowClient().delete_model_version"
                f"({PROJECT_SLUG!r}, {version!r})`), check the aliases, then train again."
            ) from error
        raise
    return model_version


def ensure_registered_model(client: MlflowClient) -> None:
    """Create the registered model at its first version; it exists from then on."""
    try:
        client.create_registered_model(PROJECT_SLUG)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def version_by_alias(
    client: MlflowClient, alias: str, name: str = PROJECT_SLUG
) -> ModelVersion | None:
    """Return the version of model `name` holding `alias`, or None if no version holds it."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in error.message.lower():
            return None
        raise


def existing_version(client: MlflowClient, version: str) -> ModelVersion:
    """Version `version` of the model; RegistryError saying there is none."""
    try:
        return client.get_model_version(PROJECT_SLUG, version)
    except MlflowException:
        raise RegistryError(f"Model {PROJECT_SLUG} has no version {version}.") from None


def promote(client: MlflowClient, version: str) -> None:
    """Make `version` the champion; the champion it replaces becomes `previous-champion`."""
    existing_version(client, version)
    current = version_by_alias(client, CHAMPION)
    if current is not None and str(current.version) == str(version):
        return
    if current is not None:
        client.set_registered_model_alias(PROJECT_SLUG, PREVIOUS, str(current.version))
    client.set_registered_model_alias(PROJECT_SLUG, CHAMPION, str(version))


def rollback(client: MlflowClient) -> str:
    """Give `champion` back to the previous champion; return that version."""
    previous = version_by_alias(client, PREVIOUS)
    if previous is None:
        raise RegistryError("There is no previous champion to roll back to.")
    promote(client, str(previous.version))
    return str(previous.version)


# What ties an exported model (and the image it is baked into) to its registry entry:
# the OCI label of each field of `registered_model.json`, set by `make docker-build`.
IMAGE_LABELS = {
    "name": "org.mlflow.model.name",
    "version": "org.mlflow.model.version",
    "run_id": "org.mlflow.run.id",
    "git_commit": "org.mlflow.run.git_commit",
    "data_sha256": "org.mlflow.run.data_sha256",
    "data_dvc_md5": "org.mlflow.run.data_dvc_md5",
    "template_version": "org.mlpipe.template.version",
}


def export_champion(
    client: MlflowClient, destination: Path, version: str | None = None
) -> dict[str, str]:
    """Copy the champion's model files (or `version`'s) to `destination`; return its record.

    The record (`registered_model.json`, beside the files) names the version, its run,
    and the run's commit, data and template version: what an image's labels show.
    """
    chosen = pick_version(client, version)
    shutil.rmtree(destination, ignore_errors=True)
    mlflow.artifacts.download_artifacts(
        artifact_uri=registered_model_uri(chosen.version), dst_path=str(destination)
    )
    run_id = str(chosen.run_id)
    tags = client.get_run(run_id).data.tags
    info = {
        "name": PROJECT_SLUG,
        "version": str(chosen.version),
        "run_id": run_id,
        **{key: tags.get(key, "") for key in ("git_commit", "data_sha256", "data_dvc_md5")},
        "template_version": tags.get("template_version", ""),
    }
    (destination / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def pick_version(client: MlflowClient, version: str | None) -> ModelVersion:
    """`version` of the model, or its champion; RegistryError if there is none."""
    if version is not None:
        return existing_version(client, version)
    champion = version_by_alias(client, CHAMPION)
    if champion is None:
        raise RegistryError(f"Model {PROJECT_SLUG} has no champion yet: run `make train` first.")
    return champion


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    run_id: str
    version: str
    promoted: bool
    reason: str
    metrics: dict[str, float]
