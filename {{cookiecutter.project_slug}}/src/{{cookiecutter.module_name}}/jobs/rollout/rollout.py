"""`rollout`: version N answers a growing share of requests, then is promoted or rolled back.

Each step gives the canary its share in the registry (`store/canary.py`), waits until
every server applies it, lets it serve for an interval, and judges what the servers
counted meanwhile (`readings.py`, `guardrails.py`). Past the last step (100 %), N
becomes `champion` and the old one `previous-champion`; at the first breach the share
drops to 0 at once and the champion is left as it was. Anything else that stops the
rollout (an error, Ctrl-C) also drops the share first. The rollout is an MLflow run:
its steps' figures, the verdict and why; the version keeps a `rollout` tag saying how
it ended.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mlflow
from mlflow import MlflowClient

from ...config import PROJECT_SLUG, RolloutConfig, Task, duration_s
from ...errors import RolloutError
from ...store import registry, tracking
from ...store.canary import PROMOTED, ROLLED_BACK, canary_state, end_canary, set_share, start_canary
from .guardrails import Figures, breaches, figures
from .readings import Reading, Source, configured_source

log = logging.getLogger(__name__)

# The exit status of `rollout` when the canary was rolled back (1 is an error).
ROLLED_BACK_EXIT_STATUS = 3
# How often the servers are asked whether they apply the new share yet.
SETTLE_POLL_S = 0.5


@dataclass(frozen=True)
class Step:
    """One step: the canary's share, what the servers counted, what it broke."""

    share: float
    figures: Figures
    breaches: list[str]


@dataclass
class RolloutResult:
    """How a rollout ended."""

    version: str
    champion: str
    run_id: str
    promoted: bool = False
    reason: str = ""
    steps: list[Step] = field(default_factory=list)


def rollout(
    version: str,
    rules: RolloutConfig,
    task: Task,
    source: Source | None = None,
    report: Callable[[Step], None] = lambda step: None,
) -> RolloutResult:
    """Roll `version` out step by step under `rules`; promote it, or roll it back."""
    source = source or configured_source()
    client = tracking.setup()
    champion = preconditions(client, version)
    with mlflow.start_run(run_name=f"rollout-v{version}") as run:
        result = RolloutResult(version, champion, run.info.run_id)
        mlflow.log_params({"version": version, "champion": champion, **rules.model_dump()})
        try:
            walk(client, source, rules, task, result, report)
        except BaseException as error:  # an error or Ctrl-C: no more traffic to the canary
            stop(client, version, f"stopped: {error or type(error).__name__}", run.info.run_id)
            raise
    return result


def preconditions(client: MlflowClient, version: str) -> str:
    """The champion's version, if `version` may be rolled out; RolloutError saying why not."""
    registry.existing_version(client, version)
    champion = registry.version_by_alias(client, registry.CHAMPION)
    if champion is None:
        raise RolloutError(f"Model {PROJECT_SLUG} has no champion: promote one first.")
    if str(champion.version) == version:
        raise RolloutError(f"Version {version} is the champion already.")
    under_way = canary_state(client)
    if under_way is not None:
        raise RolloutError(
            f"Version {under_way.version} is the canary already: another rollout runs, or one "
            "was killed; `rollout --abort` ends it."
        )
    return str(champion.version)


def walk(
    client: MlflowClient,
    source: Source,
    rules: RolloutConfig,
    task: Task,
    result: RolloutResult,
    report: Callable[[Step], None],
) -> None:
    """Go through the steps; promote at the end, or roll back at the first breach."""
    run_id, version = result.run_id, result.version
    for index, percent in enumerate(rules.steps):
        share = percent / 100
        if index == 0:
            start_canary(client, version, share)
        else:
            set_share(client, version, share)
        start = settled(source, version, share, duration_s(rules.settle_timeout))
        time.sleep(duration_s(rules.interval))
        step_figures = figures(source.read().since(start))
        step = Step(share, step_figures, breaches(step_figures, rules, task))
        result.steps.append(step)
        mlflow.log_metrics({"share": share, **step_figures.as_metrics()}, step=index)
        report(step)
        if step.breaches:
            result.reason = f"at {percent:g} %: {'; '.join(step.breaches)}"
            stop(client, version, f"{ROLLED_BACK} {result.reason}", run_id)
            return
    registry.promote(client, version)
    result.promoted, result.reason = True, f"every guardrail held at {len(rules.steps)} steps"
    end_canary(client, version, f"{PROMOTED} (rollout run {run_id})")
    mlflow.set_tags({"verdict": PROMOTED, "reason": result.reason})


def settled(source: Source, version: str, share: float, timeout_s: float) -> Reading:
    """Wait until every server gives `version` this share; return that reading."""
    deadline = time.monotonic() + timeout_s
    while True:
        reading = source.read()
        behind = [
            server
            for server, shares in reading.shares.items()
            if abs(shares.get(version, 0.0) - share) > 1e-9
        ]
        if reading.shares and not behind:
            return reading
        if time.monotonic() > deadline:
            raise RolloutError(
                f"{', '.join(behind) or 'no server'} did not give version {version} its share of "
                f"{share:g} within {timeout_s:g} s: do they follow the registry (MODEL_URI an "
                "alias, MODEL_REFRESH_S above 0)? Did the canary fail to load (their log)?"
            )
        time.sleep(SETTLE_POLL_S)


def stop(client: MlflowClient, version: str, outcome: str, run_id: str) -> None:
    """Drop the canary's share to 0 and its alias; record why in the run and on the version."""
    end_canary(client, version, f"{outcome} (rollout run {run_id})")
    verdict = ROLLED_BACK if outcome.startswith(ROLLED_BACK) else "stopped"
    mlflow.set_tags({"verdict": verdict, "reason": outcome})


def abort_rollout() -> str | None:
    """End a rollout left under way (its process killed): no more traffic to its canary."""
    client = tracking.setup()
    state = canary_state(client)
    if state is None:
        return None
    end_canary(client, state.version, "stopped: rollout --abort")
    return state.version
