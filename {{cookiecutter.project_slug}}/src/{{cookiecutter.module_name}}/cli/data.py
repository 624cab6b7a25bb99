"""`data` and `data-version`: the sample dataset, and versioning the data with DVC."""

from pathlib import Path

import click

from ..config import (
    SAMPLE_PATH,
)
from .common import config_option, read_config, user_errors


@click.command()
@config_option
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
def data(config_path: Path, force: bool) -> None:
    """Write the sample dataset to the configured data path, if it is the sample's."""
    from ..core.data import write_sample

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


@click.command("data-version")
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
    from ..store.versioning import record_data_version, remote_url

    config = read_config(config_path, data, None)
    with user_errors():
        version = record_data_version(config.data.path)
    click.echo(
        f"{version.path} is DVC version {version.dvc_md5}, pushed to {remote_url()}; "
        f"`git commit` {version.path}.dvc to pin it."
    )


COMMANDS = [data, data_version]
