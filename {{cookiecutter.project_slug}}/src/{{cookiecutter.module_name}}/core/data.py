"""Data: load a CSV, fingerprint it, split it; write the sample dataset."""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from ..config import DataConfig, Task
from ..errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fingerprint:
    """Digests of a file's bytes: SHA-256, and MD5 (what DVC 3 names a file's version by)."""

    sha256: str
    md5: str


@dataclass(frozen=True)
class Dataset:
    """A loaded CSV: features, target, and what identifies it."""

    features: pd.DataFrame
    target: pd.Series
    path: Path
    fingerprint: Fingerprint
    dropped_rows: int


@dataclass(frozen=True)
class Split:
    """Training and evaluation parts of a dataset."""

    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def fingerprint(path: Path) -> Fingerprint:
    """Hash a file's bytes once, in chunks, with both digests."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            sha256.update(chunk)
            md5.update(chunk)
    return Fingerprint(sha256.hexdigest(), md5.hexdigest())


def load(config: DataConfig) -> Dataset:
    """Load the CSV, drop the rows whose target is missing, and separate the target."""
    if not config.path.is_file():
        raise DataError(
            f"Data file {config.path} not found: run `make data` for the sample dataset, "
            "or point to your CSV with `train --data PATH`."
        )
    frame = pd.read_csv(config.path)
    if config.target not in frame.columns:
        raise DataError(
            f"Target column {config.target!r} is not in {config.path.name}; its columns are "
            f"{', '.join(map(str, frame.columns))}. Pass the right one with `train --target NAME`."
        )
    missing = frame[config.target].isna()
    dropped = int(missing.sum())
    if dropped:
        log.warning("Dropped %d rows whose target %r is missing.", dropped, config.target)
    frame = frame.loc[~missing].reset_index(drop=True)
    if len(frame) < 10:
        raise DataError(
            f"{config.path.name} has {len(frame)} usable rows: training needs at least 10."
        )
    features = frame.drop(columns=config.target)
    if features.empty:
        raise DataError(f"{config.path.name} has no feature column besides {config.target!r}.")
    # Integer columns become floats: a served request may then leave a value out
    # (NaN) without breaking the model's signature.
    integers = features.select_dtypes("integer").columns
    features[integers] = features[integers].astype("float64")
    return Dataset(features, frame[config.target], config.path, fingerprint(config.path), dropped)


def split(dataset: Dataset, config: DataConfig, task: Task) -> Split:
    """Hold out `test_size` of the rows, stratified by class where every class allows it."""
    stratify = None
    if task == "classification" and dataset.target.value_counts().min() >= 2:
        stratify = dataset.target
    x_train, x_test, y_train, y_test = train_test_split(
        dataset.features,
        dataset.target,
        test_size=config.test_size,
        random_state=config.seed,
        stratify=stratify,
    )
    return Split(x_train, x_test, y_train, y_test)


def write_sample(path: Path, task: Task, target: str) -> Path:
    """Write a dataset that ships inside scikit-learn, so no download is needed.

    Classification: breast cancer diagnosis, with the class names as labels.
    Regression: diabetes progression after one year.
    """
    if task == "classification":
        bunch = load_breast_cancer(as_frame=True)
        labels = bunch.target.map(dict(enumerate(bunch.target_names)))
    else:
        bunch = load_diabetes(as_frame=True)
        labels = bunch.target
    frame = bunch.data.assign(**{target: labels})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
