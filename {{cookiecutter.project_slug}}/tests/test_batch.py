"""Batch scoring: both engines, on several files of every kind of column, against the model."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from conftest import TARGET, make_frame
from mlflow.pyfunc.scoring_server import parse_csv_input

from {{ cookiecutter.module_name }}.batch.job import BatchJobError, find_inputs
from {{ cookiecutter.module_name }}.cli import main
from {{ cookiecutter.module_name }}.config import (
    ENV_PREFIX,
    PROJECT_ROOT,
    PROJECT_SLUG,
    registered_model_uri,
)
from {{ cookiecutter.module_name }}.store.registry import TrainResult

ID = "customer_id"
# Spark starts a JVM: `make test-fast` leaves it out.
ENGINES = ["local", pytest.param("spark", marks=pytest.mark.integration)]
FILES = 3


@pytest.fixture(scope="module")
def frame(task: str) -> pd.DataFrame:
    """Rows with text categories, missing values and a text id whose leading zeros matter."""
    rows = make_frame(task, rows=600, seed=7)
    rows.insert(0, ID, [f"{n:07d}" for n in range(len(rows))])
    return rows


@pytest.fixture(scope="module")
def tables(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The rows in three CSV files and in three Parquet files, beside files that are not inputs."""
    folder = tmp_path_factory.mktemp("tables")
    for kind in ("csv", "parquet"):
        (folder / kind).mkdir()
        size = -(-len(frame) // FILES)
        for number in range(FILES):
            part = frame.iloc[number * size : (number + 1) * size]
            path = folder / kind / f"part-{number}.{kind}"
            part.to_csv(path, index=False) if kind == "csv" else part.to_parquet(path, index=False)
        # What Spark writes beside its parts, and a note: neither is an input.
        (folder / kind / "_SUCCESS").write_text("")
        (folder / kind / "README.txt").write_text("not an input")
    return {"csv": folder / "csv", "parquet": folder / "parquet"}


@pytest.fixture(scope="module")
def model_uri(trained: TrainResult) -> str:
    # Pinned: other tests move the champion.
    return registered_model_uri(trained.version)


@pytest.fixture(scope="module")
def expected(model_uri: str, tables: dict[str, Path]) -> np.ndarray:
    """The model's own predictions, in-process, of the files as MLflow's scoring server reads."""
    model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    files = sorted(tables["csv"].glob("part-*.csv"))
    return np.concatenate(
        [np.asarray(model.predict(parse_csv_input(path.open(), schema))) for path in files]
    )


@pytest.fixture(scope="module")
def spark_master() -> Iterator[None]:
    """Spark in local mode on two cores, as the README's cluster recipe tests it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_MASTER", "local[2]")
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        yield


def predict(*args: str) -> Result:
    return CliRunner().invoke(main, ["predict", *args])


def read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


@pytest.fixture(scope="module")
def local_output(
    model_uri: str, tables: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    output = tmp_path_factory.mktemp("local") / "scored.parquet"
    result = predict(
        "--input", str(tables["csv"]), "--output", str(output), "--model-uri", model_uri,
        "--id-column", ID,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return output


@pytest.fixture(scope="module")
def spark_output(
    spark_master: None, model_uri: str, tables: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:  # fmt: skip
    output = tmp_path_factory.mktemp("spark") / "scored"
    result = predict(
        "--engine", "spark", "--input", str(tables["parquet"] / "*.parquet"),
        "--output", str(output), "--model-uri", model_uri, "--id-column", ID,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return output


@pytest.mark.both_tasks
def test_the_local_engine_predicts_as_the_model_row_for_row(
    local_output: Path, expected: np.ndarray, frame: pd.DataFrame, trained: TrainResult
) -> None:
    scored = read(local_output)

    assert list(scored.columns) == [ID, "prediction", "model_name", "model_version"]
    assert scored[ID].tolist() == frame[ID].tolist()  # text, leading zeros kept, in order
    assert np.array_equal(scored["prediction"].to_numpy(), expected)
    assert set(scored["model_name"]) == {PROJECT_SLUG}
    assert set(scored["model_version"]) == {int(trained.version)}


@pytest.mark.integration
def test_the_spark_engine_predicts_as_the_model_row_for_row(
    spark_output: Path, expected: np.ndarray, frame: pd.DataFrame, trained: TrainResult
) -> None:
    scored = read(spark_output)
    # Spark writes one Parquet file per partition, in no promised order: the ids join them.
    scored = scored.set_index(ID).loc[frame[ID]].reset_index()

    assert len(list(spark_output.glob("part-*.parquet"))) >= 1
    assert np.array_equal(scored["prediction"].to_numpy(), expected)
    assert set(scored["model_version"]) == {int(trained.version)}


@pytest.mark.integration
def test_both_engines_write_the_same_columns_and_types(
    local_output: Path, spark_output: Path
) -> None:
    local, spark = pq.read_table(local_output).schema, pq.read_table(spark_output).schema

    assert [(f.name, f.type) for f in local] == [(f.name, f.type) for f in spark]


@pytest.mark.integration
@pytest.mark.both_tasks
def test_probabilities_are_the_models_and_the_same_on_spark(
    task: str, spark_master: None, model_uri: str, tables: dict[str, Path], tmp_path: Path
) -> None:
    args = ["--input", str(tables["csv"]), "--model-uri", model_uri, "--probabilities"]
    if task != "classification":
        result = predict(*args, "--output", str(tmp_path / "out.parquet"))
        assert result.exit_code == 1
        assert "gives no probabilities" in result.output
        return
    local = predict(*args, "--output", str(tmp_path / "local.parquet"))
    spark = predict(*args, "--output", str(tmp_path / "spark"), "--engine", "spark")

    assert local.exit_code == 0, local.output
    assert spark.exit_code == 0, spark.output
    model = mlflow.sklearn.load_model(model_uri)
    rows = pd.concat([pd.read_csv(p) for p in sorted(tables["csv"].glob("*.csv"))])
    own = model.predict_proba(rows.drop(columns=[ID, TARGET]))
    columns = [f"probability_{label}" for label in model.classes_]
    scored = read(tmp_path / "local.parquet")
    on_spark = read(tmp_path / "spark").set_index(ID).loc[scored[ID]].reset_index()
    assert np.allclose(scored[columns].to_numpy(), own, rtol=0, atol=1e-12)
    assert np.allclose(on_spark[columns].to_numpy(), own, rtol=0, atol=1e-12)


def test_by_default_every_column_the_model_does_not_take_is_carried(
    trained: TrainResult, tables: dict[str, Path], frame: pd.DataFrame, tmp_path: Path
) -> None:
    output = tmp_path / "scored.csv"

    result = predict("--input", str(tables["csv"] / "part-0.csv"), "--output", str(output))

    assert result.exit_code == 0, result.output
    assert "Wrote 200 predictions of" in result.output
    header = output.read_text().splitlines()[0].replace('"', "").split(",")
    assert header == [ID, TARGET, "prediction", "model_name", "model_version"]


def test_a_version_or_an_alias_chooses_the_model(
    trained: TrainResult, tables: dict[str, Path], tmp_path: Path
) -> None:
    by_version = predict(
        "--input", str(tables["csv"] / "part-1.csv"), "--output", str(tmp_path / "v.parquet"),
        "--model", trained.version,
    )  # fmt: skip
    unknown = predict(
        "--input", str(tables["csv"] / "part-1.csv"), "--output", str(tmp_path / "a.parquet"),
        "--model", "no-such-alias",
    )  # fmt: skip

    assert by_version.exit_code == 0, by_version.output
    assert set(read(tmp_path / "v.parquet")["model_version"]) == {int(trained.version)}
    assert unknown.exit_code == 1
    assert "no-such-alias" in unknown.output
    assert "Traceback" not in unknown.output
    assert not (tmp_path / "a.parquet").exists()


def no_output_in(folder: Path) -> bool:
    return not [path.name for path in folder.iterdir() if path.name != "inputs"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_missing_column_is_named_and_nothing_is_written(
    engine: str, spark_master: None, model_uri: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    (tmp_path / "inputs").mkdir()
    frame.drop(columns=["size", "count"]).to_parquet(tmp_path / "inputs" / "partial.parquet")

    result = predict(
        "--engine", engine, "--input", str(tmp_path / "inputs"), "--output",
        str(tmp_path / "out"), "--model-uri", model_uri,
    )  # fmt: skip

    assert result.exit_code == 1
    assert "lacks the model's input columns size, count" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert no_output_in(tmp_path)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_unreadable_file_is_named_and_nothing_is_written(
    engine: str, spark_master: None, model_uri: str, tables: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "inputs").mkdir()
    for part in tables["parquet"].glob("part-*.parquet"):
        (tmp_path / "inputs" / part.name).write_bytes(part.read_bytes())
    (tmp_path / "inputs" / "part-9.parquet").write_bytes(b"not parquet at all" * 100)

    result = predict(
        "--engine", engine, "--input", str(tmp_path / "inputs"), "--output",
        str(tmp_path / "out"), "--model-uri", model_uri,
    )  # fmt: skip

    assert result.exit_code == 1
    assert "part-9.parquet" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert no_output_in(tmp_path)


def test_a_value_of_the_wrong_type_is_named_with_its_line(
    model_uri: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    (tmp_path / "inputs").mkdir()
    rows = frame.astype({"size": object})
    rows.loc[123, "size"] = "twelve"
    rows.to_csv(tmp_path / "inputs" / "typo.csv", index=False)
    frame.astype({"size": str}).to_parquet(tmp_path / "inputs" / "typo.parquet")

    in_csv = predict(
        "--input", str(tmp_path / "inputs" / "typo.csv"), "--output", str(tmp_path / "a"),
        "--model-uri", model_uri,
    )  # fmt: skip
    in_parquet = predict(
        "--input", str(tmp_path / "inputs" / "typo.parquet"), "--output", str(tmp_path / "b"),
        "--model-uri", model_uri,
    )  # fmt: skip

    assert in_csv.exit_code == 1
    assert (
        "typo.csv, line 125: column 'size' has a value that is not a number ('twelve')"
        in in_csv.output
    )
    assert in_parquet.exit_code == 1
    assert "column 'size' holds string values; the model takes double values" in in_parquet.output
    assert no_output_in(tmp_path)


@pytest.mark.integration
def test_an_interrupted_run_leaves_no_output_and_keeps_the_previous_one(
    trained: TrainResult, model_uri: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    big = tmp_path / "big.csv"
    pd.concat([frame] * 200).to_csv(big, index=False)  # 120,000 rows, scored 500 at a time
    output = tmp_path / "scored.parquet"
    output.write_bytes(b"the previous result")
    env = {**os.environ, f"{ENV_PREFIX}BATCH__CHUNK_ROWS": "500"}
    job = subprocess.Popen(
        [sys.executable, "-m", "{{ cookiecutter.module_name }}",
         "predict", "--input", str(big), "--output", str(output), "--model-uri", model_uri],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".scored.parquet.partial-*")):
        assert job.poll() is None, job.stderr.read() if job.stderr else ""
        assert time.monotonic() < deadline, "the job wrote nothing within 120 s"
        time.sleep(0.05)

    job.send_signal(signal.SIGTERM)
    _, errors = job.communicate(timeout=60)

    assert job.returncode == 1
    assert f"Interrupted: nothing was written to {output}" in errors
    assert output.read_bytes() == b"the previous result"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["big.csv", "scored.parquet"]


@pytest.mark.integration
def test_spark_submit_runs_the_job_module(
    spark_master: None, model_uri: str, tables: dict[str, Path], local_output: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """What a cluster runs: spark-submit with the job's file, as the README shows."""
    job = PROJECT_ROOT / "src" / "{{ cookiecutter.module_name }}" / "batch" / "spark.py"
    output = tmp_path / "scored"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}

    result = subprocess.run(
        [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]", str(job),
         "--input", str(tables["csv"]), "--output", str(output), "--model-uri", model_uri,
         "--id-column", ID],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Wrote 600 predictions" in result.stdout
    local = read(local_output)
    submitted = read(output).set_index(ID).loc[local[ID]].reset_index()
    assert submitted.equals(local)


def test_without_java_the_spark_engine_says_so_in_one_line(
    model_uri: str, tables: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))

    result = predict(
        "--engine", "spark", "--input", str(tables["csv"]), "--output", str(tmp_path / "out"),
        "--model-uri", model_uri,
    )  # fmt: skip

    assert result.exit_code == 1
    assert "Spark needs Java 17 or later and found no Java" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_local_engine_sends_object_stores_to_spark(
    model_uri: str, tables: dict[str, Path], tmp_path: Path
) -> None:
    result = predict(
        "--input", str(tables["csv"]), "--output", "s3a://bucket/scored.parquet",
        "--model-uri", model_uri,
    )  # fmt: skip

    assert result.exit_code == 1
    assert "use --engine spark for s3a://bucket/scored.parquet" in result.output
    assert not list(Path.cwd().glob("s3a*"))


def test_inputs_are_files_folders_or_globs_of_one_format(
    tables: dict[str, Path], tmp_path: Path
) -> None:
    parts = [str(tables["csv"] / f"part-{n}.csv") for n in range(FILES)]
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.csv").write_text("x\n1\n")
    (tmp_path / "mixed" / "b.parquet").write_bytes(b"")

    assert find_inputs(str(tables["csv"])).files == parts
    assert find_inputs(str(tables["csv"] / "part-*.csv")).files == parts
    assert find_inputs(parts[0]).files == parts[:1]
    assert find_inputs(str(tables["parquet"])).format == "parquet"
    for location, message in [
        (str(tmp_path / "mixed"), "mixes CSV and Parquet"),
        (str(tmp_path / "absent.csv"), "does not exist"),
        (str(tmp_path / "*.csv"), "holds no .csv or .parquet file"),
        (str(tables["csv"] / "README.txt"), "neither a .csv nor a .parquet file"),
    ]:
        with pytest.raises(BatchJobError, match=message):
            find_inputs(location)
