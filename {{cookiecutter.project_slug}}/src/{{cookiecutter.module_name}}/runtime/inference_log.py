"""The inference log: every scored row, its prediction, id, time and model version.

Each model process appends JSON lines to files of its own (hostname and process id
in the name), so several workers and replicas never write to one file. Files are
rotated at a tenth of `INFERENCE_LOG_MAX_MB`; beyond ten files a process removes its
oldest one, says so in the log and counts it (`inference_log_dropped_files` on
/metrics), so the log stays within its budget and a full budget is noticed.

One line a row:
    {"id": "<request id>-<row>", "time": "...", "model": "...", "version": "...",
     "features": {...}, "prediction": ...}
A shadow (SHADOW_ALIAS) writes its own files (`shadow-*.jsonl`), a line per row it
scored, with the same id: {"id": ..., "time": ..., "model": ..., "shadow_version": ...,
"shadow_prediction": ...}. So does a rollout's canary (`canary-*.jsonl`,
"canary_version", "canary_prediction"): the rows it answered, with the answer given
(the served model's line for the same id is what the champion predicted beside it).
"""

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FILES = 10
PATTERN = "inference-*.jsonl"
SHADOW_PATTERN = "shadow-*.jsonl"
CANARY_PATTERN = "canary-*.jsonl"


@dataclass(frozen=True)
class LogSettings:
    """Where the inference log goes, its budget, and the model it describes."""

    directory: Path
    max_bytes: int
    model: str
    version: str
    # "inference" (the served model), or "shadow" or "canary": a log of its own files,
    # their version and prediction beside the row's id.
    kind: str = "inference"


class InferenceLog:
    """Append scored rows to this process' files."""

    def __init__(self, settings: LogSettings) -> None:
        self.settings = settings
        settings.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = f"{settings.kind}-{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
        self.files: list[Path] = []
        self.file: IO[str] | None = None
        self.written = 0
        self.dropped = 0

    def open_next(self) -> IO[str]:
        """Start a new file; remove this process' oldest if there are too many."""
        if self.file is not None:
            self.file.close()
        path = self.settings.directory / f"{self.prefix}-{len(self.files) + self.dropped:05d}.jsonl"
        self.files.append(path)
        while len(self.files) > FILES:
            oldest = self.files.pop(0)
            oldest.unlink(missing_ok=True)
            self.dropped += 1
            log.warning(
                "Inference log over INFERENCE_LOG_MAX_MB: removed %s. Ship the log "
                "elsewhere (see the README) or raise the budget.",
                oldest.name,
            )
        self.written = 0
        self.file = path.open("a", encoding="utf-8")
        return self.file

    def write(self, ids: list[str], frame: pd.DataFrame, predictions: Any) -> None:
        """Append one line per row."""
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        values = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        predicted = np.asarray(predictions).tolist()
        lines = [
            json.dumps(self.line(row_id, stamp, features, prediction), default=str) + "\n"
            for row_id, features, prediction in zip(ids, values, predicted, strict=True)
        ]
        budget = self.settings.max_bytes // FILES
        start = 0
        while start < len(lines):
            # As many lines as fit into this file (at least one, in a new file).
            end, size = start, 0
            while end < len(lines) and self.written + size + len(lines[end]) <= budget:
                size += len(lines[end])
                end += 1
            if end == start:
                if self.file is None or self.written:
                    self.open_next()
                    continue
                end, size = start + 1, len(lines[start])
            file = self.file or self.open_next()
            file.write("".join(lines[start:end]))
            self.written += size
            start = end
        if self.file is not None:
            self.file.flush()

    def line(self, row_id: str, stamp: str, features: Any, prediction: Any) -> dict[str, Any]:
        """One row's line: the served model's, or the shadow's or canary's beside it."""
        if (kind := self.settings.kind) != "inference":
            return {
                "id": row_id, "time": stamp, "model": self.settings.model,
                f"{kind}_version": self.settings.version, f"{kind}_prediction": prediction,
            }  # fmt: skip
        return {
            "id": row_id, "time": stamp, "model": self.settings.model,
            "version": self.settings.version, "features": features, "prediction": prediction,
        }  # fmt: skip

    def close(self) -> None:
        """Close the current file."""
        if self.file is not None:
            self.file.close()
