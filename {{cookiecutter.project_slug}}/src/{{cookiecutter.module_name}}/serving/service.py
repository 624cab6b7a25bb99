"""The serving path every request takes, from its body to its predictions, and its supervision.

A request body is parsed into rows (`protocol.py`), queued, and predicted together
with the requests that arrive at the same time (`batching.py`) by the model in a
process of its own (`predictor.py`, `model_process.py`). `Service` holds these parts
for the server's lifetime; the HTTP routes (`app.py`) and `serve --check` both go
through `Service.parse` and `Service.predict`, so the check runs what a request runs.
"""

import asyncio
import gc
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..runtime.inference_log import LogSettings
from ..runtime.live import LiveDrift, LiveSettings
from ..runtime.model import ServedModel, describe_model
from ..runtime.model_input import Rows
from ..settings import ServingConfig
from ..store.tracking import use_tracking_store
from .batching import Batcher
from .model_process import ModelSettings
from .observability import Metrics
from .predictor import Predictor
from .protocol import IdentifiedRows, parse

log = logging.getLogger(__name__)


class Service:
    """The served model, its process and the batcher feeding it; `start` before `score`."""

    model: ServedModel
    predictor: Predictor
    batcher: Batcher

    def __init__(self, uri: str, settings: ServingConfig, metrics: Metrics) -> None:
        self.uri = uri
        self.settings = settings
        self.metrics = metrics
        self.batching: asyncio.Task[None] | None = None
        self.stopping = False
        # A folder of our own for the live counts, when the server gives none.
        self.own_dir: Path | None = None

    async def start(self) -> None:
        """Identify and load the model, start its process and the batcher."""
        use_tracking_store()
        # Reading the registry blocks: on a thread, so the event loop stays free.
        self.model = await asyncio.to_thread(describe_model, self.uri)
        settings = ModelSettings(
            self.model.pinned_uri,
            await asyncio.to_thread(self.live_settings),
            self.log_settings(),
            self.settings.fast_predict,
        )
        self.predictor = Predictor(settings)
        await self.predictor.wait_ready()
        self.batcher = Batcher(
            self.predict_batch, self.settings.max_batch_rows, self.settings.max_batch_wait_ms / 1000
        )
        self.start_batching()
        self.health()
        self.metrics.model.labels(self.model.name or "", self.model.version or "", self.uri).set(1)
        log.info("Serving %s (version %s).", self.uri, self.model.version)
        # What exists now lives as long as the server: keep the garbage collector from
        # walking through it again and again, which stalls requests under load.
        gc.freeze()

    def live_settings(self) -> LiveSettings | None:
        """Live drift for a model with a reference profile, unless MONITORING is off."""
        if not self.settings.monitoring:
            log.info("Monitoring is off (MONITORING=false).")
            return None
        profile = self.model.profile()
        if profile is None:
            return None
        directory = self.settings.monitoring_dir
        if directory is None:
            directory = self.own_dir = Path(tempfile.mkdtemp(prefix="monitoring-"))
        directory.mkdir(parents=True, exist_ok=True)
        live = LiveSettings(profile, directory, self.settings.drift_window_s)
        self.metrics.add(LiveDrift(profile, directory, live.window_s))
        return live

    def log_settings(self) -> LogSettings | None:
        """The inference log, if INFERENCE_LOG_DIR is set."""
        if self.settings.inference_log_dir is None:
            return None
        return LogSettings(
            self.settings.inference_log_dir,
            int(self.settings.inference_log_max_mb * 1024 * 1024),
            self.model.name or self.uri,
            self.model.version or "",
        )

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
        """None if the server can predict; else what stops it (also `serving_ready`)."""
        problem = None
        if self.batching is None:
            problem = "loading"
        elif not self.predictor.is_alive():
            problem = "the model process is down"
        elif self.batching.done():
            problem = "the batcher is down"
        self.metrics.ready.set(0 if problem else 1)
        return problem

    async def score(self, body: bytes, content_type: str) -> Any:
        """Parse a request body and return its predictions; raise what the request caused."""
        return await self.predict(self.parse(body, content_type))

    def parse(self, body: bytes, content_type: str) -> Rows:
        """The rows of a request body, checked against the model's schema and the limits."""
        return parse(body, content_type, self.model.schema, self.settings.max_request_rows)

    async def predict(self, rows: Rows, request_id: str = "") -> Any:
        """Queue the rows for the model; return their predictions, or raise their error."""
        return await self.batcher.submit(rows, request_id)

    async def predict_batch(self, jobs: list[IdentifiedRows]) -> list[Any]:
        """Predict a batch in the model's process and count what comes back."""
        outcomes = await self.predictor.predict(jobs)
        try:
            self.metrics.batch_rows.observe(sum(len(rows) for _, rows in jobs))
            for outcome in outcomes:
                if not isinstance(outcome, Exception):
                    self.metrics.observe_predictions(outcome)
        except Exception:  # the predictions are right: only their count is lost
            log.exception("Counting the predictions of a batch failed.")
        return outcomes

    async def stop(self) -> None:
        """Stop the batcher, then the model process (the server has answered every request)."""
        self.stopping = True
        if self.batching is not None:
            self.batching.cancel()
            await asyncio.gather(self.batching, return_exceptions=True)
        self.predictor.close()
        if self.own_dir is not None:
            shutil.rmtree(self.own_dir, ignore_errors=True)


async def check_serving(uri: str, settings: ServingConfig) -> int:
    """Score the model's own input example through the serving path; return the rows scored."""
    service = Service(uri, settings, Metrics())
    await service.start()
    try:
        predictions = await service.score(service.model.serving_example(), "application/json")
    finally:
        await service.stop()
    return len(predictions)
