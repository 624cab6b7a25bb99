"""The server as it runs in production: a process of its own, its signals and its logs."""

import json
import signal
import socket
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import TARGET, make_frame, server
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

from {{ cookiecutter.module_name }}.config import Config, registered_model_uri
from {{ cookiecutter.module_name }}.store.registry import TrainResult

# Each test starts the server as a process of its own.
pytestmark = pytest.mark.integration


def post(port: int, body: bytes) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def body(config: Config) -> bytes:
    rows = pd.read_csv(config.data.path).drop(columns=TARGET).head(2)
    return json.dumps({"dataframe_split": rows.to_dict(orient="split", index=False)}).encode()


def test_sigterm_lets_the_request_in_flight_finish(
    trained: TrainResult, body: bytes, tmp_path: Path
) -> None:
    with server(tmp_path / "server.log") as (process, port):
        # Half a request: the server has it in flight when SIGTERM arrives.
        connection = socket.create_connection(("127.0.0.1", port))
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        connection.sendall(head + body[:10])
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        connection.sendall(body[10:])
        answer = connection.makefile("rb").read().decode()
        connection.close()

        assert answer.startswith("HTTP/1.1 200"), answer
        assert '"predictions"' in answer
        # Then it stops by itself; uvicorn re-raises SIGTERM once it is done (exit
        # status -15), which a container's PID 1 ignores (exit status 0).
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_each_request_is_one_json_line_in_the_log(
    trained: TrainResult, body: bytes, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with server(log) as (process, port):
        post(port, body)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    [entry] = [entry for entry in entries if entry["path"] == "/invocations"]
    assert entry["method"] == "POST"
    assert entry["status"] == 200
    assert entry["rows"] == 2
    assert entry["duration_ms"] > 0


def test_mlflows_own_client_waits_for_the_server_and_scores_a_frame(
    trained: TrainResult, config: Config, tmp_path: Path
) -> None:
    """MLflow's ScoringServerClient, as MLflow's tools drive `mlflow models serve`."""
    frame = pd.read_csv(config.data.path).drop(columns=TARGET).head(4)
    model = mlflow.pyfunc.load_model(registered_model_uri(trained.version))
    integers = frame.select_dtypes("integer").columns
    expected = model.predict(frame.astype(dict.fromkeys(integers, "float64")))

    with server(tmp_path / "server.log") as (_, port):
        client = ScoringServerClient("127.0.0.1", port)
        client.wait_server_ready(timeout=10)
        predictions = client.invoke(frame).get_predictions()
        version = client.get_version()

    assert list(predictions.iloc[:, 0]) == list(expected)
    assert version == mlflow.__version__


def test_workers_share_their_counts_drift_and_inference_log(
    trained: TrainResult, task: str, tmp_path: Path
) -> None:
    """Two workers, one server: /metrics counts what both scored, the log holds all of it."""
    frame = make_frame(task, rows=600, seed=2).drop(columns=TARGET)
    frame = frame.assign(size=frame["size"] + 3 * frame["size"].std())
    bodies = [
        json.dumps({"dataframe_split": part.to_dict(orient="split", index=False)}).encode()
        for part in (frame.iloc[start : start + 50] for start in range(0, len(frame), 50))
    ]
    logs = tmp_path / "inference"

    with server(tmp_path / "server.log", WEB_CONCURRENCY="2", INFERENCE_LOG_DIR=str(logs)) as (
        _,
        port,
    ):
        for body in bodies:  # a new connection each: the kernel spreads them over the workers
            post(port, body)
        deadline = time.monotonic() + 15
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                metrics = response.read().decode()
            if f"monitoring_window_rows {len(frame)}.0" in metrics or time.monotonic() > deadline:
                break
            time.sleep(0.3)

    assert f"monitoring_window_rows {len(frame)}.0" in metrics
    [rows] = [line for line in metrics.splitlines() if line.startswith("predicted_rows_total")]
    assert float(rows.split()[-1]) == len(frame)
    psi = {
        line.split('"')[1]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("feature_drift_psi{")
    }
    assert psi["size"] > 0.2
    assert psi["weight"] < 0.2
    logged = [
        line for path in logs.glob("inference-*.jsonl") for line in path.read_text().splitlines()
    ]
    assert len(logged) == len(frame)
