from pathlib import Path

import pytest
from mlflow import MlflowClient

from {{ cookiecutter.module_name }}.config import Config
from {{ cookiecutter.module_name }}.core.data import fingerprint, load, split
from {{ cookiecutter.module_name }}.store import gate as promotion_gate
from {{ cookiecutter.module_name }}.store import registry
from {{ cookiecutter.module_name }}.store.registry import TrainResult
from {{ cookiecutter.module_name }}.store.versioning import (
    CodeVersion,
    data_version,
    reproducibility,
)


def write_hash_file(data: Path, md5: str) -> None:
    """What `dvc add` writes beside a file it tracks (DVC 3)."""
    size = data.stat().st_size
    data.with_name(data.name + ".dvc").write_text(
        f"outs:\n- md5: {md5}\n  size: {size}\n  hash: md5\n  path: {data.name}\n"
    )


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "sample.csv"
    path.write_text("x,y\n1,2\n")
    return path


def test_data_that_dvc_does_not_track_is_named(data_file: Path) -> None:
    version = data_version(data_file, fingerprint(data_file))

    assert version.dvc_md5 is None
    assert version.problem is not None
    assert "DVC does not track" in version.problem
    assert "make data-version" in version.problem


def test_data_matching_its_hash_file_is_pinned(data_file: Path) -> None:
    write_hash_file(data_file, fingerprint(data_file).md5)

    version = data_version(data_file, fingerprint(data_file))

    assert version.dvc_md5 == fingerprint(data_file).md5
    assert version.problem is None


def test_data_changed_since_its_version_is_not_pinned(data_file: Path) -> None:
    write_hash_file(data_file, fingerprint(data_file).md5)
    data_file.write_text("x,y\n1,3\n")

    version = data_version(data_file, fingerprint(data_file))

    assert version.problem is not None
    assert "changed since its DVC version" in version.problem


def test_reproducible_needs_a_clean_commit_and_pinned_data(data_file: Path) -> None:
    write_hash_file(data_file, fingerprint(data_file).md5)
    pinned = data_version(data_file, fingerprint(data_file))

    assert reproducibility(CodeVersion("abc123", dirty=False), pinned) is None
    assert "uncommitted" in str(reproducibility(CodeVersion("abc123", dirty=True), pinned))
    assert "not a git repository" in str(reproducibility(CodeVersion("unknown", False), pinned))
    data_file.write_text("x,y\n1,3\n")
    changed = data_version(data_file, fingerprint(data_file))
    assert "changed" in str(reproducibility(CodeVersion("abc123", dirty=False), changed))


def gate(config: Config, not_reproducible: str | None) -> registry.Decision:
    parts = split(load(config.data), config.data, config.task)
    # The best score there is: only the reproducibility policy can keep it back.
    best = {config.promotion.metric: 1.0 if config.task == "classification" else 0.0}
    return promotion_gate.decide(
        MlflowClient(), best, parts.x_test, parts.y_test, config, not_reproducible
    )


def with_policy(config: Config, policy: str) -> Config:
    promotion = config.promotion.model_copy(update={"unreproducible": policy})
    return config.model_copy(update={"promotion": promotion})


def test_the_gate_refuses_an_unreproducible_run_when_told(
    trained: TrainResult, config: Config
) -> None:
    decision = gate(with_policy(config, "refuse"), "the work tree has uncommitted changes")

    assert not decision.promote
    assert "uncommitted changes" in decision.reason
    assert "make promote VERSION=" in decision.reason


def test_the_gate_warns_about_an_unreproducible_run_by_default(
    trained: TrainResult, config: Config
) -> None:
    plain = gate(config, None)

    decision = gate(config, "the work tree has uncommitted changes")

    assert decision.promote == plain.promote
    assert (
        decision.reason
        == f"{plain.reason} (not reproducible: the work tree has uncommitted changes)"
    )
    assert gate(with_policy(config, "refuse"), None) == plain
