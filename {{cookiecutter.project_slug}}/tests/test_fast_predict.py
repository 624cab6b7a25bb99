"""The fast path predicts exactly what scikit-learn predicts: every label, every value.

Both tasks, whatever this project's: thousands of rows with missing values and unseen
categories, and rows placed exactly at, and one float32 step either side of, the
trees' split thresholds.
"""

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import TARGET, make_frame
from scipy import sparse
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline

from {{ cookiecutter.module_name }}.config import EstimatorConfig, Task
from {{ cookiecutter.module_name }}.core import fast_predict as fast
from {{ cookiecutter.module_name }}.core.pipeline import build_pipeline

FORESTS = {
    "classification": [
        ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 60, "random_state": 0}),
        ("sklearn.ensemble.ExtraTreesClassifier", {"n_estimators": 30, "random_state": 0}),
    ],
    "regression": [
        ("sklearn.ensemble.RandomForestRegressor", {"n_estimators": 60, "random_state": 0}),
        ("sklearn.ensemble.ExtraTreesRegressor", {"n_estimators": 30, "random_state": 0}),
    ],
}
# Estimators without a fast path of their own: the preprocessing's still applies.
OTHERS = {
    "classification": ("sklearn.linear_model.LogisticRegression", {"max_iter": 500}),
    "regression": ("sklearn.linear_model.Ridge", {}),
}
CASES = [(task, *estimator) for task, forests in FORESTS.items() for estimator in forests]


def fitted(task: Task, name: str, params: dict[str, Any]) -> Pipeline:
    frame = make_frame(task, rows=400).dropna(subset=[TARGET])
    pipeline = build_pipeline(EstimatorConfig(name=name, params=params), task)
    return pipeline.fit(frame.drop(columns=TARGET), frame[TARGET])


def sweep(task: Task) -> pd.DataFrame:
    """3000 new rows: other values, missing ones, and a category never seen in training."""
    rows = make_frame(task, rows=3000, seed=7).drop(columns=TARGET)
    rows.loc[::11, "colour"] = "purple"
    rows.loc[::13, "size"] = np.nan
    rows[["count"]] = rows[["count"]].astype("float64")
    return rows


def at_thresholds(pipeline: Pipeline, rows: pd.DataFrame) -> np.ndarray:
    """Preprocessed rows with one feature set at a split threshold, or a float32 step off it."""
    features = pipeline[:-1].transform(rows)
    features = features.toarray() if sparse.issparse(features) else np.asarray(features)
    rng = np.random.default_rng(0)
    placed = []
    for tree in pipeline[-1].estimators_[:30]:
        split = tree.tree_.feature >= 0
        for feature, threshold in zip(
            tree.tree_.feature[split][:20], tree.tree_.threshold[split][:20], strict=True
        ):
            at = np.float32(threshold)
            for value in (at, np.nextafter(at, np.float32(-np.inf)), np.nextafter(at, np.inf)):
                row = features[rng.integers(len(features))].copy()
                row[feature] = value
                placed.append(row)
    return np.array(placed)


@pytest.mark.parametrize(("task", "name", "params"), CASES)
def test_the_fast_path_gives_the_same_labels_and_values(
    task: Task, name: str, params: dict[str, Any]
) -> None:
    pipeline = fitted(task, name, params)
    rows = sweep(task)

    predict = fast.fast_predict(pipeline, rows.head(5))

    assert predict != pipeline.predict
    assert np.array_equal(predict(rows), pipeline.predict(rows))
    for size in (1, 16):
        assert np.array_equal(predict(rows.head(size)), pipeline.predict(rows.head(size)))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_numeric_columns_only_and_columns_out_of_order(task: Task) -> None:
    frame = make_frame(task, rows=400).dropna(subset=[TARGET]).drop(columns="colour")
    name, params = FORESTS[task][0]
    pipeline = build_pipeline(EstimatorConfig(name=name, params=params), task)
    pipeline.fit(frame.drop(columns=TARGET), frame[TARGET])
    rows = sweep(task).drop(columns="colour")
    predict = fast.fast_predict(pipeline, rows.head(5))
    shuffled = rows[["count", "size", "weight"]]

    assert np.array_equal(predict(rows), pipeline.predict(rows))
    assert np.array_equal(predict(shuffled), pipeline.predict(shuffled))


def test_a_missing_column_is_an_error_as_in_scikit_learn() -> None:
    pipeline = fitted("classification", *FORESTS["classification"][0])
    rows = sweep("classification").drop(columns="size")
    predict = fast.fast_predict(pipeline, sweep("classification").head(5))

    with pytest.raises(ValueError, match="columns are missing"):
        pipeline.predict(rows)
    with pytest.raises(ValueError, match="columns are missing"):
        predict(rows)


@pytest.mark.parametrize(("task", "name", "params"), CASES)
def test_the_trees_give_the_same_bits_at_their_thresholds(
    task: Task, name: str, params: dict[str, Any]
) -> None:
    pipeline = fitted(task, name, params)
    forest = pipeline[-1]
    placed = at_thresholds(pipeline, sweep(task))
    mean, predict = fast.tree_mean(forest), fast.fast_forest(forest)
    assert mean is not None
    assert predict is not None

    expected = forest.predict_proba(placed) if task == "classification" else forest.predict(placed)

    assert len(placed) > 1000
    assert np.array_equal(mean(placed), expected)
    assert np.array_equal(predict(placed), forest.predict(placed))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_other_estimators_keep_their_own_predict_after_the_fast_preprocessing(
    task: Task,
) -> None:
    pipeline = fitted(task, *OTHERS[task])
    rows = sweep(task)

    predict = fast.fast_predict(pipeline, rows.head(5))

    assert fast.fast_forest(pipeline[-1]) is None
    assert np.array_equal(predict(rows), pipeline.predict(rows))


def test_missing_values_reach_the_trees_as_the_forest_lets_them() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = x[:, 0] + np.where(np.isnan(x[:, 1]), 1.0, 0.0)
    x[::5, 1] = np.nan
    forest = RandomForestRegressor(n_estimators=20, random_state=0).fit(x, y)
    predict = fast.fast_forest(forest)
    assert predict is not None

    assert np.array_equal(predict(x), forest.predict(x))
    with pytest.raises(ValueError, match="infinity"):
        predict(np.full((1, 4), np.inf))


def test_a_subclass_of_a_forest_keeps_its_own_predict() -> None:
    class Shifted(RandomForestRegressor):
        def predict(self, X: Any) -> Any:  # noqa: N803 (scikit-learn's name)
            return super().predict(X) + 1.0

    x = np.random.default_rng(0).normal(size=(100, 3))
    model = Shifted(n_estimators=5, random_state=0).fit(x, x[:, 0])

    assert fast.fast_forest(model) is None
    assert np.array_equal(fast.fast_predict(model, pd.DataFrame(x))(x), model.predict(x))


def test_a_fast_path_that_differs_on_the_example_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = fitted("regression", *FORESTS["regression"][0])
    rows = sweep("regression")
    broken = fast.fast_forest(pipeline[-1])
    assert broken is not None
    monkeypatch.setattr(fast, "fast_forest", lambda _: lambda x: broken(x) + 1e-12)

    with caplog.at_level(logging.INFO, logger=fast.__name__):
        predict = fast.fast_predict(pipeline, rows.head(5))

    assert predict == pipeline.predict
    assert "differs" in caplog.text


def test_the_log_names_the_path_that_serves(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = fitted("classification", *FORESTS["classification"][0])
    rows = sweep("classification")

    with caplog.at_level(logging.INFO, logger=fast.__name__):
        fast.fast_predict(pipeline, rows.head(5))
        fast.fast_predict(pipeline[-1], None)

    assert "fast path (RandomForestClassifier)" in caplog.text
    assert "No input example" in caplog.text
