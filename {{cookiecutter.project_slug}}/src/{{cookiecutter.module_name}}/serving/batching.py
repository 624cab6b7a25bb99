"""Adaptive micro-batching: concurrent requests share one `predict` call.

Requests queue up while the model is busy; when it is free, everything queued
(up to `max_rows` rows) goes into the next call, and each request gets back the
slice of predictions for its own rows. An idle server predicts a request at once;
a busy one batches more, so throughput grows with load instead of latency.
A request is never split: one larger than `max_rows` is predicted alone.

The batcher outlives any failure: whatever goes wrong while a batch is predicted
fails only the request that caused it, and the next batch is served.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ScoringError
from ..runtime.model_input import Rows
from .protocol import IdentifiedRows

log = logging.getLogger(__name__)

# Predicts a batch of requests' rows; returns one outcome per request: its
# predictions, or the exception that request raised.
PredictBatch = Callable[[list[IdentifiedRows]], Awaitable[list[Any]]]


@dataclass
class Job:
    """One request's rows and id, and the future its predictions are delivered to."""

    rows: Rows
    id: str = ""
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Batcher:
    """Queue requests and predict them in batches, one batch at a time."""

    def __init__(self, predict_batch: PredictBatch, max_rows: int, max_wait: float) -> None:
        self.predict_batch = predict_batch
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.jobs: deque[Job] = deque()
        self.rows_queued = 0
        self.arrived = asyncio.Event()
        self.last_batch_size = 0

    async def submit(self, rows: Rows, request_id: str = "") -> Any:
        """Queue the rows and wait for their predictions (or the error they caused)."""
        job = Job(rows, request_id)
        self.jobs.append(job)
        self.rows_queued += len(rows)
        self.arrived.set()
        return await job.future

    def take(self) -> Job:
        """Take the oldest request off the queue."""
        job = self.jobs.popleft()
        self.rows_queued -= len(job.rows)
        return job

    async def next_batch(self) -> list[Job]:
        """Wait for requests, then take as many as fit into `max_rows` rows (at least one)."""
        while not self.jobs:
            self.arrived.clear()
            await self.arrived.wait()
        # Under load (the last batch served several requests), the callers just
        # answered are about to send their next request: give them up to `max_wait`
        # seconds to join. A lone caller never waits.
        wait = self.max_wait if self.last_batch_size > 1 else 0.0
        deadline = asyncio.get_running_loop().time() + wait
        while self.rows_queued < self.max_rows:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        batch = [self.take()]
        rows = len(batch[0].rows)
        while self.jobs and rows + len(self.jobs[0].rows) <= self.max_rows:
            batch.append(self.take())
            rows += len(batch[-1].rows)
        self.last_batch_size = len(batch)
        # Requests that gave up (timed out, client gone) are not predicted.
        return [job for job in batch if not job.future.done()]

    async def run(self) -> None:
        """Predict batches until cancelled; the server runs this for its lifetime."""
        while True:
            batch = await self.next_batch()
            if batch:
                await self.serve(batch)

    async def serve(self, batch: list[Job]) -> None:
        """Predict one batch and deliver each request its outcome; never raise.

        If the batch fails outside the model (which reports its errors request by
        request), its requests are tried again one by one, so a request that makes
        the server fail fails alone.
        """
        try:
            outcomes = await self.predict_batch([(job.id, job.rows) for job in batch])
            if len(outcomes) != len(batch):
                raise ScoringError(
                    f"{len(outcomes)} outcomes for a batch of {len(batch)} requests."
                )
        except Exception as error:  # the batch fails, the batcher goes on
            if len(batch) > 1:
                log.warning("A batch of %d requests failed (%r): one by one.", len(batch), error)
                for job in batch:
                    await self.serve([job])
                return
            log.exception("Predicting a request failed.", exc_info=error)
            outcomes = [ScoringError("The server failed to predict this request.")]
        for job, outcome in zip(batch, outcomes, strict=True):
            if job.future.done():
                continue
            if isinstance(outcome, Exception):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
