"""Counting rows into the profile's bins, and the drift scores of those counts.

The server counts every scored batch here (in the model's process); `monitor`
counts each window of the inference log the same way. Counts add up: those of
several processes, or of several time slots, are summed before scoring.

PSI (population stability index) of a column: sum over its bins of
(a - e) * ln(a / e), where a and e are the bin's share of the new rows and of the
training rows. Rules of thumb: below 0.1 little change, above 0.25 a large one.
"""

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .profile import CategoricalBins, NumericBins, Profile, bin_counts

# A bin with no rows gets this share instead, so that ln(a / e) stays finite.
EMPTY_SHARE = 1e-4


@dataclass
class ColumnCounts:
    """Rows of one column by bin (the last bin: missing), and the rows outside what training saw."""

    bins: np.ndarray
    # Numbers outside the training range, or categories training never saw.
    unseen: int = 0

    def add(self, other: "ColumnCounts") -> None:
        """Add another count of the same column's bins."""
        self.bins = self.bins + other.bins
        self.unseen += other.unseen

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"bins": self.bins.tolist(), "unseen": self.unseen}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ColumnCounts":
        """The inverse of `to_json`."""
        return cls(np.asarray(data["bins"], dtype=np.int64), int(data["unseen"]))


def as_numbers(values: Any) -> np.ndarray:
    """Values as floats; what is not a number is missing (NaN)."""
    array = np.asarray(values)
    if array.dtype.kind in "fiub":
        return array.astype(float)
    return pd.to_numeric(pd.Series(array), errors="coerce").to_numpy(dtype=float)


def count_column(values: Any, bins: NumericBins | CategoricalBins) -> ColumnCounts:
    """Count values into a column's reference bins."""
    if isinstance(bins, NumericBins):
        numbers = as_numbers(values)
        missing = np.isnan(numbers)
        present = numbers[~missing]
        edges = np.asarray(bins.edges, dtype=float)
        counts = bin_counts(edges, present)
        unseen = 0
        if bins.min is not None and bins.max is not None:
            unseen = int(((present < bins.min) | (present > bins.max)).sum())
        return ColumnCounts(np.append(counts, missing.sum()).astype(np.int64), unseen)
    series = pd.Series(values, dtype=object)
    missing = series.isna().to_numpy()
    labels = series[~missing].astype(str)
    categories = bins.categories
    # -1 for a label of no category (pandas 4 will refuse those in a Categorical).
    codes = pd.Index(categories).get_indexer(pd.Index(labels)).astype(np.int64)
    codes[codes < 0] = len(categories)  # "other"
    counts = np.bincount(codes, minlength=len(categories) + 1)
    unseen = 0 if bins.seen is None else int((~labels.isin(bins.seen)).sum())
    return ColumnCounts(np.append(counts, missing.sum()).astype(np.int64), unseen)


@dataclass
class Counts:
    """Rows counted into every feature's bins and the predictions' bins."""

    rows: int = 0
    features: dict[str, ColumnCounts] = field(default_factory=dict)
    prediction: ColumnCounts | None = None

    def add(self, other: "Counts") -> None:
        """Add the counts of other rows (another batch, process or time slot)."""
        self.rows += other.rows
        for name, counts in other.features.items():
            if name in self.features:
                self.features[name].add(counts)
            else:  # a copy of its own (`add` never changes an array in place)
                self.features[name] = replace(counts)
        if other.prediction is not None:
            if self.prediction is None:
                self.prediction = replace(other.prediction)
            else:
                self.prediction.add(other.prediction)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "rows": self.rows,
            "features": {name: counts.to_json() for name, counts in self.features.items()},
            "prediction": None if self.prediction is None else self.prediction.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Counts":
        """The inverse of `to_json`."""
        prediction = data.get("prediction")
        return cls(
            int(data["rows"]),
            {name: ColumnCounts.from_json(c) for name, c in data["features"].items()},
            None if prediction is None else ColumnCounts.from_json(prediction),
        )


def count(frame: pd.DataFrame, predictions: Any, profile: Profile) -> Counts:
    """Count a frame's rows and their predictions into the profile's bins."""
    features = {
        name: count_column(frame[name].to_numpy(), bins)
        for name, bins in profile.features.items()
        if name in frame.columns
    }
    values = np.asarray(predictions)
    prediction = count_column(values, profile.prediction) if values.ndim == 1 else None
    return Counts(len(frame), features, prediction)


def psi(counts: np.ndarray, reference: list[float]) -> float | None:
    """The population stability index of counts against the reference shares; None if empty."""
    total = counts.sum()
    if total == 0:
        return None
    actual = np.maximum(counts / total, EMPTY_SHARE)
    expected = np.maximum(np.asarray(reference, dtype=float), EMPTY_SHARE)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class ColumnDrift:
    """How far a column's new values are from its training values."""

    psi: float | None
    missing_share: float
    unseen_share: float


def column_drift(counts: ColumnCounts, bins: NumericBins | CategoricalBins) -> ColumnDrift:
    """The drift scores of a column's counts."""
    total = int(counts.bins.sum())
    present = total - int(counts.bins[-1])
    return ColumnDrift(
        psi(counts.bins, bins.shares),
        counts.bins[-1] / total if total else 0.0,
        counts.unseen / present if present else 0.0,
    )


def drift(counts: Counts, profile: Profile) -> tuple[dict[str, ColumnDrift], ColumnDrift | None]:
    """The drift of every feature, and of the predictions."""
    features = {
        name: column_drift(column, profile.features[name])
        for name, column in counts.features.items()
        if name in profile.features
    }
    prediction = None
    if counts.prediction is not None:
        prediction = column_drift(counts.prediction, profile.prediction)
    return features, prediction
