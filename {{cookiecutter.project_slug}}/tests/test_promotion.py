import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from {{ cookiecutter.module_name }}.cli import main
from {{ cookiecutter.module_name }}.config import MODEL_INFO_FILE, PROJECT_SLUG, Config
from {{ cookiecutter.module_name }}.core.evaluation import is_better
from {{ cookiecutter.module_name }}.jobs.train import train
from {{ cookiecutter.module_name }}.store import gate, registry
from {{ cookiecutter.module_name }}.store.registry import TrainResult


@pytest.mark.parametrize(
    ("metric", "task", "candidate", "reference", "margin", "expected"),
    [
        ("f1", "classification", 0.90, 0.80, 0.0, True),
        ("f1", "classification", 0.80, 0.80, 0.0, False),  # a tie keeps the champion
        ("f1", "classification", 0.85, 0.80, 0.10, False),  # better, but not by the margin
        ("f1", "classification", 0.91, 0.80, 0.10, True),
        ("rmse", "regression", 1.0, 2.0, 0.0, True),  # lower is better
        ("rmse", "regression", 2.0, 1.0, 0.0, False),
        ("r2", "regression", 0.5, 0.4, 0.0, True),
    ],
)
def test_is_better_respects_direction_and_margin(
    metric: str, task: str, candidate: float, reference: float, margin: float, expected: bool
) -> None:
    assert is_better(metric, task, candidate, reference, margin) is expected  # type: ignore[arg-type]


def aliases(client: MlflowClient) -> dict[str, str]:
    model = client.get_registered_model(PROJECT_SLUG)
    return {alias: str(version) for alias, version in model.aliases.items()}


@pytest.mark.both_tasks
def test_a_worse_model_stays_challenger(trained: TrainResult, config: Config) -> None:
    client = MlflowClient()
    champion = aliases(client)["champion"]
    result = train(worse_config(config))

    assert not result.promoted
    assert "does not beat" in result.reason
    assert aliases(client)["champion"] == champion
    assert aliases(client)["challenger"] == result.version
    tags = client.get_model_version(PROJECT_SLUG, result.version).tags
    assert tags["promotion"] == result.reason


def worse_config(config: Config) -> Config:
    dummy = (
        "sklearn.dummy.DummyClassifier"
        if config.task == "classification"
        else "sklearn.dummy.DummyRegressor"
    )
    return config.model_copy(
        update={"estimator": config.estimator.model_copy(update={"name": dummy, "params": {}})}
    )


def test_promote_and_rollback_move_aliases_and_keep_versions(
    trained: TrainResult, config: Config
) -> None:
    client = MlflowClient()
    other = train(worse_config(config)).version  # a version of its own, whatever ran before
    before = {str(v.version) for v in client.search_model_versions(f"name='{PROJECT_SLUG}'")}
    champion = aliases(client)["champion"]

    registry.promote(client, other)
    assert aliases(client)["champion"] == other
    assert aliases(client)["previous-champion"] == champion

    assert registry.rollback(client) == champion
    assert aliases(client)["champion"] == champion
    assert {
        str(v.version) for v in client.search_model_versions(f"name='{PROJECT_SLUG}'")
    } == before


def test_promoting_a_missing_version_is_refused(trained: TrainResult) -> None:
    with pytest.raises(registry.RegistryError, match="no version 999"):
        registry.promote(MlflowClient(), "999")


def test_export_champion_writes_a_servable_model(trained: TrainResult, tmp_path: Path) -> None:
    client = MlflowClient()
    champion = registry.version_by_alias(client, "champion")
    assert champion is not None

    exported = registry.export_champion(client, tmp_path / "model")

    assert (tmp_path / "model" / "MLmodel").is_file()
    info = json.loads((tmp_path / "model" / MODEL_INFO_FILE).read_text())
    assert info == exported
    # What the image's labels will say: the registry's and the run's own values.
    tags = client.get_run(champion.run_id).data.tags
    assert info == {
        "name": PROJECT_SLUG,
        "version": str(champion.version),
        "run_id": champion.run_id,
        "git_commit": tags["git_commit"],
        "data_sha256": tags["data_sha256"],
        "data_dvc_md5": tags.get("data_dvc_md5", ""),
        "template_version": tags["template_version"],
    }
    assert set(info) == set(registry.IMAGE_LABELS)
    assert mlflow.pyfunc.load_model(str(tmp_path / "model")).metadata.signature is not None


def test_export_model_takes_a_version_and_writes_the_images_labels(
    trained: TrainResult, tmp_path: Path
) -> None:
    labels = tmp_path / "model.labels"
    export = ["export-model", str(tmp_path / "model"), "--version", trained.version]

    result = CliRunner().invoke(main, [*export, "--labels", str(labels)])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == trained.version
    written = dict(line.split("=", 1) for line in labels.read_text().splitlines())
    info = json.loads((tmp_path / "model" / MODEL_INFO_FILE).read_text())
    assert written == {registry.IMAGE_LABELS[key]: value for key, value in info.items()}
    assert written["org.mlflow.run.id"] == trained.run_id


@pytest.mark.parametrize("uri", ["", "sqlite:///mlflow.db", "file:///tmp/mlruns"])
def test_a_release_exports_only_from_a_tracking_server(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    result = CliRunner().invoke(main, ["export-model", str(tmp_path / "model"), "--from-server"])

    assert result.exit_code == 1
    assert "not your team's tracking server" in result.output
    assert "MLFLOW_TRACKING_URI" in result.output
    assert not (tmp_path / "model").exists()


def test_a_champion_that_cannot_score_the_new_data_keeps_its_place(
    trained: TrainResult, config: Config, tmp_path: Path
) -> None:
    """The gate fails closed: a model it could not compare is not promoted."""
    client = MlflowClient()
    champion = aliases(client)["champion"]
    fewer = tmp_path / "fewer.csv"
    pd.read_csv(config.data.path).drop(columns="weight").to_csv(fewer, index=False)
    other_data = config.model_copy(update={"data": config.data.model_copy(update={"path": fewer})})

    result = train(other_data)

    assert not result.promoted
    assert "cannot score this data" in result.reason
    assert "make promote VERSION=" in result.reason
    assert aliases(client)["champion"] == champion


def versions(client: MlflowClient) -> set[str]:
    return {str(v.version) for v in client.search_model_versions(f"name = '{PROJECT_SLUG}'")}


def last_run_status(client: MlflowClient) -> str:
    experiment = client.get_experiment_by_name(PROJECT_SLUG)
    assert experiment is not None
    [run] = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    return str(run.info.status)


def server_gone(*args: object, **kwargs: object) -> None:
    raise MlflowException("the tracking server went away")


# Each step after the fit where a tracking server may go away, and the run's status then.
STEPS = {
    "gate": (gate, "decide", "FAILED"),
    "registration": (
        MlflowClient,
        "create_model_version",
        "FINISHED",
    ),  # the gate's reason tag with it
    "challenger alias": (MlflowClient, "set_registered_model_alias", "FINISHED"),
    "promotion": (registry, "promote", "FINISHED"),
}


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_after_the_fit_leaves_no_usable_version(
    step: str, trained: TrainResult, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a finished run has a version, and only one that went through the gate."""
    client = MlflowClient()
    before, aliases_before = versions(client), aliases(client)
    target, name, status = STEPS[step]
    if step == "promotion":  # promotion happens only to a model the gate lets through
        monkeypatch.setattr(gate, "decide", lambda *a, **k: registry.Decision(True, "better"))
    monkeypatch.setattr(target, name, server_gone)

    with pytest.raises(MlflowException, match="went away"):
        train(config)

    monkeypatch.undo()
    assert last_run_status(client) == status
    assert versions(client) == before
    assert aliases(client) == aliases_before


def test_a_version_that_cannot_be_undone_says_how_to_delete_it(
    trained: TrainResult, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient()
    before = versions(client)
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", server_gone)
    monkeypatch.setattr(MlflowClient, "delete_model_version", server_gone)

    with pytest.raises(registry.RegistryError, match="could not be undone: delete it by hand"):
        train(config)

    monkeypatch.undo()
    [left] = versions(client) - before
    client.delete_model_version(PROJECT_SLUG, left)
