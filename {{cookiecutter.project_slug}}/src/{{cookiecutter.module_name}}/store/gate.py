"""The promotion gate: a new model becomes champion only if it beats the champion's score.

Apart from `registry` because the gate scores models (and so needs the evaluation code
and its plotting library), which the serving image, reading aliases, must not import.
"""

from typing import Any

import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient

from ..config import Config, Task, registered_model_uri
from ..core.evaluation import evaluate, is_better
from .registry import CHAMPION, Decision, version_by_alias


def decide(
    client: MlflowClient,
    candidate_metrics: dict[str, float],
    x_test: pd.DataFrame,
    y_test: pd.Series,
    config: Config,
    not_reproducible: str | None = None,
) -> Decision:
    """Compare a candidate with the champion on the same evaluation data.

    A candidate whose run could not be rebuilt (`not_reproducible` says why) is kept
    back with `promotion.unreproducible = "refuse"`, and flagged with "warn".
    """
    if not_reproducible and config.promotion.unreproducible == "refuse":
        return Decision(
            False,
            f"its run cannot be reproduced ({not_reproducible}) and promotion.unreproducible "
            "is 'refuse': fix that and train again, or `make promote VERSION=<n>`",
        )
    decision = _compare(client, candidate_metrics, x_test, y_test, config)
    if not_reproducible:
        return Decision(
            decision.promote, f"{decision.reason} (not reproducible: {not_reproducible})"
        )
    return decision


def _compare(
    client: MlflowClient,
    candidate_metrics: dict[str, float],
    x_test: pd.DataFrame,
    y_test: pd.Series,
    config: Config,
) -> Decision:
    metric, margin = config.promotion.metric, config.promotion.margin
    champion = version_by_alias(client, CHAMPION)
    if champion is None:
        return Decision(True, "there is no champion yet")
    if metric not in candidate_metrics:
        return Decision(False, f"the new model has no {metric!r} on this data")
    try:
        uri = registered_model_uri(champion.version)
        champion_score = score_version(uri, x_test, y_test, config.task)[metric]
    except Exception as error:  # fail closed: an untested model never replaces the champion
        return Decision(
            False,
            f"champion v{champion.version} cannot score this data ({error}), so the new model "
            "was not compared: compare them yourself, then `make promote VERSION=<n>`",
        )
    score = candidate_metrics[metric]
    verdict = (
        "beats"
        if is_better(metric, config.task, score, champion_score, margin)
        else "does not beat"
    )
    reason = (
        f"{metric} {score:.4f} {verdict} champion v{champion.version}'s {champion_score:.4f} "
        f"by the margin {margin}"
    )
    return Decision(verdict == "beats", reason)


def score_version(uri: str, x: pd.DataFrame, y: pd.Series, task: Task) -> dict[str, float]:
    """The metrics of the registered version at `uri` on the rows (x, y)."""
    model: Any = mlflow.sklearn.load_model(uri)
    return evaluate(model, x, y, task, plots=False).metrics
