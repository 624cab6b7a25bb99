"""The HTTP routes: MLflow's scoring protocol, health, the served model, Prometheus metrics.

FastAPI is already a dependency of MLflow, so it costs nothing extra. The routes
only speak HTTP: every prediction goes through `Service` (`service.py`).
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mlflow
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from mlflow.exceptions import MlflowException
from prometheus_client import CONTENT_TYPE_LATEST

from .. import __version__
from ..config import PROJECT_SLUG
from ..errors import PayloadError, ProjectError
from ..settings import ServingConfig
from .observability import Metrics, Observe
from .protocol import OPENAPI_BODY, error_response, predictions_response
from .service import Service
from .webhooks import verified

log = logging.getLogger(__name__)

PREDICTION_ID_HEADER = "X-Prediction-ID"
# The registered version that made the predictions (the alias may move between requests).
MODEL_VERSION_HEADER = "X-Model-Version"
# Their names as the server writes them (ASGI: lowercase bytes), encoded once.
RAW_PREDICTION_ID = PREDICTION_ID_HEADER.lower().encode()
RAW_MODEL_VERSION = MODEL_VERSION_HEADER.lower().encode()


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


def create_app(model_uri: str | None = None, settings: ServingConfig | None = None) -> FastAPI:
    """Build the app; the model is loaded once, when the server starts."""
    settings = settings or ServingConfig()
    metrics = Metrics()
    service = Service(model_uri or settings.model_uri, settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        # The server has stopped taking requests and answered those in flight.
        await service.stop()

    app = FastAPI(title=PROJECT_SLUG, version=__version__, lifespan=lifespan)
    # For tests and debugging: the routes use `service` directly.
    app.state.service = service
    app.add_exception_handler(Exception, unexpected)
    # Routes straight on the app: an included APIRouter adds a dispatch per request.
    add_status_routes(app, service, metrics)
    add_scoring_routes(app, service, settings)
    add_webhook_routes(app, service, settings)
    # Metrics label requests by route: these paths, and "other" for the rest.
    routes = [getattr(route, "path", "") for route in app.routes]
    app.add_middleware(Observe, metrics=metrics, routes=routes, log_name=f"{__package__}.access")
    return app


async def unexpected(_: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback, answered without a word of it."""
    log.exception("Unexpected error", exc_info=exc)
    return error_response("Internal error: the server log has the details.", 500)


def add_status_routes(router: FastAPI, service: Service, metrics: Metrics) -> None:
    """Health as MLflow and orchestrators ask for it, the served model, the metrics."""

    @router.get("/health")
    async def health() -> JSONResponse:
        """200 once the model is loaded and the batcher runs; 503 saying why not."""
        problem = service.health()
        if problem:
            return JSONResponse({"status": problem}, status_code=503)
        return JSONResponse({"status": "ok"})

    @router.get("/ping")
    async def ping() -> Response:
        """MLflow's health check, as `mlflow models serve` answers it (a newline)."""
        status = 200 if service.health() is None else 503
        return Response("\n", status_code=status, media_type="application/json")

    @router.get("/version")
    async def version() -> Response:
        """MLflow's version, as `mlflow models serve` answers it (the bare string)."""
        return Response(mlflow.__version__, media_type="application/json")

    @router.get("/model")
    async def model() -> dict[str, Any]:
        """The served model: its URI, registered name and version; app and MLflow versions."""
        return {
            "app_version": __version__,
            "model_uri": service.model.uri,
            "model_name": service.model.name,
            "model_version": service.model.version,
            "mlflow_version": mlflow.__version__,
        }

    @router.get("/metrics")
    async def prometheus() -> Response:
        """Expose the metrics in Prometheus' text format."""
        metrics.ready.set(0 if service.health() else 1)
        return Response(metrics.expose(), media_type=CONTENT_TYPE_LATEST)


def add_scoring_routes(router: FastAPI, service: Service, settings: ServingConfig) -> None:
    """`/invocations`: MLflow's scoring protocol."""

    @router.post("/invocations", openapi_extra={"requestBody": OPENAPI_BODY})
    async def invocations(request: Request) -> Response:
        """Score a payload in any of MLflow's scoring-protocol formats."""
        content_type = request.headers.get("content-type", "")
        try:
            async with asyncio.timeout(settings.request_timeout_s):
                body = await read_body(request, settings.max_body_bytes)
                rows = service.parse(body, content_type)
                request.state.rows = len(rows)
                request_id = uuid.uuid4().hex
                scored = await service.predict(rows, request_id)
        except (TimeoutError, ProjectError, MlflowException, ValueError, TypeError) as exc:
            return refusal(exc, settings.request_timeout_s)
        response = predictions_response(scored.predictions)
        # Row n of the request is "<id>-<n>" in the inference log and in outcomes.
        # As `response.headers[name] = value` would, without its lowercasing and scans.
        response.raw_headers += [
            (RAW_PREDICTION_ID, request_id.encode()),
            (RAW_MODEL_VERSION, (scored.version or "").encode()),
        ]
        return response


def add_webhook_routes(router: FastAPI, service: Service, settings: ServingConfig) -> None:
    """`/webhooks/mlflow`: MLflow's registry says an alias moved (`webhooks.py`)."""

    @router.post("/webhooks/mlflow", include_in_schema=False)
    async def mlflow_webhook(request: Request) -> JSONResponse:
        """Check the followed alias at once if a signed event says it moved."""
        secret = settings.mlflow_webhook_secret
        if secret is None or service.follower is None:
            why = "set MLFLOW_WEBHOOK_SECRET" if secret is None else "the model is pinned"
            return error_response(f"Webhooks are off here: {why}.", 404, "ENDPOINT_NOT_FOUND")
        try:
            body = await read_body(request, settings.max_body_bytes)
            event = verified(secret.get_secret_value(), dict(request.headers), body)
        except ProjectError as exc:
            return refusal(exc, settings.request_timeout_s)
        if not service.nudge(event):
            return JSONResponse({"status": "ignored"})
        return JSONResponse({"status": "checking"})


def refusal(exc: Exception, timeout_s: float) -> JSONResponse:
    """The one place a scoring error becomes an answer: its status and MLflow's error code."""
    if isinstance(exc, TimeoutError):
        return error_response(
            f"No prediction within {timeout_s:g} s: the server is overloaded or the request "
            "too large. Retry later or send fewer rows.",
            504,
        )
    if isinstance(exc, ProjectError):  # the request's own fault, or the model process gone
        return error_response(str(exc), exc.http_status, exc.error_code)
    if isinstance(exc, MlflowException):
        # Schema enforcement: a missing column or a value of the wrong type, named.
        return error_response(exc.message, 400, "INVALID_PARAMETER_VALUE")
    # What the model's own code refuses (a value it cannot convert, ...).
    return error_response(f"The model cannot score this input: {exc}", 400)
