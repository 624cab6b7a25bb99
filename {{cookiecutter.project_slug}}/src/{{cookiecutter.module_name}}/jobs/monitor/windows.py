"""Windows of served traffic judged: drift and quality against the reference, and the verdict.

What `monitor` computes and its report draws, without reading or logging anything:
rows cut into windows, each scored against the served version's reference profile
(the same bins and PSI as the server's live drift) and, where outcomes exist, the
task's metric against its held-out value; then when to recommend retraining.
"""

from dataclasses import dataclass, field

import pandas as pd

from ...config import MonitoringConfig, Task
from ...core.drift import count, drift
from ...core.evaluation import GREATER_IS_BETTER, label_metrics
from ...core.profile import Profile
from ...errors import MonitorError

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
    # The shadow (SHADOW_ALIAS) on the same rows: its version, its metric on the same
    # outcomes, and its agreement with the served model (share of equal labels, or
    # mean absolute difference of values). None: no shadow scored these rows.
    shadow_version: str | None = None
    shadow_rows: int = 0
    shadow_metric: float | None = None
    shadow_agreement: float | None = None

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
        window.metric = label_metrics(task, actual, predicted, profile.classes or [])[metric]
    judge(window, profile.metrics.get(metric), settings, task)
    if "shadow" in rows:
        compare_shadow(window, rows, profile, metric, task)
    return window


def compare_shadow(
    window: Window, rows: pd.DataFrame, profile: Profile, metric: str, task: Task
) -> None:
    """The shadow's agreement with the served model, and its metric on the same outcomes."""
    shadowed = rows.dropna(subset=["shadow"])
    window.shadow_rows = len(shadowed)
    if shadowed.empty:
        return
    window.shadow_version = str(shadowed["shadow_version"].iloc[-1])
    kind = str if task == "classification" else float
    served, shadow = shadowed["prediction"].astype(kind), shadowed["shadow"].astype(kind)
    if task == "classification":
        window.shadow_agreement = float((served == shadow).mean())
    else:
        window.shadow_agreement = float((served - shadow).abs().mean())
    known = shadowed.dropna(subset=["actual"])
    if len(known) >= MIN_OUTCOMES:
        actual, predicted = known["actual"].astype(kind), known["shadow"].astype(kind)
        window.shadow_metric = label_metrics(task, actual, predicted, profile.classes or [])[metric]


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
