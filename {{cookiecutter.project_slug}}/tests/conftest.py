"""Shared fixtures: a small dataset with every kind of column, and a throwaway MLflow store.

Both tasks: a test marked `both_tasks` runs once per task (this project's first), so a
project that switches `task` in config.toml is covered by the tests it already has; any
other test that depends on the task runs on this project's own. Each task has a store,
a dataset and a first training of its own.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from {{ cookiecutter.module_name }}.config import (
    ENV_PREFIX,
    PROJECT_SLUG,
    Config,
    Task,
    load_config,
)
from {{ cookiecutter.module_name }}.jobs.train import train
from {{ cookiecutter.module_name }}.store.registry import TrainResult

TARGET = "label"
PROJECT_TASK: Task = load_config().task
# This project's task first: the tests that run on it alone share its fixtures.
BOTH_TASKS: tuple[Task, ...] = (
    PROJECT_TASK,
    "regression" if PROJECT_TASK == "classification" else "classification",
)
# What config.toml says differently for the other task.
TASK_SETTINGS: dict[str, dict[str, object]] = {
    "classification": {
        "estimator": {"name": "sklearn.ensemble.RandomForestClassifier"},
        "promotion": {"metric": "f1"},
        "monitoring": {"metric": "f1", "metric_tolerance": 0.1, "severe_tolerance": 0.3},
    },
    "regression": {
        "estimator": {"name": "sklearn.ensemble.RandomForestRegressor"},
        "promotion": {"metric": "rmse"},
        "monitoring": {"metric": "rmse", "metric_tolerance": 0.2, "severe_tolerance": 0.5},
    },
}


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


def parametrized_by_the_test(metafunc: pytest.Metafunc, name: str) -> bool:
    """Whether the test parametrizes `name` itself (a unit test of both tasks, say)."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        names = names.split(",") if isinstance(names, str) else names
        if name in [n.strip() for n in names]:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give every test that depends on the task its task: both, or this project's."""
    if "task" not in metafunc.fixturenames or parametrized_by_the_test(metafunc, "task"):
        return
    both = metafunc.definition.get_closest_marker("both_tasks") is not None
    metafunc.parametrize("task", BOTH_TASKS if both else (PROJECT_TASK,), indirect=True)


@pytest.fixture(scope="session")
def task(request: pytest.FixtureRequest) -> Task:
    """The task of the test's world: its data, configuration, store and first training."""
    return getattr(request, "param", PROJECT_TASK)  # type: ignore[no-any-return]


@pytest.fixture(scope="session", autouse=True)
def servers_pinned() -> Iterator[None]:
    """Servers a test starts serve the version they load: only test_follow follows on purpose."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_REFRESH_S", "0")
        yield


@pytest.fixture(autouse=True)
def task_in_the_environment(request: pytest.FixtureRequest) -> Iterator[None]:
    """Commands a test runs (`monitor`, `predict`) read config.toml: tell them the task."""
    if "task" not in request.fixturenames:
        yield
        return
    task: Task = request.getfixturevalue("task")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"{ENV_PREFIX}TASK", task)
        for section, values in TASK_SETTINGS[task].items():
            for key, value in values.items():  # type: ignore[attr-defined]
                patch.setenv(f"{ENV_PREFIX}{section.upper()}__{key.upper()}", str(value))
        yield


@pytest.fixture(scope="session")
def csv_path(tmp_path_factory: pytest.TempPathFactory, task: Task) -> Path:
    path = tmp_path_factory.mktemp(f"data-{task}") / "sample.csv"
    make_frame(task).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def config(csv_path: Path, task: Task) -> Config:
    overrides = {**TASK_SETTINGS[task], "data": {"path": csv_path, "target": TARGET}}
    return load_config(task=task, **overrides)


@pytest.fixture(scope="session")
def tracking_store(tmp_path_factory: pytest.TempPathFactory, task: Task) -> Iterator[str]:
    """Point MLflow at a SQLite store of the task's own, with artifacts beside it."""
    folder = tmp_path_factory.mktemp(f"mlflow-{task}")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(folder)
        # MLflow keeps the URI it was last given: the other task's store may be it.
        mlflow.set_tracking_uri(uri)
        yield uri


@pytest.fixture(scope="session")
def trained(tracking_store: str, config: Config) -> TrainResult:
    """The first training of the session: version 1, champion."""
    return train(config)


SERVE = [sys.executable, "-m", "{{ cookiecutter.module_name }}", "serve"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(log: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start `serve` in a process of its own; yield it and its port once it is healthy."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*SERVE, "--port", str(port)],
            env={**os.environ, "MODEL_URI": f"models:/{PROJECT_SLUG}@champion", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while not healthy(port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield process, port
    finally:
        # SIGTERM, as a supervisor does: with several workers, SIGKILL to the parent alone
        # would leave the workers (and their model processes) running.
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
