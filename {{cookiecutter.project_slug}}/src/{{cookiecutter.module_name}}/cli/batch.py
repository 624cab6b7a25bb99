"""`predict`: batch scoring on one machine or on Spark."""

from pathlib import Path

import click

from ..config import (
    SPARK_ENV_MANAGERS,
    registered_model_uri,
)
from ..settings import ServingConfig
from .common import config_option, interrupts_as_keyboard_interrupt, read_config, user_errors


@click.command()
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
    from ..batch.job import find_inputs, load_batch_model
    from ..store.tracking import use_tracking_store

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
                from ..batch.spark import score_with_spark

                rows = score_with_spark(inputs, destination, model, columns, env_manager)
            else:
                from ..batch.local import score_locally

                rows = score_locally(inputs, destination, model, columns, config.batch.chunk_rows)
        except KeyboardInterrupt:
            raise click.ClickException(
                f"Interrupted: nothing was written to {destination}."
            ) from None
    click.echo(f"Wrote {rows} predictions of {model.label} to {destination}")


COMMANDS = [predict]
