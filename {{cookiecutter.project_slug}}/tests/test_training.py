from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import mlflow.artifacts
import pandas as pd
import pytest
from conftest import TARGET
from mlflow import MlflowClient

from {{ cookiecutter.module_name }} import TEMPLATE_VERSION
from {{ cookiecutter.module_name }}.config import METRICS, PROJECT_SLUG, Config
from {{ cookiecutter.module_name }}.core.data import fingerprint
from {{ cookiecutter.module_name }}.core.evaluation import GREATER_IS_BETTER
from {{ cookiecutter.module_name }}.jobs.train import train
from {{ cookiecutter.module_name }}.store import tracking
from {{ cookiecutter.module_name }}.store.registry import TrainResult
from {{ cookiecutter.module_name }}.store.tracking import CONFIG_ARTIFACT


@pytest.mark.both_tasks
def test_training_logs_a_complete_run(trained: TrainResult, config: Config) -> None:
    run = MlflowClient().get_run(trained.run_id)

    assert run.info.status == "FINISHED"
    assert set(GREATER_IS_BETTER[config.task]) - {"roc_auc"} <= set(run.data.metrics)
    assert run.data.metrics["rows_dropped"] == 3
    assert run.data.params["estimator.name"] == config.estimator.name
    assert run.data.params["data.target"] == config.data.target
    digests = fingerprint(config.data.path)
    assert run.data.tags["data_sha256"] == digests.sha256
    assert run.data.tags["template_version"] == TEMPLATE_VERSION
    assert {"git_commit", "git_dirty", "dvc_remote"} <= set(run.data.tags)
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == config.data.path.name
    # The digest of the whole file, not of its first rows as MLflow's own.
    assert dataset_input.dataset.digest == digests.md5


@pytest.mark.both_tasks
def test_training_logs_a_configuration_that_reads_back(
    trained: TrainResult, config: Config
) -> None:
    record = mlflow.artifacts.load_dict(f"runs:/{trained.run_id}/{CONFIG_ARTIFACT}")

    assert Config(**record).model_dump() == config.model_dump()


def test_a_run_on_data_dvc_does_not_track_is_tagged_not_reproducible(
    trained: TrainResult,
) -> None:
    tags = MlflowClient().get_run(trained.run_id).data.tags

    assert tags["reproducible"] == "false"
    assert "data_dvc_md5" not in tags
    assert tags["not_reproducible_because"]


@pytest.mark.both_tasks
def test_training_logs_plots(trained: TrainResult, config: Config) -> None:
    artifacts = {a.path for a in MlflowClient().list_artifacts(trained.run_id, "plots")}
    expected = (
        {"plots/confusion_matrix.png", "plots/roc_curve.png"}
        if config.task == "classification"
        else {"plots/predicted_vs_actual.png", "plots/residuals.png"}
    )

    assert expected <= artifacts


@pytest.mark.both_tasks
def test_first_model_becomes_champion_with_its_model_files(
    trained: TrainResult, config: Config
) -> None:
    client = MlflowClient()
    version = client.get_model_version(PROJECT_SLUG, trained.version)

    assert trained.promoted
    assert "champion" in version.aliases
    model = mlflow.models.get_model_info(f"models:/{PROJECT_SLUG}/{trained.version}")
    assert model.signature is not None
    features = pd.read_csv(config.data.path, nrows=1).drop(columns=TARGET).columns
    assert model.signature.inputs.input_names() == list(features)
    assert model.flavors["sklearn"]["serialization_format"] == "skops"
    requirements = mlflow.pyfunc.get_model_dependencies(f"models:/{PROJECT_SLUG}/{trained.version}")
    # Exactly what serving a scikit-learn model saved with skops needs, each pinned to
    # the version it was trained with.
    pinned = dict(line.split("==") for line in Path(requirements).read_text().split())
    serving = {"mlflow-skinny", "scikit-learn", "skops", "pandas", "numpy", "scipy"}
    assert pinned == {name: installed_version(name) for name in serving}


def test_failed_training_marks_the_run_failed_and_registers_nothing(
    trained: TrainResult, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient()
    versions_before = len(client.search_model_versions(f"name='{PROJECT_SLUG}'"))

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr("{{ cookiecutter.module_name }}.jobs.train.fit_and_evaluate", fail)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        train(config)

    [last] = client.search_runs(
        [client.get_experiment_by_name(PROJECT_SLUG).experiment_id],
        order_by=["start_time DESC"],
        max_results=1,
    )
    assert last.info.status == "FAILED"
    assert len(client.search_model_versions(f"name='{PROJECT_SLUG}'")) == versions_before


def test_the_metrics_the_config_accepts_are_the_ones_runs_log() -> None:
    assert {task: set(names) for task, names in METRICS.items()} == {
        task: set(names) for task, names in GREATER_IS_BETTER.items()
    }


def test_setup_takes_the_experiment_another_process_created_meanwhile(
    tracking_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two `tune` processes started together: both look, find no experiment, and create it.
    tracking.setup()
    looked_up = MlflowClient.get_experiment_by_name
    calls = []

    def not_yet_on_the_first_look(self: MlflowClient, name: str) -> object:
        calls.append(name)
        return None if len(calls) == 1 else looked_up(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", not_yet_on_the_first_look)
    tracking.setup()

    assert calls[0] == PROJECT_SLUG
    assert mlflow.get_experiment_by_name(PROJECT_SLUG) is not None
