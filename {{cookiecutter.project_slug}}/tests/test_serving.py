from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import TARGET
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from {{ cookiecutter.module_name }} import registry
from {{ cookiecutter.module_name }}.config import PROJECT_SLUG, Config
from {{ cookiecutter.module_name }}.serving.app import create_app
from {{ cookiecutter.module_name }}.train import TrainResult


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


def records(rows: pd.DataFrame) -> list[dict[str, object]]:
    # JSON has no NaN: a missing value travels as null.
    return rows.astype(object).where(rows.notna(), None).to_dict(orient="records")  # type: ignore[return-value]


def test_health_and_version(client: TestClient, trained: TrainResult) -> None:
    assert client.get("/health").status_code == 200
    version = client.get("/version").json()
    assert version["model_name"] == PROJECT_SLUG
    assert version["model_version"] == trained.version


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
        ('{"rows": []}', JSON, 400, "Unknown keys ['rows']"),
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


def test_openapi_documents_invocations(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    body = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/csv"} <= set(body)


def test_an_exported_model_directory_serves_with_its_version(
    trained: TrainResult, tmp_path: Path
) -> None:
    registry.export_champion(MlflowClient(), tmp_path / "model")

    with TestClient(create_app(str(tmp_path / "model"))) as exported:
        version = exported.get("/version").json()

    assert (version["model_name"], version["model_version"]) == (PROJECT_SLUG, trained.version)
