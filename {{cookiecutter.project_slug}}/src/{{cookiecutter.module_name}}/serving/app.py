"""The HTTP app: MLflow's scoring protocol, health, version and Prometheus metrics.

FastAPI is already a dependency of MLflow, so it costs nothing extra. A request
is read and parsed here (`payload.py`), queued, and predicted together with the
requests that arrive at the same time (`batching.py`) by the model in a process
of its own (`predictor.py`), so the server keeps answering while the model works.
"""

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.types import Schema
from prometheus_client import CONTENT_TYPE_LATEST

from .. import __version__
from ..config import MODEL_INFO_FILE, PROJECT_SLUG, ServingConfig, tracking_uri
from .batching import Batcher
from .observability import Metrics, Observe
from .payload import OPENAPI_BODY, PayloadError, Rows, parse
from .predictor import Predictor, PredictorError

log = logging.getLogger(__name__)


@dataclass
class Served:
    """What identifies the served model, and its input schema."""

    uri: str
    name: str | None
    version: str | None
    # The signature's inputs, read once here rather than on every request.
    schema: Schema | None

    @property
    def pinned_uri(self) -> str:
        """The URI of this exact version: an alias may move while the server runs."""
        if self.uri.startswith("models:/") and self.name and self.version:
            return f"models:/{self.name}/{self.version}"
        return self.uri


def describe_model(uri: str) -> Served:
    """Name, version and signature of a model (`models:/` URI, run URI or directory)."""
    mlflow.set_tracking_uri(tracking_uri())
    name = version = None
    info_file = Path(uri) / MODEL_INFO_FILE
    if info_file.is_file():  # a model exported by `export-model`, as in the image
        info = json.loads(info_file.read_text())
        name, version = info["name"], info["version"]
    elif uri.startswith("models:/"):
        name, _, ref = uri.removeprefix("models:/").partition("@")
        if ref:
            version = str(MlflowClient().get_model_version_by_alias(name, ref).version)
        else:
            name, _, version = name.partition("/")
    served = Served(uri, name, version, schema=None)
    served.schema = Model.load(served.pinned_uri).get_input_schema()  # type: ignore[no-untyped-call]
    return served


def check_model(uri: str) -> int:
    """Load the model and score its input example, as the server would; return the rows scored."""
    mlflow.set_tracking_uri(tracking_uri())
    model = mlflow.pyfunc.load_model(uri)
    local = uri if Path(uri).is_dir() else mlflow.artifacts.download_artifacts(uri)
    example = model.metadata.load_input_example(local)
    if example is None:
        raise ValueError(f"Model {uri} has no input example to score.")
    return len(model.predict(example))


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing one over `limit` bytes before it is all in memory."""
    too_large = PayloadError(
        f"The body is larger than {limit} bytes: send fewer rows a request "
        "(or raise MAX_BODY_BYTES).",
        status=413,
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def to_json(predictions: Any) -> Any:
    """Convert the model's output to JSON-ready Python values."""
    if isinstance(predictions, pd.DataFrame):
        return predictions.to_dict(orient="records")
    return np.asarray(predictions).tolist()


def error(message: str, status: int) -> JSONResponse:
    """An error response in the shape MLflow's scoring server uses, without a stack trace."""
    code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


def create_app(model_uri: str | None = None, settings: ServingConfig | None = None) -> FastAPI:
    """Build the app; the model is loaded once, when the server starts."""
    settings = settings or ServingConfig()
    uri = model_uri or settings.model_uri
    metrics = Metrics()
    state: dict[str, Any] = {}

    async def predict_batch(jobs: list[Rows]) -> list[Any]:
        """Predict a batch in the model's process and count what comes back."""
        outcomes: list[Any] = await state["predictor"].predict(jobs)
        metrics.batch_rows.observe(sum(len(rows) for rows in jobs))
        for outcome in outcomes:
            if not isinstance(outcome, Exception):
                metrics.observe_predictions(outcome)
        return outcomes

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        served = await run_in_threadpool(describe_model, uri)
        predictor = Predictor(served.pinned_uri)
        await predictor.wait_ready()
        batcher = Batcher(predict_batch, settings.max_batch_rows, settings.max_batch_wait_ms / 1000)
        batching = asyncio.create_task(batcher.run())
        state.update(served=served, predictor=predictor, batcher=batcher)
        metrics.model.labels(served.name or "", served.version or "", served.uri).set(1)
        log.info("Serving %s (version %s).", served.uri, served.version)
        # What exists now lives as long as the server: keep the garbage collector from
        # walking through it again and again, which stalls requests under load.
        gc.freeze()
        yield
        # The server has stopped taking requests and answered those in flight.
        batching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await batching
        predictor.close()

    app = FastAPI(title=PROJECT_SLUG, version=__version__, lifespan=lifespan)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("Unexpected error", exc_info=exc)
        return error("Internal error: the server log has the details.", 500)

    @app.get("/health")
    async def health() -> JSONResponse:
        """Answer 200 once the model is loaded."""
        if "served" not in state:
            return JSONResponse({"status": "loading"}, status_code=503)
        if not state["predictor"].process.is_alive():
            return JSONResponse({"status": "the model process is down"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/version")
    async def version() -> dict[str, Any]:
        """Name the app, the model and MLflow versions."""
        served: Served = state["served"]
        return {
            "app_version": __version__,
            "model_uri": served.uri,
            "model_name": served.name,
            "model_version": served.version,
            "mlflow_version": mlflow.__version__,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Expose the metrics in Prometheus' text format."""
        return Response(metrics.expose(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/invocations", openapi_extra={"requestBody": OPENAPI_BODY})
    async def invocations(request: Request) -> JSONResponse:
        """Score a payload in any of MLflow's scoring-protocol formats."""
        served: Served = state["served"]
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            async with asyncio.timeout(settings.request_timeout_s):
                body = await read_body(request, settings.max_body_bytes)
                rows = parse(body, content_type, served.schema, settings.max_request_rows)
                request.state.rows = len(rows)
                predictions = await state["batcher"].submit(rows)
        except TimeoutError:
            return error(
                f"No prediction within {settings.request_timeout_s:g} s: the server is "
                "overloaded or the request too large. Retry later or send fewer rows.",
                504,
            )
        except PayloadError as exc:
            return error(str(exc), exc.status)
        except MlflowException as exc:
            # Schema enforcement: a missing column or a value of the wrong type, named.
            return error(exc.message, 400)
        except PredictorError as exc:
            return error(str(exc), 503)
        except (ValueError, TypeError) as exc:
            return error(f"The model cannot score this input: {exc}", 422)
        return JSONResponse({"predictions": to_json(predictions)})

    routes = [getattr(route, "path", "") for route in app.routes]
    app.add_middleware(Observe, metrics=metrics, routes=routes, log_name=f"{__package__}.access")
    return app
