"""The model in a process of its own, so that predicting never stalls the server.

Python runs one thread at a time per process. A model predicting on a thread of
the server's process holds the event loop back for as long as it computes; in a
process of its own it computes on one core while the server reads, parses and
answers requests on another. Batches go there over a pipe and predictions come
back the same way; the event loop watches the pipe, so no thread stands between
them (benchmarks/RESULTS.md of the template has the figures).
"""

import asyncio
import gc
import logging
import multiprocessing
import pickle
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import mlflow

from ..config import tracking_uri
from .batching import predict_jobs
from .payload import Rows, is_direct, to_frame

log = logging.getLogger(__name__)

READY = "ready"


class PredictorError(RuntimeError):
    """The model process is gone; a new one is started for the next requests."""


def serve(model_uri: str, connection: Connection) -> None:
    """The model process: load the model, then predict each batch received, until EOF."""
    # The server decides when this process stops: signals sent to the whole
    # process group (Ctrl-C, a supervisor) must not cut predictions in flight short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        mlflow.set_tracking_uri(tracking_uri())
        predict = load_predict(model_uri)
    except Exception as error:  # reported by the server, which cannot start without it
        connection.send(f"{type(error).__name__}: {error}")
        return
    # The model lives as long as the process: keep the garbage collector from
    # walking through it again and again, which stalls predictions under load.
    gc.freeze()
    connection.send(READY)
    while True:
        try:
            jobs = connection.recv()
        except EOFError:  # the server closed the pipe, or is gone
            return
        outcomes = predict_jobs(predict, jobs)
        try:
            connection.send(outcomes)
        except (pickle.PicklingError, TypeError, AttributeError):
            # An exception that cannot be pickled: send its message instead.
            connection.send([_portable(outcome) for outcome in outcomes])


def load_predict(model_uri: str) -> Callable[[Rows], Any]:
    """Load the model; return its predict for rows.

    A scikit-learn model whose signature `to_frame` casts entirely is called directly:
    the frame already has the signature's columns and types, and MLflow's checks in
    `PyFuncModel.predict` would build it once more (1.5 ms a call, about 15 % of the
    default model's). Any other model goes through `PyFuncModel.predict`.
    """
    model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    if is_direct(schema) and model.loader_module == "mlflow.sklearn":
        estimator = model.get_raw_model()
        return lambda rows: estimator.predict(to_frame(rows, schema))
    return lambda rows: model.predict(to_frame(rows, schema))


def _portable(outcome: Any) -> Any:
    if isinstance(outcome, Exception):
        return RuntimeError(f"{type(outcome).__name__}: {outcome}")
    return outcome


class Predictor:
    """A process holding the model; `predict` sends it a batch and awaits the outcomes."""

    def __init__(self, model_uri: str) -> None:
        self.model_uri = model_uri
        self.start()

    def start(self) -> None:
        """Start the model process (a fresh interpreter: forking a threaded process is unsafe)."""
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=serve, args=(self.model_uri, child_end), name="model", daemon=False
        )
        self.process.start()
        child_end.close()  # the child's end lives in the child only: its exit means EOF here
        self.ready = False

    async def receive(self) -> Any:
        """Wait, without blocking the event loop, for the model process' next message."""
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        descriptor = self.connection.fileno()
        loop.add_reader(descriptor, wake)
        try:
            await readable
        finally:
            loop.remove_reader(descriptor)
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            raise PredictorError(
                f"The model process stopped (exit code {self.process.exitcode})."
            ) from None

    async def wait_ready(self) -> None:
        """Wait until the model is loaded; raise PredictorError saying why it is not."""
        message = await self.receive()
        if message != READY:
            raise PredictorError(f"The model process could not load {self.model_uri}: {message}")
        self.ready = True

    async def predict(self, jobs: list[Rows]) -> list[Any]:
        """Predict the jobs; one outcome each: predictions, or the exception raised."""
        try:
            if not self.ready:
                await self.wait_ready()
            self.connection.send(jobs)
            outcomes: list[Any] = await self.receive()
        except (PredictorError, OSError) as error:
            log.error("%s Starting a new model process.", error)
            self.close()
            self.start()
            return [PredictorError("The model process stopped: retry the request.")] * len(jobs)
        return outcomes

    def close(self) -> None:
        """Stop the model process: it finishes the batch in progress, then sees EOF."""
        self.connection.close()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
