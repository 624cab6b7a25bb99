"""A drop-in for `mlflow models serve`: MLflow's own scoring-server requests, answered alike.

`mlflow_scoring_cases.py` holds every request of MLflow's scoring-server tests (and
the ones measured beside them); the template's tests also send each one to
`mlflow models serve` on the same model and check that both servers agree.
"""

import functools
import json
from collections.abc import Iterator
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.pyfunc import PyFuncModel
from mlflow_scoring_cases import Case, cases, parquet

from {{ cookiecutter.module_name }}.config import registered_model_uri
from {{ cookiecutter.module_name }}.runtime.model import describe_model
from {{ cookiecutter.module_name }}.serving.app import create_app
from {{ cookiecutter.module_name }}.store.registry import TrainResult

# The app starts a model process of its own.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(trained: TrainResult) -> Iterator[TestClient]:
    app = create_app(registered_model_uri(trained.version))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def example(trained: TrainResult) -> dict[str, Any]:
    """The model's own input example, as MLflow saved it: `dataframe_split` columns and rows."""
    body = describe_model(registered_model_uri(trained.version)).serving_example()
    split: dict[str, Any] = json.loads(body)["dataframe_split"]
    return split


@functools.cache
def loaded(tracking_uri: str, uri: str) -> PyFuncModel:
    """A model loaded once for all the cases; the tracking URI tells each task's store apart."""
    return mlflow.pyfunc.load_model(uri)


def in_process(trained: TrainResult, columns: list[str], case: Case) -> list[Any]:
    """The model's predictions of the case's rows, loaded and called in this process.

    The rows are typed as MLflow's parser types a request's: numbers as float64, text
    columns as objects (a number sent in a text column stays a number).
    """
    model = loaded(mlflow.get_tracking_uri(), registered_model_uri(trained.version))
    frame = pd.DataFrame(list(case.scored), columns=columns)
    schema = model.metadata.get_input_schema()
    assert schema is not None
    numbers = [spec.name for spec in schema.inputs if spec.type.name in {"double", "float"}]
    texts = [spec.name for spec in schema.inputs if spec.type.name == "string"]
    frame = frame.astype({**dict.fromkeys(numbers, "float64"), **dict.fromkeys(texts, object)})
    return json.loads(json.dumps(np.asarray(model.predict(frame)).tolist()))  # type: ignore[no-any-return]


def send(client: TestClient, case: Case) -> Any:
    headers = {} if case.content_type is None else {"content-type": case.content_type}
    return client.post("/invocations", content=case.body, headers=headers)


@pytest.mark.both_tasks
def test_every_case_of_mlflows_test_suite_is_answered_as_mlflow_answers_it(
    client: TestClient, trained: TrainResult, example: dict[str, Any]
) -> None:
    columns, rows = example["columns"], example["data"]
    wrong = []
    for case in [*cases(columns, rows), *parquet(columns, rows)]:
        response = send(client, case)
        if response.status_code != case.expected_status:
            wrong.append(f"{case.name}: {response.status_code} {response.text[:200]}")
        elif case.expected_status == 200:
            if response.json() != {"predictions": in_process(trained, columns, case)}:
                wrong.append(f"{case.name}: {response.text[:200]} is not the model's prediction")
        else:
            error = response.json()
            if not (isinstance(error.get("error_code"), str) and error.get("message")):
                wrong.append(f"{case.name}: {response.text[:200]} has no error_code and message")
            elif case.error_code and error["error_code"] != case.error_code:
                wrong.append(
                    f"{case.name}: error_code {error['error_code']}, not {case.error_code}"
                )
            if "Traceback" in response.text:
                wrong.append(f"{case.name}: a stack trace left the server")

    assert not wrong, "\n".join(wrong)
    assert len(cases(columns, rows)) >= 50


def test_ping_and_version_answer_as_mlflow_models_serve_does(client: TestClient) -> None:
    ping = client.get("/ping")
    version = client.get("/version")

    assert (ping.status_code, ping.text) == (200, "\n")
    assert ping.headers["content-type"] == "application/json"
    # MLflow's ScoringServerClient.get_version returns the body as is.
    assert (version.status_code, version.text) == (200, mlflow.__version__)


def test_the_models_details_have_a_route_of_their_own(
    client: TestClient, trained: TrainResult
) -> None:
    details = client.get("/model").json()

    assert details["model_version"] == trained.version
    assert details["mlflow_version"] == mlflow.__version__


def test_a_request_without_content_type_gets_415_where_mlflow_fails_with_500(
    client: TestClient, example: dict[str, Any]
) -> None:
    [case] = [c for c in cases(example["columns"], example["data"]) if c.name == "no content type"]

    response = send(client, case)

    assert (case.status, response.status_code) == (500, 415)
    assert "application/json" in response.json()["message"]
