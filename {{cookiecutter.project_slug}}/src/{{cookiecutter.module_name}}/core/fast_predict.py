"""Fast predict: the fitted pipeline without scikit-learn's per-call overhead.

Most of a small `predict` call of the default model is not the model: a forest runs
one joblib task per tree, and the ColumnTransformer checks its input and dispatches
its columns in more tasks, costs paid whether the call has one row or hundreds. For
the structures it knows, `fast_predict` calls the same fitted objects directly and in
the same order: the ColumnTransformer's own fitted transformers on the arrays of their
own columns, then each tree's own `tree_.predict`, summed and averaged as the forest sums and
averages them. The arithmetic is scikit-learn's, so the results are the same bits
(the project's tests sweep thousands of rows for both tasks). Any other step or
estimator keeps its own `transform` or `predict`, so any model you configure works.

The fast path is compared with the model's own `predict` on the model's input example
when the model is loaded, and is not used if anything differs: the log says which path
serves. Libraries that compile trees (treelite, ONNX Runtime) were not chosen: the
serving image has no room for them under its 300 MB budget, ONNX's float32 thresholds
move decisions near split points, and the direct call already leaves the trees a
small part of a request (see benchmarks/RESULTS.md).
"""

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.utils import check_array, get_tags

log = logging.getLogger(__name__)

Transform = Callable[[Any], Any]
Predict = Callable[[Any], Any]

# Forests whose `predict` is the mean of their trees' outputs, summed in tree order
# (exact classes only: a subclass may predict otherwise).
FORESTS = (RandomForestClassifier, ExtraTreesClassifier, RandomForestRegressor, ExtraTreesRegressor)


def fast_predict(model: Any, example: pd.DataFrame | None) -> Predict:
    """Return a predict for `model` without the per-call overhead where it can, else its own.

    `example` (the model's input example) checks the fast path against `model.predict`.
    """
    own: Predict = model.predict
    steps = [step for _, step in model.steps] if type(model) is Pipeline else [model]
    fast_steps = [fast_transform(step) for step in steps[:-1]]
    fast_final = fast_forest(steps[-1])
    if fast_final is None and not any(fast_steps):
        log.info("Predicting with scikit-learn's own predict: no fast path for this model.")
        return own
    transforms = [fast or step.transform for fast, step in zip(fast_steps, steps, strict=False)]
    final = fast_final or steps[-1].predict

    def predict(frame: Any) -> Any:
        for transform in transforms:
            frame = transform(frame)
        return final(frame)

    if example is None:
        log.warning("No input example to check the fast path with: scikit-learn's predict.")
        return own
    try:
        same = np.array_equal(np.asarray(predict(example)), np.asarray(own(example)))
    except Exception as error:  # any surprise: the model's own predict, which knows best
        log.warning(
            "The fast path failed on the input example (%s): scikit-learn's predict.", error
        )
        return own
    if not same:
        log.warning("The fast path differs from predict on the input example: not used.")
        return own
    log.info("Predicting with the fast path (%s).", type(steps[-1]).__name__)
    return predict


def fast_transform(step: Any) -> Transform | None:
    """A ColumnTransformer's transform, its fitted transformers called directly; None if unsure."""
    if type(step) is not ColumnTransformer or not hasattr(step, "feature_names_in_"):
        return None
    # A configured output container (pandas, polars) changes what transform returns.
    if sklearn.get_config()["transform_output"] != "default" or getattr(
        step, "_sklearn_output_config", None
    ):
        return None
    parts = []
    for _, transformer, columns in step.transformers_:
        if isinstance(transformer, str):
            if transformer != "drop":  # "passthrough" copies columns: leave it to sklearn
                return None
            continue
        if len(columns):
            parts.append((transformer, list(columns)))
    if not parts:
        return None

    needed = {column for _, columns in parts for column in columns}

    def transform(frame: pd.DataFrame) -> Any:
        if not needed <= set(frame.columns):
            raise ValueError(
                f"columns are missing: {sorted(map(str, needed - set(frame.columns)))}"
            )
        outputs = []
        with warnings.catch_warnings():
            # Each transformer gets the array of its columns, selected by name here: a
            # DataFrame would cost more to check than the transform itself. Fitted on a
            # DataFrame, the transformers would warn that an array has no column names.
            warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
            for transformer, columns in parts:
                values = frame if list(frame.columns) == columns else frame.reindex(columns=columns)
                outputs.append(transformer.transform(values.to_numpy()))
        if step.sparse_output_:
            return sparse.hstack(
                [check_array(out, accept_sparse=True, ensure_all_finite=False) for out in outputs]
            ).tocsr()
        return np.hstack([out.toarray() if sparse.issparse(out) else out for out in outputs])

    return transform


def fast_forest(estimator: Any) -> Predict | None:
    """A forest's predict, its trees called directly in order; None for any other estimator."""
    mean = tree_mean(estimator)
    if mean is None:
        return None
    if hasattr(estimator, "classes_"):
        classes = estimator.classes_
        return lambda features: classes.take(np.argmax(mean(features), axis=1), axis=0)
    return mean


def tree_mean(estimator: Any) -> Predict | None:
    """A forest's mean of its trees (`predict_proba`, or `predict` for regression), or None."""
    if type(estimator) not in FORESTS or estimator.n_outputs_ != 1:
        return None
    trees = [tree.tree_ for tree in estimator.estimators_]
    # A regression tree's one output, or a classification tree's class fractions.
    width = getattr(estimator, "n_classes_", 1)
    # Missing values reach the trees only where the forest lets them (dense input, trees
    # that learnt where missing values go); elsewhere a NaN is an error, as in `predict`.
    takes_nan = (
        get_tags(estimator.estimators_[0]).input_tags.allow_nan
        and getattr(estimator, "monotonic_cst", None) is None
    )

    def mean(features: Any) -> Any:
        # The forest's own input conversion: float32, CSR for a sparse matrix.
        finite = True if sparse.issparse(features) or not takes_nan else "allow-nan"
        x = check_array(features, dtype=np.float32, accept_sparse="csr", ensure_all_finite=finite)
        total = np.zeros((x.shape[0], width), dtype=np.float64)
        # Summed tree by tree, in order, then divided: the forest's own arithmetic.
        for tree in trees:
            total += tree.predict(x)[:, :width]
        total /= len(trees)
        return total if hasattr(estimator, "classes_") else total[:, 0]

    return mean
