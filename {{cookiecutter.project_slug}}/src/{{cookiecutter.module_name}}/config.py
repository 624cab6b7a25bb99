"""Configuration: one typed object, read once from `config.toml`, then the environment."""

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

# The src layout puts the project root two levels above this package.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = PROJECT_ROOT / "config.toml"
PROJECT_SLUG = "{{ cookiecutter.project_slug }}"
ENV_PREFIX = "{{ cookiecutter.module_name | upper }}_"
# Where Spark executors get a model's libraries (mlflow.pyfunc.spark_udf's env_manager).
SPARK_ENV_MANAGERS = ("local", "uv", "virtualenv", "conda")
# Written beside an exported model: the registered name and version it was exported from.
MODEL_INFO_FILE = "registered_model.json"

Task = Literal["classification", "regression"]


class Section(BaseModel):
    """A table of `config.toml`: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class DataConfig(Section):
    """Where the data is and how it is split."""

    path: Path
    target: str
    test_size: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42

    @field_validator("path")
    @classmethod
    def _anchor(cls, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path


class EstimatorConfig(Section):
    """The scikit-learn estimator, by import path, and its constructor arguments."""

    name: str
    params: dict[str, Any] = {}


class PromotionConfig(Section):
    """How a new model version is compared with the champion."""

    metric: str
    margin: float = Field(default=0.0, ge=0)
    # What the gate does with a run that could not be rebuilt (see `versioning.py`).
    unreproducible: Literal["warn", "refuse"] = "warn"


@dataclass(frozen=True)
class Metric:
    """What the project knows of a metric: its task, direction, range, and what it needs."""

    name: str
    task: Task
    greater_is_better: bool
    low: float
    high: float
    # Computed from predicted probabilities: `monitor`, which has labels alone, cannot.
    needs_probabilities: bool = False


# The one table of metrics: each training run logs its task's (`core/evaluation.py`
# computes them); the gate, tuning, monitoring and the report read their facts here.
METRIC_TABLE = (
    Metric("accuracy", "classification", True, 0.0, 1.0),
    Metric("f1", "classification", True, 0.0, 1.0),
    Metric("precision", "classification", True, 0.0, 1.0),
    Metric("recall", "classification", True, 0.0, 1.0),
    Metric("roc_auc", "classification", True, 0.0, 1.0, needs_probabilities=True),
    Metric("rmse", "regression", False, 0.0, math.inf),
    Metric("mae", "regression", False, 0.0, math.inf),
    Metric("r2", "regression", True, -math.inf, 1.0),
)
# The metrics each training run logs, by task.
METRICS = {
    task: tuple(metric.name for metric in METRIC_TABLE if metric.task == task)
    for task in ("classification", "regression")
}
# The sample dataset's place: `data` writes it there, and nowhere else unless asked.
SAMPLE_PATH = PROJECT_ROOT / "data" / "sample.csv"
# Metrics `monitor` can compute from predicted labels or values alone, by task.
LABEL_METRICS = {
    task: tuple(m.name for m in METRIC_TABLE if m.task == task and not m.needs_probabilities)
    for task in METRICS
}


class MonitoringConfig(Section):
    """When `monitor` flags a window of served traffic, and when it recommends retraining."""

    # Rows ("500") or a duration ("30min", "1h", "1d") per window.
    window: str = "1h"
    drift_threshold: float = Field(default=0.2, gt=0)
    # Drift that recommends retraining alone, with no other window to confirm it. Every
    # row shifted by one standard deviation of the training data gives a PSI of 0.93, a
    # fifth of the rows in a category training never saw about 1.5; chance gives 100
    # rows about 0.09 (the PSI conventionally called large is 0.25).
    severe_drift_threshold: float = Field(default=1.0, gt=0)
    # The metric compared with its held-out value once outcomes arrive; by default
    # the promotion metric, or the task's first (a label cannot give ROC AUC).
    metric: str | None = None
    # Relative: 0.1 flags a window whose metric is 10 % worse than on the held-out data.
    # By default 0.1 for classification, 0.2 for regression (whose errors vary more).
    metric_tolerance: float | None = Field(default=None, ge=0)
    # Relative, like metric_tolerance: a window this much worse, on 100 outcomes or more,
    # recommends retraining alone. By default 0.3 for classification (three times the
    # flag; on 100 outcomes a 30 % fall from 0.5 is three standard errors, not chance)
    # and 0.5 for regression.
    severe_tolerance: float | None = Field(default=None, ge=0)
    # Retraining is recommended when at least `flagged` of the last `of` windows are,
    # or when one of them is severe.
    flagged: int = Field(default=2, ge=1)
    of: int = Field(default=5, ge=1)

    @property
    def tolerance(self) -> float:
        """The relative metric tolerance (its default is set with the task, by `Config`)."""
        return 0.1 if self.metric_tolerance is None else self.metric_tolerance

    @property
    def severe(self) -> float:
        """The relative severe tolerance (its default is set with the task, by `Config`)."""
        return 0.3 if self.severe_tolerance is None else self.severe_tolerance

    @model_validator(mode="after")
    def _severe_beyond_flagged(self) -> "MonitoringConfig":
        """Severe thresholds no lower than those that flag: severe implies flagged."""
        if self.severe_drift_threshold < self.drift_threshold:
            raise ValueError(
                f"severe_drift_threshold ({self.severe_drift_threshold:g}) must be at least "
                f"drift_threshold ({self.drift_threshold:g})"
            )
        if self.severe_tolerance is not None and (problem := self.severe_tolerance_problem()):
            raise ValueError(problem)
        return self

    def severe_tolerance_problem(self, section: str = "") -> str | None:
        """Why severe_tolerance is below metric_tolerance, if it is: severe implies flagged.

        `section` prefixes the keys as the configuration file names them ("monitoring.").
        """
        if self.severe >= self.tolerance:
            return None
        return (
            f"{section}severe_tolerance ({self.severe:g}) must be at least "
            f"{section}metric_tolerance ({self.tolerance:g})"
        )

    @field_validator("window")
    @classmethod
    def _window(cls, window: str) -> str:
        if not window.isdigit():
            import pandas as pd  # here: the configuration is read before pandas is needed

            try:
                pd.Timedelta(window)
            except ValueError:
                raise ValueError(
                    f"window {window!r} is neither a row count (500) nor a duration (1h, 30min)"
                ) from None
        return window


class ParamRange(Section):
    """The values `tune` tries for one parameter: from `low` to `high`, or `choices`.

    Integer bounds give integers; `log` samples on a log scale, `step` on a grid.
    """

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(default=None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> "ParamRange":
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low and high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high, or choices")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log scale needs low above 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        return self

    @property
    def integer(self) -> bool:
        """Whether the range is of integers (both bounds, and the step if any, are)."""
        bounds = (self.low, self.high, self.step if self.step is not None else 1)
        return all(isinstance(bound, int) and not isinstance(bound, bool) for bound in bounds)


class TuningConfig(Section):
    """The hyperparameter search of `tune`: its space, its budget and its seed."""

    # Trials per `tune` process; several processes on one study add up.
    trials: int = Field(default=20, gt=0)
    # Seconds per `tune` process, if set: it stops starting trials then.
    timeout: float | None = Field(default=None, gt=0)
    # Cross-validation folds of the training split that score each trial.
    folds: int = Field(default=3, ge=2)
    seed: int = 42
    space: dict[str, ParamRange] = {}


class BatchConfig(Section):
    """What `predict` carries into its output, and how many rows it reads at a time."""

    # Input columns copied into each output row beside its prediction; empty: every
    # column the model does not take (ids, and the target if the file has it).
    id_columns: list[str] = []
    # Rows read, scored and written at a time by the local engine: memory grows
    # with this, never with the input's size.
    chunk_rows: int = Field(default=100_000, gt=0)


# A duration as `rollout` takes it: "90" or "90s", "500ms", "2min", "1h".
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}


def duration_s(text: str) -> float:
    """Seconds in a duration ("90", "90s", "500ms", "2min", "1h"); ConfigError if it is none."""
    match = DURATION.match(text)
    if match is None:
        raise ConfigError(f"{text!r} is not a duration: write 90s, 500ms, 2min or 1h.")
    return float(match[1]) * UNIT_SECONDS[match[2] or "s"]


class RolloutConfig(Section):
    """`rollout`: the canary's steps, and the guardrails it must pass at each."""

    # Percent of the requests the canary answers, step by step; the last is 100.
    steps: list[float] = [5, 25, 50, 100]
    # How long each step lasts before the guardrails judge it.
    interval: str = "60s"
    # How long the servers may take to load the canary and apply a new share.
    settle_timeout: str = "2min"
    # Canary requests a step needs to be judged: fewer, and the rollout stops.
    min_requests: int = Field(default=50, ge=1)
    # The canary's share of failed requests may exceed the champion's by this much.
    max_error_increase: float = Field(default=0.01, ge=0, le=1)
    # Its p99 batch time fails when above both this multiple of the champion's...
    max_latency_ratio: float = Field(default=1.5, ge=1)
    # ...and the champion's plus this margin (which keeps noise on fast models out).
    latency_margin_ms: float = Field(default=10.0, ge=0)
    # Classification: the least share of rows where it predicts the champion's label.
    min_agreement: float = Field(default=0.9, ge=0, le=1)
    # Regression: the largest sum |canary - champion| / sum |champion| over those rows.
    max_relative_delta: float = Field(default=0.2, ge=0)
    # The largest PSI of its predictions against the champion's on the same rows.
    max_prediction_psi: float = Field(default=0.2, gt=0)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if not steps or steps[-1] != 100 or any(not 0 < step <= 100 for step in steps):
            raise ValueError(f"steps {steps} must be percents above 0, the last 100")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"steps {steps} must rise")
        return steps

    @field_validator("interval", "settle_timeout")
    @classmethod
    def _duration(cls, text: str) -> str:
        try:
            duration_s(text)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return text


class Config(BaseSettings):
    """Every parameter of training, promotion, tuning, batch scoring, monitoring and rollout."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        toml_file=CONFIG_FILE,
        extra="forbid",
    )

    task: Task
    data: DataConfig
    estimator: EstimatorConfig
    promotion: PromotionConfig
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)

    @model_validator(mode="after")
    def _promotion_metric(self) -> "Config":
        """A promotion metric the task's runs log: a misspelt one would keep every model back."""
        if self.promotion.metric not in METRICS[self.task]:
            raise ValueError(
                f"promotion.metric {self.promotion.metric!r} is not a metric of {self.task} "
                f"runs: use one of {', '.join(METRICS[self.task])}"
            )
        return self

    @model_validator(mode="after")
    def _monitoring_metric(self) -> "Config":
        """Default the monitored metric, and check that labels alone can give it."""
        metrics = LABEL_METRICS[self.task]
        if self.monitoring.metric is None:
            metric = self.promotion.metric
            self.monitoring.metric = metric if metric in metrics else metrics[0]
        elif self.monitoring.metric not in metrics:
            raise ValueError(
                f"monitoring.metric {self.monitoring.metric!r} cannot be computed from "
                f"predictions alone for {self.task}: use one of {', '.join(metrics)}"
            )
        if self.monitoring.metric_tolerance is None:
            self.monitoring.metric_tolerance = 0.1 if self.task == "classification" else 0.2
        if self.monitoring.severe_tolerance is None:
            self.monitoring.severe_tolerance = 0.3 if self.task == "classification" else 0.5
        # Checked again with the task's defaults in place.
        if problem := self.monitoring.severe_tolerance_problem("monitoring."):
            raise ValueError(f"{problem}: raise it")
        if self.monitoring.flagged > self.monitoring.of:
            raise ValueError("monitoring.flagged must be at most monitoring.of")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Rank the sources: arguments (CLI flags), then environment, then the file."""
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


def load_config(path: Path = CONFIG_FILE, **overrides: Any) -> Config:
    """Read the configuration from `path`, the environment and `overrides`, in rising priority.

    `overrides` are nested like the file: `load_config(data={"target": "churned"})`.
    """
    if not path.is_file():
        raise ConfigError(f"Configuration file {path} not found: create it or pass --config.")

    class FileConfig(Config):
        model_config = SettingsConfigDict(toml_file=path)

    return FileConfig(**overrides)


def registered_model_uri(
    version: str | int | None = None, alias: str | None = None, name: str = PROJECT_SLUG
) -> str:
    """The `models:/` URI of a version of a registered model (this project's), or of an alias."""
    if (version is None) == (alias is None):
        raise ValueError("Name exactly one of a model version and an alias.")
    if alias is None:
        return f"models:/{name}/{version}"
    return f"models:/{name}@{alias}"
