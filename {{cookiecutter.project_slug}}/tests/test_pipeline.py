import pandas as pd
import pytest
from conftest import TARGET, make_frame

from {{ cookiecutter.module_name }}.config import Config, EstimatorConfig
from {{ cookiecutter.module_name }}.core.data import load, split
from {{ cookiecutter.module_name }}.core.pipeline import EstimatorError, build_pipeline


@pytest.mark.both_tasks
def test_pipeline_fits_numeric_categorical_and_missing_values(config: Config) -> None:
    parts = split(load(config.data), config.data, config.task)
    model = build_pipeline(config.estimator, config.task).fit(parts.x_train, parts.y_train)

    predictions = model.predict(parts.x_test)

    assert len(predictions) == len(parts.x_test)
    if config.task == "classification":
        assert set(predictions) <= {"yes", "no"}


def test_unknown_category_is_ignored_not_an_error(config: Config) -> None:
    frame = make_frame(config.task).dropna(subset=[TARGET])
    model = build_pipeline(config.estimator, config.task)
    model.fit(frame.drop(columns=TARGET), frame[TARGET])

    unseen = frame.drop(columns=TARGET).head(2).assign(colour="ultraviolet")

    assert len(model.predict(unseen)) == 2


def test_estimator_path_that_does_not_import_says_so(config: Config) -> None:
    with pytest.raises(EstimatorError, match="full import path"):
        build_pipeline(EstimatorConfig(name="sklearn.ensemble.NoSuchForest"), config.task)


def test_bad_estimator_parameter_is_named(config: Config) -> None:
    estimator = config.estimator.model_copy(update={"params": {"no_such_param": 1}})

    with pytest.raises(EstimatorError, match="no_such_param"):
        build_pipeline(estimator, config.task)


@pytest.mark.parametrize(
    ("task", "estimator"),
    [
        ("classification", "sklearn.linear_model.LinearRegression"),
        ("regression", "sklearn.linear_model.LogisticRegression"),
    ],
)
def test_estimator_of_the_wrong_task_is_refused(task: str, estimator: str) -> None:
    with pytest.raises(EstimatorError, match=f"not a {task} estimator"):
        build_pipeline(EstimatorConfig(name=estimator), task)  # type: ignore[arg-type]


def test_string_labels_round_trip() -> None:
    frame = make_frame("classification").dropna(subset=[TARGET])
    model = build_pipeline(
        EstimatorConfig(name="sklearn.linear_model.LogisticRegression"), "classification"
    )
    model.fit(frame.drop(columns=TARGET), frame[TARGET])

    assert list(model.classes_) == ["no", "yes"]
    assert isinstance(model.predict(frame.drop(columns=TARGET).head(1))[0], str)
    assert pd.Series(model.predict(frame.drop(columns=TARGET))).isin(["no", "yes"]).all()
