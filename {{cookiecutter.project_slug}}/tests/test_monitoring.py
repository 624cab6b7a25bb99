"""Monitoring: the reference profile, live drift on /metrics, prediction ids, the inference log."""

import html
import json
import re
import time
from pathlib import Path

import mlflow
import mlflow.artifacts
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from conftest import TARGET, make_frame, records
from fastapi.testclient import TestClient
from matplotlib.patches import Rectangle
from mlflow import MlflowClient

from {{ cookiecutter.module_name }}.cli import main
from {{ cookiecutter.module_name }}.config import (
    PROJECT_SLUG,
    Config,
    MonitoringConfig,
    registered_model_uri,
)
from {{ cookiecutter.module_name }}.core.evaluation import GREATER_IS_BETTER
from {{ cookiecutter.module_name }}.core.profile import (
    PROFILE_PATH,
    CategoricalBins,
    NumericBins,
    Profile,
    build_profile,
    read_profile,
    write_profile,
)
from {{ cookiecutter.module_name }}.errors import ModelError
from {{ cookiecutter.module_name }}.jobs.monitor import windows
from {{ cookiecutter.module_name }}.jobs.monitor.monitor import RETRAIN_EXIT_STATUS
from {{ cookiecutter.module_name }}.jobs.monitor.report import caption, figures, html_report
from {{ cookiecutter.module_name }}.jobs.monitor.windows import (
    Window,
    judge,
    retraining_verdict,
)
from {{ cookiecutter.module_name }}.serving.app import PREDICTION_ID_HEADER, create_app
from {{ cookiecutter.module_name }}.settings import ServingConfig
from {{ cookiecutter.module_name }}.store import registry, tracking
from {{ cookiecutter.module_name }}.store.registry import TrainResult

# The alert threshold of the Prometheus rules and of `monitor` (config.toml).
PSI_THRESHOLD = 0.2


def profile_of(uri: str) -> Profile:
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
    assert set(profile.features) == set(features)
    for bins in profile.features.values():
        assert sum(bins.shares) == pytest.approx(1)
    colour, size = profile.features["colour"], profile.features["size"]
    assert isinstance(colour, CategoricalBins)
    assert isinstance(size, NumericBins)
    assert set(colour.categories) == {"red", "green", "blue"}
    assert profile.metrics == pytest.approx(trained.metrics)


def test_a_profile_of_another_shape_is_refused_when_read_naming_its_file(
    tmp_path: Path,
) -> None:
    frame = pd.DataFrame({"size": [1.0, 2.0, 3.0], "colour": ["red", "blue", "red"]})
    written = write_profile(
        build_profile(frame, [0, 1, 0], {"f1": 0.5}, "classification", [0, 1]), tmp_path
    )
    assert read_profile(written) == build_profile(
        frame, [0, 1, 0], {"f1": 0.5}, "classification", [0, 1]
    )
    data = json.loads(written.read_text())
    data["features"]["size"]["kind"] = "histogram"
    written.write_text(json.dumps(data))

    with pytest.raises(ModelError, match=rf"{written}.*features.*retrain"):
        read_profile(written)


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
def test_a_collapse_in_the_first_window_recommends_retraining_at_once(
    trained: TrainResult, labelled: pd.DataFrame, task: str, tmp_path: Path
) -> None:
    """The first hour alone, half of it from a place the model never saw: exit 3, not 0."""
    half = len(labelled) // 2
    drifted = labelled.copy()
    drifted.loc[half:, "size"] += 3 * labelled["size"].std()
    drifted.loc[half:, "colour"] = "purple"  # a category never seen: a severe drift
    ids = serve_and_log(tmp_path / "log", drifted)
    actual = pd.concat([labelled[TARGET][:half], degrade(labelled[TARGET][half:], task)])
    outcomes = outcomes_file(tmp_path / "outcomes.csv", ids, actual)

    result = monitor("--log", str(tmp_path / "log"), "--outcomes", str(outcomes), "--window", "24h")

    assert result.exit_code == RETRAIN_EXIT_STATUS, result.output
    assert "Retraining recommended: 1 of 1 windows flagged, 4 more to come;" in result.output
    assert "is severe" in result.output
    [run_id] = re.findall(r"MLflow run ([0-9a-f]{32})", result.output)
    report = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/monitoring/report.html"))
    text = report.read_text()
    assert '<p class="verdict retrain">Retraining recommended' in text
    assert "no point" not in text
    assert f"of 1 of 1 windows, from {len(labelled)} outcomes" in text


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
    serve_and_log(tmp_path / "served", labelled.head(200))
    [path] = (tmp_path / "served").glob("inference-*.jsonl")
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    for number, entry in enumerate(entries):  # the second half three hours later
        entry["time"] = "2026-01-01T10:00:00+00:00" if number < 100 else "2026-01-01T13:00:00+00:00"
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / path.name).write_text("".join(json.dumps(e) + "\n" for e in entries))

    result = monitor("--log", str(tmp_path / "log"), "--window", "1h")

    assert result.exit_code in (0, RETRAIN_EXIT_STATUS), result.output
    empty = [line for line in result.output.splitlines() if line.endswith("no rows")]
    assert len(empty) == 2  # 11:00 and 12:00
    assert "windows flagged" in result.output
    assert " of 2 windows flagged, 3 more to come" in result.output  # the empty ones do not count


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


# Windows of each kind: rows, the worst feature's PSI, how far the metric is from its
# held-out value, on how many outcomes.
KINDS: dict[str, tuple[int, float | None, str | None, int]] = {
    "fine": (500, 0.05, "as held out", 200),
    "drifted": (500, 0.5, "as held out", 200),  # above drift_threshold, not severe
    "worse": (500, 0.05, "worse", 200),  # beyond metric_tolerance, within severe_tolerance
    "severe drift": (500, 4.7, "as held out", 200),  # as an island the model never saw
    "collapse": (344, 0.05, "collapsed", 344),
    "collapse, few outcomes": (500, 0.05, "collapsed", 50),  # too few outcomes to be sure
    "small": (30, 0.05, None, 0),  # the hour just begun, or a row count's last window
    "empty": (0, None, None, 0),  # an hour without traffic: only windows by duration
}
SEVERE_KINDS = ("severe drift", "collapse")


def windows_of(
    by: str, kinds: tuple[str, ...], rule: MonitoringConfig, task: str, baseline: float = 0.9
) -> list[Window]:
    """Windows of these kinds, by duration (hours) or by row count, judged by `rule`."""
    distances = {
        "as held out": 0.0,
        "worse": (rule.tolerance + rule.severe) / 2,
        "collapsed": 2 * rule.severe,
    }
    sign = -1 if GREATER_IS_BETTER[task][str(rule.metric)] else 1
    found, first = [], 1
    for hour, kind in enumerate(kinds):
        rows, psi, distance, outcomes = KINDS[kind]
        label = f"2026-12-07T{10 + hour:02}:00:00+00:00"
        if by == "rows":
            label, first = f"rows {first}-{first + rows - 1}", first + rows
        window = Window(label, rows, psi={} if psi is None else {"x": psi}, outcomes=outcomes)
        if distance is not None:
            window.metric = baseline * (1 + sign * distances[distance])
        judge(window, baseline, rule, task)  # type: ignore[arg-type]
        found.append(window)
    return found


RULE_CASES = [
    # kinds of the windows, oldest first; retrain; how the verdict begins
    (("drifted", "worse", "fine", "fine", "fine"), True, "Retraining recommended: 2 of the last 5"),
    (("drifted", "fine", "fine", "fine", "fine"), False, "No retraining needed: 1 of the last 5"),
    (("drifted",) * 5, True, "Retraining recommended: 5 of the last 5"),
    # the first flagged window fell out of the last 5
    (("drifted", "worse", "fine", "fine", "fine", "fine"), False, "No retraining needed: 1 of"),
    (("fine",) * 4 + ("worse", "drifted"), True, "Retraining recommended: 2 of the last 5"),
    # fewer windows than `of`: the windows there are, and how many are to come
    (("fine",), False, "No retraining needed: 0 of 1 windows flagged, 4 more to come"),
    (("worse",), False, "No retraining needed yet: 1 of 1 windows flagged, 4 more to come"),
    (("fine", "drifted"), False, "No retraining needed yet: 1 of 2 windows flagged, 3 more"),
    (("drifted", "worse"), True, "Retraining recommended: 2 of 2 windows flagged, 3 more to come"),
    # a single severe window, alone or among fine ones; too few outcomes to be sure of one
    (("severe drift",), True, "Retraining recommended: 1 of 1 windows flagged, 4 more to come"),
    (("collapse",), True, "Retraining recommended: 1 of 1 windows flagged, 4 more to come"),
    (("fine",) * 4 + ("collapse",), True, "Retraining recommended: 1 of the last 5"),
    (("collapse, few outcomes",), False, "No retraining needed yet: 1 of 1 windows flagged"),
    (("fine",) * 4 + ("collapse, few outcomes",), False, "No retraining needed: 1 of the last 5"),
    (("severe drift",) + ("fine",) * 5, False, "No retraining needed: 0 of the last 5"),
    # a window too small to judge neither counts nor pushes an older one out
    (("drifted", "worse", "fine", "fine", "fine", "small"), True, "Retraining recommended: 2 of"),
    (("small",), False, "No retraining needed: 0 of 0 windows flagged, 5 more to come"),
]
# Only hours can be empty: an hour without traffic between two with some.
DURATION_CASES = [
    (("drifted", "empty", "worse", "fine", "fine", "fine"), True, "Retraining recommended: 2 of"),
    (
        ("collapse", "empty", "empty", "empty", "empty", "small"),
        True,
        "Retraining recommended: 1 of 1",
    ),
]


@pytest.mark.both_tasks
@pytest.mark.parametrize(
    ("by", "kinds", "retrain", "begins"),
    [
        pytest.param(by, *case, id=f"{by}:{'+'.join(case[0])}")
        for by in ("duration", "rows")
        for case in RULE_CASES
    ]
    + [
        pytest.param("duration", *case, id=f"duration:{'+'.join(case[0])}")
        for case in DURATION_CASES
    ],
)
def test_retraining_is_recommended_from_flagged_of_the_last_of_windows_or_one_severe(
    config: Config, task: str, by: str, kinds: tuple[str, ...], retrain: bool, begins: str
) -> None:
    rule = config.monitoring.model_copy(update={"flagged": 2, "of": 5})

    recommended, verdict = retraining_verdict(windows_of(by, kinds, rule, task), rule)

    assert recommended is retrain, verdict
    assert verdict.startswith(begins), verdict
    judged = [kind for kind in kinds if kind not in ("small", "empty")][-5:]
    assert ("is severe" in verdict) is any(kind in SEVERE_KINDS for kind in judged), verdict
    assert verdict.endswith("(threshold: 2 of 5, or one severe window).")


@pytest.mark.both_tasks
def test_a_severe_window_says_why_and_on_how_many_outcomes(config: Config, task: str) -> None:
    rule = config.monitoring.model_copy(update={"flagged": 2, "of": 5})
    [collapse] = windows_of("duration", ("collapse",), rule, task)
    [few] = windows_of("duration", ("collapse, few outcomes",), rule, task)
    [drifted] = windows_of("duration", ("severe drift",), rule, task)

    assert collapse.severe == [
        f"{rule.metric} {collapse.metric:.3f} against 0.900 held out, "
        f"over {rule.severe * 100:g} % worse on 344 outcomes"
    ]
    assert few.flagged
    assert not few.severe
    assert drifted.severe == [f"x PSI 4.70 > {rule.severe_drift_threshold:g}"]
    assert drifted.summary().startswith("severe: x drifted (PSI 4.70 > 0.2)")


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"drift_threshold": 0.5, "severe_drift_threshold": 0.4}, "severe_drift_threshold (0.4)"),
        ({"metric_tolerance": 0.2, "severe_tolerance": 0.1}, "severe_tolerance (0.1)"),
    ],
)
def test_severe_thresholds_below_those_that_flag_are_refused(
    settings: dict[str, float], says: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        MonitoringConfig(**settings)  # type: ignore[arg-type]


def report_of(*kinds: str) -> tuple[str, dict[str, str]]:
    """The report of windows of these kinds on f1 (1.0 held out), and its figures' titles."""
    rule = MonitoringConfig(metric="f1", flagged=2, of=5)
    found = windows_of("duration", kinds, rule, "classification", baseline=1.0)
    retrain, verdict = retraining_verdict(found, rule)
    result = windows.Result("model", "1", "f1", 1.0, found, retrain, verdict)
    images = figures(result, rule)
    titles = {name: caption(image) for name, image in images.items()}
    band = [
        patch for patch in images["quality.png"].axes[0].patches if isinstance(patch, Rectangle)
    ]
    # The held-out band (1.0 ± 10 %) within what f1 can be.
    assert [(p.get_y(), p.get_y() + p.get_height()) for p in band] == [pytest.approx((0.9, 1))]
    return html_report(result, rule, images), titles


@pytest.mark.parametrize(
    ("kinds", "box", "quality"),
    [
        (("collapse",), "retrain", "f1 of 1 of 1 windows, from 344 outcomes"),
        (("worse",), "watch", "f1 of 1 of 1 windows, from 200 outcomes"),
        (("fine", "small"), "fine", "f1 of 1 of 2 windows, from 200 outcomes (the others: fewer"),
        (("small",), "fine", "f1: no point yet, no window has 20 outcomes"),
    ],
)
def test_the_report_says_what_its_verdict_and_figures_show(
    kinds: tuple[str, ...], box: str, quality: str
) -> None:
    """The verdict box's colour and words, and captions that are the figures' own titles."""
    report, titles = report_of(*kinds)

    verdict = re.search(r'<p class="verdict (\w+)">([^<]*)</p>', report)
    assert verdict is not None
    assert verdict[1] == box
    assert verdict[2].startswith("Retraining recommended" if box == "retrain" else "No retraining")
    assert titles["quality.png"].startswith(quality)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", report)
    assert captions == [html.escape(title) for title in titles.values()]
