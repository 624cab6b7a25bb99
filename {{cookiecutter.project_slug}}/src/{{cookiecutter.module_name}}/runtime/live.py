"""Live drift in the server: a sliding window of counts, shared by all its processes.

Each model process counts the rows it scores into the reference bins, in time
slots (a tenth of the window each), and writes its slots to a file of its own in
the server's monitoring directory about once a second. Whichever worker answers
/metrics reads every file, keeps the slots of the last window, sums them and
scores the sum: the figures cover the whole server's traffic, whatever
`WEB_CONCURRENCY` is, and a process that stopped ages out with its slots.
"""

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..core.drift import Counts, count, drift
from ..core.profile import Profile

log = logging.getLogger(__name__)

SLOTS = 10
# How often a model process writes its counts: /metrics lags the traffic by this much.
FLUSH_S = 1.0
# Rows kept uncounted at most (a bound on memory under heavy load).
MAX_PENDING_ROWS = 50_000


@dataclass(frozen=True)
class LiveSettings:
    """Where and over how long a model process counts what it scores."""

    profile: Profile
    directory: Path
    window_s: float


class WindowWriter:
    """The model process' side: keep what is scored, count it into time slots.

    A batch's frame is only kept (a reference: selecting its columns would cost a third
    of a millisecond, more than the fast path's predict); the frames are counted into
    the bins when the counts are written, about once a second: counting costs nearly as
    much for one row as for thousands, so a lone request does not pay it.
    """

    def __init__(self, settings: LiveSettings) -> None:
        self.profile = settings.profile
        self.slot_s = settings.window_s / SLOTS
        self.path = settings.directory / f"window-{os.getpid()}.json"
        self.slots: dict[int, Counts] = {}
        # The inference log's files removed so far (`InferenceLog.dropped`), shown beside.
        self.dropped_log_files = 0
        self.pending: list[tuple[pd.DataFrame, Any]] = []
        self.pending_rows = 0
        self.flushed_at = time.monotonic()

    def observe(self, frame: pd.DataFrame, predictions: Any) -> None:
        """Keep a scored batch, to be counted at the next write."""
        self.pending.append((frame, predictions))
        self.pending_rows += len(frame)
        if self.pending_rows >= MAX_PENDING_ROWS or time.monotonic() - self.flushed_at >= FLUSH_S:
            self.flush()

    def due_in(self) -> float | None:
        """Seconds until kept rows should be counted and written; None if there are none."""
        if not self.pending_rows:
            return None
        return max(0.0, FLUSH_S - (time.monotonic() - self.flushed_at))

    def count_pending(self) -> None:
        """Count the kept rows into the current slot; drop the slots out of the window."""
        slot = int(time.time() // self.slot_s)
        if self.pending_rows:
            frames, predictions = zip(*self.pending, strict=True)
            frame = pd.concat(frames, ignore_index=True)
            values = np.concatenate([np.asarray(batch) for batch in predictions])
            self.slots.setdefault(slot, Counts()).add(count(frame, values, self.profile))
            self.pending = []
            self.pending_rows = 0
        for old in [s for s in self.slots if s <= slot - SLOTS]:
            del self.slots[old]

    def flush(self) -> None:
        """Count, then write the slots to this process' file atomically (no reader sees half)."""
        self.count_pending()
        data = {
            "slot_s": self.slot_s,
            "slots": {str(slot): counts.to_json() for slot, counts in self.slots.items()},
            "inference_log_dropped_files": self.dropped_log_files,
        }
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(data))
        os.replace(partial, self.path)
        self.flushed_at = time.monotonic()


def read_window(directory: Path, window_s: float) -> tuple[Counts, int]:
    """Sum the slots of the last window over every process' file; and their dropped log files."""
    slot_s = window_s / SLOTS
    current = int(time.time() // slot_s)
    total, dropped = Counts(), 0
    for path in directory.glob("window-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):  # removed meanwhile: it is read next time
            continue
        for slot, counts in data["slots"].items():
            if int(slot) > current - SLOTS:
                total.add(Counts.from_json(counts))
        dropped += int(data.get("inference_log_dropped_files", 0))
    return total, dropped


class LiveDrift(Collector):
    """The HTTP process' side: drift of the last window, as Prometheus gauges at each scrape."""

    def __init__(self, profile: Profile, directory: Path, window_s: float) -> None:
        self.profile = profile
        self.directory = directory
        self.window_s = window_s

    def follow(self, profile: Profile, directory: Path) -> None:
        """Measure against another version's profile and counts (it serves from now on)."""
        self.profile, self.directory = profile, directory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Read the window and yield its gauges."""
        counts, dropped = read_window(self.directory, self.window_s)
        window = f"the last {self.window_s:g} s"
        yield gauge(
            "monitoring_window_rows",
            f"Rows scored in {window} (DRIFT_WINDOW_S).",
            [],
            [((), counts.rows)],
        )
        yield gauge(
            "inference_log_dropped_files",
            "Inference log files removed to keep the log within INFERENCE_LOG_MAX_MB.",
            [],
            [((), dropped)],
        )
        features, prediction = drift(counts, self.profile)
        kinds = {name: bins.kind for name, bins in self.profile.features.items()}
        psi = [((name,), d.psi) for name, d in features.items() if d.psi is not None]
        yield gauge(
            "feature_drift_psi",
            f"PSI of each feature in {window} against its training bins.",
            ["feature"],
            psi,
        )
        yield gauge(
            "feature_missing_share",
            f"Share of missing values of each feature in {window}.",
            ["feature"],
            [((name,), d.missing_share) for name, d in features.items()],
        )
        yield gauge(
            "feature_out_of_range_share",
            f"Share of a numeric feature's values outside its training range, in {window}.",
            ["feature"],
            [((n,), d.unseen_share) for n, d in features.items() if kinds[n] == "numeric"],
        )
        yield gauge(
            "feature_unseen_category_share",
            f"Share of a categorical feature's values never seen in training, in {window}.",
            ["feature"],
            [((n,), d.unseen_share) for n, d in features.items() if kinds[n] == "categorical"],
        )
        yield gauge(
            "prediction_drift_psi",
            f"PSI of the predictions in {window} against the held-out predictions.",
            [],
            [] if prediction is None or prediction.psi is None else [((), prediction.psi)],
        )


def gauge(
    name: str,
    documentation: str,
    labels: list[str],
    samples: Sequence[tuple[tuple[str, ...], float]],
) -> GaugeMetricFamily:
    """A gauge family with one sample per label tuple."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(list(values), float(value))
    return family
