"""Tuning: an Optuna search over the estimator's parameters, then training the best.

Each trial is a nested MLflow run under the study's run, scored by cross-validation
of the training split alone: the held-out split decides promotion, so no trial may see
it. The best parameters are then trained by `train`, on the same split and through the
same gate. A study in a database (`OPTUNA_STORAGE`) is shared by every `tune` process
that names it, on any machine.
https://optuna.readthedocs.io/en/stable/tutorial/10_key_features/004_distributed.html
"""

import logging
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import mlflow
import optuna
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import FrozenTrial, Trial, TrialState
from sklearn.model_selection import KFold, StratifiedKFold
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..config import PROJECT_SLUG, Config, EstimatorConfig, ParamRange
from ..core import data
from ..core.evaluation import GREATER_IS_BETTER, fit_and_evaluate
from ..core.pipeline import build_estimator, build_pipeline
from ..errors import ConfigError, StoreError
from ..settings import DEFAULT_OPTUNA_STORAGE, locations
from ..store import tracking
from ..store.registry import TrainResult

log = logging.getLogger(__name__)

STORAGE_ENV = "OPTUNA_STORAGE"
# Tags that tie the runs to their study and trial.
STUDY_TAG = "optuna_study"
TRIAL_TAG = "optuna_trial"


@dataclass(frozen=True)
class TuneResult:
    """What a `tune` process did, and the model trained from the study's best trial."""

    study: str
    run_id: str
    trials: int
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    trained: TrainResult | None  # None: that trial's model was registered already


# How `tune` trains the best parameters: `train` itself, passed in by the command line
# (a job never imports another), with the tags that tie the run to its trial.
Trainer = Callable[[Config, dict[str, str]], TrainResult]


def storage_url() -> str:
    """The study's database: `OPTUNA_STORAGE`, else the project's optuna.db."""
    return locations().optuna_storage or DEFAULT_OPTUNA_STORAGE


def check_space(config: Config) -> dict[str, ParamRange]:
    """The search space, if it names parameters the estimator has; else say what to change."""
    space = config.tuning.space
    if not space:
        raise ConfigError(
            "tuning.space in config.toml is empty: give each parameter to search a range, "
            "e.g. n_estimators = { low = 50, high = 400 }"
        )
    known = set(build_estimator(config.estimator, config.task).get_params())
    unknown = sorted(set(space) - known)
    if unknown:
        raise ConfigError(
            f"tuning.space names {', '.join(unknown)}, not parameters of "
            f"{config.estimator.name}: use some of {', '.join(sorted(known))}"
        )
    return space


def suggest(trial: Trial, name: str, values: ParamRange) -> Any:
    """Ask the trial for a value of parameter `name` in its range."""
    if values.choices is not None:
        return trial.suggest_categorical(name, values.choices)
    assert values.low is not None  # ParamRange checked both
    assert values.high is not None
    if values.integer:
        step = int(values.step or 1)
        return trial.suggest_int(name, int(values.low), int(values.high), step=step, log=values.log)
    return trial.suggest_float(
        name, float(values.low), float(values.high), step=values.step, log=values.log
    )


def with_params(estimator: EstimatorConfig, params: dict[str, Any]) -> EstimatorConfig:
    """The estimator with a trial's parameters over those of config.toml."""
    return estimator.model_copy(update={"params": {**estimator.params, **params}})


def cross_validate(
    estimator: EstimatorConfig, config: Config, x: pd.DataFrame, y: pd.Series
) -> list[float]:
    """Score `estimator` on each fold of (x, y): the promotion metric, as the gate computes it."""
    folds, seed = config.tuning.folds, config.tuning.seed
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if config.task == "classification"
        else KFold(folds, shuffle=True, random_state=seed)
    )
    scores = []
    for fit_rows, score_rows in splitter.split(x, y):
        model = build_pipeline(estimator, config.task)
        fit = (x.iloc[fit_rows], y.iloc[fit_rows])
        score = (x.iloc[score_rows], y.iloc[score_rows])
        evaluation = fit_and_evaluate(model, fit, score, config.task, plots=False)
        scores.append(evaluation.metrics[config.promotion.metric])
    return scores


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The study database at `url`, or a one-line error naming it (without its password)."""
    try:
        try:
            return rdb_storage(url)
        except IntegrityError:
            # Another process created the same tables at the same moment: they exist now.
            time.sleep(1)
            return rdb_storage(url)
    except (SQLAlchemyError, ValueError, ImportError) as error:
        raise StoreError(
            f"The Optuna storage {shown(url)} cannot be opened ({str(error).splitlines()[0]}): "
            f"check {STORAGE_ENV}"
        ) from None


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage at `url`, with heartbeats: a later process fails a killed one's trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)


def open_study(
    name: str, storage: optuna.storages.BaseStorage, direction: str, seed: int | None
) -> optuna.Study:
    """Create the study, or load it if it exists: every process naming it shares it."""
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction=direction,  # type: ignore[arg-type]
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )


def shown(url: str) -> str:
    """A database URL without its password, fit for logs and tags."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "(an invalid URL)"


class Objective:
    """One trial: parameters from the space, a nested run, the cross-validated score."""

    def __init__(
        self, config: Config, client: MlflowClient, parent: mlflow.ActiveRun, x: pd.DataFrame,
        y: pd.Series, study: str, interruption: "Interruption",
    ) -> None:  # fmt: skip
        self.config, self.client, self.parent, self.x, self.y = config, client, parent, x, y
        self.study, self.interruption = study, interruption

    def __call__(self, trial: Trial) -> float:
        """Score the trial's parameters; its run ends FAILED if the trial does not finish."""
        # The client, not the fluent API: trials may run in threads (`--jobs`).
        run = self.client.create_run(
            self.parent.info.experiment_id,
            run_name=f"trial {trial.number}",
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent.info.run_id,
                STUDY_TAG: self.study,
                TRIAL_TAG: str(trial.number),
            },
        )
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            with self.interruption.objective():
                params = {
                    name: suggest(trial, name, values)
                    for name, values in self.config.tuning.space.items()
                }
                estimator = with_params(self.config.estimator, params)
                scores = cross_validate(estimator, self.config, self.x, self.y)
            mean = sum(scores) / len(scores)
            metric = self.config.promotion.metric
            self.client.log_batch(
                run.info.run_id,
                metrics=[
                    Metric(f"cv_{metric}", mean, 0, 0),
                    Metric(f"cv_{metric}_std", float(pd.Series(scores).std(ddof=0)), 0, 0),
                    Metric("rows_seen", len(self.x), 0, 0),
                ],
                params=[Param(name, str(value)) for name, value in params.items()],
            )
            status = RunStatus.to_string(RunStatus.FINISHED)
            return mean
        finally:
            self.client.set_terminated(run.info.run_id, status)


def progress(metric: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A line per finished trial, with the best score so far."""

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE:
            log.info("Trial %d %s.", trial.number, trial.state.name.lower())
            return
        best = study.best_trial
        log.info(
            "Trial %d: %s %.4f; best %.4f (trial %d) of %d.",
            trial.number, metric, trial.value, best.value, best.number, len(study.trials),
        )  # fmt: skip

    return report


class Interruption:
    """Ctrl-C or SIGTERM: the trial running in this thread fails; between trials, stop.

    Raised anywhere, a KeyboardInterrupt could land in Optuna's own bookkeeping (asking
    for a trial, telling its result) and leave a trial RUNNING forever. So it is raised
    only while a trial's objective runs in the main thread (Optuna then marks the trial
    failed); otherwise the study stops after the trial at hand, and `tune` raises it then.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study, self.requested, self.in_objective = study, False, False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler (it runs in the main thread)."""
        self.requested = True
        if self.in_objective:
            raise KeyboardInterrupt
        self.study.stop()

    @contextmanager
    def objective(self) -> Iterator[None]:
        """Mark the main thread's objective, where the interruption may land."""
        main = threading.current_thread() is threading.main_thread()
        self.in_objective = main
        try:
            if main and self.requested:
                raise KeyboardInterrupt
            yield
        finally:
            if main:
                self.in_objective = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM for the block; raise KeyboardInterrupt after it if asked."""
        previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        if self.requested:
            raise KeyboardInterrupt


def claim_training(storage: optuna.storages.BaseStorage, study: str, trial: int) -> bool:
    """Claim the training of a study's trial, once among all processes sharing the study.

    The claim is a marker study: its name is unique in the storage, so that of two
    processes ending with the same best trial, one creates it and the other is refused.
    """
    try:
        optuna.create_study(study_name=training_marker(study, trial), storage=storage)
    except optuna.exceptions.DuplicatedStudyError:
        return False
    return True


def training_marker(study: str, trial: int) -> str:
    """The name of the marker study of a trial's training."""
    return f"{study}.trained.trial-{trial}"


def tune(
    config: Config, trials: int | None = None, jobs: int = 1, study_name: str | None = None,
    timeout: float | None = None, *, train: Trainer,
) -> TuneResult:  # fmt: skip
    """Run trials on the study, then train its best parameters as `train` does.

    Bad configuration, data or storage fail before any run. Interrupted (Ctrl-C,
    SIGTERM), the running trials fail, the finished ones stay in the study, and
    nothing is trained: `tune` again resumes the study.
    """
    check_space(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # `progress` says what matters
    dataset = data.load(config.data)
    parts = data.split(dataset, config.data, config.task)
    study_name = study_name or PROJECT_SLUG
    storage = open_storage(storage_url())
    study = open_study(study_name, storage, direction(config), shared_seed(config))
    client = tracking.setup()
    before = len(study.trials)
    with mlflow.start_run(run_name=f"tune {study_name}") as parent:
        interruption = Interruption(study)
        objective = Objective(
            config, client, parent, parts.x_train, parts.y_train, study_name, interruption
        )
        search(study, objective, trials, jobs, timeout)
    best = study.best_trial
    tags = {STUDY_TAG: study_name, TRIAL_TAG: str(best.number), "optuna_run_id": parent.info.run_id}
    trained = train_once(storage, study_name, best, config, lambda c: train(c, tags))
    return TuneResult(
        study_name, parent.info.run_id, len(study.trials) - before, best.number,
        float(best.value or 0), best.params, trained,
    )  # fmt: skip


def direction(config: Config) -> str:
    """Optuna's direction for the promotion metric."""
    greater = GREATER_IS_BETTER[config.task][config.promotion.metric]
    return "maximize" if greater else "minimize"


def shared_seed(config: Config) -> int | None:
    """The sampler's seed; none for a study shared through OPTUNA_STORAGE.

    Processes sharing a study sample independently, else they would all try the same
    parameters first.
    """
    return None if locations().optuna_storage else config.tuning.seed


def search(
    study: optuna.Study, objective: "Objective", trials: int | None, jobs: int,
    timeout: float | None,
) -> None:  # fmt: skip
    """The trials, in the study's run: its parameters, then the best trial and the plots."""
    config, metric = objective.config, objective.config.promotion.metric
    mlflow.set_tags({STUDY_TAG: objective.study, "optuna_storage": shown(storage_url())})
    mlflow.log_params({"trials": trials or config.tuning.trials, "jobs": jobs,
                       "folds": config.tuning.folds, "metric": metric})  # fmt: skip
    try:
        with objective.interruption.installed():
            study.optimize(
                objective,
                n_trials=trials or config.tuning.trials,
                timeout=timeout or config.tuning.timeout,
                n_jobs=jobs,
                callbacks=[progress(metric)],
            )
    except KeyboardInterrupt:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    best = study.best_trial
    mlflow.log_params({f"best.{name}": value for name, value in best.params.items()})
    mlflow.log_metrics({f"best_cv_{metric}": float(best.value or 0), "best_trial": best.number})
    log_plots(study)


def train_once(
    storage: optuna.storages.BaseStorage, study: str, best: FrozenTrial, config: Config,
    train: Callable[[Config], TrainResult],
) -> TrainResult | None:  # fmt: skip
    """Train the best trial's parameters, unless another process claimed that trial first."""
    if not claim_training(storage, study, best.number):
        log.info(
            "Trial %d of %s is trained already, or being trained by another process: nothing "
            "to train (if its training failed: optuna delete-study --study-name %s).",
            best.number, study, training_marker(study, best.number),
        )  # fmt: skip
        return None
    best_estimator = with_params(config.estimator, best.params)
    try:
        return train(config.model_copy(update={"estimator": best_estimator}))
    except BaseException:
        # Give the claim back: the next `tune` trains that trial again.
        optuna.delete_study(study_name=training_marker(study, best.number), storage=storage)
        raise


def log_plots(study: optuna.Study) -> None:
    """The study's optimisation history and parameter importances, on its run."""
    from optuna.visualization import matplotlib as plots

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    figures: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history.png": plots.plot_optimization_history
    }
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if len(complete) >= 2 and len(study.best_trial.params) >= 2:
        figures["param_importances.png"] = plots.plot_param_importances
    for name, plot in figures.items():
        axes = plot(study)
        mlflow.log_figure(axes.figure, f"plots/{name}")
