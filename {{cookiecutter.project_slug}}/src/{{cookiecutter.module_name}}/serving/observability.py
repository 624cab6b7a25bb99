"""What the server tells about itself: Prometheus metrics and one JSON log line a request.

With several worker processes (`WEB_CONCURRENCY`), `prometheus-client` keeps the
metrics in files under `PROMETHEUS_MULTIPROC_DIR` (the `serve` command sets it), so
`/metrics` reports the sum over all workers, whichever worker answers.
https://prometheus.github.io/client_python/multiprocess/
"""

import collections
import json
import logging
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..settings import locations
from ..store.canary import CANARY_ROLE, CHAMPION_ROLE

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# Predicted values of a regression model, whatever their scale: 1-2.5-5 steps per
# decade from 0.01 to 100 000, on both sides of zero.
_POSITIVE = [m * 10.0**e for e in range(-2, 6) for m in (1, 2.5, 5)]
VALUE_BUCKETS = tuple(sorted([-v for v in _POSITIVE] + [0.0] + _POSITIVE))


class Metrics:
    """The server's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.collectors: list[Collector] = []
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request to response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "prediction_batch_rows",
            "Rows in each call of the model's predict (requests are batched).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter("predicted_rows", "Rows predicted.", registry=self.registry)
        self.classes = Counter(
            "predictions", "Predictions by class.", ["class"], registry=self.registry
        )
        self.values = Histogram(
            "predicted_value",
            "Predicted values (regression).",
            buckets=VALUE_BUCKETS,
            registry=self.registry,
        )
        # Labelled series, kept once looked up: `.labels()` costs more than counting.
        self.request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.class_series: dict[Any, Counter] = {}
        self.declare_health()

    def declare_health(self) -> None:
        """What says whether the server is well, and which model it serves."""
        self.batcher_restarts = Counter(
            "batcher_restarts",
            "Times the batcher stopped and was started again (0 unless something is wrong).",
            registry=self.registry,
        )
        self.ready = Gauge(
            "serving_ready",
            "1 when the model process and the batcher run (what /health says), else 0.",
            multiprocess_mode="livemin",
            registry=self.registry,
        )
        self.declare_shadow()
        self.declare_rollout()
        self.swaps = Counter(
            "model_swaps",
            "New versions of the followed alias: swapped in, or refused (failed to load or warm).",
            ["outcome"],
            registry=self.registry,
        )
        self.model = Gauge(
            "model_info",
            "The served model: 1, labelled with its name, version and URI.",
            ["name", "version", "uri"],
            multiprocess_mode="max",
            registry=self.registry,
        )

    def declare_shadow(self) -> None:
        """What the shadow (SHADOW_ALIAS) scored, dropped, and how long it took."""
        self.shadow_rows = Counter(
            "shadow_rows", "Rows the shadow scored beside the served model.", registry=self.registry
        )
        self.shadow_dropped = Counter(
            "shadow_dropped",
            "Rows the shadow skipped because it fell behind (its queue was full).",
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "shadow_batch_duration_seconds",
            "Time the shadow took to score a batch, off the response path.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def declare_rollout(self) -> None:
        """What `rollout` reads: each model's requests and batch times, and the canary's comparison.

        The champion scores every request, the canary's too (to compare them, and to
        answer if the canary fails): counters, so that `rollout` can sum them over servers
        and take their increase over a step.
        """
        self.role_requests = Counter(
            "model_requests",
            'Requests scored, by role ("champion": the served model; "canary") and outcome.',
            ["role", "outcome"],
            registry=self.registry,
        )
        self.role_latency = Histogram(
            "model_batch_duration_seconds",
            "Time a model process took to score a batch, by role.",
            ["role"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.canary_share = Gauge(
            "canary_share",
            "The share of requests the canary version answers here (0: no rollout).",
            ["version"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.canary_ends = Counter(
            "canary_ends",
            "Rollouts that ended while this server followed them: promoted, rolled back, ended.",
            ["outcome"],
            registry=self.registry,
        )
        # Each role's series, looked up once: they are counted on every batch.
        self.role_series = {
            role: (
                self.role_latency.labels(role),
                self.role_requests.labels(role, "ok"),
                self.role_requests.labels(role, "failed"),
            )
            for role in (CHAMPION_ROLE, CANARY_ROLE)
        }
        self.declare_canary_comparison()

    def declare_canary_comparison(self) -> None:
        """The canary's predictions against the champion's on the same rows."""
        self.canary_compared = Counter(
            "canary_compared_rows",
            "Rows both the canary and the champion scored.",
            registry=self.registry,
        )
        self.canary_agreeing = Counter(
            "canary_agreeing_rows",
            "Compared rows where both predict the same label.",
            registry=self.registry,
        )
        self.canary_abs_delta = Counter(
            "canary_abs_delta",
            "Sum of |canary - champion| over the compared rows (values).",
            registry=self.registry,
        )
        self.canary_abs_champion = Counter(
            "canary_abs_champion",
            "Sum of |champion| over the compared rows (values).",
            registry=self.registry,
        )
        self.canary_predictions = Counter(
            "canary_predictions",
            "Predictions on the compared rows by role and bin: the label, or a value bucket.",
            ["role", "bin"],
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count a request and its latency; each series is looked up once, then kept."""
        key = route, method, status
        if (series := self.request_series.get(key)) is None:
            series = self.requests.labels(route, method, str(status)), self.latency.labels(route)
            self.request_series[key] = series
        requests, latency = series
        requests.inc()
        latency.observe(seconds)

    def observe_role(self, role: str, seconds: float, failed: int, requests: int) -> None:
        """Count a batch one model scored: its time, its requests that succeeded and failed."""
        latency, succeeded, failures = self.role_series[role]
        latency.observe(seconds)
        succeeded.inc(requests - failed)
        if failed:
            failures.inc(failed)

    def observe_predictions(self, predictions: Any) -> None:
        """Count the predictions: by class for labels, in a histogram for numbers."""
        values = np.asarray(predictions)
        if values.ndim != 1:  # several outputs a row: only the batch size is recorded
            return
        self.rows.inc(len(values))
        if values.dtype.kind == "f":
            for value in values:
                self.values.observe(value)
        else:
            for label, count in collections.Counter(values.tolist()).items():
                if (series := self.class_series.get(label)) is None:
                    series = self.class_series[label] = self.classes.labels(str(label))
                series.inc(count)

    def add(self, collector: Collector) -> None:
        """Add metrics computed at each scrape (live drift), once for the whole server."""
        self.collectors.append(collector)
        self.registry.register(collector)

    def expose(self) -> bytes:
        """The metrics in Prometheus' text format, summed over workers if there are several."""
        if locations().prometheus_multiproc_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            for collector in self.collectors:
                registry.register(collector)
            return generate_latest(registry)
        return generate_latest(self.registry)


def access_logger(name: str) -> logging.Logger:
    """A logger that writes each message as is, one line on stdout: the JSON access log."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class Observe:
    """ASGI middleware: time each request, count it in `metrics`, log it as one JSON line.

    A plain ASGI middleware rather than `BaseHTTPMiddleware`, which costs far more a request.
    Paths the app does not serve are counted under the route "other", so that a
    scan of random URLs cannot create new time series.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Iterable[str], log_name: str):
        self.app = app
        self.metrics = metrics
        self.routes = set(routes)
        self.log = access_logger(log_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; count and log it once the app is done with it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.observe_request(route, scope["method"], status, elapsed)
            client = scope.get("client")
            entry = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "rows": scope.get("state", {}).get("rows"),
                "client": f"{client[0]}:{client[1]}" if client else None,
            }
            self.log.info(json.dumps(entry))
