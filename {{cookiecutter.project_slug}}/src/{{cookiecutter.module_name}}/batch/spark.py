"""The Spark engine: the same job on Apache Spark, each row scored by MLflow's `spark_udf`.

`predict --engine spark` runs it on $SPARK_MASTER (`local[*]`, every core of this
machine, by default). On a cluster, `spark-submit` takes this file as it is, with the
project's wheel in `--py-files` (README, "Batch scoring"): it imports the project by
its full name, because spark-submit runs it as a script, not as part of the package.

`spark_udf` ships the model to the executors and loads it once per Python worker;
`env_manager` says where its libraries come from there: `local` (the executors'
Python has them, as in local mode or a cluster image built from this project) or
`virtualenv`/`uv`/`conda` (rebuilt from the model's own requirements.txt on each).
"""

import logging
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.models import Model
from mlflow.types import DataType

from {{ cookiecutter.module_name }}.batch.job import (
    MODEL_NAME,
    MODEL_VERSION,
    PREDICTION,
    BatchModel,
    Inputs,
    find_inputs,
    id_columns,
    is_uri,
    load_batch_model,
    probability_column,
    staged,
)
from {{ cookiecutter.module_name }}.config import SPARK_ENV_MANAGERS, load_config
from {{ cookiecutter.module_name }}.errors import BatchJobError
from {{ cookiecutter.module_name }}.settings import ServingConfig, export_default, locations
from {{ cookiecutter.module_name }}.store.tracking import use_tracking_store

MINIMUM_JAVA = 17
# Spark's names of the signature's types, and of the prediction column's.
SPARK_TYPES = {
    DataType.boolean: "boolean",
    DataType.integer: "int",
    DataType.long: "bigint",
    DataType.float: "float",
    DataType.double: "double",
    DataType.string: "string",
}
PREDICTION_TYPES = {pa.bool_(): "boolean", pa.int64(): "bigint", pa.float64(): "double"}


def java_version(java: str) -> int | None:
    """The major version of a `java` executable, or None if it does not run."""
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return None
    # `openjdk version "17.0.15"`, or "1.8.0_392" for Java 8.
    found = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def check_java() -> None:
    """BatchJobError in one line unless Java 17 or later is where Spark looks for it."""
    home = locations().java_home
    java = str(Path(home) / "bin" / "java") if home else "java"
    version = java_version(java)
    if version is None or version < MINIMUM_JAVA:
        found = f"Java {version}" if version else f"no Java ({java} does not run)"
        raise BatchJobError(
            f"Spark needs Java {MINIMUM_JAVA} or later and found {found}: install it "
            "(Debian: apt-get install openjdk-17-jre-headless) or point JAVA_HOME at one."
        )


def spark_session() -> Any:
    """The SparkSession: the master of spark-submit, else $SPARK_MASTER, else local[*]."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError:
        raise BatchJobError(
            "pyspark is not installed: `uv sync --group spark` (or `make install`)."
        ) from None
    check_java()
    # PySpark warns about pandas 3 in general; this job's path is tested with it.
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
    builder = SparkSession.builder.appName("{{ cookiecutter.project_slug }}-predict")
    if not SparkConf().contains("spark.master"):  # set by spark-submit
        master = locations().spark_master
        builder = builder.master(master)
        if master.startswith("local"):
            # Local workers run this Python, which has the project's libraries.
            export_default(PYSPARK_PYTHON=sys.executable)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def read(spark: Any, inputs: Inputs) -> Any:
    """The input files as one DataFrame: CSV columns as text (typed below), Parquet as stored."""
    if inputs.format == "csv":
        return spark.read.csv(inputs.files, header=True)
    return spark.read.parquet(*inputs.files)


def predictor_with(model: BatchModel, method: str, folder: Path) -> str:
    """A copy of the model whose pyfunc calls `method` (as `log_model(pyfunc_predict_fn=...)`)."""
    local = Path(
        mlflow.artifacts.download_artifacts(model.described.pinned_uri, dst_path=str(folder))
    )
    metadata = Model.load(str(local))
    metadata.flavors["python_function"]["predict_fn"] = method
    metadata.save(str(local / "MLmodel"))
    return str(local)


def score_with_spark(
    inputs: Inputs, destination: str, model: BatchModel, ids: list[str], env_manager: str
) -> int:
    """Score every row of `inputs` into Parquet files under `destination`; return the rows."""
    spark = spark_session()
    # Spark's errors carry the JVM's stack: one line of it says what went wrong.
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        return run(spark, inputs, destination, model, ids, env_manager)
    except (PySparkException, Py4JJavaError) as error:
        raise BatchJobError(spark_error(error)) from None


def run(
    spark: Any, inputs: Inputs, destination: str, model: BatchModel, ids: list[str],
    env_manager: str,
) -> int:  # fmt: skip
    """Read, score and write with a running SparkSession."""
    from pyspark.sql import functions as F  # noqa: N812 (Spark's own convention)

    frame = read(spark, inputs)
    source = inputs.files[0] if len(inputs.files) == 1 else f"{len(inputs.files)} input files"
    carried = id_columns(ids, frame.columns, model, source)
    assert model.schema is not None
    typed = {
        str(spec.name): F.col(f"`{spec.name}`").cast(SPARK_TYPES[spec.type])
        if isinstance(spec.type, DataType)
        else F.col(f"`{spec.name}`")
        for spec in model.schema.inputs
    }
    with tempfile.TemporaryDirectory(prefix="predict-spark-") as scratch, quiet_mlflow():
        columns = [
            (typed[name] if name in typed else F.col(f"`{name}`")).alias(name) for name in carried
        ]
        columns += scored_columns(spark, model, typed, env_manager, Path(scratch))
        return write(spark, frame.select(*columns), destination)


def scored_columns(
    spark: Any, model: BatchModel, typed: dict[str, Any], env_manager: str, scratch: Path
) -> list[Any]:
    """The prediction, each class' probability, the model's name and version, as columns."""
    from pyspark.sql import functions as F  # noqa: N812 (Spark's own convention)

    features = F.struct(*(column.alias(name) for name, column in typed.items()))
    predict = mlflow.pyfunc.spark_udf(
        spark,
        model.described.pinned_uri,
        result_type=PREDICTION_TYPES.get(model.prediction_type, "string"),
        env_manager=env_manager,
    )
    columns = [predict(features).alias(PREDICTION)]
    if model.classes is not None:
        probabilities = mlflow.pyfunc.spark_udf(
            spark,
            predictor_with(model, "predict_proba", scratch),
            result_type="array<double>",
            env_manager=env_manager,
        )
        every = probabilities(features)
        columns += [
            every[index].alias(probability_column(label))
            for index, label in enumerate(model.classes)
        ]
    columns.append(F.lit(model.described.name).cast("string").alias(MODEL_NAME))
    columns.append(F.lit(model.version).cast("bigint").alias(MODEL_VERSION))
    return columns


def write(spark: Any, scored: Any, destination: str) -> int:
    """Write the scored rows, all or nothing; return how many there are."""
    if is_uri(destination):
        # Object stores cannot rename: Spark's committer marks a whole result with _SUCCESS.
        scored.write.mode("errorifexists").parquet(destination)
        return int(spark.read.parquet(destination).count())
    with staged(Path(destination)) as temporary:
        scored.write.parquet(str(temporary))
        # The footers hold the row counts: no second pass over the data.
        return sum(pq.ParquetFile(part).metadata.num_rows for part in temporary.glob("part-*"))


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Hush MLflow's notes while it builds the UDFs: env_manager is the job's choice (README)."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def configured_ids() -> list[str]:
    """[batch] id_columns of config.toml, where the project is checked out; else none."""
    try:
        return load_config().batch.id_columns
    except FileNotFoundError:  # installed from the wheel on a cluster: no config.toml
        return []


def spark_error(error: Exception) -> str:
    """One line of a Spark error: what went wrong and its root cause, without the JVM's stack."""
    java = getattr(error, "java_exception", None)  # a Py4JJavaError: ask the JVM
    messages: list[str] = []
    while java is not None and len(messages) < 10:
        message = str(java.getMessage() or "").strip()
        if message:
            messages.append(message.splitlines()[0].split("  SQLSTATE")[0].strip())
        java = java.getCause()
    if not messages:  # a PySparkException: its first line is its message
        text = str(error).strip()
        messages = [line.strip() for line in text.splitlines() if line.strip()][:1]
    if not messages:
        return f"Spark could not score the input: {type(error).__name__}"
    first, cause = messages[0], messages[-1]
    detail = first if cause in first else f"{first} ({cause})"
    return f"Spark could not score the input: {detail}"


@click.command()
@click.option("--input", "location", required=True, help="A file, a directory or a glob.")
@click.option("--output", "destination", required=True, help="Folder of Parquet files.")
@click.option("--model-uri", help="Model to use. [default: $MODEL_URI or the champion]")
@click.option("--id-column", "ids", multiple=True, help="[default: [batch] id_columns]")
@click.option("--probabilities", is_flag=True, help="Add a probability column per class.")
@click.option("--env-manager", type=click.Choice(SPARK_ENV_MANAGERS), default="local")
def main(
    location: str, destination: str, model_uri: str | None, ids: tuple[str, ...],
    probabilities: bool, env_manager: str,
) -> None:  # fmt: skip
    """The job spark-submit runs: `predict --engine spark` without the project's CLI."""
    try:
        use_tracking_store()
        model = load_batch_model(model_uri or ServingConfig().model_uri, probabilities)
        columns = list(ids) or configured_ids()
        rows = score_with_spark(find_inputs(location), destination, model, columns, env_manager)
    except BatchJobError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Wrote {rows} predictions of {model.label} to {destination}")


if __name__ == "__main__":
    main()
