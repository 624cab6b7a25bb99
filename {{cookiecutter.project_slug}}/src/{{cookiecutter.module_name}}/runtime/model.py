"""Which model is served: its URI, registered name and version, and its input schema.

The one place that reads a model URI: a `models:/` URI (by version or alias), a
run URI, or a directory written by `export-model` (as in the Docker image).
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema

from ..config import MODEL_INFO_FILE, registered_model_uri
from ..core.fast_predict import fast_predict
from ..core.profile import PROFILE_PATH, Profile, read_profile
from ..errors import ModelError
from .model_input import is_direct, to_frame

log = logging.getLogger(__name__)

REGISTERED = "models:/"
# MLflow writes this request body beside a model logged with an input example.
SERVING_EXAMPLE_FILE = "serving_input_example.json"


@dataclass(frozen=True)
class ServedModel:
    """What identifies the served model, and its input schema."""

    # The URI the server was given, which may name an alias.
    uri: str
    # The URI of this exact version: an alias may move while the server runs.
    pinned_uri: str
    name: str | None
    version: str | None
    # The signature's inputs, read once here rather than on every request.
    schema: Schema | None

    def artifact(self, name: str) -> Path | None:
        """A file of the model's directory, downloaded if need be; None if it has none."""
        if Path(self.pinned_uri).is_dir():
            path = Path(self.pinned_uri) / name
        else:
            uri = f"{self.pinned_uri.rstrip('/')}/{name}"
            try:
                path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
            except (MlflowException, OSError):
                return None
        return path if path.is_file() else None

    def serving_example(self) -> bytes:
        """The request body MLflow saved with the model: its input example, as JSON."""
        path = self.artifact(SERVING_EXAMPLE_FILE)
        if path is None:
            raise ModelError(f"Model {self.uri} has no input example to score.")
        return path.read_bytes()

    def profile(self) -> Profile | None:
        """The model's monitoring reference profile; None for a model trained without one."""
        path = self.artifact(PROFILE_PATH)
        if path is None:
            log.warning(
                "Model %s has no monitoring profile (trained before monitoring existed?): "
                "serving it with monitoring off. Retrain it to monitor it.",
                self.uri,
            )
            return None
        return read_profile(path)


def alias_version(uri: str) -> str | None:
    """The version that `models:/<name>@<alias>` names now; None for a URI without an alias."""
    name, _, alias = uri.removeprefix(REGISTERED).partition("@")
    if not uri.startswith(REGISTERED) or not alias:
        return None
    return str(MlflowClient().get_model_version_by_alias(name, alias).version)


def describe_model(uri: str) -> ServedModel:
    """Name, version and signature of the model at `uri`; the tracking URI must be set."""
    name = version = None
    pinned = uri
    info_file = Path(uri) / MODEL_INFO_FILE
    if info_file.is_file():  # a model exported by `export-model`, as in the image
        info = json.loads(info_file.read_text())
        name, version = info["name"], info["version"]
    elif uri.startswith(REGISTERED):
        name, _, alias = uri.removeprefix(REGISTERED).partition("@")
        if alias:
            version = alias_version(uri)
        else:
            name, _, version = name.partition("/")
        pinned = registered_model_uri(version, name=name)
    schema = Model.load(pinned).get_input_schema()  # type: ignore[no-untyped-call]
    return ServedModel(uri, pinned, name, version, schema)


# The model's own predict, on a frame typed by its signature.
PredictFrame = Callable[[pd.DataFrame], Any]


def load_model(model_uri: str, fast: bool = True) -> tuple[PredictFrame, Schema | None]:
    """Load the model; return its predict for typed frames, and its input schema.

    A scikit-learn model whose signature `to_frame` casts entirely is called directly,
    through its fast path (`fast_predict.py`): the frame already has the signature's
    columns and types, and MLflow's checks in `PyFuncModel.predict` would build it once
    more (1.5 ms a call). Any other model goes through `PyFuncModel.predict`.
    """
    model = mlflow.pyfunc.load_model(model_uri)
    return frame_predictor(model, fast), model.metadata.get_input_schema()


def frame_predictor(model: PyFuncModel, fast: bool = True) -> PredictFrame:
    """The loaded model's predict for frames typed by `to_frame` or `typed_frame`."""
    schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]
    if is_direct(schema) and model.loader_module == "mlflow.sklearn":
        if not fast:
            log.info("The fast path is off (FAST_PREDICT=false).")
            return model.get_raw_model().predict  # type: ignore[no-untyped-call,no-any-return]
        example = model.input_example
        typed = (
            to_frame(example.to_dict(orient="records"), schema)  # type: ignore[arg-type]
            if isinstance(example, pd.DataFrame)
            else None
        )
        return fast_predict(model.get_raw_model(), typed)  # type: ignore[no-untyped-call]
    return model.predict
