"""`serve` and `healthcheck`: the REST server and the probe that checks it."""

import asyncio
import json
from pathlib import Path

import click

from ..settings import ServingConfig
from .common import (
    user_errors,
)


@click.command()
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


@click.command()
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
    from ..serving.server import run
    from ..serving.service import check_serving

    with user_errors():
        settings = ServingConfig()
    uri = model_uri or settings.model_uri
    if check:
        with user_errors():
            rows = asyncio.run(check_serving(uri, settings))
        click.echo(f"{uri} loads and scores its input example ({rows} rows).")
        return
    run(uri, settings, host or settings.host, port or settings.port)


COMMANDS = [healthcheck, serve]
