"""The canary: a version that answers a share of the requests while `rollout` watches it.

`rollout` (`jobs/rollout/`) names the version with the registry's `canary` alias and
gives it a share of the requests (`store/canary.py`). A server following the registry
reads that state as it checks its own alias (every MODEL_REFRESH_S, and at once on a
webhook), loads and warms the canary in a process of its own (`follow.py`), and then
sends each request whose id falls in the share to it. The champion still scores
every request: its answer is compared with the canary's (agreement, differences,
predictions by bin, on /metrics for `rollout`), and it answers instead of a canary
that fails, so that a bad canary never fails a request. Which requests go to the
canary depends only on their ids, so every worker and every replica splits alike.
"""

import asyncio
import collections
import logging
import zlib
from typing import Any

import numpy as np
from mlflow import MlflowClient

from ..runtime.model import REGISTERED, ServedModel
from ..settings import ServingConfig, tracking_uri
from ..store.canary import CANARY, canary_state, rollout_outcome
from .follow import Follower
from .loaded import Loaded, Scored, close_after_turn, log_settings, start_process
from .model_process import ModelSettings
from .observability import VALUE_BUCKETS, Metrics

log = logging.getLogger(__name__)

# Shares are applied in steps of 1/10 000 of the requests.
SHARE_SCALE = 10_000


def routed(request_id: str, share: float) -> bool:
    """Whether the request with this id goes to the canary: the same answer on every server.

    A CRC-32 of the id, not Python's `hash`, which differs from process to process.
    """
    return zlib.crc32(request_id.encode()) % SHARE_SCALE < round(share * SHARE_SCALE)


def prediction_bins(predictions: Any) -> list[str]:
    """Each prediction's bin, as `canary_predictions_total` counts it: its label, or a bucket."""
    values = np.asarray(predictions)
    if values.dtype.kind not in "fc":
        return [str(value) for value in values.tolist()]
    edges = np.asarray(VALUE_BUCKETS)
    # A value's bucket is named by its upper bound, as Prometheus names histogram buckets.
    return [f"{edges[i]:g}" if i < len(edges) else "+Inf" for i in edges.searchsorted(values)]


class Canary:
    """The canary's model process, its share, and the comparison with the champion."""

    def __init__(self, name: str, settings: ServingConfig, metrics: Metrics) -> None:
        self.name, self.settings, self.metrics = name, settings, metrics
        self.uri = f"{REGISTERED}{name}@{CANARY}"
        self.current: Loaded | None = None
        self.share = 0.0
        self.follower = CanaryFollower(self, settings.model_refresh_s)

    def current_version(self) -> str | None:
        """The canary's version loaded now."""
        return None if self.current is None else self.current.model.version

    def serving(self) -> Loaded | None:
        """The canary, if it answers any requests now."""
        return self.current if self.share > 0 else None

    async def load(self, model: ServedModel) -> Loaded:
        """A model process for the canary, logging the rows it answers (`canary-*.jsonl`).

        No live drift of its own: the champion scores every row and counts them.
        """
        inference_log = log_settings(self.settings, model, self.uri, kind="canary")
        settings = ModelSettings(
            model.pinned_uri, None, inference_log, self.settings.fast_predict, tracking_uri()
        )
        return Loaded(model, await start_process(settings), None)

    async def swap(self, loaded: Loaded) -> None:
        """Use `loaded` as the canary; its share comes with the next check of the registry."""
        await self.drop_process()
        self.current = loaded
        log.info("Canary: version %s.", loaded.model.version)

    def counted(self, outcome: str) -> None:
        """A canary version loaded, or refused (it failed to load or warm): said in the log."""
        log.info("Canary version %s.", outcome)

    def set_share(self, share: float) -> None:
        """Answer `share` of the requests with the canary."""
        if share != self.share:
            log.info("Canary version %s answers %g of the requests.", self.current_version(), share)
        self.share = share
        self.metrics.canary_share.labels(self.current_version() or "").set(share)

    async def end(self) -> None:
        """The rollout is over: count how it ended, stop the canary's process."""
        version = self.current_version()
        if version is None:
            return
        outcome = await asyncio.to_thread(rollout_outcome, MlflowClient(), self.name, version)
        self.metrics.canary_ends.labels(outcome).inc()
        log.info("The rollout of version %s ended: %s.", version, outcome)
        await self.drop_process()

    async def drop_process(self) -> None:
        """No traffic to the canary; close its process after its batch in flight."""
        old, self.current = self.current, None
        if old is not None:
            self.metrics.canary_share.labels(old.model.version or "").set(0)
            self.share = 0.0
            await close_after_turn(old)

    def answer(
        self,
        answers: list[Any],
        chosen: list[int],
        champion: list[Any],
        canary: list[Any],
        version: str | None,
    ) -> None:
        """Answer the chosen requests with the canary's predictions, where it made them.

        `version` is that of the canary that scored them: the rollout may have ended since.
        """
        for index, outcome in zip(chosen, canary, strict=True):
            if isinstance(outcome, Exception):  # counted by the service; the champion answers
                log.debug("The canary failed on a request: %s", outcome)
                continue
            if not isinstance(champion[index], Exception):
                self.compare(champion[index], outcome)
            answers[index] = Scored(outcome, version)

    def compare(self, champion: Any, canary: Any) -> None:
        """Count how the canary's predictions of one request differ from the champion's."""
        ours, theirs = np.asarray(champion), np.asarray(canary)
        if ours.ndim != 1 or ours.shape != theirs.shape:  # several outputs a row: not compared
            return
        self.metrics.canary_compared.inc(len(ours))
        if ours.dtype.kind in "fc" and theirs.dtype.kind in "fc":
            self.metrics.canary_abs_delta.inc(float(np.abs(theirs - ours).sum()))
            self.metrics.canary_abs_champion.inc(float(np.abs(ours).sum()))
        else:
            self.metrics.canary_agreeing.inc(int((ours == theirs).sum()))
        for role, predictions in (("champion", ours), ("canary", theirs)):
            for label, count in collections.Counter(prediction_bins(predictions)).items():
                self.metrics.canary_predictions.labels(role, label).inc(count)

    async def stop(self) -> None:
        """Stop the canary's model process."""
        if self.current is not None:
            await asyncio.to_thread(self.current.predictor.close)


class CanaryFollower(Follower):
    """Keeps the canary on the registry's rollout state: its version, its share, or none."""

    def __init__(self, canary: Canary, refresh_s: float) -> None:
        super().__init__(canary, refresh_s)
        self.canary = canary

    async def check(self) -> None:
        """Load a new canary version, apply its share, or end the rollout if there is none."""
        state = await asyncio.to_thread(canary_state, MlflowClient(), self.canary.name)
        if state is None:
            self.refused = None  # a later rollout may try that version again
            await self.canary.end()
            return
        await super().check()
        loaded = self.canary.current_version() == state.version
        self.canary.set_share(state.share if loaded else 0.0)
