"""`tune`: trials as nested runs, scored on the training split only; the best trained and gated."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run
from pydantic import ValidationError

from {{ cookiecutter.module_name }}.config import (
    PROJECT_SLUG,
    Config,
    ParamRange,
    TuningConfig,
)
from {{ cookiecutter.module_name }}.core import data
from {{ cookiecutter.module_name }}.errors import ConfigError, StoreError
from {{ cookiecutter.module_name }}.jobs import tune
from {{ cookiecutter.module_name }}.jobs.train import train
from {{ cookiecutter.module_name }}.settings import tracking_uri

SPACE = {"n_estimators": ParamRange(low=5, high=20), "max_depth": ParamRange(low=2, high=6)}


@dataclass
class Store:
    """A tracking store and a study storage of their own, so that no other test sees them."""

    folder: Path

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.folder / 'optuna.db'}"

    def study(self, name: str = PROJECT_SLUG) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.optuna_url)

    def runs(self) -> list[Run]:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(PROJECT_SLUG)
        return [] if experiment is None else client.search_runs([experiment.experiment_id])

    def versions(self) -> list[str]:
        client = MlflowClient()
        return [str(v.version) for v in client.search_model_versions(f"name = '{PROJECT_SLUG}'")]


@contextmanager
def own_store(folder: Path, optuna_storage: str | None = None) -> Iterator[Store]:
    """Point MLflow and Optuna at `folder` for the block, then MLflow back where it was."""
    store = Store(folder)
    previous = tracking_uri()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv(tune.STORAGE_ENV, optuna_storage or store.optuna_url)
        mlflow.set_tracking_uri(uri)
        try:
            yield store
        finally:
            mlflow.set_tracking_uri(previous)  # as the other tests expect it


def small(config: Config, **tuning: Any) -> Config:
    """A study of a few trials over small forests, two folds."""
    settings = TuningConfig(**{"trials": 3, "folds": 2, "space": SPACE, **tuning})
    return config.model_copy(update={"tuning": settings})


@dataclass
class Tuned:
    store: Store
    result: tune.TuneResult
    fitted: list[pd.Index]
    scored: list[pd.Index]


@pytest.fixture(scope="module")
def tuned(tracking_store: str, config: Config, tmp_path_factory: pytest.TempPathFactory) -> Tuned:
    """A study of three trials, with the rows each trial's models were fitted on and scored."""
    fitted: list[pd.Index] = []
    scored: list[pd.Index] = []

    class Recording:
        def __init__(self, model: Any) -> None:
            self.model = model

        def fit(self, x: pd.DataFrame, y: pd.Series) -> "Recording":
            fitted.append(x.index)
            self.model.fit(x, y)
            return self

        def __getattr__(self, name: str) -> Any:
            attribute = getattr(self.model, name)
            if name in {"predict", "predict_proba"}:
                return lambda x: (scored.append(x.index), attribute(x))[1]
            return attribute

    original = tune.build_pipeline
    folder = tmp_path_factory.mktemp("tune")
    with own_store(folder), pytest.MonkeyPatch.context() as patch:
        patch.setattr(tune, "build_pipeline", lambda *args: Recording(original(*args)))
        result = tune.tune(small(config), train=train)
    return Tuned(Store(folder), result, fitted, scored)


@pytest.mark.both_tasks
def test_each_trial_is_a_nested_run_with_its_parameters_and_score(
    tuned: Tuned, config: Config
) -> None:
    with own_store(tuned.store.folder):
        runs = tuned.store.runs()
        plots = MlflowClient().list_artifacts(tuned.result.run_id, "plots")
    parent = next(r for r in runs if r.info.run_id == tuned.result.run_id)
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    metric = f"cv_{config.promotion.metric}"
    best = max if tune.GREATER_IS_BETTER[config.task][config.promotion.metric] else min

    assert parent.data.tags[tune.STUDY_TAG] == PROJECT_SLUG
    assert sorted(int(r.data.tags[tune.TRIAL_TAG]) for r in trials) == [0, 1, 2]
    assert all(set(r.data.params) == set(SPACE) for r in trials)
    assert all(r.info.status == "FINISHED" and metric in r.data.metrics for r in trials)
    assert tuned.result.best_value == best(r.data.metrics[metric] for r in trials)
    assert parent.data.metrics[f"best_{metric}"] == tuned.result.best_value
    assert {Path(a.path).name for a in plots} == {
        "optimization_history.png",
        "param_importances.png",
    }


def test_the_best_trial_is_trained_registered_and_gated(tuned: Tuned) -> None:
    trained = tuned.result.trained
    assert trained is not None
    with own_store(tuned.store.folder):
        client = MlflowClient()
        run = client.get_run(trained.run_id)
        version = client.get_model_version(PROJECT_SLUG, trained.version)

    assert run.data.tags[tune.TRIAL_TAG] == str(tuned.result.best_trial)
    assert run.data.tags["optuna_run_id"] == tuned.result.run_id
    assert {k: run.data.params[f"estimator.{k}"] for k in SPACE} == {
        k: str(v) for k, v in tuned.result.best_params.items()
    }
    assert version.tags["promotion"] == trained.reason


def test_no_trial_sees_the_held_out_rows(tuned: Tuned, config: Config) -> None:
    parts = data.split(data.load(config.data), config.data, config.task)
    fitted = pd.Index([]).append(tuned.fitted)
    scored = pd.Index([]).append(tuned.scored)

    assert len(tuned.fitted) == 3 * 2  # a model per fold of each trial
    assert fitted.intersection(parts.x_test.index).empty
    assert scored.intersection(parts.x_test.index).empty
    assert set(scored) == set(parts.x_train.index)  # each training row scored in its fold


def test_a_new_tune_resumes_the_study(tuned: Tuned, config: Config) -> None:
    with own_store(tuned.store.folder) as store:
        again = tune.tune(small(config, trials=2), train=train)
        study = store.study()

    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert again.trials == 2
    # The best trial is trained once: again only if this tune found a better one.
    assert (again.trained is None) == (again.best_trial == tuned.result.best_trial)


def test_a_trial_is_claimed_for_training_once(tmp_path: Path) -> None:
    storage = tune.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")

    claims = [tune.claim_training(storage, "study", 3) for _ in range(2)]

    assert claims == [True, False]
    assert tune.claim_training(storage, "study", 4)


def test_an_interrupted_tune_keeps_its_finished_trials_and_registers_nothing(
    tracking_store: str, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = tune.cross_validate

    def interrupted_at_the_second(*args: Any) -> list[float]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(tune, "cross_validate", interrupted_at_the_second)
    with own_store(tmp_path) as store:
        with pytest.raises(KeyboardInterrupt):
            tune.tune(small(config), train=train)
        states = [t.state.name for t in store.study().trials]
        statuses = sorted(r.info.status for r in store.runs())
        versions = store.versions()

    assert states == ["COMPLETE", "FAIL"]
    assert statuses == ["FAILED", "FINISHED", "KILLED"]  # a trial's, a trial's, the study's
    assert versions == []


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({"space": {}}, "tuning.space in config.toml is empty"),
        ({"space": {"n_trees": ParamRange(low=1, high=5)}}, "tuning.space names n_trees, not"),
    ],
)
def test_a_bad_space_is_named_before_anything_runs(
    tracking_store: str, config: Config, tmp_path: Path, tuning: dict[str, Any], message: str
) -> None:
    with own_store(tmp_path) as store:
        with pytest.raises(ConfigError, match=message):
            tune.tune(small(config, **tuning), train=train)
        assert store.runs() == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"low": 5, "high": 5}, "low \\(5\\) must be below high \\(5\\)"),
        ({"low": 0, "high": 1, "log": True}, "a log scale needs low above 0"),
        ({"low": 1}, "give low and high, or choices"),
        ({"choices": []}, "choices is empty"),
    ],
)
def test_an_invalid_range_is_refused_when_read(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ParamRange(**values)


def test_an_unreachable_storage_is_named_and_nothing_runs(
    tracking_store: str, config: Config, tmp_path: Path
) -> None:
    url = "postgresql://tuner:secret@127.0.0.1:9/studies"
    with own_store(tmp_path, optuna_storage=url) as store:
        with pytest.raises(
            StoreError, match=r"Optuna storage .*127\.0\.0\.1:9/studies cannot be"
        ) as error:
            tune.tune(small(config), train=train)
        assert store.runs() == []

    assert "secret" not in str(error.value)
