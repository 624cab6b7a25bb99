"""Following the registry: a server on an alias serves the version it names, swapped under load."""

import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import pandas as pd
import pytest
from conftest import TARGET, records
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from mlflow.webhooks.delivery import _generate_hmac_signature

from {{ cookiecutter.module_name }}.config import PROJECT_SLUG, Config
from {{ cookiecutter.module_name }}.core.evaluation import label_metrics
from {{ cookiecutter.module_name }}.jobs.monitor.monitor import monitor, reference_profile
from {{ cookiecutter.module_name }}.jobs.train import train
from {{ cookiecutter.module_name }}.serving.app import MODEL_VERSION_HEADER, create_app
from {{ cookiecutter.module_name }}.serving.follow import follows
from {{ cookiecutter.module_name }}.serving.webhooks import (
    DELIVERY_ID_HEADER,
    MAX_AGE_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookError,
    verified,
)
from {{ cookiecutter.module_name }}.settings import ServingConfig

ALIAS = "live"
FOLLOWED = f"models:/{PROJECT_SLUG}@{ALIAS}"
SECRET = "a secret of the webhook"
NOW = 1_800_000_000  # the clock of the webhook tests that do not reach a server


@contextmanager
def store_at(folder: Path) -> Iterator[MlflowClient]:
    """Point MLflow at the store in `folder` for the block, then back where it was."""
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            yield MlflowClient(uri)
        finally:
            mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def registry_folder(tmp_path_factory: pytest.TempPathFactory, config: Config) -> Path:
    """A store of its own with two versions whose forests differ, so do their predictions."""
    folder = tmp_path_factory.mktemp("follow")
    with store_at(folder):
        # A stump, then a forest: their predictions differ on most rows.
        for params in ({"n_estimators": 1, "max_depth": 1}, {"n_estimators": 20}):
            estimator = config.estimator.model_copy(
                update={"params": {**config.estimator.params, **params}}
            )
            train(config.model_copy(update={"estimator": estimator}))
    return folder


@pytest.fixture
def registry(registry_folder: Path) -> Iterator[MlflowClient]:
    with store_at(registry_folder) as client:
        client.set_registered_model_alias(PROJECT_SLUG, ALIAS, "1")
        yield client


@pytest.fixture(scope="module")
def rows(config: Config) -> pd.DataFrame:
    return pd.read_csv(config.data.path).drop(columns=TARGET).head(50)


def in_process(version: str, rows: pd.DataFrame) -> list[Any]:
    """What a version predicts for `rows`, loaded here (integers travel as floats in JSON)."""
    model = mlflow.pyfunc.load_model(f"models:/{PROJECT_SLUG}/{version}")
    integers = rows.select_dtypes("integer").columns
    return list(model.predict(rows.astype(dict.fromkeys(integers, "float64"))))


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> float:
    """Seconds until `condition` holds; fail after `timeout`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "the condition never held"
        time.sleep(0.05)
    return time.monotonic() - started


def serving_version(app: TestClient, rows: pd.DataFrame) -> str:
    response = app.post("/invocations", json={"dataframe_records": records(rows.head(1))})
    assert response.status_code == 200, response.text
    return response.headers[MODEL_VERSION_HEADER]


@pytest.mark.parametrize(
    ("uri", "refresh_s", "followed"),
    [
        (FOLLOWED, 30.0, True),
        (FOLLOWED, 0.0, False),  # MODEL_REFRESH_S=0 pins the version loaded at start
        (f"models:/{PROJECT_SLUG}/3", 30.0, False),  # a version number names one model
        ("/opt/model", 30.0, False),  # a directory: the model baked into an image
    ],
)
def test_only_a_server_on_an_alias_follows_the_registry(
    uri: str, refresh_s: float, followed: bool
) -> None:
    assert follows(uri, ServingConfig(model_refresh_s=refresh_s)) is followed


@pytest.mark.integration
@pytest.mark.both_tasks
def test_five_alias_moves_under_load_fail_no_request_and_each_answer_names_its_version(
    registry: MlflowClient, rows: pd.DataFrame, tmp_path: Path
) -> None:
    expected = {version: in_process(version, rows) for version in ("1", "2")}
    assert expected["1"] != expected["2"]
    payload = {"dataframe_records": records(rows)}
    answers: list[tuple[str, list[Any]]] = []
    failures: list[str] = []
    stop = threading.Event()

    settings = ServingConfig(model_refresh_s=0.2, inference_log_dir=tmp_path)  # type: ignore[arg-type]

    with TestClient(create_app(FOLLOWED, settings)) as app:

        def client() -> None:
            while not stop.is_set():
                response = app.post("/invocations", json=payload)
                if response.status_code != 200:
                    failures.append(response.text)
                else:
                    answers.append(
                        (response.headers[MODEL_VERSION_HEADER], response.json()["predictions"])
                    )

        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        try:
            for version in ("2", "1", "2", "1", "2"):
                registry.set_registered_model_alias(PROJECT_SLUG, ALIAS, version)
                wait_for(lambda v=version: bool(answers) and answers[-1][0] == v)  # type: ignore[misc]
        finally:
            stop.set()
            for thread in clients:
                thread.join()
        model = app.get("/model").json()
        metrics = app.get("/metrics").text

    assert failures == []
    assert [version for version, predictions in answers if predictions != expected[version]] == []
    assert model["model_version"] == "2"
    assert model["model_uri"] == FOLLOWED
    served = "model_info{" + f'name="{PROJECT_SLUG}",uri="{FOLLOWED}",version='
    assert served + '"2"} 1.0' in metrics
    assert served + '"1"} 0.0' in metrics
    assert 'model_swaps_total{outcome="swapped"} 5.0' in metrics
    # The log names the version of each row; a new version's warm-up is not traffic.
    logged = read_lines(tmp_path, "inference-*.jsonl")
    assert len(logged) == len(answers) * len(rows)
    assert {line["version"] for line in logged} == {"1", "2"}


def damaged_copy(client: MlflowClient, damage: str) -> str:
    """Register a copy of version 1 that cannot load, or cannot score its input example."""
    with tempfile.TemporaryDirectory() as folder:
        model = Path(
            mlflow.artifacts.download_artifacts(f"models:/{PROJECT_SLUG}/1", dst_path=folder)
        )
        if damage == "cannot load":
            [weights] = model.glob("*.skops")
            weights.write_bytes(b"not a model")
        else:  # its example holds text where the model takes numbers
            example = model / "serving_input_example.json"
            example.write_text(example.read_text().replace("[", '[["not a number", ', 1))
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(model), "damaged")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/damaged", PROJECT_SLUG)
    return str(version.version)


@pytest.mark.integration
@pytest.mark.parametrize("damage", ["cannot load", "cannot score its example"])
def test_a_version_that_cannot_load_or_score_its_example_is_never_served(
    registry: MlflowClient, rows: pd.DataFrame, damage: str
) -> None:
    broken = damaged_copy(registry, damage)

    with TestClient(create_app(FOLLOWED, ServingConfig(model_refresh_s=0.2))) as app:
        registry.set_registered_model_alias(PROJECT_SLUG, ALIAS, broken)
        wait_for(lambda: 'model_swaps_total{outcome="refused"} 1.0' in app.get("/metrics").text)
        still = serving_version(app, rows)
        registry.set_registered_model_alias(PROJECT_SLUG, ALIAS, "2")
        wait_for(lambda: serving_version(app, rows) == "2")

    assert still == "1"


def signed(
    body: bytes, secret: str = SECRET, age_s: int = 0, now: int | None = None
) -> dict[str, str]:
    """Headers of an event as MLflow's own webhook delivery signs it, `age_s` seconds ago."""
    timestamp = str((int(time.time()) if now is None else now) - age_s)
    delivery = "0b7d6c2e-delivery"
    return {
        DELIVERY_ID_HEADER: delivery,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: _generate_hmac_signature(secret, delivery, timestamp, body.decode()),
    }


def alias_event(version: str, name: str = PROJECT_SLUG, alias: str = ALIAS) -> bytes:
    """An event as MLflow's registry sends it when an alias is set."""
    data = {"name": name, "alias": alias, "version": version}
    event = {"entity": "model_version_alias", "action": "created", "timestamp": "now", "data": data}
    return json.dumps(event).encode()


def lowered(headers: dict[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


@pytest.mark.parametrize("age_s", [0, MAX_AGE_S, -MAX_AGE_S])
def test_an_event_mlflow_signed_recently_is_verified(age_s: int) -> None:
    body = alias_event("2")

    now = int(time.time())

    event = verified(SECRET, lowered(signed(body, age_s=age_s, now=now)), body, now=now)

    assert event.moves(PROJECT_SLUG, ALIAS)
    assert not event.moves(PROJECT_SLUG, "challenger")
    assert not event.moves("another-model", ALIAS)


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (lambda h, b: (h, b.replace(b'"2"', b'"3"')), "does not match"),
        (lambda h, b: (signed(b, secret="another secret", now=NOW), b), "does not match"),
        (lambda h, b: (signed(b, age_s=MAX_AGE_S + 1, now=NOW), b), "more than"),
        (lambda h, b: (signed(b, age_s=-MAX_AGE_S - 1, now=NOW), b), "more than"),
        (lambda h, b: ({k: v for k, v in h.items() if k != SIGNATURE_HEADER}, b), "required"),
        (lambda h, b: ({**h, TIMESTAMP_HEADER: "yesterday"}, b), "required"),
    ],
)
def test_an_event_not_signed_as_mlflow_signs_it_is_refused(
    tamper: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]], says: str
) -> None:
    body = alias_event("2")
    headers, sent = tamper(signed(body, now=NOW), body)

    with pytest.raises(WebhookError, match=says):
        verified(SECRET, lowered(headers), sent, now=NOW)


@pytest.mark.integration
def test_a_signed_webhook_swaps_at_once_and_a_forged_one_is_refused(
    registry: MlflowClient, rows: pd.DataFrame
) -> None:
    settings = ServingConfig(model_refresh_s=3600, mlflow_webhook_secret=SECRET)  # type: ignore[arg-type]

    with TestClient(create_app(FOLLOWED, settings)) as app:
        registry.set_registered_model_alias(PROJECT_SLUG, ALIAS, "2")
        forged = app.post(
            "/webhooks/mlflow",
            content=alias_event("2"),
            headers=signed(alias_event("2"), "a guess"),
        )
        other = alias_event("2", alias="challenger")
        ignored = app.post("/webhooks/mlflow", content=other, headers=signed(other))
        still = serving_version(app, rows)
        body = alias_event("2")
        accepted = app.post("/webhooks/mlflow", content=body, headers=signed(body))
        seconds = wait_for(lambda: serving_version(app, rows) == "2", timeout=120)

    assert (forged.status_code, forged.json()["error_code"]) == (401, "UNAUTHENTICATED")
    assert ignored.json() == {"status": "ignored"}
    assert still == "1"
    assert accepted.json() == {"status": "checking"}
    # Far sooner than the next check (an hour away): the webhook, not the poll, swapped.
    assert seconds < 60


@pytest.mark.integration
def test_without_a_secret_the_webhook_route_is_off(registry: MlflowClient) -> None:
    with TestClient(create_app(FOLLOWED, ServingConfig(model_refresh_s=3600))) as app:
        body = alias_event("2")
        response = app.post("/webhooks/mlflow", content=body, headers=signed(body))

    assert response.status_code == 404
    assert "MLFLOW_WEBHOOK_SECRET" in response.json()["message"]


SHADOWED = "shadowed"


def read_lines(folder: Path, pattern: str) -> list[dict[str, Any]]:
    return [
        json.loads(line) for path in folder.glob(pattern) for line in path.read_text().splitlines()
    ]


@pytest.mark.integration
@pytest.mark.both_tasks
def test_the_shadow_scores_every_row_and_its_agreement_on_metrics_is_the_logs(
    registry: MlflowClient, rows: pd.DataFrame, tmp_path: Path, task: str, config: Config
) -> None:
    registry.set_registered_model_alias(PROJECT_SLUG, SHADOWED, "2")
    settings = ServingConfig(
        model_refresh_s=0,
        shadow_alias=SHADOWED,
        inference_log_dir=tmp_path,  # type: ignore[arg-type]
    )

    with TestClient(create_app(FOLLOWED, settings)) as app:
        for start in range(0, len(rows), 5):
            answer = app.post(
                "/invocations", json={"dataframe_records": records(rows[start : start + 5])}
            )
            assert answer.headers[MODEL_VERSION_HEADER] == "1"
        wait_for(lambda: f"shadow_rows_total {float(len(rows))}" in app.get("/metrics").text)
        metrics = app.get("/metrics").text

    served = {line["id"]: line["prediction"] for line in read_lines(tmp_path, "inference-*.jsonl")}
    shadowed = read_lines(tmp_path, "shadow-*.jsonl")
    assert sorted(line["id"] for line in shadowed) == sorted(served)
    assert {line["shadow_version"] for line in shadowed} == {"2"}
    pairs = [(served[line["id"]], line["shadow_prediction"]) for line in shadowed]
    if task == "classification":
        name, expected = "shadow_agreement_ratio", sum(a == b for a, b in pairs) / len(pairs)
    else:
        name, expected = "shadow_mean_abs_delta", sum(abs(a - b) for a, b in pairs) / len(pairs)
    [shown] = [
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name + " ")
    ]
    assert shown == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert "shadow_dropped_total 0.0" in metrics

    # `monitor` puts the shadow beside the served model: here the outcomes are what the
    # served model said, so its metric is perfect and the shadow's is its agreement's.
    outcomes = tmp_path / "outcomes.csv"
    pd.DataFrame({"prediction_id": list(served), "actual": list(served.values())}).to_csv(
        outcomes, index=False
    )
    settings_of_monitor = config.monitoring.model_copy(update={"window": "1d"})
    [window] = monitor(tmp_path, outcomes, settings_of_monitor, task).windows
    shadow = [shadow for _, shadow in pairs]
    kind = str if task == "classification" else float
    classes = reference_profile(PROJECT_SLUG, "1").classes or []
    on_outcomes = label_metrics(
        task, pd.Series([a for a, _ in pairs]).astype(kind), pd.Series(shadow).astype(kind), classes
    )[str(settings_of_monitor.metric)]
    assert (window.shadow_version, window.shadow_rows) == ("2", len(rows))
    assert window.shadow_agreement == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert window.shadow_metric == pytest.approx(on_outcomes)


SLOW_MODEL = '''
import time

import mlflow
from mlflow.pyfunc import PythonModel


class Slow(PythonModel):
    """The served version's predictions, five seconds late."""

    def load_context(self, context):
        self.model = mlflow.pyfunc.load_model(context.artifacts["model"])

    def predict(self, context, model_input, params=None):
        time.sleep(5)
        return self.model.predict(model_input)


mlflow.models.set_model(Slow())
'''


def slow_copy(client: MlflowClient, tmp_path: Path, rows: pd.DataFrame) -> str:
    """Register a version that predicts as version 1, but sleeps five seconds a batch."""
    model = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{PROJECT_SLUG}/1", dst_path=str(tmp_path / "v1")
        )
    )
    code = tmp_path / "slow.py"
    code.write_text(SLOW_MODEL)
    example = rows.head(2).astype(dict.fromkeys(rows.select_dtypes("integer").columns, "float64"))
    signature = mlflow.models.Model.load(str(model)).signature
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="slow", python_model=str(code), artifacts={"model": str(model)},
            input_example=example, signature=signature,
        )  # fmt: skip
    return str(mlflow.register_model(info.model_uri, PROJECT_SLUG).version)


@pytest.mark.integration
def test_a_shadow_five_seconds_slow_never_delays_an_answer(
    registry: MlflowClient, rows: pd.DataFrame, tmp_path: Path
) -> None:
    slow = slow_copy(registry, tmp_path, rows)
    registry.set_registered_model_alias(PROJECT_SLUG, SHADOWED, slow)
    settings = ServingConfig(model_refresh_s=0, shadow_alias=SHADOWED)  # type: ignore[arg-type]
    seconds = []

    with TestClient(create_app(FOLLOWED, settings)) as app:
        for _ in range(10):
            started = time.monotonic()
            answer = app.post("/invocations", json={"dataframe_records": records(rows.head(3))})
            seconds.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
        metrics = app.get("/metrics").text

    # Ten answers in the time the shadow takes to score two batches.
    assert sum(seconds) < 10, seconds
    assert "shadow_rows_total 30.0" not in metrics
