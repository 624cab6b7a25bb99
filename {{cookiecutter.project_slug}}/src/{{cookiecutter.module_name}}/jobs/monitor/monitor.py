"""`monitor`: the served model's drift and quality, window by window, and when to retrain.

Reads the inference log the server writes (`INFERENCE_LOG_DIR`) and, when given,
the true outcomes that arrived since (a CSV of `prediction_id,actual`); cuts the
rows into windows; scores each against the served version's reference profile
(the same bins and PSI as the server's live drift) and, where outcomes exist,
the task's metric against its held-out value; logs it all as one MLflow run; and
recommends retraining when at least `flagged` of the last `of` judged windows are
flagged, or when one of them is severe (`retraining_verdict` says exactly when).
Everything is read and checked before the run starts: bad input logs nothing.
"""

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from ...config import MonitoringConfig, Task, registered_model_uri
from ...core.drift import count, drift
from ...core.evaluation import GREATER_IS_BETTER, label_metrics
from ...core.profile import PROFILE_PATH, Profile, read_profile
from ...errors import MonitorError
from ...runtime.inference_log import PATTERN
from ...store import tracking

log = logging.getLogger(__name__)

# The exit status of `monitor` when retraining is recommended (1 is an error, 2 a
# usage error): a scheduler can start `make train` on it.
RETRAIN_EXIT_STATUS = 3
# A window's drift can flag it from this many rows (sampling alone gives n rows a
# PSI of about (bins - 1) / n: 0.09 for 100 rows on 10 bins), its metric from this
# many outcomes; a smaller window is shown all the same.
MIN_ROWS = 100
MIN_OUTCOMES = 20
# A window's metric is severe (it recommends retraining alone, with no other window to
# confirm it) from this many outcomes: a share's standard error on n outcomes is at most
# 0.5 / sqrt(n), 0.05 here, so a 30 % fall from a held-out 0.5 or more (0.15) is three
# of them, not chance; at MIN_OUTCOMES it would be barely one and a half.
SEVERE_OUTCOMES = 100
# A request's id alone names its first row.
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Window:
    """One window of served rows: its drift, its metric, and whether it is flagged."""

    label: str
    rows: int
    psi: dict[str, float | None] = field(default_factory=dict)
    missing: dict[str, float] = field(default_factory=dict)
    unseen: dict[str, float] = field(default_factory=dict)
    prediction_psi: float | None = None
    outcomes: int = 0
    metric: float | None = None
    reasons: list[str] = field(default_factory=list)
    # The reasons severe enough to recommend retraining on their own.
    severe: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        """Whether any threshold is crossed."""
        return bool(self.reasons)

    @property
    def judged(self) -> bool:
        """Whether the window has enough rows to judge its drift, or outcomes its metric."""
        return self.rows >= MIN_ROWS or self.metric is not None

    def summary(self) -> str:
        """Why the window is flagged, or why it could not be judged, in a few words."""
        if self.reasons:
            return ("severe: " if self.severe else "") + "; ".join(self.reasons)
        if not self.rows:
            return "no rows"
        if self.rows < MIN_ROWS:
            return f"too few rows to judge drift (< {MIN_ROWS})"
        return ""


def recent(windows: list[Window], settings: MonitoringConfig) -> list[Window]:
    """The last `of` windows that could be judged: those the verdict weighs."""
    return [window for window in windows if window.judged][-settings.of :]


def retraining_verdict(windows: list[Window], settings: MonitoringConfig) -> tuple[bool, str]:
    """Whether to retrain, and why.

    Among the last `of` judged windows (fewer while fewer exist), retraining is
    recommended when at least `flagged` are flagged, or when any one is severe. A
    window too small to judge (fewer than MIN_ROWS rows and MIN_OUTCOMES outcomes)
    is shown, but neither counts nor pushes an older window out.
    """
    weighed = recent(windows, settings)
    flagged = sum(window.flagged for window in weighed)
    severe = [window for window in weighed if window.severe]
    retrain = flagged >= settings.flagged or bool(severe)
    to_come = settings.of - len(weighed)
    if to_come:
        count = f"{flagged} of {len(weighed)} windows flagged, {to_come} more to come"
    else:
        count = f"{flagged} of the last {settings.of} windows flagged"
    if severe:
        latest = severe[-1]
        found = f"{latest.label} is severe: {'; '.join(latest.severe)}"
        if len(severe) > 1:
            found += f"; and {len(severe) - 1} more severe window{'s' * (len(severe) > 2)}"
    else:
        found = "none severe"
    if retrain:
        head = "Retraining recommended"
    elif to_come and flagged:
        head = "No retraining needed yet"
    else:
        head = "No retraining needed"
    verdict = (
        f"{head}: {count}; {found} "
        f"(threshold: {settings.flagged} of {settings.of}, or one severe window)."
    )
    return retrain, verdict


@dataclass
class Result:
    """What `monitor` found, and its verdict."""

    model: str
    version: str
    metric: str
    baseline: float | None
    windows: list[Window]
    retrain: bool
    verdict: str
    run_id: str = ""
    left_out: int = 0


def read_log(directory: Path) -> list[dict[str, Any]]:
    """Every entry of the inference log files under `directory`, in time order."""
    files = sorted(directory.rglob(PATTERN))
    if not files:
        raise MonitorError(
            f"No inference log ({PATTERN}) in {directory}: serve the model with "
            f"INFERENCE_LOG_DIR={directory}, or point --log at the folder it wrote."
        )
    entries: list[dict[str, Any]] = []
    for path in files:
        *lines, torn = path.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry["features"], dict):
                    raise TypeError("features is not an object")
                _ = entry["id"], entry["time"], entry["version"], entry["prediction"]
            except (ValueError, KeyError, TypeError) as error:
                raise MonitorError(
                    f"{path}:{number} is not an inference log entry ({error}): "
                    "remove the file or the line."
                ) from None
            entries.append(entry)
        if torn.strip():
            log.warning("%s ends in an incomplete line (cut short by a stop): left out.", path)
    if not entries:
        raise MonitorError(f"The inference log in {directory} has no entries yet.")
    return sorted(entries, key=lambda entry: entry["time"])


def read_outcomes(path: Path, ids: set[str]) -> pd.Series:
    """The true outcomes, by prediction id; each must be the id of a logged prediction."""
    try:
        frame = pd.read_csv(path, dtype={"prediction_id": str})
    except (ValueError, OSError) as error:
        raise MonitorError(f"{path} is not a readable CSV: {error}") from None
    if not {"prediction_id", "actual"} <= set(frame.columns):
        raise MonitorError(
            f"{path} must have the columns prediction_id and actual; it has "
            f"{', '.join(map(str, frame.columns)) or 'none'}."
        )
    keys = (
        frame["prediction_id"]
        .astype(str)
        .map(lambda key: f"{key}-0" if REQUEST_ID.match(key) else key)
    )
    unknown = sorted(set(keys) - ids)
    if unknown:
        raise MonitorError(
            f"{len(unknown)} outcome(s) in {path.name} have no prediction in the inference "
            f"log (e.g. {', '.join(unknown[:3])}): is the log complete, and are these ids "
            "from the X-Prediction-ID header (row n of a request: <id>-<n>)?"
        )
    return pd.Series(frame["actual"].to_numpy(), index=keys).groupby(level=0).last()


def reference_profile(model: str, version: str) -> Profile:
    """The monitoring profile of a registered model version."""
    uri = registered_model_uri(version, name=model)
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{PROFILE_PATH}")
    except (MlflowException, OSError):
        raise MonitorError(
            f"{uri} has no monitoring profile (trained before monitoring?): retrain it "
            "and serve the new version to monitor it."
        ) from None
    return read_profile(Path(path))


def cut(served: pd.DataFrame, window: str) -> list[tuple[str, pd.DataFrame]]:
    """Cut the rows (in time order) into windows of a row count or a duration."""
    if window.isdigit():
        size = int(window)
        if size < 1:
            raise MonitorError("A window must hold at least one row.")
        return [
            (
                f"rows {start + 1}-{min(start + size, len(served))}",
                served.iloc[start : start + size],
            )
            for start in range(0, len(served), size)
        ]
    length = pd.Timedelta(window)
    starts = served["time"].dt.floor(length)
    windows = []
    for start in pd.date_range(starts.min(), starts.max(), freq=length):
        windows.append((start.isoformat(), served[starts == start]))
    return windows


def score_window(
    label: str,
    rows: pd.DataFrame,
    features: pd.DataFrame,
    profile: Profile,
    settings: MonitoringConfig,
    task: Task,
) -> Window:
    """Drift and metric of one window, and the thresholds it crosses."""
    window = Window(label, len(rows))
    if rows.empty:
        return window
    counts = count(features.loc[rows.index], rows["prediction"].to_numpy(), profile)
    by_feature, prediction = drift(counts, profile)
    for name, scores in by_feature.items():
        window.psi[name] = scores.psi
        window.missing[name] = scores.missing_share
        window.unseen[name] = scores.unseen_share
    if prediction is not None:
        window.prediction_psi = prediction.psi
    known = rows.dropna(subset=["actual"])
    window.outcomes = len(known)
    metric = str(settings.metric)
    if len(known) >= MIN_OUTCOMES:
        kind = str if task == "classification" else float
        actual, predicted = known["actual"].astype(kind), known["prediction"].astype(kind)
        window.metric = label_metrics(task, actual, predicted, profile["classes"] or [])[metric]
    judge(window, profile["metrics"].get(metric), settings, task)
    return window


def judge(window: Window, baseline: float | None, settings: MonitoringConfig, task: Task) -> None:
    """Note the thresholds a window's figures cross: those that flag it, the severe ones."""
    if window.rows >= MIN_ROWS:  # fewer rows drift by chance (see MIN_ROWS)
        drifts = [*window.psi.items(), ("predictions", window.prediction_psi)]
        for name, psi in drifts:
            if psi is not None and psi > settings.drift_threshold:
                window.reasons.append(
                    f"{name} drifted (PSI {psi:.2f} > {settings.drift_threshold:g})"
                )
            if psi is not None and psi > settings.severe_drift_threshold:
                window.severe.append(f"{name} PSI {psi:.2f} > {settings.severe_drift_threshold:g}")
    metric = str(settings.metric)
    if window.metric is None or baseline is None:
        return
    if worse(window.metric, baseline, metric, task, settings.tolerance):
        window.reasons.append(f"{metric} {window.metric:.3f} against {baseline:.3f} held out")
    if window.outcomes >= SEVERE_OUTCOMES and worse(
        window.metric, baseline, metric, task, settings.severe
    ):
        window.severe.append(
            f"{metric} {window.metric:.3f} against {baseline:.3f} held out, over "
            f"{settings.severe * 100:g} % worse on {window.outcomes} outcomes"
        )


def worst_allowed(baseline: float, greater_is_better: bool, tolerance: float) -> float:
    """The worst value still within `tolerance` (relative) of `baseline`."""
    allowed = tolerance * abs(baseline)
    return baseline - allowed if greater_is_better else baseline + allowed


def worse(value: float, baseline: float, metric: str, task: Task, tolerance: float) -> bool:
    """Whether `value` is worse than `baseline` by more than `tolerance`, relative."""
    greater_is_better = GREATER_IS_BETTER[task][metric]
    limit = worst_allowed(baseline, greater_is_better, tolerance)
    return value < limit if greater_is_better else value > limit


def monitor(
    log_dir: Path,
    outcomes: Path | None,
    settings: MonitoringConfig,
    task: Task,
    version: str | None = None,
) -> Result:
    """Score the log's windows, decide, and log it all as one MLflow run."""
    client = tracking.setup()
    entries = read_log(log_dir)
    versions = {str(entry["version"]) for entry in entries}
    version = version or str(entries[-1]["version"])
    if version not in versions:
        raise MonitorError(
            f"The inference log has no rows of version {version}: {sorted(versions)}."
        )
    served = [entry for entry in entries if str(entry["version"]) == version]
    model = str(served[-1]["model"])
    profile = reference_profile(model, version)
    frame = pd.DataFrame(
        {
            "id": [entry["id"] for entry in served],
            "time": pd.to_datetime([entry["time"] for entry in served], utc=True),
            "prediction": [entry["prediction"] for entry in served],
        }
    )
    features = pd.DataFrame([entry["features"] for entry in served], index=frame.index)
    frame["actual"] = None
    if outcomes is not None:
        actual = read_outcomes(outcomes, {str(entry["id"]) for entry in entries})
        frame["actual"] = frame["id"].map(actual)
    windows = [
        score_window(label, rows, features, profile, settings, task)
        for label, rows in cut(frame, settings.window)
    ]
    retrain, verdict = retraining_verdict(windows, settings)
    result = Result(
        model,
        version,
        str(settings.metric),
        profile["metrics"].get(str(settings.metric)),
        windows,
        retrain,
        verdict,
        left_out=len(entries) - len(served),
    )
    result.run_id = log_run(client, result, settings)
    return result


def metric_key(name: str) -> str:
    """A name MLflow accepts as a metric key."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def log_run(client: MlflowClient, result: Result, settings: MonitoringConfig) -> str:
    """Log the windows as one run, with its figures and report; delete it if logging fails."""
    from .report import figures, html_report

    images = figures(result, settings)
    report = html_report(result, settings, images)
    tags = {
        "monitoring.model": result.model,
        "monitoring.model_version": result.version,
        "monitoring.retrain": str(result.retrain).lower(),
        "mlflow.note.content": result.verdict,
    }
    run = mlflow.start_run(run_name=f"monitor {result.model} v{result.version}", tags=tags)
    try:
        metrics = []
        for step, window in enumerate(result.windows):
            values = {
                "rows": window.rows,
                "outcomes": window.outcomes,
                "flagged": int(window.flagged),
                **{f"psi/{metric_key(n)}": v for n, v in window.psi.items() if v is not None},
                **{f"missing/{metric_key(n)}": v for n, v in window.missing.items()},
            }
            if window.prediction_psi is not None:
                values["psi/prediction"] = window.prediction_psi
            if window.metric is not None:
                values[result.metric] = window.metric
            metrics += [Metric(key, float(value), 0, step) for key, value in values.items()]
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
        mlflow.log_params(
            {
                "window": settings.window,
                "drift_threshold": settings.drift_threshold,
                "severe_drift_threshold": settings.severe_drift_threshold,
                "metric_tolerance": settings.tolerance,
                "severe_tolerance": settings.severe,
                "flagged": settings.flagged,
                "of": settings.of,
            }
        )
        for name, image in images.items():
            mlflow.log_figure(image, f"monitoring/{name}")
        mlflow.log_text(report, "monitoring/report.html")
        windows = [window.__dict__ | {"flagged": window.flagged} for window in result.windows]
        mlflow.log_dict({"verdict": result.verdict, "windows": windows}, "monitoring/windows.json")
        client.set_model_version_tag(
            result.model, result.version, "monitoring_run", run.info.run_id
        )
        client.set_model_version_tag(
            result.model, result.version, "monitoring_retrain", str(result.retrain).lower()
        )
    except BaseException:
        mlflow.end_run("FAILED")
        client.delete_run(run.info.run_id)  # nothing half-logged
        raise
    mlflow.end_run()
    return str(run.info.run_id)
