"""The model's life: train, tune, evaluate, reproduce, promote, rollout, export-model."""

import json
from pathlib import Path
from typing import Any

import click

from ..config import (
    PROJECT_SLUG,
    load_config,
    registered_model_uri,
)
from .common import (
    config_option,
    data_options,
    interrupts_as_keyboard_interrupt,
    read_config,
    user_errors,
)


@click.command()
@data_options
def train(config_path: Path, data: Path | None, target: str | None) -> None:
    """Train a model, log it to MLflow, register it and promote it if it is better."""
    from ..jobs.train import train as run_training

    config = read_config(config_path, data, target)
    with user_errors():
        result = run_training(config)
    click.echo(f"Run {result.run_id}: {json.dumps(result.metrics, sort_keys=True)}")
    status = "is now @champion" if result.promoted else "stays @challenger"
    click.echo(f"{PROJECT_SLUG} version {result.version} {status}: {result.reason}.")


@click.command()
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
    from ..jobs.train import train
    from ..jobs.tune import storage_url
    from ..jobs.tune import tune as run_tuning

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


@click.command()
@data_options
@click.option("--alias", default="champion", help="Evaluate the version holding this alias...")
@click.option("--version", "version", help="...or this version number.")
def evaluate(
    config_path: Path, data: Path | None, target: str | None, alias: str, version: str | None
) -> None:
    """Print a registered model's metrics on the held-out part of the data."""
    from ..jobs.evaluate import evaluate as score_version

    config = read_config(config_path, data, target)
    uri = registered_model_uri(version) if version else registered_model_uri(alias=alias)
    with user_errors():
        metrics = score_version(config, version, alias)
    click.echo(json.dumps({"model_uri": uri, **metrics}, indent=2))


@click.command()
@click.argument("model", required=False)
@click.option("--image", help="...or the model baked into this image (its labels name the run).")
@click.option(
    "--tolerance",
    type=float,
    default=0.0,
    help="Largest difference of a metric or a predicted value still counted the same.",
)
def reproduce(model: str | None, image: str | None, tolerance: float) -> None:
    """Rebuild MODEL (a version, an alias or a run id) from its commit and data; compare.

    Registers nothing and leaves the work tree as it is; tags the run with the verdict.
    Exit status 0: reproduced; 1: not reproduced, or it cannot be.
    """
    from ..jobs.reproduce import image_run
    from ..jobs.reproduce import reproduce as run_reproduction

    if bool(model) == bool(image):
        raise click.UsageError("Name exactly one of MODEL and --image.")
    with user_errors():
        result = run_reproduction(image_run(image) if image else str(model), tolerance)
    click.echo(result.summary())
    if not result.reproduced:
        raise SystemExit(1)


@click.command(hidden=True)
@click.argument("record", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def rebuild(record: Path, out: Path) -> None:
    """Retrain with a run's configuration: what `reproduce` runs in its scratch checkout."""
    from ..jobs.reproduce import rebuild as run_rebuild

    with user_errors():
        run_rebuild(record, out)


@click.command()
@click.option("--version", "version", help="Make this version the champion.")
@click.option("--rollback", is_flag=True, help="Give champion back to the previous champion.")
def promote(version: str | None, rollback: bool) -> None:
    """Move the champion alias by hand: to a version, or back (rollback)."""
    from ..store import registry, tracking

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


@click.command()
@config_option
@click.option("--version", "version", help="The version to roll out.")
@click.option(
    "--steps", help="Percents of the requests, step by step, the last 100. [default: rollout.steps]"
)
@click.option("--interval", help="How long each step lasts: 90s, 2min. [default: rollout.interval]")
@click.option("--abort", is_flag=True, help="End a rollout left under way (its process killed).")
def rollout(
    config_path: Path, version: str | None, steps: str | None, interval: str | None, abort: bool
) -> None:
    """Roll a version out as a canary; promote it, or roll it back on the servers' evidence.

    Servers following the registry give it a growing share of the requests; after each
    step the guardrails of [rollout] judge it against the champion on the same traffic
    (read from $SERVING_URLS or $PROMETHEUS_URL). Exit status 0: promoted; 3: rolled
    back (the champion unchanged); 1: an error. Ctrl-C stops the canary's traffic.
    """
    from ..jobs.rollout.rollout import ROLLED_BACK_EXIT_STATUS, Step, abort_rollout
    from ..jobs.rollout.rollout import rollout as run_rollout

    if bool(version) == abort:
        raise click.UsageError("Pass exactly one of --version N and --abort.")
    with user_errors():
        if abort:
            ended = abort_rollout()
            click.echo(f"Version {ended}'s rollout ended." if ended else "No rollout under way.")
            return
        config = load_config(config_path, **rollout_overrides(steps, interval))

        def report(step: Step) -> None:
            said = "; ".join(step.breaches) or "every guardrail held"
            figures = json.dumps(step.figures.as_metrics())
            click.echo(f"{step.share * 100:>5.0f} %  {figures}  {said}")

        assert version is not None
        try:
            # A scheduler's SIGTERM stops it as Ctrl-C does: the canary's traffic first.
            with interrupts_as_keyboard_interrupt():
                result = run_rollout(version, config.rollout, config.task, report=report)
        except KeyboardInterrupt:
            raise click.ClickException(
                f"Interrupted: version {version} gets no more requests; the champion is unchanged."
            ) from None
    click.echo(f"MLflow run {result.run_id}.")
    if not result.promoted:
        click.echo(f"Version {version} rolled back {result.reason}.")
        click.echo(f"Version {result.champion} stays @champion.")
        raise SystemExit(ROLLED_BACK_EXIT_STATUS)
    click.echo(f"{PROJECT_SLUG} version {version} is now @champion: {result.reason}.")


def rollout_overrides(steps: str | None, interval: str | None) -> dict[str, Any]:
    """The command's options as configuration overrides of [rollout]."""
    section: dict[str, Any] = {}
    if steps:
        try:
            section["steps"] = [float(step) for step in steps.split(",")]
        except ValueError:
            raise click.BadParameter(f"{steps!r}: write percents, e.g. 5,25,50,100") from None
    if interval:
        section["interval"] = interval
    return {"rollout": section} if section else {}


@click.command("export-model")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@click.option("--version", "version", help="Export this version. [default: the champion]")
@click.option(
    "--from-server", is_flag=True,
    help="Refuse the local store: a release exports from the team's tracking server.",
)  # fmt: skip
@click.option(
    "--labels", "labels_file", type=click.Path(dir_okay=False, path_type=Path),
    help="Write the image's OCI labels here, one key=value a line.",
)  # fmt: skip
def export_model(
    destination: Path, version: str | None, from_server: bool, labels_file: Path | None
) -> None:
    """Copy the champion model (or VERSION) to DESTINATION, as the image bakes it in.

    Prints the version exported.
    """
    from ..store import registry, tracking

    with user_errors():
        if from_server:
            tracking.require_server()
        info = registry.export_champion(tracking.setup(), destination, version)
    if labels_file is not None:
        lines = [f"{label}={info[key]}" for key, label in registry.IMAGE_LABELS.items()]
        labels_file.write_text("\n".join(lines) + "\n")
    click.echo(info["version"])


COMMANDS = [train, tune, evaluate, reproduce, rebuild, promote, rollout, export_model]
