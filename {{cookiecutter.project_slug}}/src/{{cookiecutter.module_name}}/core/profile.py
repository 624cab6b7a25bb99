"""The reference profile: what the training data and the model's predictions looked like.

Made at training time and logged inside the model (`extra_files/`), so it travels
with every registered version, with `export-model` and into the Docker image. The
bins are fixed here, from the training data, once: the server and `monitor` count
new rows into these same bins, so drift figures are comparable over time and
between replicas (a drift report that re-bins each window cannot say that).

    {"version": 1, "task": ..., "rows": ..., "features": {name: bins}, "prediction": bins,
     "metrics": {...}, "classes": [...]}

typed here (`Profile`, `NumericBins`, `CategoricalBins`) and checked when read, so a
profile that is not of this shape fails at load with its path, not at the first count.

Numeric bins: interior edges at the training deciles (fewer bins, of 20 rows or
more, for fewer than 200 rows), so the first and last bins are open-ended; a value
x falls in the first bin whose edge is >= x. Categorical bins: the frequent
categories, then "other" (rare or unseen). Both end with a bin for missing values;
`shares` are the training rows' shares of every bin.
"""

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ModelError

VERSION = 1
# Where the profile lives inside a logged model's directory.
PROFILE_FILE = "monitoring_profile.json"
PROFILE_PATH = f"extra_files/{PROFILE_FILE}"
NUMERIC_BINS = 10
# At least this many reference rows a bin: fewer make a noisy reference (sampling alone
# gives n rows on k bins a PSI of about (k - 1) / n), as for a small held-out set.
ROWS_PER_BIN = 20
# Categories below this share of the training rows count as "other"; at most this many.
MIN_CATEGORY_SHARE = 0.01
MAX_CATEGORIES = 20
# Beyond this many distinct values, a category column's unseen values are not tracked.
MAX_SEEN = 10_000


class NumericBins(BaseModel):
    """Interior edges, the share of every bin (missing last) and the training range."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["numeric"] = "numeric"
    edges: list[float]
    shares: list[float]
    min: float | None
    max: float | None


class CategoricalBins(BaseModel):
    """The frequent categories, the share of each, of "other" and of missing; all seen."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["categorical"] = "categorical"
    categories: list[str]
    shares: list[float]
    # Every category training saw; None beyond MAX_SEEN of them.
    seen: list[str] | None


Bins = Annotated[NumericBins | CategoricalBins, Field(discriminator="kind")]


class Profile(BaseModel):
    """The reference profile of one model: its training features and held-out predictions."""

    model_config = ConfigDict(frozen=True)
    version: int = VERSION
    task: str
    rows: int
    features: dict[str, Bins]
    prediction: Bins
    metrics: dict[str, float]
    classes: list[str] | None


def is_numeric(values: pd.Series) -> bool:
    """Numeric, as the pipeline's preprocessing decides (booleans are categories)."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def bin_counts(edges: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """How many of the (present) numbers fall in each bin: the first whose edge is >= x."""
    return np.bincount(np.searchsorted(edges, numbers, side="left"), minlength=len(edges) + 1)


def numeric_bins(values: pd.Series) -> NumericBins:
    """Quantile bins of a numeric column, its range and the share of every bin."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    present = numbers[~np.isnan(numbers)]
    bins = max(2, min(NUMERIC_BINS, len(present) // ROWS_PER_BIN))
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.unique(np.quantile(present, quantiles)) if len(present) else np.array([])
    counts = bin_counts(edges, present)
    return NumericBins(
        edges=edges.tolist(),
        shares=shares([*counts.tolist(), int(len(numbers) - len(present))]),
        min=float(present.min()) if len(present) else None,
        max=float(present.max()) if len(present) else None,
    )


def categorical_bins(values: pd.Series) -> CategoricalBins:
    """The frequent categories of a column, and the share of each, of the rest, of missing."""
    present = values.dropna().astype(str)
    frequency = present.value_counts(sort=True)
    frequent = frequency[frequency >= MIN_CATEGORY_SHARE * len(values)].head(MAX_CATEGORIES)
    counts = [
        *frequent.tolist(),
        int(len(present) - frequent.sum()),
        int(len(values) - len(present)),
    ]
    seen = sorted(frequency.index) if len(frequency) <= MAX_SEEN else None
    return CategoricalBins(
        categories=[str(c) for c in frequent.index], shares=shares(counts), seen=seen
    )


def shares(counts: list[int]) -> list[float]:
    """Counts as shares of their total."""
    total = sum(counts)
    return [count / total if total else 0.0 for count in counts]


def column_bins(values: pd.Series) -> NumericBins | CategoricalBins:
    """The bins of a column, numeric or categorical."""
    return numeric_bins(values) if is_numeric(values) else categorical_bins(values)


def build_profile(
    features: pd.DataFrame,
    predictions: Any,
    metrics: dict[str, float],
    task: str,
    classes: list[Any] | None = None,
) -> Profile:
    """The profile of the training features and of the model's held-out predictions."""
    predicted = pd.Series(np.asarray(predictions))
    return Profile(
        task=task,
        rows=len(features),
        features={str(name): column_bins(features[name]) for name in features.columns},
        prediction=numeric_bins(predicted) if task == "regression" else categorical_bins(predicted),
        metrics=metrics,
        classes=[str(c) for c in classes] if classes is not None else None,
    )


def write_profile(profile: Profile, directory: Path) -> Path:
    """Write the profile as JSON into `directory`; return its path."""
    path = directory / PROFILE_FILE
    # json, not pydantic's writer: NaN must fail here, not be written as null.
    path.write_text(json.dumps(profile.model_dump(), indent=1, allow_nan=False) + "\n")
    return path


def read_profile(path: Path) -> Profile:
    """Read a profile, refusing one of another format version or shape."""
    data = json.loads(path.read_text())
    version = data.get("version") if isinstance(data, dict) else None
    if version != VERSION:
        raise ModelError(
            f"{path} is a monitoring profile of version {version}; "
            f"this code reads version {VERSION}: retrain the model to make a new one."
        )
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        raise ModelError(
            f"{path} is not a monitoring profile ({error.error_count()} problems, the first: "
            f"{error.errors()[0]['loc']} {error.errors()[0]['msg']}): retrain the model."
        ) from error
