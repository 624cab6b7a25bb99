"""The command line: every command documents itself with --help."""

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from .config import (
    CONFIG_FILE,
    PROJECT_SLUG,
    SAMPLE_PATH,
    SPARK_ENV_MANAGERS,
    Config,
    load_config,
    registered_model_uri,
)
from .errors import ProjectError
from .settings import ServingConfig, tracking_uri

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=CONFIG_FILE,
    show_default=True,
    help="Parameter file.",
)


def data_options(command: F) -> F:
    """Add --config, --data and --target: they point any command at any CSV."""
    command = click.option("--target", help="Target column. [default: from the config]")(command)
    command = click.option(
        "--data",
        type=click.Path(dir_okay=False, path_type=Path, resolve_path=True),
        help="CSV file to train on. [default: from the config]",
    )(command)
    return config_option(command)


@contextmanager
def user_errors() -> Iterator[None]:
    """The one place errors become messages: a ProjectError's or MLflow's, on one line.

    Any other exception is a bug, and keeps its traceback.
    """
    try:
        yield
    except ValidationError as error:
        raise click.ClickException(f"Invalid configuration:\n{error}") from None
    except ProjectError as error:
        raise failure(error) from None
    except Exception as error:
        # Imported only here: MLflow takes seconds to import, and --help should not wait.
        from mlflow.exceptions import MlflowException

        if isinstance(error, MlflowException):
            raise click.ClickException(unreachable(error) or error.message) from None
        raise


def failure(error: ProjectError) -> click.ClickException:
    """The error's message on one line, and its exit status (click's is a class attribute)."""
    kind = type(type(error).__name__, (click.ClickException,), {"exit_code": error.exit_status})
    return kind(str(error))  # type: ignore[no-any-return]


def unreachable(error: BaseException) -> str | None:
    """Say so if `error` comes from a tracking server that cannot be reached."""
    import requests

    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, requests.ConnectionError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    return (
        f"The MLflow tracking server at {tracking_uri()} is unreachable: start it "
        "(`make tracking-server`) or point MLFLOW_TRACKING_URI at one that runs."
    )


def read_config(config_path: Path, data: Path | None, target: str | None) -> Config:
    """Load the configuration with the command line's overrides on top."""
    overrides = {
        key: value for key, value in {"path": data, "target": target}.items() if value is not None
    }
    with user_errors():
        return load_config(config_path, **({"data": overrides} if overrides else {}))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Train, track, register, promote and serve the model."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@config_option
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
def data(config_path: Path, force: bool) -> None:
    """Write the sample dataset to the configured data path, if it is the sample's."""
    from .core.data import write_sample

    config = read_config(config_path, None, None)
    if config.data.path.exists() and not force:
        click.echo(f"{config.data.path} exists: kept it (--force overwrites it).")
        return
    if config.data.path != SAMPLE_PATH and not force:
        # A path of the user's own that is missing is a mistake, not a place for the sample.
        raise click.ClickException(
            f"{config.data.path} not found: fix [data] path in {config_path.name} (or the "
            "environment), or pass --force to write the sample dataset there."
        )
    path = write_sample(config.data.path, config.task, config.data.target)
    click.echo(f"Wrote {path}")


@main.command("data-version")
@config_option
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path, resolve_path=True),
    help="Data file to version. [default: from the config]",
)
def data_version(config_path: Path, data: Path | None) -> None:
    """Record the data's current version with DVC and push it to the remote ($DVC_REMOTE).

    Stages the hash file (`<data>.dvc`) in git: commit it with the code, then train.
    """
    from .store.versioning import record_data_version, remote_url

    config = read_config(config_path, data, None)
    with user_errors():
        version = record_data_version(config.data.path)
    click.echo(
        f"{version.path} is DVC version {version.dvc_md5}, pushed to {remote_url()}; "
        f"`git commit` {version.path}.dvc to pin it."
    )


@main.command()
@data_options
def train(config_path: Path, data: Path | None, target: str | None) -> None:
    """Train a model, log it to MLflow, register it and promote it if it is better."""
    from .jobs.train import train as run_training

    config = read_config(config_path, data, target)
    with user_errors():
        result = run_training(config)
    click.echo(f"Run {result.run_id}: {json.dumps(result.metrics, sort_keys=True)}")
    status = "is now @champion" if result.promoted else "stays @challenger"
    click.echo(f"{PROJECT_SLUG} version {result.version} {status}: {result.reason}.")


@main.command()
@data_options
@click.option(
    "--trials", type=click.IntRange(min=1), help="Trials of this process. [default: tuning.trials]"
)
@click.option(
    "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
    help="Trials at once in this process.",
)  # fmt: skip
@click.option("--study", "study_name", help=f"Optuna study to work on. [default: {PROJECT_SLUG}]")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True),
    help="Seconds after which this process starts no new trial. [default: tuning.timeout]",
)  # fmt: skip
def tune(
    config_path: Path, data: Path | None, target: str | None, trials: int | None, jobs: int,
    study_name: str | None, timeout: float | None,
) -> None:  # fmt: skip
    """Search the estimator's parameters with Optuna, then train the best as `train` does.

    Each trial is a nested MLflow run, scored by cross-validation of the training split.
    Processes that name the same study in $OPTUNA_STORAGE (a database URL) share it.
    """
    from .jobs.train import train
    from .jobs.tune import storage_url
    from .jobs.tune import tune as run_tuning

    config = read_config(config_path, data, target)
    try:
        with user_errors():
            result = run_tuning(config, trials, jobs, study_name, timeout, train=train)
    except KeyboardInterrupt:
        raise click.ClickException(
            f"Interrupted: the finished trials stay in the study; `tune` again resumes it "
            f"({storage_url()})."
        ) from None
    click.echo(
        f"Study {result.study}: {result.trials} trials here; best: trial {result.best_trial}, "
        f"{config.promotion.metric} {result.best_value:.4f} {json.dumps(result.best_params)}"
    )
    if result.trained is None:
        click.echo(f"Trial {result.best_trial} was trained and registered already.")
        return
    status = "is now @champion" if result.trained.promoted else "stays @challenger"
    click.echo(
        f"{PROJECT_SLUG} version {result.trained.version} {status}: {result.trained.reason}."
    )


@main.command()
@data_options
@click.option("--alias", default="champion", help="Evaluate the version holding this alias...")
@click.option("--version", "version", help="...or this version number.")
def evaluate(
    config_path: Path, data: Path | None, target: str | None, alias: str, version: str | None
) -> None:
    """Print a registered model's metrics on the held-out part of the data."""
    import mlflow.sklearn

    from .core.data import load, split
    from .core.evaluation import evaluate as score
    from .store import tracking

    config = read_config(config_path, data, target)
    uri = registered_model_uri(version) if version else registered_model_uri(alias=alias)
    with user_errors():
        tracking.setup()
        model = mlflow.sklearn.load_model(uri)
        dataset = load(config.data)
        parts = split(dataset, config.data, config.task)
        metrics = score(model, parts.x_test, parts.y_test, config.task, plots=False).metrics
    click.echo(json.dumps({"model_uri": uri, **metrics}, indent=2))


@main.command()
@click.argument("model")
@click.option(
    "--tolerance",
    type=float,
    default=0.0,
    help="Largest difference of a metric or a predicted value still counted the same.",
)
def reproduce(model: str, tolerance: float) -> None:
    """Rebuild MODEL (a version, an alias or a run id) from its commit and data; compare.

    Registers nothing and leaves the work tree as it is; tags the run with the verdict.
    Exit status 0: reproduced; 1: not reproduced, or it cannot be.
    """
    from .jobs.reproduce import reproduce as run_reproduction

    with user_errors():
        result = run_reproduction(model, tolerance)
    click.echo(result.summary())
    if not result.reproduced:
        raise SystemExit(1)


@main.command(hidden=True)
@click.argument("record", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def rebuild(record: Path, out: Path) -> None:
    """Retrain with a run's configuration: what `reproduce` runs in its scratch checkout."""
    from .jobs.reproduce import rebuild as run_rebuild

    with user_errors():
        run_rebuild(record, out)


@main.command()
@click.option("--version", "version", help="Make this version the champion.")
@click.option("--rollback", is_flag=True, help="Give champion back to the previous champion.")
def promote(version: str | None, rollback: bool) -> None:
    """Move the champion alias by hand: to a version, or back (rollback)."""
    from .store import registry, tracking

    if bool(version) == rollback:
        raise click.UsageError("Pass exactly one of --version N and --rollback.")
    with user_errors():
        client = tracking.setup()
        if rollback:
            version = registry.rollback(client)
        else:
            assert version is not None
            registry.promote(client, version)
    click.echo(f"{PROJECT_SLUG} version {version} is now @champion.")


@main.command("export-model")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
def export_model(destination: Path) -> None:
    """Copy the champion model to DESTINATION, as the image bakes it in; print its version."""
    from .store import registry, tracking

    with user_errors():
        champion = registry.export_champion(tracking.setup(), destination)
    click.echo(champion.version)


@main.command()
@click.option(
    "--invoke",
    is_flag=True,
    help="Also post the served model's own example to /invocations and expect predictions.",
)
def healthcheck(invoke: bool) -> None:
    """Exit 0 if the local server on $PORT is healthy: the image's HEALTHCHECK."""
    import urllib.request

    settings = ServingConfig()
    url = f"http://127.0.0.1:{settings.port}"
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as response:
            healthy = response.status == 200
        if healthy and invoke:
            # MLflow writes this payload beside the model when it logs an input example.
            example = Path(settings.model_uri) / "serving_input_example.json"
            request = urllib.request.Request(
                f"{url}/invocations",
                data=example.read_bytes(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                healthy = "predictions" in json.loads(response.read())
                click.echo(f"{example.name} -> {response.status}")
    except OSError:
        healthy = False
    if not healthy:
        raise SystemExit(1)


@main.command()
@click.option(
    "--model-uri", help="Model to serve. [default: $MODEL_URI or models:/<slug>@champion]"
)
@click.option("--host", help="Interface. [default: $HOST or 127.0.0.1]")
@click.option("--port", type=int, help="Port. [default: $PORT or 8080]")
@click.option(
    "--check", is_flag=True, help="Score the model's input example as a request would be, exit."
)
def serve(model_uri: str | None, host: str | None, port: int | None, check: bool) -> None:
    """Serve the model over HTTP with MLflow's scoring protocol.

    Limits, batching and worker processes come from the environment: see ServingConfig.
    """
    from .serving.server import run
    from .serving.service import check_serving

    with user_errors():
        settings = ServingConfig()
    uri = model_uri or settings.model_uri
    if check:
        with user_errors():
            rows = asyncio.run(check_serving(uri, settings))
        click.echo(f"{uri} loads and scores its input example ({rows} rows).")
        return
    run(uri, settings, host or settings.host, port or settings.port)


@main.command()
@config_option
@click.option(
    "--input", "location", required=True,
    help="A CSV or Parquet file, a directory of them or a glob ('data/2026-*.parquet').",
)  # fmt: skip
@click.option(
    "--output", "destination", required=True,
    help="local: a .parquet (or .csv) file; spark: a folder of Parquet files.",
)  # fmt: skip
@click.option(
    "--engine", type=click.Choice(["local", "spark"]), default="local",
    help="local: this process, chunk by chunk; spark: Apache Spark ($SPARK_MASTER, local[*]).",
)  # fmt: skip
@click.option("--model", "model_ref", help="A version number or an alias. [default: champion]")
@click.option("--model-uri", help="Any model URI instead. [default: $MODEL_URI or the champion]")
@click.option(
    "--id-column", "ids", multiple=True,
    help="Input column to carry into the output (repeat it). [default: [batch] id_columns]",
)  # fmt: skip
@click.option("--probabilities", is_flag=True, help="Add a probability column per class.")
@click.option(
    "--env-manager", type=click.Choice(SPARK_ENV_MANAGERS), default="local",
    help="spark: where executors get the model's libraries (see README, Batch scoring).",
)  # fmt: skip
def predict(
    config_path: Path, location: str, destination: str, engine: str, model_ref: str | None,
    model_uri: str | None, ids: tuple[str, ...], probabilities: bool, env_manager: str,
) -> None:  # fmt: skip
    """Score every row of a table: ids, prediction, model name and version per row.

    The output appears only once complete; an error or an interrupt leaves none.
    """
    from .batch.job import find_inputs, load_batch_model
    from .store.tracking import use_tracking_store

    if model_ref and model_uri:
        raise click.UsageError("Pass at most one of --model and --model-uri.")
    config = read_config(config_path, None, None)
    if model_ref:
        model_uri = (
            registered_model_uri(model_ref)
            if model_ref.isdigit()
            else registered_model_uri(alias=model_ref)
        )
    columns = list(ids) or config.batch.id_columns
    with user_errors(), interrupts_as_keyboard_interrupt():
        use_tracking_store()
        inputs = find_inputs(location)
        model = load_batch_model(model_uri or ServingConfig().model_uri, probabilities)
        try:
            if engine == "spark":
                from .batch.spark import score_with_spark

                rows = score_with_spark(inputs, destination, model, columns, env_manager)
            else:
                from .batch.local import score_locally

                rows = score_locally(inputs, destination, model, columns, config.batch.chunk_rows)
        except KeyboardInterrupt:
            raise click.ClickException(
                f"Interrupted: nothing was written to {destination}."
            ) from None
    click.echo(f"Wrote {rows} predictions of {model.label} to {destination}")


@contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Make SIGTERM (a scheduler stopping the job) interrupt as Ctrl-C does: cleanly."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@main.command()
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
    from .jobs.monitor.monitor import RETRAIN_EXIT_STATUS
    from .jobs.monitor.monitor import monitor as run_monitor

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
