"""What a batch job scores, with which model, into which columns, and how its output lands.

Both engines run the same job: the same input files, the same pinned model version
(an alias that moves while the job runs does not change it), the same output columns
in the same order and types. Whatever goes wrong, it goes wrong before the output is in
place: the result is written under a hidden temporary name beside the destination and
moved there only once complete, so a file at the destination is always a whole result.
"""

import glob
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlflow
import numpy as np
import pyarrow as pa
from mlflow.pyfunc import PyFuncModel
from mlflow.types import DataType, Schema

from ..errors import BatchJobError
from ..runtime.model import ServedModel, describe_model
from ..runtime.model_input import missing_inputs
from ..settings import export_default

Format = Literal["csv", "parquet"]
# Input files by suffix; in a directory, other files (and hidden ones) are not inputs.
INPUT_FORMATS: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
PREDICTION = "prediction"
PROBABILITY_PREFIX = "probability_"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"


@dataclass(frozen=True)
class Inputs:
    """The files a job reads, all of one format."""

    files: list[str]
    format: Format


def is_uri(location: str) -> bool:
    """Whether `location` names a file system other than the local one (s3a://, hdfs://...)."""
    scheme, separator, _ = location.partition("://")
    return bool(separator) and scheme.isalnum() and scheme != "file"


def find_inputs(location: str) -> Inputs:
    """The CSV or Parquet files of a file, a directory (searched through) or a glob."""
    if is_uri(location):
        suffix = Path(location.rstrip("/")).suffix.lower()
        if suffix not in INPUT_FORMATS:
            raise BatchJobError(
                f"{location}: name a .csv or .parquet file, or a glob of them (*.parquet), "
                "so that the format is known."
            )
        return Inputs([location], INPUT_FORMATS[suffix])
    path = Path(location)
    if path.is_dir():
        # Spark and Hadoop skip names starting with . or _ (_SUCCESS, .crc files): so do we.
        files = sorted(
            str(file)
            for file in path.rglob("*")
            if file.is_file()
            and file.suffix.lower() in INPUT_FORMATS
            and not any(part.startswith((".", "_")) for part in file.relative_to(path).parts)
        )
    elif path.is_file():
        if path.suffix.lower() not in INPUT_FORMATS:
            raise BatchJobError(f"{location} is neither a .csv nor a .parquet file.")
        files = [location]
    elif glob.has_magic(location):
        files = sorted(
            name
            for name in glob.glob(location, recursive=True)
            if Path(name).is_file() and Path(name).suffix.lower() in INPUT_FORMATS
        )
    else:
        raise BatchJobError(f"{location} does not exist: name a file, a directory or a glob.")
    if not files:
        raise BatchJobError(f"{location} holds no .csv or .parquet file to score.")
    formats = {INPUT_FORMATS[Path(file).suffix.lower()] for file in files}
    if len(formats) > 1:
        raise BatchJobError(f"{location} mixes CSV and Parquet files: score each format alone.")
    return Inputs(files, formats.pop())


@dataclass(frozen=True)
class BatchModel:
    """The model a job scores with, pinned to one version, and what its output looks like."""

    described: ServedModel
    pyfunc: PyFuncModel
    # The prediction column's type, as the model's predictions of its input example give it.
    prediction_type: pa.DataType
    # The classes of the probability columns, when probabilities are asked for.
    classes: list[Any] | None

    @property
    def schema(self) -> Schema | None:
        """The model's input schema."""
        return self.described.schema

    @property
    def inputs(self) -> list[str]:
        """The model's input columns, in the signature's order."""
        schema = self.schema
        return [str(name) for name in schema.input_names()] if schema is not None else []

    def input_type(self, name: str) -> pa.DataType:
        """The column type of a model input carried as an id: its type in the signature."""
        assert self.schema is not None
        data_type = self.schema.input_types()[self.inputs.index(name)]
        if not isinstance(data_type, DataType) or data_type == DataType.string:
            return pa.string()
        return pa.from_numpy_dtype(np.dtype(data_type.to_pandas()))

    def fixed_columns(self) -> list[pa.Field]:
        """The output columns after the ids: prediction, probabilities, model name, version."""
        probabilities = [
            pa.field(probability_column(label), pa.float64()) for label in self.classes or []
        ]
        return [
            pa.field(PREDICTION, self.prediction_type),
            *probabilities,
            # Not null when known, as Spark types a constant.
            pa.field(MODEL_NAME, pa.string(), nullable=self.described.name is None),
            pa.field(MODEL_VERSION, pa.int64(), nullable=self.version is None),
        ]

    @property
    def label(self) -> str:
        """The model as messages name it: `<name> version <n>`, else its URI."""
        if self.described.name and self.version:
            return f"{self.described.name} version {self.version}"
        return self.described.uri

    @property
    def version(self) -> int | None:
        """The registered version, if the model is a registered one."""
        return int(self.described.version) if self.described.version else None


def probability_column(label: Any) -> str:
    """The column of a class' probability: probability_<class>."""
    return f"{PROBABILITY_PREFIX}{label}"


def load_batch_model(uri: str, probabilities: bool) -> BatchModel:
    """Pin `uri` (a version, an alias, a run or a directory) to its version and load it."""
    # MLflow's download bars would bury the job's one line of result or error.
    export_default(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    described = describe_model(uri)
    if described.schema is None or not described.schema.has_input_names():
        raise BatchJobError(f"Model {uri} has no signature naming its input columns: retrain it.")
    pyfunc = mlflow.pyfunc.load_model(described.pinned_uri)
    example = pyfunc.input_example
    if example is None:
        raise BatchJobError(f"Model {uri} has no input example to learn its output type from.")
    prediction_type = arrow_type(np.asarray(pyfunc.predict(example)))
    classes = None
    if probabilities:
        raw = pyfunc.get_raw_model() if pyfunc.loader_module == "mlflow.sklearn" else None
        if raw is None or not hasattr(raw, "predict_proba"):
            raise BatchJobError(f"Model {uri} gives no probabilities: drop --probabilities.")
        classes = list(raw.classes_)
    return BatchModel(described, pyfunc, prediction_type, classes)


def arrow_type(predictions: np.ndarray[Any, Any]) -> pa.DataType:
    """The column type of predictions: labels keep theirs (text or integers), values are doubles."""
    if predictions.ndim != 1:
        raise BatchJobError(
            f"The model predicts {predictions.ndim}-dimensional output: one value a row."
        )
    kind = predictions.dtype.kind
    if kind == "b":
        return pa.bool_()
    if kind in "iu":
        return pa.int64()
    if kind == "f":
        return pa.float64()
    return pa.string()


def id_columns(
    configured: Sequence[str], columns: Sequence[str], model: BatchModel, source: str
) -> list[str]:
    """The input columns carried into the output; BatchJobError if `source` lacks one needed."""
    if missing := missing_inputs(model.schema, columns):
        raise BatchJobError(
            f"{source} lacks the model's input columns {', '.join(missing)}: add them "
            "(the model's signature is in the MLflow UI, under the version's artifacts)."
        )
    if configured:
        if absent := [name for name in configured if name not in columns]:
            raise BatchJobError(
                f"{source} lacks the id columns {', '.join(absent)}: fix [batch] id_columns "
                "in config.toml or --id-column."
            )
        return list(configured)
    return [name for name in columns if name not in set(model.inputs)]


@contextmanager
def staged(destination: Path) -> Iterator[Path]:
    """A hidden temporary path beside `destination`, moved into place when the block succeeds.

    On any error or interrupt the temporary output is removed and `destination` keeps
    what it held before. A job killed outright (SIGKILL) leaves only the hidden
    `.<name>.partial-*`, which no reader takes for the result.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        yield temporary
        publish(temporary, destination)
    finally:
        remove(temporary)


def publish(temporary: Path, destination: Path) -> None:
    """Move a finished output into place, replacing a file or a directory of an earlier run."""
    if destination.is_dir() and not destination.is_symlink():
        # A directory cannot be replaced in one rename: the old one is moved aside first.
        old = destination.with_name(f".{destination.name}.old-{uuid.uuid4().hex[:8]}")
        destination.rename(old)
        temporary.rename(destination)
        remove(old)
    else:
        os.replace(temporary, destination)


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
