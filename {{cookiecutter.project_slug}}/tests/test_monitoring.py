"""Monitoring: the reference profile, live drift on /metrics, prediction ids, the inference log."""

import json
import time
from pathlib import Path

import mlflow
import mlflow.artifacts
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from conftest import TARGET, make_frame, records
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from {{ cookiecutter.module_name }} import registry, tracking
from {{ cookiecutter.module_name }}.cli import main
from {{ cookiecutter.module_name }}.config import (
    PROJECT_SLUG,
    Config,
    MonitoringConfig,
    ServingConfig,
    registered_model_uri,
)
from {{ cookiecutter.module_name }}.monitoring.monitor import (
    RETRAIN_EXIT_STATUS,
    Window,
    retraining_verdict,
)
from {{ cookiecutter.module_name }}.monitoring.profile import PROFILE_PATH, read_profile
from {{ cookiecutter.module_name }}.serving.app import PREDICTION_ID_HEADER, create_app
from {{ cookiecutter.module_name }}.train import TrainResult

# The alert threshold of the Prometheus rules and of `monitor` (config.toml).
PSI_THRESHOLD = 0.2


def profile_of(uri: str) -> dict[str, object]:
    return read_profile(Path(mlflow.artifacts.download_artifacts(f"{uri}/{PROFILE_PATH}")))


@pytest.mark.both_tasks
def test_the_profile_travels_inside_the_registered_model(
    trained: TrainResult, config: Config, tmp_path: Path
) -> None:
    profile = profile_of(registered_model_uri(trained.version))
    registry.export_champion(MlflowClient(), tmp_path / "model")
    exported = read_profile(tmp_path / "model" / PROFILE_PATH)
    features = pd.read_csv(config.data.path).drop(columns=TARGET).columns

    assert exported == profile
    assert set(profile["features"]) == set(features)  # type: ignore[arg-type]
    for bins in profile["features"].values():  # type: ignore[attr-defined]
        assert sum(bins["shares"]) == pytest.approx(1)
    assert set(profile["features"]["colour"]["categories"]) == {"red", "green", "blue"}  # type: ignore[index]
    assert profile["features"]["size"]["kind"] == "numeric"  # type: ignore[index]
    assert profile["metrics"] == pytest.approx(trained.metrics)


def serve(**settings: object) -> TestClient:
    return TestClient(
        create_app(registered_model_uri(alias="champion"), ServingConfig(**settings)),  # type: ignore[arg-type]
        raise_server_exceptions=False,
    )


def drift_metrics(client: TestClient, rows: int) -> dict[str, dict[str, float]]:
    """The live drift gauges by name and feature, once the window holds `rows` rows."""
    deadline = time.monotonic() + 15
    while True:
        lines = client.get("/metrics").text.splitlines()
        window = [
            float(line.split()[-1]) for line in lines if line.startswith("monitoring_window_rows ")
        ]
        if window == [rows] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert window == [rows], window
    found: dict[str, dict[str, float]] = {}
    for line in lines:
        if line.startswith(("feature_", "prediction_drift_psi")):
            name, _, rest = line.partition("{")
            feature = rest.partition('feature="')[2].partition('"')[0] if rest else ""
            name = name.split()[0]
            found.setdefault(name, {})[feature] = float(line.split()[-1])
    return found


def send(client: TestClient, frame: pd.DataFrame, size: int = 50) -> None:
    for start in range(0, len(frame), size):
        part = frame.iloc[start : start + size]
        response = client.post("/invocations", json={"dataframe_records": records(part)})
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def fresh(task: str) -> pd.DataFrame:
    """New rows from the training distribution: what the model was trained for."""
    frame = make_frame(task, rows=1000, seed=1).drop(columns=TARGET)
    frame["count"] = frame["count"].astype("float64")
    return frame


@pytest.mark.integration
@pytest.mark.both_tasks
def test_rows_like_the_training_data_do_not_drift(
    trained: TrainResult, fresh: pd.DataFrame
) -> None:
    with serve() as client:
        send(client, fresh)
        metrics = drift_metrics(client, len(fresh))

    assert set(metrics["feature_drift_psi"]) == set(fresh.columns)
    assert max(metrics["feature_drift_psi"].values()) < PSI_THRESHOLD
    assert metrics["prediction_drift_psi"][""] < PSI_THRESHOLD
    assert max(metrics["feature_unseen_category_share"].values()) == 0
    assert metrics["feature_missing_share"]["weight"] == pytest.approx(
        fresh["weight"].isna().mean()
    )


@pytest.mark.integration
def test_a_shifted_number_and_an_unseen_category_drift_and_nothing_else(
    trained: TrainResult, fresh: pd.DataFrame
) -> None:
    drifted = fresh.assign(size=fresh["size"] + 3 * fresh["size"].std(), colour="purple")

    with serve() as client:
        send(client, drifted)
        metrics = drift_metrics(client, len(drifted))

    psi = metrics["feature_drift_psi"]
    assert {name for name, value in psi.items() if value > PSI_THRESHOLD} == {"size", "colour"}
    assert metrics["feature_unseen_category_share"] == {"colour": 1.0}
    assert metrics["feature_out_of_range_share"]["size"] > 0.5
    assert metrics["feature_out_of_range_share"]["weight"] < 0.05


@pytest.mark.integration
def test_each_prediction_has_an_id_and_a_line_in_the_inference_log(
    trained: TrainResult, fresh: pd.DataFrame, tmp_path: Path
) -> None:
    rows = fresh.head(3)
    with serve(inference_log_dir=tmp_path) as client:
        response = client.post("/invocations", json={"dataframe_records": records(rows)})
        other = client.post("/invocations", json={"dataframe_records": records(rows.head(1))})

    request_id = response.headers[PREDICTION_ID_HEADER]
    entries = {
        entry["id"]: entry
        for path in tmp_path.glob("inference-*.jsonl")
        for entry in map(json.loads, path.read_text().splitlines())
    }
    assert request_id != other.headers[PREDICTION_ID_HEADER]
    assert set(entries) == {f"{request_id}-{n}" for n in range(3)} | {
        f"{other.headers[PREDICTION_ID_HEADER]}-0"
    }
    logged = [entries[f"{request_id}-{n}"] for n in range(3)]
    assert [entry["prediction"] for entry in logged] == response.json()["predictions"]
    assert {entry["version"] for entry in logged} == {trained.version}
    assert logged[1]["features"]["size"] == pytest.approx(rows.iloc[1]["size"])


@pytest.mark.integration
def test_the_inference_log_stays_within_its_budget(
    trained: TrainResult, fresh: pd.DataFrame, tmp_path: Path
) -> None:
    with serve(inference_log_dir=tmp_path, inference_log_max_mb=0.05) as client:
        send(client, pd.concat([fresh] * 2), size=100)
        drift_metrics(client, 2 * len(fresh))  # the counts, with the log's, are written
        dropped = [
            float(line.split()[-1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("inference_log_dropped_files ")
        ]

    files = list(tmp_path.glob("inference-*.jsonl"))
    assert len(files) <= 10
    # Each file is cut at a tenth of the budget, before the batch that would cross it.
    assert sum(path.stat().st_size for path in files) <= 0.05 * 1024 * 1024
    assert dropped[0] > 0


@pytest.mark.integration
def test_a_model_without_a_profile_is_served_with_monitoring_off(
    trained: TrainResult, config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """A model trained before monitoring existed: it serves, and says monitoring is off."""
    frame = pd.read_csv(config.data.path).drop(columns=TARGET)
    model = mlflow.sklearn.load_model(registered_model_uri(trained.version))
    frame = frame.astype(dict.fromkeys(frame.select_dtypes("integer").columns, "float64"))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=frame.head(2),
            serialization_format="skops",
            skops_trusted_types=tracking.trusted_types(model),
        )

    with TestClient(create_app(info.model_uri)) as client:
        health = client.get("/health")
        predicted = client.post("/invocations", json={"dataframe_records": records(frame.head(2))})
        metrics = client.get("/metrics").text

    assert health.status_code == 200
    assert predicted.status_code == 200
    assert "feature_drift_psi" not in metrics
    assert "no monitoring profile" in caplog.text


@pytest.mark.integration
def test_monitoring_can_be_turned_off(trained: TrainResult, fresh: pd.DataFrame) -> None:
    with serve(monitoring=False) as client:
        send(client, fresh.head(10))
        metrics = client.get("/metrics").text

    assert "monitoring_window_rows" not in metrics
    assert "predicted_rows_total 10.0" in metrics


def serve_and_log(log_dir: Path, frame: pd.DataFrame, size: int = 50) -> list[tuple[str, int]]:
    """Serve the rows with an inference log; return each row's prediction id and index."""
    ids = []
    with serve(inference_log_dir=log_dir) as client:
        for start in range(0, len(frame), size):
            part = frame.drop(columns=TARGET).iloc[start : start + size]
            response = client.post("/invocations", json={"dataframe_records": records(part)})
            assert response.status_code == 200, response.text
            request_id = response.headers[PREDICTION_ID_HEADER]
            ids += [(f"{request_id}-{n}", start + n) for n in range(len(part))]
    return ids


def outcomes_file(path: Path, ids: list[tuple[str, int]], actual: pd.Series) -> Path:
    pd.DataFrame(
        {"prediction_id": [key for key, _ in ids], "actual": [actual.iloc[i] for _, i in ids]}
    ).to_csv(path, index=False)
    return path


def degrade(actual: pd.Series, task: str) -> pd.Series:
    """Outcomes the model gets wrong: the other class, or far from the truth."""
    if task == "classification":
        return actual.map({"yes": "no", "no": "yes"})
    return actual + 10 * actual.std()


@pytest.fixture(scope="module")
def labelled(task: str) -> pd.DataFrame:
    frame = make_frame(task, rows=1000, seed=1)
    frame["count"] = frame["count"].astype("float64")
    return frame.dropna(subset=[TARGET]).reset_index(drop=True)


def runs(experiment: str = PROJECT_SLUG) -> int:
    found = MlflowClient().get_experiment_by_name(experiment)
    return 0 if found is None else len(MlflowClient().search_runs([found.experiment_id]))


def monitor(*args: str) -> Result:
    return CliRunner().invoke(main, ["monitor", *args])


@pytest.mark.integration
@pytest.mark.both_tasks
def test_monitor_flags_the_drifted_windows_and_recommends_retraining(
    trained: TrainResult, labelled: pd.DataFrame, task: str, tmp_path: Path
) -> None:
    half = len(labelled) // 2
    drifted = labelled.copy()
    drifted.loc[half:, "size"] += 3 * labelled["size"].std()
    ids = serve_and_log(tmp_path / "log", drifted)
    actual = pd.concat([labelled[TARGET][:half], degrade(labelled[TARGET][half:], task)])
    outcomes = outcomes_file(tmp_path / "outcomes.csv", ids, actual)
    window = str(-(-len(labelled) // 5))  # five windows

    result = monitor(
        "--log", str(tmp_path / "log"), "--outcomes", str(outcomes), "--window", window
    )

    assert result.exit_code == RETRAIN_EXIT_STATUS, result.output
    assert "Retraining recommended" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("rows ")]
    assert len(lines) == 5
    assert "size drifted" not in lines[0]
    assert "size drifted" in lines[-1]
    assert "held out" in lines[-1]  # the metric fell too
    [run] = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(PROJECT_SLUG).experiment_id],
        filter_string="tags.`monitoring.model_version` != ''",
        order_by=["start_time DESC"],
        max_results=1,
    )
    history = MlflowClient().get_metric_history(run.info.run_id, "psi/size")
    assert [m.step for m in history] == list(range(5))
    assert history[-1].value > PSI_THRESHOLD > history[0].value
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "monitoring")}
    assert {
        "monitoring/report.html",
        "monitoring/drift_heatmap.png",
        "monitoring/quality.png",
        "monitoring/windows.json",
    } <= artifacts
    tags = MlflowClient().get_model_version(PROJECT_SLUG, trained.version).tags
    assert tags["monitoring_run"] == run.info.run_id
    assert run.data.tags["monitoring.retrain"] == "true"


@pytest.mark.integration
@pytest.mark.both_tasks
def test_monitor_on_an_undrifted_log_recommends_nothing(
    trained: TrainResult, labelled: pd.DataFrame, tmp_path: Path
) -> None:
    ids = serve_and_log(tmp_path / "log", labelled)
    outcomes = outcomes_file(tmp_path / "outcomes.csv", ids, labelled[TARGET])

    result = monitor("--log", str(tmp_path / "log"), "--outcomes", str(outcomes), "--window", "200")

    assert result.exit_code == 0, result.output
    assert "No retraining needed" in result.output
    # Nothing drifted; a window's metric may stray, but not in 2 of 5 windows.
    assert "drifted" not in result.output


@pytest.mark.integration
def test_a_window_without_rows_says_so_and_is_not_flagged(
    trained: TrainResult, labelled: pd.DataFrame, tmp_path: Path
) -> None:
    serve_and_log(tmp_path / "served", labelled.head(100))
    [path] = (tmp_path / "served").glob("inference-*.jsonl")
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    for number, entry in enumerate(entries):  # the second half three hours later
        entry["time"] = "2026-01-01T10:00:00+00:00" if number < 50 else "2026-01-01T13:00:00+00:00"
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / path.name).write_text("".join(json.dumps(e) + "\n" for e in entries))

    result = monitor("--log", str(tmp_path / "log"), "--window", "1h")

    assert result.exit_code in (0, RETRAIN_EXIT_STATUS), result.output
    empty = [line for line in result.output.splitlines() if line.endswith("no rows")]
    assert len(empty) == 2  # 11:00 and 12:00
    assert "windows flagged" in result.output
    assert " of the last 2 windows" in result.output  # the empty ones do not count


@pytest.mark.integration
@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("empty", "No inference log"),
        ("corrupt", ":2 is not an inference log entry"),
        ("unknown ids", "have no prediction in the inference log"),
        ("no actual column", "must have the columns prediction_id and actual"),
    ],
)
def test_bad_monitoring_inputs_get_one_clear_line_and_log_nothing(
    trained: TrainResult, labelled: pd.DataFrame, tmp_path: Path, damage: str, says: str
) -> None:
    log_dir = tmp_path / "log"
    ids = serve_and_log(log_dir, labelled.head(20))
    outcomes = outcomes_file(tmp_path / "outcomes.csv", ids, labelled[TARGET])
    [path] = log_dir.glob("inference-*.jsonl")
    if damage == "empty":
        path.unlink()
    elif damage == "corrupt":
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0], '{"id": "half', *lines[2:]]) + "\n")
    elif damage == "unknown ids":
        outcomes.write_text("prediction_id,actual\n" + "0" * 32 + "-7,1\n")
    else:
        outcomes.write_text("prediction_id,label\n" + ids[0][0] + ",1\n")
    before = runs()

    result = monitor("--log", str(log_dir), "--outcomes", str(outcomes))

    assert result.exit_code == 1, result.output
    assert says in result.output
    assert "Traceback" not in result.output
    assert runs() == before


def windows(*flags: bool, empty_at: tuple[int, ...] = ()) -> list[Window]:
    """Windows of 500 rows, flagged or not in this order; those at `empty_at` have no rows."""
    return [
        Window(f"w{n}", 0 if n in empty_at else 500, reasons=["x drifted"] if flag else [])
        for n, flag in enumerate(flags)
    ]


@pytest.mark.parametrize(
    ("flags", "empty_at", "retrain"),
    [
        ((True, True, False, False, False), (), True),  # exactly `flagged` of `of`
        ((True, False, False, False, False), (), False),  # one fewer
        ((True, True, True, True, True), (), True),  # all of them
        ((True, True, False, False, False, False), (), False),  # the first fell out of the last 5
        ((False, False, False, False, True, True), (), True),  # the last two of six
        ((True, True, False, False, False, False), (5,), True),  # an empty window does not count
        ((False, False), (), False),  # fewer windows than `of`, none flagged
    ],
)
def test_retraining_is_recommended_from_flagged_of_the_last_of_windows_with_rows(
    flags: tuple[bool, ...], empty_at: tuple[int, ...], retrain: bool
) -> None:
    rule = MonitoringConfig(flagged=2, of=5)

    recommended, verdict = retraining_verdict(windows(*flags, empty_at=empty_at), rule)

    assert recommended is retrain
    assert verdict.startswith("Retraining recommended" if retrain else "No retraining needed")
    assert verdict.endswith("(threshold: 2 of 5).")
