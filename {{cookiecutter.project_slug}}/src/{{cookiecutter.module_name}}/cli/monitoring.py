"""`monitor`: the served model's drift and quality, and when to retrain."""

from pathlib import Path

import click

from ..config import (
    load_config,
)
from .common import config_option, user_errors


@click.command()
@config_option
@click.option(
    "--log",
    "log_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The inference log's folder (the server's INFERENCE_LOG_DIR).",
)
@click.option(
    "--outcomes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of true outcomes: prediction_id (X-Prediction-ID, or <id>-<row>), actual.",
)
@click.option("--window", help='Rows ("500") or a duration ("1h") a window. [default: config]')
@click.option("--version", help="The model version to monitor. [default: the log's latest]")
def monitor(
    config_path: Path,
    log_dir: Path,
    outcomes: Path | None,
    window: str | None,
    version: str | None,
) -> None:
    """Drift and quality of the served model per window; say whether to retrain.

    Logs an MLflow run with the windows' metrics, figures and an HTML report. Exit
    status 0: no retraining needed; 3: retraining recommended; 1: an error.
    """
    from ..jobs.monitor.monitor import RETRAIN_EXIT_STATUS
    from ..jobs.monitor.monitor import monitor as run_monitor

    overrides = {"monitoring": {"window": window}} if window else {}
    with user_errors():
        config = load_config(config_path, **overrides)
        result = run_monitor(log_dir, outcomes, config.monitoring, config.task, version)
    click.echo(f"{'window':<28}{'rows':>7}{'outcomes':>9}{result.metric:>9}  flagged because")
    for item in result.windows:
        metric = "" if item.metric is None else f"{item.metric:.3f}"
        click.echo(f"{item.label:<28}{item.rows:>7}{item.outcomes:>9}{metric:>9}  {item.summary()}")
    click.echo(f"MLflow run {result.run_id} ({result.model} version {result.version}).")
    click.echo(result.verdict)
    if result.retrain:
        raise SystemExit(RETRAIN_EXIT_STATUS)


COMMANDS = [monitor]
