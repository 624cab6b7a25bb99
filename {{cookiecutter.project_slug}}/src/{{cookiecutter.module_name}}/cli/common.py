"""What every command shares: options, the configuration, the one place errors become messages."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from ..config import (
    CONFIG_FILE,
    Config,
    load_config,
)
from ..errors import ProjectError
from ..settings import tracking_uri

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
