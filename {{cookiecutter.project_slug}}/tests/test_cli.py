import socket
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner

from {{ cookiecutter.module_name }}.cli import main
from {{ cookiecutter.module_name }}.config import (
    CONFIG_FILE,
    ENV_PREFIX,
    PROJECT_ROOT,
    load_config,
)
from {{ cookiecutter.module_name }}.errors import ProjectError
from {{ cookiecutter.module_name }}.jobs import train as train_job


@pytest.mark.parametrize("command", ["data", "train", "evaluate", "promote", "serve", "predict"])
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])

    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_the_file_is_read_then_the_environment_then_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file_value = load_config().data.test_size
    monkeypatch.setenv(f"{ENV_PREFIX}DATA__TEST_SIZE", "0.33")
    monkeypatch.setenv(f"{ENV_PREFIX}DATA__TARGET", "from_env")

    config = load_config(data={"target": "from_cli"})

    assert file_value != 0.33
    assert config.data.test_size == 0.33
    assert config.data.target == "from_cli"


def test_relative_data_paths_are_anchored_at_the_project_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)

    assert (
        load_config(data={"path": "data/other.csv"}).data.path
        == PROJECT_ROOT / "data" / "other.csv"
    )


def test_unknown_config_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text(CONFIG_FILE.read_text().replace("[data]", "[data]\ntargte = 'typo'"))

    result = CliRunner().invoke(main, ["train", "--config", str(bad)])

    assert result.exit_code == 1
    assert "targte" in result.output


def test_train_on_a_missing_column_says_which_columns_exist(csv_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--data", str(csv_path), "--target", "nope"])

    assert result.exit_code == 1
    assert "'nope' is not in sample.csv" in result.output
    assert "Traceback" not in result.output


def test_predict_writes_a_prediction_per_row(
    trained: object, csv_path: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"

    result = CliRunner().invoke(
        main, ["predict", "--input", str(csv_path), "--output", str(output)]
    )

    assert result.exit_code == 0, result.output
    lines = output.read_text().splitlines()
    assert lines[0] == '"label","prediction","model_name","model_version"'
    assert len(lines) == len(csv_path.read_text().splitlines())


def test_healthcheck_fails_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("PORT", str(sock.getsockname()[1]))  # bound, not listening

        result = CliRunner().invoke(main, ["healthcheck"])

    assert result.exit_code == 1


@pytest.fixture
def empty_store(
    tracking_store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.chdir(tmp_path)
    yield
    mlflow.set_tracking_uri(tracking_store)  # commands set MLflow's process-wide URI


def test_export_model_without_a_champion_says_to_train(empty_store: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export-model", str(tmp_path / "model")])

    assert result.exit_code == 1
    assert "run `make train` first" in result.output


@pytest.mark.integration
def test_serve_check_scores_the_input_example(trained: object) -> None:
    result = CliRunner().invoke(main, ["serve", "--check"])

    assert result.exit_code == 0, result.output
    assert "scores its input example (5 rows)" in result.output


@pytest.mark.integration
def test_healthcheck_invoke_posts_the_models_example(
    trained: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `make docker-smoke` runs inside the container, against a live server."""
    import threading

    import uvicorn

    from {{ cookiecutter.module_name }}.serving.app import create_app
    from {{ cookiecutter.module_name }}.store.registry import export_champion

    export_champion(mlflow.MlflowClient(), tmp_path / "model")
    app = create_app(str(tmp_path / "model"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "the server stopped before it started"
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.05)
        monkeypatch.setenv("PORT", str(port))
        monkeypatch.setenv("MODEL_URI", str(tmp_path / "model"))

        result = CliRunner().invoke(main, ["healthcheck", "--invoke"])
    finally:
        server.should_exit = True
        thread.join(timeout=10)

    assert result.exit_code == 0, result.output
    assert "serving_input_example.json -> 200" in result.output


def test_an_unknown_model_is_a_one_line_error(
    trained: object, csv_path: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        main,
        ["predict", "--input", str(csv_path), "--output", str(tmp_path / "out.csv"),
         "--model-uri", "models:/no-such-model@champion"],
    )  # fmt: skip

    assert result.exit_code == 1
    assert "no-such-model" in result.output
    assert "Traceback" not in result.output


def test_predict_names_the_columns_a_csv_lacks_and_writes_nothing(
    trained: object, csv_path: Path, tmp_path: Path
) -> None:
    partial = tmp_path / "partial.csv"
    pd.read_csv(csv_path).drop(columns=["size", "count"]).to_csv(partial, index=False)
    output = tmp_path / "out.csv"

    result = CliRunner().invoke(main, ["predict", "--input", str(partial), "--output", str(output)])

    assert result.exit_code == 1
    assert "lacks the model's input columns size, count" in result.output
    assert "Traceback" not in result.output
    assert not output.exists()


def test_an_unreachable_tracking_server_is_named(
    monkeypatch: pytest.MonkeyPatch, csv_path: Path, tracking_store: str
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        try:
            result = CliRunner().invoke(
                main, ["train", "--data", str(csv_path), "--target", "label"]
            )
        finally:
            mlflow.set_tracking_uri(tracking_store)

    assert result.exit_code == 1
    assert f"tracking server at {url} is unreachable" in result.output


def test_a_misspelt_promotion_metric_is_refused_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    text = CONFIG_FILE.read_text()
    metric = load_config().promotion.metric
    bad.write_text(text.replace(f'metric = "{metric}"', 'metric = "f1_score"', 1))

    result = CliRunner().invoke(main, ["train", "--config", str(bad)])

    assert result.exit_code == 1
    assert "promotion.metric 'f1_score'" in result.output
    assert metric in result.output  # the valid names are listed


def test_data_never_writes_the_sample_where_the_user_pointed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.csv"
    monkeypatch.setenv(f"{ENV_PREFIX}DATA__PATH", str(mine))

    refused = CliRunner().invoke(main, ["data"])
    assert refused.exit_code == 1
    assert f"{mine} not found" in refused.output
    assert not mine.exists()

    forced = CliRunner().invoke(main, ["data", "--force"])
    assert forced.exit_code == 0, forced.output
    assert mine.is_file()


def test_only_project_errors_become_one_line_messages(
    csv_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug keeps its traceback; an error the user can fix is one line with its exit status.
    def bug(*args: object, **kwargs: object) -> None:
        raise ValueError("an internal detail")

    class RefusedError(ProjectError):
        exit_status = 4

    def refused(*args: object, **kwargs: object) -> None:
        raise RefusedError("change this setting")

    monkeypatch.setattr(train_job, "train", bug)
    crashed = CliRunner().invoke(main, ["train", "--data", str(csv_path)])
    monkeypatch.setattr(train_job, "train", refused)
    told = CliRunner().invoke(main, ["train", "--data", str(csv_path)])

    assert isinstance(crashed.exception, ValueError)
    assert (told.exit_code, told.output) == (4, "Error: change this setting\n")
