"""The guardrails: what a step's counts say of the canary against the champion.

Each figure compares the two models on the same step's traffic, so that load, time
of day and the machine weigh on both alike; `breaches` names each guardrail of
`[rollout]` a step's figures break.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np

from ...config import RolloutConfig, Task
from ...core.drift import psi
from ...store.canary import CANARY_ROLE, CHAMPION_ROLE
from .readings import Key


@dataclass(frozen=True)
class Figures:
    """One step, as the servers counted it."""

    canary_requests: float
    canary_error_ratio: float | None
    champion_error_ratio: float | None
    canary_p99_s: float | None
    champion_p99_s: float | None
    # Classification: the share of compared rows where both predict the same label.
    agreement: float | None
    # Regression: sum |canary - champion| / sum |champion| over the compared rows.
    relative_delta: float | None
    # The PSI of the canary's predictions against the champion's on the same rows.
    prediction_psi: float | None

    def as_metrics(self) -> dict[str, float]:
        """The figures known, as MLflow metrics."""
        return {name: value for name, value in asdict(self).items() if value is not None}


def counted(growth: dict[Key, float], name: str, *labels: str) -> float:
    """A counter's growth for these labels (0 if it never moved)."""
    return growth.get((name, labels), 0.0)


def error_ratio(growth: dict[Key, float], role: str) -> tuple[float, float | None]:
    """A role's requests, and the share of them that failed (None: no request)."""
    failed = counted(growth, "model_requests_total", role, "failed")
    total = failed + counted(growth, "model_requests_total", role, "ok")
    return total, (failed / total if total else None)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """A quantile of a histogram from its cumulative buckets, as Prometheus computes it.

    Linear within the bucket that holds it; the highest finite bound if it is in +Inf.
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if math.isinf(bound):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, buckets[bound]
    return lower


def p99(growth: dict[Key, float], role: str) -> float | None:
    """The 99th percentile of a role's batch times over the step."""
    buckets = {
        float(labels[1]): value
        for (name, labels), value in growth.items()
        if name == "model_batch_duration_seconds_bucket" and labels[0] == role
    }
    return quantile(0.99, buckets)


# Bins of the PSI hold at least this share of the champion's predictions (neighbours are
# merged): with fine bins and a few hundred rows, two near-identical models differ by the
# few predictions that cross a bin's edge, and sampling noise alone reaches 0.2.
MIN_BIN_SHARE = 0.1
# Added to every bin's count: an empty bin is uncertain, not impossible.
SMOOTHING = 0.5


def bin_order(name: str) -> tuple[float, str]:
    """Value buckets by their bound ("+Inf" last), labels by name."""
    try:
        return float(name), ""
    except ValueError:
        return float("inf"), name


def merged(champion: np.ndarray, canary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbouring bins merged until each holds MIN_BIN_SHARE of the champion's predictions."""
    edges, held = [], 0.0
    for index, count in enumerate(champion):
        held += count
        if held >= MIN_BIN_SHARE * champion.sum():
            edges.append(index + 1)
            held = 0.0
    if not edges or edges[-1] != len(champion):  # the remainder joins the last bin
        edges = [*edges[:-1], len(champion)] if edges else [len(champion)]
    starts = [0, *edges[:-1]]
    return (
        np.array([champion[a:b].sum() for a, b in zip(starts, edges, strict=True)]),
        np.array([canary[a:b].sum() for a, b in zip(starts, edges, strict=True)]),
    )


def prediction_psi(growth: dict[Key, float]) -> float | None:
    """PSI of the canary's predictions against the champion's on the same rows."""
    by_role: dict[str, dict[str, float]] = {CHAMPION_ROLE: {}, CANARY_ROLE: {}}
    for (name, labels), value in growth.items():
        if name == "canary_predictions_total" and labels[0] in by_role:
            by_role[labels[0]][labels[1]] = value
    bins = sorted(set(by_role[CHAMPION_ROLE]) | set(by_role[CANARY_ROLE]), key=bin_order)
    champion = np.array([by_role[CHAMPION_ROLE].get(b, 0.0) for b in bins])
    if not bins or champion.sum() == 0:
        return None
    canary = np.array([by_role[CANARY_ROLE].get(b, 0.0) for b in bins])
    champion, canary = merged(champion, canary)
    champion, canary = champion + SMOOTHING, canary + SMOOTHING
    return psi(canary, list(champion / champion.sum()))


def figures(growth: dict[Key, float]) -> Figures:
    """The step's figures from what its counters grew by."""
    canary_requests, canary_errors = error_ratio(growth, CANARY_ROLE)
    _, champion_errors = error_ratio(growth, CHAMPION_ROLE)
    compared = counted(growth, "canary_compared_rows_total")
    magnitude = counted(growth, "canary_abs_champion_total")
    delta = counted(growth, "canary_abs_delta_total")
    numeric = magnitude > 0 or delta > 0
    return Figures(
        canary_requests=canary_requests,
        canary_error_ratio=canary_errors,
        champion_error_ratio=champion_errors,
        canary_p99_s=p99(growth, CANARY_ROLE),
        champion_p99_s=p99(growth, CHAMPION_ROLE),
        agreement=counted(growth, "canary_agreeing_rows_total") / compared
        if compared and not numeric
        else None,
        relative_delta=delta / magnitude if magnitude else None,
        prediction_psi=prediction_psi(growth),
    )


def percent(share: float, digits: int = 1) -> str:
    """A share in words: 0.125 -> "12.5 %"."""
    return f"{share * 100:.{digits}f} %"


def breaches(step: Figures, rules: RolloutConfig, task: Task) -> list[str]:
    """Each guardrail the step breaks, in words; none: the canary may go on."""
    found = []
    if step.canary_requests < rules.min_requests:
        found.append(
            f"{step.canary_requests:.0f} canary requests, {rules.min_requests} needed to judge "
            "(more traffic, a longer interval, or a lower rollout.min_requests)"
        )
    canary_errors, champion_errors = (
        step.canary_error_ratio or 0.0,
        step.champion_error_ratio or 0.0,
    )
    if canary_errors - champion_errors > rules.max_error_increase:
        found.append(
            f"errors {percent(canary_errors)} against the champion's {percent(champion_errors)} "
            f"(at most {percent(rules.max_error_increase)} more)"
        )
    found += latency_breach(step, rules)
    if task == "classification" and (
        step.agreement is None or step.agreement < rules.min_agreement
    ):
        agreement = "none compared" if step.agreement is None else percent(step.agreement)
        found.append(
            f"agreement {agreement} with the champion (at least {percent(rules.min_agreement, 0)})"
        )
    if task == "regression" and (
        step.relative_delta is None or step.relative_delta > rules.max_relative_delta
    ):
        delta = "none compared" if step.relative_delta is None else percent(step.relative_delta)
        found.append(f"relative delta {delta} (at most {percent(rules.max_relative_delta, 0)})")
    if step.prediction_psi is not None and step.prediction_psi > rules.max_prediction_psi:
        found.append(
            f"predictions drifted from the champion's (PSI {step.prediction_psi:.2f} > "
            f"{rules.max_prediction_psi:g})"
        )
    return found


def latency_breach(step: Figures, rules: RolloutConfig) -> list[str]:
    """The p99 guardrail: above both the ratio and the margin of the champion's p99."""
    if step.canary_p99_s is None or step.champion_p99_s is None:
        return []
    ceiling = max(
        step.champion_p99_s * rules.max_latency_ratio,
        step.champion_p99_s + rules.latency_margin_ms / 1000,
    )
    if step.canary_p99_s <= ceiling:
        return []
    return [
        f"p99 {step.canary_p99_s * 1000:.1f} ms against the champion's "
        f"{step.champion_p99_s * 1000:.1f} ms (at most {ceiling * 1000:.1f} ms)"
    ]
