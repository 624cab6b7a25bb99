"""Evaluation: metrics and plots of a fitted model on held-out data."""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics

from ..config import METRIC_TABLE, METRICS, Task

# Views of config.METRIC_TABLE. Whether a larger value is better, by task and metric:
GREATER_IS_BETTER = {
    task: {m.name: m.greater_is_better for m in METRIC_TABLE if m.task == task} for task in METRICS
}
# The values each metric can take: figures clip what they draw to them.
BOUNDS = {m.name: (m.low, m.high) for m in METRIC_TABLE}


@dataclass
class Evaluation:
    """Metrics by name, figures by artifact file name, and the predictions scored."""

    metrics: dict[str, float]
    figures: dict[str, Figure] = field(default_factory=dict)
    predicted: Any = None


def is_better(metric: str, task: Task, candidate: float, reference: float, margin: float) -> bool:
    """Tell whether `candidate` beats `reference`: strictly, and by at least `margin`."""
    improvement = (
        candidate - reference if GREATER_IS_BETTER[task][metric] else reference - candidate
    )
    return improvement > 0 and improvement >= margin


def label_metrics(task: Task, y: Any, predicted: Any, classes: list[Any]) -> dict[str, float]:
    """The task's metrics that predicted labels or values alone give (no ROC AUC)."""
    if task == "regression":
        return _regression(
            np.asarray(y, dtype=float), np.asarray(predicted, dtype=float), False
        ).metrics
    return _classification(np.asarray(y), np.asarray(predicted), None, classes, False).metrics


def fit_and_evaluate(
    model: Any, fit: tuple[pd.DataFrame, pd.Series], score: tuple[pd.DataFrame, pd.Series],
    task: Task, plots: bool = True,
) -> Evaluation:  # fmt: skip
    """Fit `model` on the rows of `fit`, then score it on those of `score`, never seen by the fit.

    What `train` does with the held-out split, `tune` with each fold, `reproduce` again.
    """
    model.fit(*fit)
    return evaluate(model, *score, task, plots=plots)


def evaluate(
    model: Any, x: pd.DataFrame, y: pd.Series, task: Task, plots: bool = True
) -> Evaluation:
    """Score a fitted model; with `plots`, draw the task's figures too."""
    predicted = model.predict(x)
    if task == "regression":
        evaluation = _regression(
            np.asarray(y, dtype=float), np.asarray(predicted, dtype=float), plots
        )
    else:
        probabilities = model.predict_proba(x) if hasattr(model, "predict_proba") else None
        evaluation = _classification(
            np.asarray(y), np.asarray(predicted), probabilities, list(model.classes_), plots
        )
    evaluation.predicted = predicted
    return evaluation


def _classification(
    y: np.ndarray,
    predicted: np.ndarray,
    probabilities: np.ndarray | None,
    classes: list[Any],
    plots: bool,
) -> Evaluation:
    binary = len(classes) == 2
    # Binary: the positive class is classes[1], the one predict_proba scores in column 1.
    average: dict[str, Any] = (
        {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
    )
    scores = {
        "accuracy": metrics.accuracy_score(y, predicted),
        "f1": metrics.f1_score(y, predicted, zero_division=0, **average),
        "precision": metrics.precision_score(y, predicted, zero_division=0, **average),
        "recall": metrics.recall_score(y, predicted, zero_division=0, **average),
    }
    # ROC AUC is defined only with scores and with every class present in y.
    if probabilities is not None and set(np.unique(y)) == set(classes):
        if binary:
            scores["roc_auc"] = metrics.roc_auc_score(y == classes[1], probabilities[:, 1])
        else:
            scores["roc_auc"] = metrics.roc_auc_score(
                y, probabilities, multi_class="ovr", labels=classes
            )
    evaluation = Evaluation({name: float(value) for name, value in scores.items()})
    if plots:
        figure = Figure(figsize=(6, 5), layout="constrained")
        metrics.ConfusionMatrixDisplay.from_predictions(
            y, predicted, labels=classes, ax=figure.subplots()
        )
        evaluation.figures["confusion_matrix.png"] = figure
        if "roc_auc" in scores and probabilities is not None:
            figure = Figure(figsize=(6, 5), layout="constrained")
            axes = figure.subplots()
            for index, label in enumerate(
                classes[1:] if binary else classes, start=1 if binary else 0
            ):
                metrics.RocCurveDisplay.from_predictions(
                    y == label, probabilities[:, index], name=str(label), ax=axes
                )
            evaluation.figures["roc_curve.png"] = figure
    return evaluation


def _regression(y: np.ndarray, predicted: np.ndarray, plots: bool) -> Evaluation:
    scores = {
        "rmse": metrics.root_mean_squared_error(y, predicted),
        "mae": metrics.mean_absolute_error(y, predicted),
        "r2": metrics.r2_score(y, predicted),
    }
    evaluation = Evaluation({name: float(value) for name, value in scores.items()})
    if plots:
        for kind, name in [
            ("actual_vs_predicted", "predicted_vs_actual.png"),
            ("residual_vs_predicted", "residuals.png"),
        ]:
            figure = Figure(figsize=(6, 5), layout="constrained")
            metrics.PredictionErrorDisplay.from_predictions(
                y, predicted, kind=kind, ax=figure.subplots()
            )
            evaluation.figures[name] = figure
    return evaluation
