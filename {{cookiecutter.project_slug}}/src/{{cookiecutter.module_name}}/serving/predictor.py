"""The server's end of the model process: start it, send it batches, restart it if it dies.

Python runs one thread at a time per process. A model predicting on a thread of
the server's process holds the event loop back for as long as it computes; in a
process of its own (`model_process.py`) it computes on one core while the server
reads, parses and answers requests on another. Batches go there over a pipe and
predictions come back the same way; the event loop watches the pipe, so no thread
stands between them (benchmarks/RESULTS.md of the template has the figures).
"""

import asyncio
import logging
import multiprocessing
from typing import Any

from ..errors import ModelUnavailableError
from . import model_process
from .model_process import ModelSettings
from .protocol import IdentifiedRows

log = logging.getLogger(__name__)


class Predictor:
    """A process holding the model; `predict` sends it a batch and awaits the outcomes."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.start()

    def start(self) -> None:
        """Start the model process, forked from a forkserver that has imported its code.

        Forking the server itself is unsafe (it runs threads); a forkserver is a process
        of its own, started once, single-threaded, with the model process' imports done:
        each model process (a new version, a restart) is ready in the time its model
        takes to load, not the seconds MLflow takes to import.
        """
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([model_process.__name__])
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=model_process.main,
            args=(self.settings, child_end),
            name="model",
            daemon=False,
        )
        self.process.start()
        child_end.close()  # the child's end lives in the child only: its exit means EOF here
        self.ready = False
        # True once a batch was sent and its answer not read: the pipe is out of step.
        self.pending = False

    def restart(self) -> None:
        """Replace the model process with a new one."""
        self.close()
        self.start()

    def is_alive(self) -> bool:
        """Whether the model process runs."""
        return self.process.is_alive()

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
            raise ModelUnavailableError(
                f"The model process stopped (exit code {self.process.exitcode})."
            ) from None

    async def wait_ready(self) -> None:
        """Wait until the model is loaded; raise ModelUnavailableError saying why it is not."""
        message = await self.receive()
        if isinstance(message, model_process.LoadFailed):
            raise ModelUnavailableError(
                f"The model process could not load {self.settings.uri}: {message.reason}"
            )
        self.ready = True

    async def predict(self, jobs: list[IdentifiedRows]) -> list[Any]:
        """Predict the jobs; one outcome each: predictions, or the exception raised."""
        if self.pending:
            # An earlier call was interrupted after sending: its answer, still in the
            # pipe, would be read as this batch's. Only a new process is in step.
            log.warning("The model process is out of step with the server: restarting it.")
            self.restart()
        try:
            if not self.ready:
                await self.wait_ready()
            self.pending = True
            self.connection.send(model_process.Batch(jobs))
            answer: model_process.Outcomes = await self.receive()
            outcomes = answer.items
            self.pending = False
        except (ModelUnavailableError, OSError) as error:
            log.error("%s Starting a new model process.", error)
            self.restart()
            return [ModelUnavailableError("The model process stopped: retry the request.")] * len(
                jobs
            )
        return outcomes

    def close(self) -> None:
        """Stop the model process: it finishes the batch in progress, then sees EOF."""
        self.connection.close()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
