"""The serving path every request takes, from its body to its predictions, and its supervision.

A request body is parsed into rows (`protocol.py`), queued, and predicted together
with the requests that arrive at the same time (`batching.py`) by the model in a
process of its own (`predictor.py`, `model_process.py`). `Service` holds these parts
for the server's lifetime; the HTTP routes (`app.py`) and `serve --check` both go
through `Service.parse` and `Service.predict`, so the check runs what a request runs.
A server started on a registry alias follows it (`follow.py`): a new version is
loaded and warmed in a process of its own, then swapped in between two batches. Such
a server also follows a rollout's canary (`canary.py`), which answers a share of the
requests.
"""

import asyncio
import gc
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..runtime.live import LiveDrift, LiveSettings
from ..runtime.model import REGISTERED, ServedModel, describe_model
from ..runtime.model_input import Rows
from ..settings import ServingConfig, tracking_uri
from ..store.canary import CANARY_ROLE, CHAMPION_ROLE
from ..store.tracking import use_tracking_store
from .batching import Batcher
from .canary import Canary, routed
from .follow import Follower, follows
from .loaded import Loaded, Scored, close_after_turn, log_settings, start_process
from .model_process import ModelSettings
from .observability import Metrics
from .protocol import IdentifiedRows, parse
from .shadow import Shadow
from .webhooks import Event

log = logging.getLogger(__name__)


class Service:
    """The served model, its process and the batcher feeding it; `start` before `score`."""

    current: Loaded
    batcher: Batcher

    def __init__(self, uri: str, settings: ServingConfig, metrics: Metrics) -> None:
        self.uri = uri
        self.settings = settings
        self.metrics = metrics
        self.batching: asyncio.Task[None] | None = None
        self.follower: Follower | None = None
        self.shadow: Shadow | None = None
        self.shadow_follower: Follower | None = None
        self.canary: Canary | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.live: LiveDrift | None = None
        # A folder of our own for the live counts, when the server gives none.
        self.own_dir: Path | None = None

    @property
    def model(self) -> ServedModel:
        """The model serving now."""
        return self.current.model

    async def start(self) -> None:
        """Identify and load the model, start its process, the batcher and the follower."""
        use_tracking_store()
        # Reading the registry blocks: on a thread, so the event loop stays free.
        self.current = await self.load(await asyncio.to_thread(describe_model, self.uri))
        self.batcher = Batcher(
            self.predict_batch, self.settings.max_batch_rows, self.settings.max_batch_wait_ms / 1000
        )
        self.start_batching()
        self.retarget_live(self.current)
        self.announce(self.current.model)
        if follows(self.uri, self.settings):
            self.follower = Follower(self, self.settings.model_refresh_s)
            self.tasks.append(asyncio.create_task(self.follower.run(), name="follower"))
            await self.start_canary()
        await self.start_shadow()
        # What exists now lives as long as the server: keep the garbage collector from
        # walking through it again and again, which stalls requests under load.
        gc.freeze()

    async def start_shadow(self) -> None:
        """Start the shadow (SHADOW_ALIAS) of a registered model, and have it follow its alias."""
        alias, name = self.settings.shadow_alias, self.current.model.name
        if not alias:
            return
        if name is None:
            log.warning("SHADOW_ALIAS=%s ignored: the served model is not a registered one.", alias)
            return
        self.shadow = Shadow(f"{REGISTERED}{name}@{alias}", self.settings, self.metrics)
        # The shadow's first version is found as any later one: by its follower.
        follower = Follower(self.shadow, self.settings.model_refresh_s)
        try:
            await follower.check()
        except Exception as error:  # no such alias yet (no challenger): it stays idle
            log.warning("The shadow %s does not score yet: %s", self.shadow.uri, error)
        self.tasks.append(asyncio.create_task(self.shadow.run(), name="shadow"))
        if self.settings.model_refresh_s > 0:
            self.shadow_follower = follower
            self.tasks.append(asyncio.create_task(follower.run(), name="shadow follower"))

    async def start_canary(self) -> None:
        """Follow the rollouts of the served model: its canary, if one is under way."""
        name = self.current.model.name
        if name is None:
            return
        self.canary = Canary(name, self.settings, self.metrics)
        try:
            await self.canary.follower.check()
        except Exception:  # the registry is down: the next check will tell
            log.exception("Checking for a canary of %s failed.", name)
        self.tasks.append(asyncio.create_task(self.canary.follower.run(), name="canary"))

    def nudge(self, event: Event) -> bool:
        """A webhook says an alias or the canary's share moved: check it now if followed here."""
        name = self.current.model.name
        nudged = False
        for follower in (self.follower, self.shadow_follower):
            if follower is not None and event.moves(name, follower.alias):
                follower.check_now()
                nudged = True
        if self.canary is not None and event.concerns_rollout(name):
            self.canary.follower.check_now()
            nudged = True
        return nudged

    async def load(self, model: ServedModel) -> Loaded:
        """Start a process with `model` and wait until it is loaded."""
        live = await asyncio.to_thread(self.live_settings, model)
        inference_log = log_settings(self.settings, model, self.uri)
        settings = ModelSettings(
            model.pinned_uri, live, inference_log, self.settings.fast_predict, tracking_uri()
        )
        return Loaded(model, await start_process(settings), live)

    def current_version(self) -> str | None:
        """The version serving now."""
        return self.current.model.version

    def counted(self, outcome: str) -> None:
        """Count a new version of the alias: swapped in, or refused."""
        self.metrics.swaps.labels(outcome).inc()

    async def swap(self, new: Loaded) -> None:
        """Serve `new` from the next batch on; close the old one after its batch in flight."""
        old, self.current = self.current, new
        self.retarget_live(new)
        self.metrics.model.labels(*labels(old.model, self.uri)).set(0)
        self.announce(new.model)
        await close_after_turn(old)

    def announce(self, model: ServedModel) -> None:
        """Say which model serves, in the log and on /metrics."""
        self.metrics.model.labels(*labels(model, self.uri)).set(1)
        log.info("Serving %s (version %s).", self.uri, model.version)

    def live_settings(self, model: ServedModel) -> LiveSettings | None:
        """Live drift for a model with a reference profile, unless MONITORING is off."""
        if not self.settings.monitoring:
            log.info("Monitoring is off (MONITORING=false).")
            return None
        profile = model.profile()
        if profile is None:
            return None
        directory = self.settings.monitoring_dir
        if directory is None:
            if self.own_dir is None:
                self.own_dir = Path(tempfile.mkdtemp(prefix="monitoring-"))
            directory = self.own_dir
        # Each version counts into bins of its own profile: a folder of its own.
        directory = directory / f"version-{model.version or 'unregistered'}"
        directory.mkdir(parents=True, exist_ok=True)
        return LiveSettings(profile, directory, self.settings.drift_window_s)

    def retarget_live(self, loaded: Loaded) -> None:
        """Live drift on /metrics follows the serving version's profile and counts."""
        live = loaded.live
        if live is None:
            return
        if self.live is None:
            self.live = LiveDrift(live.profile, live.directory, live.window_s)
            self.metrics.add(self.live)
        else:
            self.live.follow(live.profile, live.directory)

    def start_batching(self) -> None:
        """Run the batcher; if it ever stops while the server runs, start it again."""
        self.batching = asyncio.create_task(self.batcher.run(), name="batcher")
        self.batching.add_done_callback(self.batching_stopped)

    def batching_stopped(self, task: asyncio.Task[None]) -> None:
        """Called when the batcher's task ends: at shutdown, or never otherwise."""
        if self.stopping:
            return
        cause = "cancelled" if task.cancelled() else repr(task.exception())
        log.error("The batcher stopped (%s): starting it again.", cause)
        self.metrics.batcher_restarts.inc()
        self.start_batching()

    def health(self) -> str | None:
        """None if the server can predict; else what stops it."""
        problem = None
        if self.batching is None:
            problem = "loading"
        elif not self.current.predictor.is_alive():
            problem = "the model process is down"
        elif self.batching.done():
            problem = "the batcher is down"
        return problem

    async def score(self, body: bytes, content_type: str) -> Scored:
        """Parse a request body and return its predictions; raise what the request caused."""
        return await self.predict(self.parse(body, content_type))

    def parse(self, body: bytes, content_type: str) -> Rows:
        """The rows of a request body, checked against the model's schema and the limits."""
        return parse(body, content_type, self.model.schema, self.settings.max_request_rows)

    async def predict(self, rows: Rows, request_id: str = "") -> Scored:
        """Queue the rows for the model; return their predictions, or raise their error."""
        scored: Scored = await self.batcher.submit(rows, request_id)
        return scored

    async def predict_batch(self, jobs: list[IdentifiedRows]) -> list[Any]:
        """Predict a batch in the model's process, count what comes back, name its version.

        During a rollout, the canary scores its share of the requests beside the champion
        and answers them, unless it fails.
        """
        current = self.current
        canary = None if self.canary is None else self.canary.serving()
        chosen = []
        if canary is not None and self.canary is not None:
            share = self.canary.share
            chosen = [i for i, (request_id, _) in enumerate(jobs) if routed(request_id, share)]
        if canary is not None and chosen:
            outcomes, tried = await asyncio.gather(
                self.score_as(CHAMPION_ROLE, current, jobs),
                self.score_as(CANARY_ROLE, canary, [jobs[i] for i in chosen]),
            )
        else:
            outcomes = await self.score_as(CHAMPION_ROLE, current, jobs)
        self.count(jobs, outcomes)
        version = current.model.version
        answers = [o if isinstance(o, Exception) else Scored(o, version) for o in outcomes]
        if canary is not None and chosen and self.canary is not None:
            self.canary.answer(answers, chosen, outcomes, tried, canary.model.version)
        return answers

    async def score_as(self, role: str, loaded: Loaded, jobs: list[IdentifiedRows]) -> list[Any]:
        """Score the jobs with one model; time and count them under its role.

        A canary's process that is gone fails its jobs (the champion answers them).
        """
        started = time.perf_counter()
        try:
            async with loaded.turn:
                outcomes = await loaded.predictor.predict(jobs)
        except Exception as error:
            if role == CHAMPION_ROLE:
                raise
            outcomes = [error] * len(jobs)
        failed = sum(isinstance(outcome, Exception) for outcome in outcomes)
        self.metrics.observe_role(role, time.perf_counter() - started, failed, len(outcomes))
        return outcomes

    def count(self, jobs: list[IdentifiedRows], outcomes: list[Any]) -> None:
        """Count the served model's predictions; offer them to the shadow."""
        try:
            self.metrics.batch_rows.observe(sum(len(rows) for _, rows in jobs))
            for outcome in outcomes:
                if not isinstance(outcome, Exception):
                    self.metrics.observe_predictions(outcome)
        except Exception:  # the predictions are right: only their count is lost
            log.exception("Counting the predictions of a batch failed.")
        if self.shadow is not None:
            self.shadow.offer(jobs, outcomes)

    async def stop(self) -> None:
        """Stop the follower, the batcher, then the model process (every request answered)."""
        self.stopping = True
        for task in [*self.tasks, self.batching]:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.shadow is not None:
            await self.shadow.stop()
        if self.canary is not None:
            await self.canary.stop()
        self.current.predictor.close()
        if self.own_dir is not None:
            shutil.rmtree(self.own_dir, ignore_errors=True)


def labels(model: ServedModel, uri: str) -> tuple[str, str, str]:
    """The labels of `model_info` for a served model."""
    return model.name or "", model.version or "", uri


async def check_serving(uri: str, settings: ServingConfig) -> int:
    """Score the model's own input example through the serving path; return the rows scored."""
    service = Service(uri, settings, Metrics())
    await service.start()
    try:
        scored = await service.score(service.model.serving_example(), "application/json")
    finally:
        await service.stop()
    return len(scored.predictions)
