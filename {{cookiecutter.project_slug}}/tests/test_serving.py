import asyncio
import json
import multiprocessing
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import schemathesis
from conftest import TARGET, records
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from {{ cookiecutter.module_name }}.config import PROJECT_SLUG, Config
from {{ cookiecutter.module_name }}.runtime.model_input import Rows
from {{ cookiecutter.module_name }}.serving.app import create_app
from {{ cookiecutter.module_name }}.serving.observability import Metrics
from {{ cookiecutter.module_name }}.serving.predictor import Predictor
from {{ cookiecutter.module_name }}.serving.protocol import IdentifiedRows
from {{ cookiecutter.module_name }}.serving.service import Service, check_serving
from {{ cookiecutter.module_name }}.settings import ServingConfig
from {{ cookiecutter.module_name }}.store import registry
from {{ cookiecutter.module_name }}.store.registry import TrainResult

# Each app starts a model process of its own (a few seconds each).
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(trained: TrainResult) -> Iterator[TestClient]:
    with TestClient(
        create_app(f"models:/{PROJECT_SLUG}@champion"), raise_server_exceptions=False
    ) as client:
        yield client


@pytest.fixture(scope="module")
def rows(config: Config) -> pd.DataFrame:
    return pd.read_csv(config.data.path).drop(columns=TARGET).head(3)


@pytest.fixture(scope="module")
def expected(trained: TrainResult, rows: pd.DataFrame) -> list[object]:
    model = mlflow.pyfunc.load_model(f"models:/{PROJECT_SLUG}/{trained.version}")
    # Training turns integer columns into floats; the server's parser does the same.
    integers = rows.select_dtypes("integer").columns
    return list(model.predict(rows.astype(dict.fromkeys(integers, "float64"))))


JSON = {"content-type": "application/json"}


def test_health_and_version(client: TestClient, trained: TrainResult) -> None:
    assert client.get("/health").status_code == 200
    version = client.get("/model").json()
    assert version["model_name"] == PROJECT_SLUG
    assert version["model_version"] == trained.version


@pytest.mark.both_tasks
@pytest.mark.parametrize(
    "payload_format", ["dataframe_split", "dataframe_records", "instances", "inputs"]
)
def test_each_json_format_returns_the_model_predictions(
    client: TestClient, rows: pd.DataFrame, expected: list[object], payload_format: str
) -> None:
    data = records(rows)
    payload = {
        "dataframe_split": {
            "columns": list(rows.columns),
            "data": [list(r.values()) for r in data],
        },
        "dataframe_records": data,
        "instances": data,
        "inputs": {column: [r[column] for r in data] for column in rows.columns},
    }[payload_format]

    response = client.post("/invocations", json={payload_format: payload})

    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}


def test_a_lone_row_with_missing_values_gets_the_in_process_prediction(
    client: TestClient, rows: pd.DataFrame, expected: list[object]
) -> None:
    # The first row misses a number and a string: alone, nothing in its batch has them.
    assert rows.iloc[0].isna().sum() >= 2

    response = client.post("/invocations", json={"dataframe_records": records(rows.head(1))})

    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected[:1]}


@pytest.mark.both_tasks
def test_csv_returns_the_model_predictions(
    client: TestClient, rows: pd.DataFrame, expected: list[object]
) -> None:
    response = client.post(
        "/invocations", content=rows.to_csv(index=False), headers={"content-type": "text/csv"}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}


def test_missing_column_is_named(client: TestClient, rows: pd.DataFrame) -> None:
    column = rows.columns[0]
    response = client.post(
        "/invocations", json={"dataframe_records": records(rows.drop(columns=column))}
    )

    assert response.status_code == 400
    assert column in response.json()["message"]


def test_value_of_the_wrong_type_names_the_column(client: TestClient, rows: pd.DataFrame) -> None:
    column = rows.select_dtypes("number").columns[0]
    bad = records(rows)
    bad[0][column] = "not a number"

    response = client.post("/invocations", json={"dataframe_records": bad})

    assert 400 <= response.status_code < 500
    assert column in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        ("{not json", JSON, 400, "not valid"),
        ("[1, 2]", JSON, 400, "must be an object"),
        ('{"rows": []}', JSON, 400, "the body has none (keys: ['rows'])"),
        ('{"inputs": {"a": [1, 2], "b": [1]}}', JSON, 400, "same number"),
        ('{"dataframe_records": []}', JSON, 400, "no rows"),
        ("a=1", {"content-type": "application/x-www-form-urlencoded"}, 415, "not supported"),
        (b"\xff\xfe", {"content-type": "text/csv"}, 400, "not valid"),
    ],
)
def test_bad_payloads_get_a_clear_4xx_without_a_traceback(
    client: TestClient, body: str | bytes, headers: dict[str, str], status: int, says: str
) -> None:
    response = client.post("/invocations", content=body, headers=headers)

    assert response.status_code == status
    assert says in response.json()["message"]
    assert "Traceback" not in response.text
    assert client.get("/health").status_code == 200


def test_metrics_count_predictions(client: TestClient, rows: pd.DataFrame) -> None:
    client.post("/invocations", json={"dataframe_records": records(rows)})

    text = client.get("/metrics").text

    assert "predicted_rows_total" in text
    [info] = [line for line in text.splitlines() if line.startswith("model_info")]
    assert f'name="{PROJECT_SLUG}"' in info


def test_an_unexpected_error_is_a_500_that_tells_nothing_of_its_cause(
    client: TestClient, rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generic error path: a bug answers in JSON, and its details stay in the log."""

    def bug(*args: object) -> None:
        raise RuntimeError("a secret detail of the bug")

    monkeypatch.setattr(client.app.state.service, "parse", bug)  # type: ignore[attr-defined]

    response = client.post("/invocations", json={"dataframe_records": records(rows)})

    assert response.status_code == 500
    assert response.json()["message"] == "Internal error: the server log has the details."
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    monkeypatch.undo()
    assert client.post("/invocations", json={"dataframe_records": records(rows)}).status_code == 200


def test_openapi_documents_invocations(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    body = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/csv"} <= set(body)


def test_an_exported_model_directory_serves_with_its_version(
    trained: TrainResult, tmp_path: Path
) -> None:
    registry.export_champion(MlflowClient(), tmp_path / "model")

    with TestClient(create_app(str(tmp_path / "model"))) as exported:
        version = exported.get("/model").json()

    assert (version["model_name"], version["model_version"]) == (PROJECT_SLUG, trained.version)


@pytest.fixture(scope="module")
def limited(trained: TrainResult) -> Iterator[TestClient]:
    """A server with small limits, and a batch window wide enough to gather requests."""
    settings = ServingConfig(max_body_bytes=4000, max_request_rows=5, max_batch_wait_ms=50)
    app = create_app(f"models:/{PROJECT_SLUG}@champion", settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_a_body_over_the_limit_is_refused_with_413(limited: TestClient, rows: pd.DataFrame) -> None:
    big = {"dataframe_records": records(rows) * 20}

    declared = limited.post("/invocations", json=big)
    # Without a Content-Length header (chunked), the body is cut off while it is read.
    streamed = limited.post("/invocations", content=iter([json.dumps(big).encode()]), headers=JSON)

    for response in (declared, streamed):
        assert response.status_code == 413
        assert "MAX_BODY_BYTES" in response.json()["message"]
    assert limited.get("/health").status_code == 200


def test_too_many_rows_are_refused_with_413(limited: TestClient, rows: pd.DataFrame) -> None:
    six = pd.concat([rows, rows]).head(6)

    response = limited.post("/invocations", json={"dataframe_records": records(six)})

    assert response.status_code == 413
    assert "6 rows" in response.json()["message"]


def test_concurrent_callers_each_get_the_predictions_of_their_own_rows(
    limited: TestClient, trained: TrainResult, config: Config
) -> None:
    frame = pd.read_csv(config.data.path).drop(columns=TARGET).head(40)
    model = mlflow.pyfunc.load_model(f"models:/{PROJECT_SLUG}/{trained.version}")
    integers = frame.select_dtypes("integer").columns
    expected = list(model.predict(frame.astype(dict.fromkeys(integers, "float64"))))
    # Requests of 1 to 4 rows, in different formats, all in flight at once.
    slices = [(start, start + 1 + start % 4) for start in range(0, 36, 3)]

    def call(bounds: tuple[int, int]) -> list[object]:
        part = frame.iloc[bounds[0] : bounds[1]]
        response = limited.post("/invocations", json={"dataframe_records": records(part)})
        assert response.status_code == 200, response.text
        return response.json()["predictions"]  # type: ignore[no-any-return]

    batches_before = batch_count(limited)
    with ThreadPoolExecutor(max_workers=len(slices)) as pool:
        answers = list(pool.map(call, slices))

    assert answers == [expected[start:stop] for start, stop in slices]
    assert batch_count(limited) - batches_before < len(slices)  # they were batched


def batch_count(client: TestClient) -> float:
    [line] = [
        line
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("prediction_batch_rows_count")
    ]
    return float(line.split()[-1])


def test_a_request_over_the_timeout_gets_504_and_the_server_stays_up(
    trained: TrainResult, rows: pd.DataFrame
) -> None:
    settings = ServingConfig(request_timeout_s=0.000001)
    app = create_app(f"models:/{PROJECT_SLUG}@champion", settings)
    with TestClient(app, raise_server_exceptions=False) as impatient:
        response = impatient.post("/invocations", json={"dataframe_records": records(rows)})

        assert response.status_code == 504
        assert "No prediction within" in response.json()["message"]
        assert impatient.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}, "Row 0"),
        ({"dataframe_split": {"data": [[1]]}}, "with `columns` and `data`"),
        ({"dataframe_records": [1, 2]}, "list of {column: value} objects"),
        ({"dataframe_records": [{}], "instances": [{}]}, "exactly one of"),
        ({"params": {}}, "exactly one of"),
    ],
)
def test_payloads_of_the_wrong_shape_say_what_shape_is_expected(
    client: TestClient, payload: dict[str, object], says: str
) -> None:
    response = client.post("/invocations", json=payload)

    assert response.status_code == 400
    assert says in response.json()["message"]


@pytest.mark.both_tasks
def test_metrics_count_requests_by_route_and_predictions(
    client: TestClient, rows: pd.DataFrame, task: str
) -> None:
    client.post("/invocations", json={"dataframe_records": records(rows)})
    client.post("/invocations", json={"rows": []})
    client.get("/no-such-page")

    text = client.get("/metrics").text

    assert 'http_requests_total{method="POST",route="/invocations",status="200"}' in text
    assert 'http_requests_total{method="POST",route="/invocations",status="400"}' in text
    assert 'http_requests_total{method="GET",route="other",status="404"}' in text
    assert 'http_request_duration_seconds_bucket{le="0.1",route="/invocations"}' in text
    assert "prediction_batch_rows_bucket" in text
    if task == "classification":
        assert "predictions_total{class=" in text
    else:
        assert "predicted_value_count" in text


# Values of every JSON type for every column: each request is answered, none with a 5xx.
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_rows_never_get_a_server_error(
    client: TestClient, rows: pd.DataFrame, data: st.DataObject
) -> None:
    columns = st.fixed_dictionaries({column: JSON_VALUES for column in rows.columns})
    payload = {"dataframe_records": data.draw(st.lists(columns, min_size=1, max_size=3))}

    response = client.post("/invocations", json=payload)

    assert response.status_code in (200, 400), response.text
    assert "Traceback" not in response.text


def test_fuzzed_payloads_from_the_openapi_schema_never_get_a_server_error(
    client: TestClient,
) -> None:
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=schema["/invocations"]["POST"].as_strategy())
    def check(case: schemathesis.Case) -> None:
        request = case.as_transport_kwargs(base_url=str(client.base_url))
        response = client.request(
            request["method"],
            request["url"],
            headers=request.get("headers"),
            json=request.get("json"),
            content=request.get("data"),
        )
        assert response.status_code < 500, response.text
        assert "message" in response.json() or "predictions" in response.json()

    check()


def test_the_server_recovers_when_the_model_process_dies(
    trained: TrainResult, rows: pd.DataFrame, expected: list[object]
) -> None:
    before = set(multiprocessing.active_children())
    with TestClient(create_app(f"models:/{PROJECT_SLUG}@champion")) as recovering:
        [model] = [p for p in multiprocessing.active_children() if p not in before]
        os.kill(model.pid, signal.SIGKILL)
        model.join()
        payload = {"dataframe_records": records(rows)}

        assert recovering.get("/health").status_code == 503
        lost = recovering.post("/invocations", json=payload)
        assert lost.status_code == 503
        assert "retry" in lost.json()["message"]
        # A new model process answers the next request.
        assert recovering.post("/invocations", json=payload).json() == {"predictions": expected}
        assert recovering.get("/health").status_code == 200


POISON = "poison"


def poisoned(jobs: list[IdentifiedRows]) -> bool:
    return any(POISON in row for _, rows in jobs for row in rows)


def fail_to_parse(original: Any) -> Any:
    def parse(self: Service, body: bytes, content_type: str) -> Rows:
        if POISON.encode() in body:
            raise RuntimeError("the parser failed")
        return original(self, body, content_type)  # type: ignore[no-any-return]

    return parse


def fail_to_predict(original: Any) -> Any:
    async def predict(self: Predictor, jobs: list[IdentifiedRows]) -> list[Any]:
        if poisoned(jobs):
            raise RuntimeError("the model process' answer was lost")
        return await original(self, jobs)  # type: ignore[no-any-return]

    return predict


def fail_to_split(original: Any) -> Any:
    async def predict(self: Predictor, jobs: list[IdentifiedRows]) -> list[Any]:
        outcomes = await original(self, jobs)
        return outcomes[:-1] if poisoned(jobs) else outcomes  # type: ignore[no-any-return]

    return predict


def fail_to_count(original: Any) -> Any:
    def observe_predictions(self: Metrics, predictions: Any) -> None:
        raise TypeError("unhashable type: 'list'")

    return observe_predictions


STAGES = {
    "parse": (Service, "parse", fail_to_parse),
    "predict": (Predictor, "predict", fail_to_predict),
    "split": (Predictor, "predict", fail_to_split),
    "metrics": (Metrics, "observe_predictions", fail_to_count),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_failure_at_any_stage_fails_only_its_requests_and_serving_goes_on(
    trained: TrainResult,
    rows: pd.DataFrame,
    expected: list[object],
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
) -> None:
    owner, name, failing = STAGES[stage]
    monkeypatch.setattr(owner, name, failing(getattr(owner, name)))
    clean = {"dataframe_records": records(rows)}
    bad = {"dataframe_records": [{**row, POISON: 1} for row in records(rows)]}
    settings = ServingConfig(max_batch_wait_ms=20)
    app = create_app(f"models:/{PROJECT_SLUG}@champion", settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(
                pool.map(
                    lambda n: client.post("/invocations", json=bad if n % 4 == 0 else clean),
                    range(24),
                )
            )
        after = client.post("/invocations", json=clean)
        health = client.get("/health")

    for number, answer in enumerate(answers):
        if number % 4 == 0 and stage != "metrics":
            assert answer.status_code == 500, answer.text
            assert "Traceback" not in answer.text
        else:  # even when it shared a batch with a failing request
            assert answer.json() == {"predictions": expected}
    assert after.json() == {"predictions": expected}
    assert health.status_code == 200


def test_a_stopped_batcher_is_started_again_and_health_says_while_it_is_down(
    trained: TrainResult, rows: pd.DataFrame, expected: list[object]
) -> None:
    payload = {"dataframe_records": records(rows)}
    with TestClient(create_app(f"models:/{PROJECT_SLUG}@champion")) as client:
        service: Service = client.app.state.service  # type: ignore[attr-defined]

        async def stop_batcher() -> None:
            assert service.batching is not None
            service.batching.cancel()
            await asyncio.sleep(0.1)

        client.portal.call(stop_batcher)  # type: ignore[union-attr]
        restarted = client.post("/invocations", json=payload)
        restarts = [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("batcher_restarts_total")
        ]
        # Were it not started again, /health would say so.
        service.stopping = True
        client.portal.call(stop_batcher)  # type: ignore[union-attr]
        down = client.get("/health")

        async def start_batcher() -> None:
            service.stopping = False
            service.start_batching()

        client.portal.call(start_batcher)  # type: ignore[union-attr]

    assert restarted.json() == {"predictions": expected}
    assert restarts == ["batcher_restarts_total 1.0"]
    assert down.status_code == 503
    assert "batcher" in down.json()["status"]


def test_serve_check_scores_through_the_path_of_a_request(
    trained: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = Predictor.predict

    async def predict(self: Predictor, jobs: list[IdentifiedRows]) -> list[Any]:
        seen.append(sum(len(rows) for _, rows in jobs))
        return await original(self, jobs)

    monkeypatch.setattr(Predictor, "predict", predict)

    scored = asyncio.run(check_serving(f"models:/{PROJECT_SLUG}@champion", ServingConfig()))

    assert scored == 5  # the input example's rows
    assert seen == [5]  # through the batcher and the model process
