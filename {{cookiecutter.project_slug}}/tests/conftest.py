"""Shared fixtures: a small dataset with every kind of column, and a throwaway MLflow store."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.module_name }}.config import Config, load_config
from {{ cookiecutter.module_name }}.train import TrainResult, train

TARGET = "label"


def make_frame(task: str, rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """Numeric, integer and categorical features with missing values, and a target."""
    rng = np.random.default_rng(seed)
    size = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows).astype(object)
    signal = size + (colour == "red") * 1.5
    frame = pd.DataFrame(
        {
            "size": size,
            "weight": rng.normal(size=rows),
            "count": rng.integers(0, 5, size=rows),
            "colour": colour,
        }
    )
    if task == "classification":
        frame[TARGET] = np.where(signal > 0.5, "yes", "no").astype(object)
    else:
        frame[TARGET] = 3 * signal + rng.normal(scale=0.1, size=rows)
    frame.loc[::17, "weight"] = np.nan
    frame.loc[::19, "colour"] = None
    frame.loc[[3, 50, 100], TARGET] = None
    return frame


def records(rows: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as JSON objects; JSON has no NaN, so a missing value travels as null."""
    return rows.astype(object).where(rows.notna(), None).to_dict(orient="records")  # type: ignore[return-value]


@pytest.fixture(scope="session")
def task() -> str:
    return load_config().task


@pytest.fixture(scope="session")
def csv_path(tmp_path_factory: pytest.TempPathFactory, task: str) -> Path:
    path = tmp_path_factory.mktemp("data") / "sample.csv"
    make_frame(task).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def config(csv_path: Path) -> Config:
    return load_config(data={"path": csv_path, "target": TARGET})


@pytest.fixture(scope="session")
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Point MLflow at a SQLite store of its own, with artifacts beside it."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(folder)
        yield uri


@pytest.fixture(scope="session")
def trained(tracking_store: str, config: Config) -> TrainResult:
    """The first training of the session: version 1, champion."""
    return train(config)
