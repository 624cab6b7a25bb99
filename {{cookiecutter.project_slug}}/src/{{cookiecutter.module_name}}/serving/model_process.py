"""Everything that runs in the model's process: load the model, then predict batches.

The server sends each batch of requests over a pipe (`predictor.py` is the server's
end); here the rows of the whole batch become one DataFrame, typed by the model's
signature, and one `predict` call scores them. If the batch fails, its requests are
predicted one by one, so that a bad request fails alone. What is scored is counted
for live drift (`monitoring/live.py`) and, if asked, written to the inference log.
"""

import gc
import itertools
import logging
import pickle
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pandas as pd

from ..runtime.inference_log import InferenceLog, LogSettings
from ..runtime.live import LiveSettings, WindowWriter
from ..runtime.model import load_model
from ..runtime.model_input import to_frame
from ..store.tracking import use_tracking_store
from .protocol import IdentifiedRows

log = logging.getLogger(__name__)


# The id of the request that warms a new version up before it serves (`loaded.warm`).
WARM_UP = "warm-up"


@dataclass(frozen=True)
class Ready:
    """The model process' first message: its model is loaded and warm."""


@dataclass(frozen=True)
class LoadFailed:
    """The model process' first message when its model cannot be loaded, and why."""

    reason: str


@dataclass(frozen=True)
class Batch:
    """The server's message: requests to predict together, each its id and rows."""

    jobs: list[IdentifiedRows]


@dataclass(frozen=True)
class Outcomes:
    """The answer to a Batch: per request, its predictions or the exception it raised."""

    items: list[Any]


# Predicts the rows of requests as one call: the model's `predict`, with the typing
# of the rows before it and the monitoring after it.
Predict = Callable[[list[IdentifiedRows]], Any]


@dataclass(frozen=True)
class ModelSettings:
    """What the model process loads, and what it does with what it scores."""

    uri: str
    # Live drift: off for a model without a monitoring profile, or with MONITORING=false.
    live: LiveSettings | None = None
    # The inference log: only with INFERENCE_LOG_DIR.
    log: LogSettings | None = None
    # The fast path of scikit-learn models (FAST_PREDICT=false: their own predict).
    fast: bool = True
    # The server's tracking store: a model process forked later does not see the
    # server's environment as it is then, only as it was when its forkserver started.
    tracking_uri: str | None = None


def main(settings: ModelSettings, connection: Connection) -> None:
    """The model process: load the model, then predict each batch received, until EOF."""
    # The server decides when this process stops: signals sent to the whole
    # process group (Ctrl-C, a supervisor) must not cut predictions in flight short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        use_tracking_store(settings.tracking_uri)
        scorer = Scorer(settings)
    except Exception as error:  # reported by the server, which cannot start without it
        connection.send(LoadFailed(f"{type(error).__name__}: {error}"))
        return
    # The model lives as long as the process: keep the garbage collector from
    # walking through it again and again, which stalls predictions under load.
    gc.freeze()
    connection.send(Ready())
    try:
        while True:
            due = scorer.window.due_in() if scorer.window else None
            # Counts not yet written are written when no batch comes meanwhile.
            if due is not None and not connection.poll(due):
                scorer.flush()
                continue
            try:
                batch: Batch = connection.recv()
            except EOFError:  # the server closed the pipe, or is gone
                return
            outcomes = predict_jobs(scorer.predict, batch.jobs)
            try:
                connection.send(Outcomes(outcomes))
            except (pickle.PicklingError, TypeError, AttributeError):
                # An exception that cannot be pickled: send its message instead.
                connection.send(Outcomes([portable(outcome) for outcome in outcomes]))
    finally:
        scorer.close()


class Scorer:
    """The loaded model, and the monitoring of what it scores."""

    def __init__(self, settings: ModelSettings) -> None:
        self.predict_frame, self.schema = load_model(settings.uri, settings.fast)
        self.window = WindowWriter(settings.live) if settings.live else None
        self.log = InferenceLog(settings.log) if settings.log else None

    def predict(self, jobs: list[IdentifiedRows]) -> Any:
        """Predict the rows of the requests in one call; count and log what was scored."""
        rows = jobs[0][1] if len(jobs) == 1 else [row for _, rows in jobs for row in rows]
        frame = to_frame(rows, self.schema)
        predictions = self.predict_frame(frame)
        # A new version's warm-up (its input example) is not traffic: not logged, not counted.
        if len(predictions) == len(frame) and jobs[0][0] != WARM_UP:
            try:
                if self.window:
                    self.window.observe(frame, predictions)
                if self.log:
                    ids = [f"{key}-{n}" for key, rows in jobs for n in range(len(rows))]
                    self.log.write(ids, frame, predictions)
                    if self.window:
                        self.window.dropped_log_files = self.log.dropped
            except Exception:  # the predictions are right: only their monitoring is lost
                log.exception("Monitoring a batch failed.")
        return predictions

    def flush(self) -> None:
        """Write the live counts now."""
        if self.window:
            self.window.flush()

    def close(self) -> None:
        """Write what is pending, close the inference log."""
        self.flush()
        if self.log:
            self.log.close()


def predict_jobs(predict: Predict, jobs: list[IdentifiedRows]) -> list[Any]:
    """Predict the jobs' rows together; if that fails, alone, so a bad request fails alone.

    Returns one item per job: its predictions, or the exception it raised.
    """
    if len(jobs) > 1:
        try:
            return split(predict(jobs), [len(rows) for _, rows in jobs])
        except Exception:  # retried one by one below, where each error is reported
            log.debug("A batch of %d requests failed; predicting them one by one.", len(jobs))
    outcomes: list[Any] = []
    for job in jobs:
        try:
            outcomes.append(split(predict([job]), [len(job[1])])[0])
        except Exception as error:  # delivered to the request it belongs to
            outcomes.append(error)
    return outcomes


def split(predictions: Any, sizes: Sequence[int]) -> list[Any]:
    """Cut the predictions of a batch back into one slice per request, in order."""
    bounds = np.cumsum([0, *sizes])
    if len(predictions) != bounds[-1]:
        raise ValueError(
            f"The model returned {len(predictions)} predictions for {bounds[-1]} rows."
        )
    if isinstance(predictions, pd.DataFrame | pd.Series):
        return [predictions.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    array = np.asarray(predictions)
    return [array[a:b] for a, b in itertools.pairwise(bounds)]


def portable(outcome: Any) -> Any:
    """An outcome that can cross the pipe: an exception becomes its message."""
    if isinstance(outcome, Exception):
        return RuntimeError(f"{type(outcome).__name__}: {outcome}")
    return outcome
