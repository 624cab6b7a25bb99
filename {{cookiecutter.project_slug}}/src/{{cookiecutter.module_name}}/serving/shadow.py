"""The shadow: another version (SHADOW_ALIAS, e.g. challenger) scores what the served one scores.

After each batch is answered, its requests (SHADOW_SHARE of them) join a bounded queue
that the shadow's own model process works through: a slow or failing shadow never
delays or fails an answer, and when it falls behind, what it cannot take is dropped and
counted (`shadow_dropped_total`). Its predictions are compared with the answers given:
`shadow_agreement_ratio` (the share of rows where both agree) for labels, or
`shadow_mean_abs_delta` for values, over the last DRIFT_WINDOW_S; the shadow's own
inference log files (`shadow-*.jsonl`) hold its prediction for each row id. It follows
its alias as the served model follows its own (`follow.py`).
"""

import asyncio
import collections
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..runtime.model import ServedModel
from ..settings import ServingConfig, tracking_uri
from .loaded import Loaded, close_after_turn, log_settings, start_process
from .model_process import ModelSettings
from .observability import Metrics
from .protocol import IdentifiedRows

log = logging.getLogger(__name__)

# Batches waiting for the shadow; beyond this it has fallen behind, and drops.
QUEUE_BATCHES = 64
# A request answered, and what the served model answered it.
Answered = tuple[IdentifiedRows, Any]


class Agreement(Collector):
    """How the shadow's predictions compare with the answers, over a sliding window."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        # (time, rows, rows agreeing, sum of absolute differences, numeric?)
        self.seen: collections.deque[tuple[float, int, int, float, bool]] = collections.deque()

    def add(self, served: Any, shadow: Any) -> None:
        """Compare one request's two sets of predictions."""
        ours, theirs = np.asarray(served), np.asarray(shadow)
        numeric = ours.dtype.kind in "fc" and theirs.dtype.kind in "fc"
        delta = float(np.abs(ours - theirs).sum()) if numeric else 0.0
        self.seen.append((time.monotonic(), len(ours), int((ours == theirs).sum()), delta, numeric))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The window's agreement (labels) or mean absolute difference (values).

        Both families are declared; the one that does not apply, or a window with no
        rows, has no sample.
        """
        start = time.monotonic() - self.window_s
        while self.seen and self.seen[0][0] < start:
            self.seen.popleft()
        window = f"the last {self.window_s:g} s"
        agreement = GaugeMetricFamily(
            "shadow_agreement_ratio",
            f"Share of rows where the shadow predicts the same label in {window}.",
        )
        delta = GaugeMetricFamily(
            "shadow_mean_abs_delta",
            f"Mean absolute difference of the shadow's predicted values in {window}.",
        )
        rows = sum(entry[1] for entry in self.seen)
        if rows and self.seen[-1][4]:
            delta.add_metric([], sum(entry[3] for entry in self.seen) / rows)
        elif rows:
            agreement.add_metric([], sum(entry[2] for entry in self.seen) / rows)
        yield agreement
        yield delta


class Shadow:
    """The shadow's model process, its queue, and the comparison of what it predicts."""

    def __init__(self, uri: str, settings: ServingConfig, metrics: Metrics) -> None:
        self.uri, self.settings, self.metrics = uri, settings, metrics
        self.current: Loaded | None = None
        self.queue: asyncio.Queue[list[Answered]] = asyncio.Queue(QUEUE_BATCHES)
        self.agreement = Agreement(settings.drift_window_s)
        metrics.add(self.agreement)

    def current_version(self) -> str | None:
        """The shadow's version now."""
        return None if self.current is None else self.current.model.version

    async def load(self, model: ServedModel) -> Loaded:
        """A model process for the shadow: no live drift, its own inference log files."""
        inference_log = log_settings(self.settings, model, self.uri, kind="shadow")
        settings = ModelSettings(
            model.pinned_uri, None, inference_log, self.settings.fast_predict, tracking_uri()
        )
        return Loaded(model, await start_process(settings), None)

    async def swap(self, loaded: Loaded) -> None:
        """Score with `loaded` from now on."""
        old, self.current = self.current, loaded
        log.info("Shadow: %s (version %s).", self.uri, loaded.model.version)
        if old is not None:
            await close_after_turn(old)

    def counted(self, outcome: str) -> None:
        """A new version of the shadow's alias: said in the log (the served model is counted)."""
        log.info("Shadow version %s.", outcome)

    def offer(self, jobs: list[IdentifiedRows], outcomes: list[Any]) -> None:
        """Queue SHADOW_SHARE of the answered requests for the shadow; drop them if it lags."""
        if self.current is None:
            return
        share = self.settings.shadow_share
        chosen = [
            (job, outcome)
            for job, outcome in zip(jobs, outcomes, strict=True)
            if not isinstance(outcome, Exception) and random.random() < share
        ]
        if not chosen:
            return
        try:
            self.queue.put_nowait(chosen)
        except asyncio.QueueFull:
            self.metrics.shadow_dropped.inc(sum(len(rows) for (_, rows), _ in chosen))

    async def run(self) -> None:
        """Score what is queued, batch after batch, until cancelled."""
        while True:
            chosen = await self.queue.get()
            current = self.current
            if current is None:
                continue
            started = time.perf_counter()
            async with current.turn:
                outcomes = await current.predictor.predict([job for job, _ in chosen])
            self.metrics.shadow_latency.observe(time.perf_counter() - started)
            for (job, served), shadow in zip(chosen, outcomes, strict=True):
                if isinstance(shadow, Exception):
                    log.debug("The shadow failed on request %s: %s", job[0], shadow)
                    continue
                self.agreement.add(served, shadow)
                self.metrics.shadow_rows.inc(len(job[1]))

    async def stop(self) -> None:
        """Stop the shadow's model process."""
        if self.current is not None:
            await asyncio.to_thread(self.current.predictor.close)
