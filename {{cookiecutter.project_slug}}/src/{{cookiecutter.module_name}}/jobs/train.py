"""Training: data -> pipeline -> fit -> evaluate -> MLflow run -> registry -> promotion gate."""

import logging
from typing import Any

import mlflow

from ..config import Config
from ..core import data
from ..core.evaluation import Evaluation, fit_and_evaluate
from ..core.pipeline import build_pipeline, estimator_params
from ..core.profile import Profile, build_profile
from ..store import gate, registry, tracking, versioning

log = logging.getLogger(__name__)


def flat_params(config: Config, estimator: dict[str, Any]) -> dict[str, Any]:
    """Flatten the configuration and the estimator's effective parameters for `log_params`."""
    return {
        "task": config.task,
        "data.path": str(config.data.path),
        "data.target": config.data.target,
        "data.test_size": config.data.test_size,
        "data.seed": config.data.seed,
        "estimator.name": config.estimator.name,
        **{f"estimator.{key}": value for key, value in estimator.items()},
        "promotion.metric": config.promotion.metric,
        "promotion.margin": config.promotion.margin,
    }


def train(config: Config, tags: dict[str, str] | None = None) -> registry.TrainResult:
    """Train, log and register a model; promote it to champion if it beats the current one.

    `tags` go on the run besides its own (`tune` ties it to its study this way).

    Bad data or a bad estimator fail before any run starts. A failure inside the run
    (the gate included) marks it FAILED and registers nothing: only a finished run
    registers its model, and a registration that fails half-way is undone.
    """
    dataset = data.load(config.data)
    parts = data.split(dataset, config.data, config.task)
    model = build_pipeline(config.estimator, config.task)
    code = versioning.code_version()
    data_version = versioning.data_version(dataset.path, dataset.fingerprint)
    not_reproducible = versioning.reproducibility(code, data_version)
    if not_reproducible:
        log.warning("This run cannot be reproduced: %s.", not_reproducible)
    client = tracking.setup()

    with mlflow.start_run() as run:
        mlflow.set_tags({**tracking.run_tags(code, data_version, not_reproducible), **(tags or {})})
        log_inputs(config, dataset, parts, model)
        training, held_out = (parts.x_train, parts.y_train), (parts.x_test, parts.y_test)
        evaluation = fit_and_evaluate(model, training, held_out, config.task)
        mlflow.log_metrics(evaluation.metrics)
        for name, figure in evaluation.figures.items():
            mlflow.log_figure(figure, f"plots/{name}")
        model_info = tracking.log_model(
            model, parts.x_train, profile_of(model, parts, evaluation, config)
        )
        decision = gate.decide(
            client, evaluation.metrics, parts.x_test, parts.y_test, config, not_reproducible
        )

    version = registry.register(client, model_info, decision)
    log.info(
        "Version %s %s: %s.",
        version.version,
        "promoted" if decision.promote else "kept",
        decision.reason,
    )
    return registry.TrainResult(
        run.info.run_id, str(version.version), decision.promote, decision.reason, evaluation.metrics
    )


def log_inputs(config: Config, dataset: data.Dataset, parts: data.Split, model: Any) -> None:
    """Log what the run starts from: parameters, configuration, dataset, row counts."""
    mlflow.log_params(flat_params(config, estimator_params(model)))
    mlflow.log_dict(tracking.config_record(config), tracking.CONFIG_ARTIFACT)
    tracking.log_dataset(
        dataset.features.assign(**{config.data.target: dataset.target}),
        dataset.path,
        config.data.target,
        dataset.fingerprint.md5,
    )
    mlflow.log_metrics(
        {
            "rows_train": len(parts.x_train),
            "rows_test": len(parts.x_test),
            "rows_dropped": dataset.dropped_rows,
        }
    )


def profile_of(model: Any, parts: data.Split, evaluation: Evaluation, config: Config) -> Profile:
    """The reference profile: training features, held-out predictions and metrics."""
    classes = list(getattr(model, "classes_", [])) or None
    return build_profile(
        parts.x_train, evaluation.predicted, evaluation.metrics, config.task, classes
    )
