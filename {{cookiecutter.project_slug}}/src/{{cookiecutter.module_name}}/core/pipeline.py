"""The model: preprocessing and the estimator named in the configuration, in one Pipeline."""

import importlib
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ..config import EstimatorConfig, Task
from ..errors import EstimatorError


def build_estimator(config: EstimatorConfig, task: Task) -> BaseEstimator:
    """Import the estimator class by its path and construct it with its parameters."""
    module_name, _, class_name = config.name.rpartition(".")
    try:
        estimator_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise EstimatorError(
            f"Estimator {config.name!r} cannot be imported: give its full import path, "
            "e.g. 'sklearn.ensemble.RandomForestClassifier'."
        ) from None
    try:
        estimator = estimator_class(**config.params)
    except TypeError as error:
        raise EstimatorError(
            f"Estimator parameters {config.params} do not fit {config.name}: {error}"
        ) from None
    fits_task = is_classifier(estimator) if task == "classification" else is_regressor(estimator)
    if not fits_task:
        raise EstimatorError(
            f"{config.name} is not a {task} estimator: choose one, or change `task`."
        )
    return estimator


def build_pipeline(config: EstimatorConfig, task: Task) -> Pipeline:
    """Impute and scale numeric columns, impute and one-hot encode the others, then estimate."""
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        # Categories never seen in training are encoded as all zeros, not an error.
        OneHotEncoder(handle_unknown="ignore"),
    )
    preprocess = ColumnTransformer(
        [
            ("numeric", numeric, make_column_selector(dtype_include=np.number)),
            ("categorical", categorical, make_column_selector(dtype_exclude=np.number)),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("estimator", build_estimator(config, task))])


def estimator_params(pipeline: Pipeline) -> dict[str, Any]:
    """Return the estimator's effective parameters, to log on the run."""
    params: dict[str, Any] = pipeline.named_steps["estimator"].get_params()
    return params
