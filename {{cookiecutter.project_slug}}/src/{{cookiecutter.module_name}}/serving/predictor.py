"""The model in a process of its own, so that predicting never stalls the server.

Python runs one thread at a time per process. A model predicting on a thread of
the server's process holds the event loop back for as long as it computes; in a
process of its own it computes on one core while the server reads, parses and
answers requests on another. The rows go there and the predictions come back
pickled, which costs far less than the stalls it saves (benchmarks/RESULTS.md
of the template has the figures).
"""

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import mlflow
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema

from ..config import tracking_uri
from .batching import predict_jobs
from .payload import Rows, to_frame

log = logging.getLogger(__name__)

# The model and its input schema, in the prediction process only.
_model: PyFuncModel | None = None
_schema: Schema | None = None


class PredictorError(RuntimeError):
    """The prediction process stopped; a new one is started for the next requests."""


def _watch_parent(parent: int) -> None:
    """Exit when the server process is gone, however it ended."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def _load(uri: str, parent: int) -> None:
    """Start the prediction process: load the model, then wait for batches."""
    # The server decides when this process stops: signals sent to the whole
    # process group (Ctrl-C, a supervisor) must not cut predictions in flight short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    global _model, _schema
    mlflow.set_tracking_uri(tracking_uri())
    _model = mlflow.pyfunc.load_model(uri)
    _schema = _model.metadata.get_input_schema()
    # The model lives as long as the process: keep the garbage collector from
    # walking through it again and again, which stalls predictions under load.
    gc.freeze()


def _predict(rows: Rows) -> Any:
    """Predict rows, typed by the model's signature as MLflow's server does."""
    assert _model is not None, "the model is loaded when the process starts"
    return _model.predict(to_frame(rows, _schema))


def predict_batch(jobs: list[Rows]) -> list[Any]:
    """Predict a batch of requests' rows (in the prediction process)."""
    return predict_jobs(_predict, jobs)


def _ready() -> bool:
    return _model is not None


class Predictor:
    """A process holding the model; `predict` sends it a batch and awaits the outcomes."""

    def __init__(self, model_uri: str) -> None:
        self.model_uri = model_uri
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            # A fresh interpreter: forking a process that runs threads is unsafe.
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load,
            initargs=(self.model_uri, os.getpid()),
        )

    async def wait_ready(self) -> None:
        """Wait until the model is loaded in the prediction process."""
        try:
            await asyncio.get_running_loop().run_in_executor(self.pool, _ready)
        except BrokenProcessPool:
            raise PredictorError(
                f"The prediction process could not load {self.model_uri}: its log above says why."
            ) from None

    async def predict(self, jobs: list[Rows]) -> list[Any]:
        """Predict the jobs; one outcome each: predictions, or the exception raised."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, predict_batch, jobs)
        except BrokenProcessPool:
            log.error("The prediction process stopped; starting a new one.")
            self.pool = self._start()
            error = PredictorError("The model process stopped during the prediction: retry.")
            return [error] * len(jobs)

    def close(self) -> None:
        """Let the batch in progress finish, then stop the process."""
        self.pool.shutdown(wait=True)
