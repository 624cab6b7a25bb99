"""The HTTP app: MLflow's scoring protocol, health, version and Prometheus metrics.

FastAPI is already a dependency of MLflow, so it costs nothing extra; the
request body is parsed by MLflow's own scoring-server functions, so every
payload `mlflow models serve` accepts is accepted here, and nothing more.
https://mlflow.org/docs/latest/ml/deployment/deploy-model-locally/#local-inference-server-spec
"""

import io
import json
import logging
import time
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
from mlflow.pyfunc import PyFuncModel
from mlflow.pyfunc.scoring_server import infer_and_parse_data, parse_csv_input
from mlflow.types import Schema
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)

from .. import __version__
from ..config import MODEL_INFO_FILE, PROJECT_SLUG, ServingConfig, tracking_uri

log = logging.getLogger(__name__)

PAYLOAD_FORMATS = {"dataframe_split", "dataframe_records", "instances", "inputs"}
# The protocol's optional inference parameters, passed beside the data.
PAYLOAD_EXTRAS = {"params"}
FORMATS = ", ".join(sorted(PAYLOAD_FORMATS))

INVOCATIONS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "Exactly one of the keys below, as in MLflow's scoring protocol.",
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "properties": {"columns": {"type": "array"}, "data": {"type": "array"}},
                    },
                    "dataframe_records": {"type": "array", "items": {"type": "object"}},
                    "instances": {"type": "array"},
                    "inputs": {},
                    "params": {"type": "object"},
                },
            }
        },
        "text/csv": {
            "schema": {
                "type": "string",
                "description": "A header row, then one row per prediction.",
            }
        },
    },
}


class PayloadError(ValueError):
    """The request cannot be scored; the message says what is wrong with it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Served:
    """The loaded model and what identifies it."""

    model: PyFuncModel
    uri: str
    name: str | None
    version: str | None
    # The signature's inputs, read once here rather than on every request.
    schema: Schema | None


def load_model(uri: str) -> Served:
    """Load a model from a `models:/` URI, a run URI or a local directory."""
    mlflow.set_tracking_uri(tracking_uri())
    model = mlflow.pyfunc.load_model(uri)
    name = version = None
    info_file = Path(uri) / MODEL_INFO_FILE
    if info_file.is_file():  # a model exported by `export-model`, as in the image
        info = json.loads(info_file.read_text())
        name, version = info["name"], info["version"]
    elif uri.startswith("models:/"):
        name, _, ref = uri.removeprefix("models:/").partition("@")
        client = MlflowClient()
        if ref:
            version = str(client.get_model_version_by_alias(name, ref).version)
        else:
            name, _, version = name.partition("/")
    schema = model.metadata.get_input_schema()
    return Served(model, uri, name, version, schema)


def check_model(uri: str) -> int:
    """Load the model and score its input example, as the server would; return the rows scored."""
    served = load_model(uri)
    local = uri if Path(uri).is_dir() else mlflow.artifacts.download_artifacts(uri)
    example = served.model.metadata.load_input_example(local)
    if example is None:
        raise ValueError(f"Model {uri} has no input example to score.")
    return len(served.model.predict(example))


def as_records(payload: dict[str, Any]) -> dict[str, Any]:
    """Rewrite table-shaped `instances` and `inputs` as `dataframe_records`.

    MLflow parses those two keys as tensors, which turns a missing string value
    (null) into the string "None" and silently changes the prediction. Rows
    (a list of objects) and columns (an object of equal-length lists) are tables:
    the dataframe parser keeps their missing values missing.
    """
    key = "instances" if "instances" in payload else "inputs"
    data = payload.get(key)
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        rows = data
    elif isinstance(data, dict) and data and all(isinstance(c, list) for c in data.values()):
        if len({len(c) for c in data.values()}) != 1:
            raise PayloadError(f"The columns of {key!r} must all have the same number of values.")
        rows = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    else:
        return payload
    return {**{k: v for k, v in payload.items() if k != key}, "dataframe_records": rows}


def parse(body: bytes, content_type: str, schema: Schema | None) -> pd.DataFrame:
    """Turn a request body into the model's input frame, or raise PayloadError."""
    # MLflow's parsers take None (no signature: types inferred) but annotate `Schema`.
    frame: pd.DataFrame
    try:
        if content_type == "text/csv":
            frame = parse_csv_input(io.StringIO(body.decode("utf-8")), schema=schema)  # type: ignore[arg-type]
        elif content_type == "application/json":
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise PayloadError(f"The JSON body must be an object with one of {FORMATS}.")
            unknown = set(payload) - PAYLOAD_FORMATS - PAYLOAD_EXTRAS
            if unknown:
                raise PayloadError(f"Unknown keys {sorted(unknown)}: use exactly one of {FORMATS}.")
            frame = infer_and_parse_data(as_records(payload), schema=schema)  # type: ignore[arg-type]
        else:
            raise PayloadError(
                f"Content type {content_type or 'none'!r} is not supported: "
                "send application/json or text/csv.",
                status=415,
            )
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"The body is not valid {content_type}: {error}.") from None
    except MlflowException as error:
        raise PayloadError(error.message) from None
    if len(frame) == 0:
        raise PayloadError("The payload has no rows to predict.")
    return frame


def to_json(predictions: Any) -> Any:
    """Convert the model's output to JSON-ready Python values."""
    if isinstance(predictions, pd.DataFrame):
        return predictions.to_dict(orient="records")
    return np.asarray(predictions).tolist()


def error(message: str, status: int) -> JSONResponse:
    """An error response in the shape MLflow's scoring server uses, without a stack trace."""
    code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


def create_app(model_uri: str | None = None) -> FastAPI:
    """Build the app; the model is loaded once, when the server starts."""
    uri = model_uri or ServingConfig().model_uri
    state: dict[str, Served] = {}

    metrics = CollectorRegistry()
    requests = Counter("http_requests", "Scoring requests by status.", ["status"], registry=metrics)
    latency = Histogram("http_request_duration_seconds", "Scoring latency.", registry=metrics)
    rows = Counter("predicted_rows", "Rows predicted.", registry=metrics)
    model_info = Info("model", "The served model.", registry=metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        served = await run_in_threadpool(load_model, uri)
        state["served"] = served
        model_info.info(
            {"uri": served.uri, "name": served.name or "", "version": served.version or ""}
        )
        log.info("Serving %s (version %s).", served.uri, served.version)
        yield

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
        return JSONResponse({"status": "ok"})

    @app.get("/version")
    async def version() -> dict[str, Any]:
        """Name the app, the model and MLflow versions."""
        served = state["served"]
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
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.post("/invocations", openapi_extra={"requestBody": INVOCATIONS_BODY})
    async def invocations(request: Request) -> JSONResponse:
        """Score a payload in any of MLflow's scoring-protocol formats."""
        started = time.perf_counter()
        served = state["served"]
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            frame = parse(await request.body(), content_type, served.schema)
            predictions = await run_in_threadpool(served.model.predict, frame)
        except PayloadError as exc:
            response = error(str(exc), exc.status)
        except MlflowException as exc:
            # Schema enforcement: a missing column or a value of the wrong type, named.
            response = error(exc.message, 400)
        except (ValueError, TypeError) as exc:
            response = error(f"The model cannot score this input: {exc}", 422)
        else:
            rows.inc(len(frame))
            response = JSONResponse({"predictions": to_json(predictions)})
        requests.labels(status=str(response.status_code)).inc()
        latency.observe(time.perf_counter() - started)
        return response

    return app
