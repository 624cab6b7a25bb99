"""Adaptive micro-batching: concurrent requests share one `predict` call.

Requests queue up while the model is busy; when it is free, everything queued
(up to `max_rows` rows) goes into the next call, and each request gets back the
slice of predictions for its own rows. An idle server predicts a request at once;
a busy one batches more, so throughput grows with load instead of latency.
A request is never split: one larger than `max_rows` is predicted alone.
"""

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .payload import Rows

log = logging.getLogger(__name__)

# Predicts rows: the model's `predict`, with what the server does around it.
Predict = Callable[[Rows], Any]
# Predicts a batch of requests' rows; returns one outcome per request (`predict_jobs`).
PredictBatch = Callable[[list[Rows]], Awaitable[list[Any]]]


@dataclass
class Job:
    """One request's rows and the future its predictions are delivered to."""

    rows: Rows
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def split(predictions: Any, sizes: Sequence[int]) -> list[Any]:
    """Cut the predictions of a batch back into one slice per request, in order."""
    bounds = np.cumsum([0, *sizes])
    if isinstance(predictions, pd.DataFrame | pd.Series):
        return [predictions.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    array = np.asarray(predictions)
    if len(array) != bounds[-1]:
        raise ValueError(f"The model returned {len(array)} predictions for {bounds[-1]} rows.")
    return [array[a:b] for a, b in itertools.pairwise(bounds)]


def predict_jobs(predict: Predict, jobs: list[Rows]) -> list[Any]:
    """Predict the jobs' rows together; if that fails, alone, so a bad request fails alone.

    Returns one item per job: its predictions, or the exception it raised.
    """
    if len(jobs) > 1:
        try:
            batch = [row for rows in jobs for row in rows]
            return split(predict(batch), [len(rows) for rows in jobs])
        except Exception:  # retried one by one below, where each error is reported
            log.debug("A batch of %d requests failed; predicting them one by one.", len(jobs))
    outcomes: list[Any] = []
    for rows in jobs:
        try:
            outcomes.append(split(predict(rows), [len(rows)])[0])
        except Exception as error:  # delivered to the request it belongs to
            outcomes.append(error)
    return outcomes


class Batcher:
    """Queue requests and predict them in batches, one batch at a time."""

    def __init__(self, predict_batch: PredictBatch, max_rows: int, max_wait: float) -> None:
        self.predict_batch = predict_batch
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.jobs: deque[Job] = deque()
        self.arrived = asyncio.Event()
        self.last_batch_size = 0

    async def submit(self, rows: Rows) -> Any:
        """Queue the rows and wait for their predictions (or the error they caused)."""
        job = Job(rows)
        self.jobs.append(job)
        self.arrived.set()
        return await job.future

    def queued_rows(self) -> int:
        """Rows waiting for a predict call."""
        return sum(len(job.rows) for job in self.jobs)

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
        while self.queued_rows() < self.max_rows:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        batch = [self.jobs.popleft()]
        rows = len(batch[0].rows)
        while self.jobs and rows + len(self.jobs[0].rows) <= self.max_rows:
            job = self.jobs.popleft()
            batch.append(job)
            rows += len(job.rows)
        self.last_batch_size = len(batch)
        # Requests that gave up (timed out, client gone) are not predicted.
        return [job for job in batch if not job.future.done()]

    async def run(self) -> None:
        """Predict batches until cancelled; the server runs this for its lifetime."""
        while True:
            batch = await self.next_batch()
            if not batch:
                continue
            outcomes = await self.predict_batch([job.rows for job in batch])
            for job, outcome in zip(batch, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(outcome, Exception):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)
