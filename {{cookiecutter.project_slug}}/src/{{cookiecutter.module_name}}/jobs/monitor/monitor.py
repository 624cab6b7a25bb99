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
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from ...config import MonitoringConfig, Task, registered_model_uri
from ...core.profile import PROFILE_PATH, Profile, read_profile
from ...errors import MonitorError
from ...runtime.inference_log import PATTERN, SHADOW_PATTERN
from ...store import tracking
from .report import figures, html_report
from .windows import Result, cut, retraining_verdict, score_window

log = logging.getLogger(__name__)

# The exit status of `monitor` when retraining is recommended (1 is an error, 2 a
# usage error): a scheduler can start `make train` on it.
RETRAIN_EXIT_STATUS = 3
# A request's id alone names its first row.
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


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


def read_shadow(directory: Path) -> pd.DataFrame | None:
    """The shadow's predictions (SHADOW_ALIAS), by prediction id; None if it wrote none."""
    lines = []
    for path in sorted(directory.rglob(SHADOW_PATTERN)):
        *complete, _ = path.read_text(encoding="utf-8").split("\n")
        lines += [json.loads(line) for line in complete if line.strip()]
    if not lines:
        return None
    frame = pd.DataFrame(lines, columns=["id", "shadow_version", "shadow_prediction"])
    return frame.drop_duplicates("id", keep="last").set_index("id")


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
    frame, features = served_frame(served, log_dir)
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
        profile.metrics.get(str(settings.metric)),
        windows,
        retrain,
        verdict,
        left_out=len(entries) - len(served),
    )
    result.run_id = log_run(client, result, settings)
    return result


def served_frame(served: list[dict[str, Any]], log_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The served rows (id, time, prediction, the shadow's if any) and their features."""
    frame = pd.DataFrame(
        {
            "id": [entry["id"] for entry in served],
            "time": pd.to_datetime([entry["time"] for entry in served], utc=True),
            "prediction": [entry["prediction"] for entry in served],
        }
    )
    features = pd.DataFrame([entry["features"] for entry in served], index=frame.index)
    frame["actual"] = None
    shadow = read_shadow(log_dir)
    if shadow is not None:
        frame["shadow"] = frame["id"].map(shadow["shadow_prediction"])
        frame["shadow_version"] = frame["id"].map(shadow["shadow_version"])
    return frame, features


def metric_key(name: str) -> str:
    """A name MLflow accepts as a metric key."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def log_run(client: MlflowClient, result: Result, settings: MonitoringConfig) -> str:
    """Log the windows as one run, with its figures and report; delete it if logging fails."""
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
        metrics = window_metrics(result)
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
        mlflow.log_params(rule_params(settings))
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


def window_metrics(result: Result) -> list[Metric]:
    """Each window's rows, outcomes, flag, drift and metric, one step a window."""
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
        if window.shadow_metric is not None:
            values[f"shadow/{result.metric}"] = window.shadow_metric
        if window.shadow_agreement is not None:
            values["shadow/agreement"] = window.shadow_agreement
        metrics += [Metric(key, float(value), 0, step) for key, value in values.items()]
    return metrics


def rule_params(settings: MonitoringConfig) -> dict[str, Any]:
    """The thresholds the windows were judged by."""
    return {
        "window": settings.window,
        "drift_threshold": settings.drift_threshold,
        "severe_drift_threshold": settings.severe_drift_threshold,
        "metric_tolerance": settings.tolerance,
        "severe_tolerance": settings.severe,
        "flagged": settings.flagged,
        "of": settings.of,
    }
