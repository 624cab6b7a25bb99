"""Settings: every environment variable the project reads or sets, declared in one place.

`config.toml` says how to train and judge a model (`config.py`); the environment says
where things are on this machine: the tracking store, the data remote, the study
database, the Spark master, and how the server runs (`ServingConfig`). Nothing else in
the package touches `os.environ`: a new variable is declared here, with its default.
They are read when a command asks, so that a variable set before it (by a test, or by
the server for its workers) is seen.
"""

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .config import ENV_PREFIX, PROJECT_ROOT, PROJECT_SLUG, registered_model_uri

DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
# Outside the work tree, so that a clean checkout never contains the data remote.
DEFAULT_DVC_REMOTE = PROJECT_ROOT.parent / f"{PROJECT_SLUG}-dvc-remote"
# One machine: a study file beside the project, so that a new `tune` resumes it.
DEFAULT_OPTUNA_STORAGE = f"sqlite:///{PROJECT_ROOT / 'optuna.db'}"
DEFAULT_SPARK_MASTER = "local[*]"


class Locations(BaseSettings):
    """Where the project's state lives on this machine; each from the variable of its name."""

    # An empty variable counts as unset.
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    # MLflow's own variable: a tracking server, else the SQLite store at the project root.
    mlflow_tracking_uri: str = DEFAULT_TRACKING_URI
    # Any URL DVC knows: a folder, s3://, gs://, azure://.
    dvc_remote: str = str(DEFAULT_DVC_REMOTE)
    # A study shared by every `tune` that names it (unset: optuna.db, a seeded search).
    optuna_storage: str | None = None
    # Spark's master when not started by spark-submit.
    spark_master: str = DEFAULT_SPARK_MASTER
    java_home: Path | None = None
    # prometheus_client reads it itself: set, the workers share their metrics in files.
    prometheus_multiproc_dir: Path | None = None
    # Where `rollout` reads the servers' metrics: their base URLs, comma-separated
    # (each /metrics), or a Prometheus that scrapes them all.
    serving_urls: str = ""
    prometheus_url: str | None = None
    # The container engine's command (`make reproduce IMAGE=` reads an image's labels).
    docker: str = "docker"


def locations() -> Locations:
    """The locations as the environment gives them now."""
    return Locations()


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else the SQLite store at the project root."""
    return locations().mlflow_tracking_uri


class ServingConfig(BaseSettings):
    """The served model, where to listen and the server's limits, from the environment.

    Each field is read from the variable of its name in capitals: `MODEL_URI`,
    `HOST`, `PORT`, `WEB_CONCURRENCY`, `MAX_BATCH_ROWS`, ...
    """

    model_uri: str = registered_model_uri(alias="champion")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # Worker processes, each with its own copy of the model. One suits a container
    # on one or two cores: batching keeps it busy. More scale out on more cores.
    web_concurrency: int = Field(default=1, ge=1)
    # Most rows in one predict call; a request larger than that is predicted alone.
    max_batch_rows: int = Field(default=256, ge=1)
    # Under load, how long a batch waits for the callers it just answered to send
    # their next request, so that they are predicted together. A lone caller never
    # waits. 1 ms raised throughput at 16 connections by a third in `make bench`.
    max_batch_wait_ms: float = Field(default=1.0, ge=0)
    # Limits of one request: a larger body is refused with 413 before it is read,
    # more rows with 413, and no answer within the timeout gives 504.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_request_rows: int = Field(default=10_000, ge=1)
    request_timeout_s: float = Field(default=30.0, gt=0)
    # Predict scikit-learn models without their per-call overhead (`fast_predict.py`),
    # where that gives exactly their predictions; false: their own predict.
    fast_predict: bool = True
    # Live drift on /metrics against the model's reference profile, over the last
    # DRIFT_WINDOW_S seconds (10 minutes) of traffic, in steps of a tenth of it.
    monitoring: bool = True
    drift_window_s: float = Field(default=600.0, gt=0)
    # Where the server's processes share their counts (a temporary folder if unset).
    monitoring_dir: Path | None = None
    # The inference log: every scored row, its prediction and id (off if unset),
    # at most INFERENCE_LOG_MAX_MB per server process.
    inference_log_dir: Path | None = None
    inference_log_max_mb: float = Field(default=100.0, gt=0)
    # A server on an alias (MODEL_URI=models:/<name>@champion) checks every this many
    # seconds which version the alias names, and swaps to it; 0 pins the version
    # loaded at start. A version number or a directory (a baked model) is always pinned.
    model_refresh_s: float = Field(default=30.0, ge=0)
    # The secret of MLflow's registry webhook: set, POST /webhooks/mlflow checks the
    # alias at once when a signed event says it moved; unset, that route answers 404.
    mlflow_webhook_secret: SecretStr | None = None
    # Shadow scoring: the version this alias names (e.g. challenger) scores the same rows
    # as the served model, off the response path, for SHADOW_SHARE of the requests;
    # empty: off. What it answers is compared, logged and counted, never returned.
    shadow_alias: str = ""
    shadow_share: float = Field(default=1.0, ge=0, le=1)


def export(**variables: str) -> None:
    """Set variables for the processes this one starts (the server's workers, Spark's)."""
    os.environ.update(variables)


def export_default(**variables: str) -> None:
    """Set variables that are not set already: a user's own value wins."""
    for name, value in variables.items():
        os.environ.setdefault(name, value)


def child_environment(**extra: str) -> dict[str, str]:
    """This process' environment, for a command it runs, with `extra` on top."""
    return {**os.environ, **extra}


def environment_without_overrides() -> dict[str, str]:
    """This environment without the project's config overrides (`<PREFIX>_...`) nor venv.

    What a rebuild runs in: only the run's recorded configuration counts.
    """
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(ENV_PREFIX) and key != "VIRTUAL_ENV"
    }
