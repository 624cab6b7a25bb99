"""Version the data, train, change the data, train again, then rebuild version 1 exactly.

All real: a copy of this project made a git repository, DVC with a local remote, the
command line in subprocesses (the copy's own code), a throwaway MLflow store.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from {{ cookiecutter.module_name }}.config import PROJECT_ROOT, PROJECT_SLUG
from {{ cookiecutter.module_name }}.core.data import fingerprint
from {{ cookiecutter.module_name }}.jobs.reproduce import ReproduceError, reproduce
from {{ cookiecutter.module_name }}.store import tracking

# A git repository, a DVC remote and the command line in subprocesses.
pytestmark = pytest.mark.integration

# What a copy of the project leaves behind: environments, stores, data, caches.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".tools", "mlflow.db", "mlartifacts", "mlruns", "data", "build",
    "cache", "config.local", "tmp", "__pycache__", ".*_cache", ".test-artifacts",
)  # fmt: skip


@dataclass
class Project:
    """A git copy of the project, with its DVC remote and MLflow store."""

    root: Path
    remote: Path
    env: dict[str, str]

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "{{ cookiecutter.module_name }}", *args],
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )

    def ok(self, *args: str) -> str:
        result = self.cli(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.root, env=self.env, capture_output=True, text=True, check=True
        ).stdout.strip()

    def state(self) -> tuple[str, str, str, str]:
        """What the user's checkout is: commit, branch, changes, data."""
        commit, branch = self.git("rev-parse", "HEAD"), self.git("branch", "--show-current")
        data = fingerprint(self.root / "data" / "sample.csv").sha256
        return commit, branch, self.git("status", "--porcelain"), data

    def client(self) -> MlflowClient:
        return MlflowClient(self.env["MLFLOW_TRACKING_URI"])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Version 1 on the sample, version 2 on changed data, version 3 from a dirty tree."""
    base = tmp_path_factory.mktemp("versioned")
    root = base / PROJECT_SLUG
    shutil.copytree(PROJECT_ROOT, root, ignore=NOT_COPIED)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "DVC_", "GIT_"))
    }
    env |= {
        # The copy's own code comes first on the path, before this project's.
        "PYTHONPATH": str(root / "src"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "DVC_REMOTE": str(base / "remote"),
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    project = Project(root, base / "remote", env)

    project.ok("data")
    outside_git = project.cli("data-version")
    assert outside_git.returncode == 1
    assert "needs git" in outside_git.stderr
    project.git("init", "--quiet", "--initial-branch", "main")
    project.git("add", "--all")
    project.git("commit", "--quiet", "--message", "Project")
    project.ok("data-version")
    project.git("commit", "--quiet", "--message", "Data version 1")
    project.ok("train")

    sample = root / "data" / "sample.csv"
    pd.read_csv(sample).iloc[:-150].to_csv(sample, index=False)
    project.ok("data-version")
    project.git("commit", "--quiet", "--message", "Data version 2")
    project.ok("train")

    readme = root / "README.md"
    readme.write_text(readme.read_text() + "\nAn uncommitted change.\n")
    project.ok("train")
    project.git("checkout", "--quiet", "README.md")
    # Only the remote has the data of version 1 now.
    shutil.rmtree(root / ".dvc" / "cache")
    return project


def run_of(project: Project, version: str) -> tuple[str, dict[str, float], dict[str, str]]:
    client = project.client()
    run = client.get_run(client.get_model_version(PROJECT_SLUG, version).run_id)
    return run.info.run_id, run.data.metrics, run.data.tags


def test_versions_record_their_code_and_data(project: Project) -> None:
    _, metrics_1, tags_1 = run_of(project, "1")
    _, metrics_2, tags_2 = run_of(project, "2")
    _, _, tags_3 = run_of(project, "3")

    assert tags_1["reproducible"] == tags_2["reproducible"] == "true"
    assert tags_1["data_dvc_md5"] != tags_2["data_dvc_md5"]
    assert tags_1["git_commit"] != tags_2["git_commit"]
    assert tags_1["dvc_remote"] == str(project.remote)
    assert metrics_1["rows_train"] != metrics_2["rows_train"]
    assert tags_3["reproducible"] == "false"
    assert "uncommitted changes" in tags_3["not_reproducible_because"]


def test_reproduce_rebuilds_version_1_from_the_remote_exactly(project: Project) -> None:
    before = project.state()

    result = project.cli("reproduce", "1")

    assert result.returncode == 0, result.stderr
    # Identical: metrics and every held-out prediction; version 2's data would differ.
    assert "metrics identical" in result.stdout
    _, metrics, tags = run_of(project, "1")
    rows = int(metrics["rows_test"])
    assert f"{rows} of {rows} held-out predictions the same" in result.stdout
    assert tags["reproduced"] == "true"
    assert project.state() == before
    assert not (project.root / ".dvc" / "cache").exists()
    assert len(project.client().search_model_versions(f"name = '{PROJECT_SLUG}'")) == 3


def test_reproduce_takes_a_run_id(project: Project) -> None:
    run_id, _, _ = run_of(project, "2")

    result = project.cli("reproduce", run_id)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Version 2 ")
    assert "NOT" not in result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: ")
    assert "Traceback" not in result.stderr
    return line


def test_reproduce_says_when_the_data_was_never_pushed(project: Project, tmp_path: Path) -> None:
    before = project.state()

    line = one_line_error(project.cli("reproduce", "1", DVC_REMOTE=str(tmp_path)))

    assert "never pushed" in line
    assert str(tmp_path) in line
    assert project.state() == before


def test_reproduce_says_when_there_is_no_remote(project: Project, tmp_path: Path) -> None:
    line = one_line_error(project.cli("reproduce", "1", DVC_REMOTE=str(tmp_path / "absent")))

    assert "No DVC remote at" in line
    assert "DVC_REMOTE" in line


def test_reproduce_says_when_the_commit_is_gone(project: Project) -> None:
    run_id, _, tags = run_of(project, "2")
    client = project.client()
    client.set_tag(run_id, "git_commit", "0" * 40)
    try:
        line = one_line_error(project.cli("reproduce", "2"))
    finally:
        client.set_tag(run_id, "git_commit", tags["git_commit"])

    assert "not in this repository" in line


@pytest.fixture
def in_store(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process on the copy's store: for refusals that come before any checkout."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.env["MLFLOW_TRACKING_URI"])
    yield
    monkeypatch.undo()
    tracking.use_tracking_store()


@pytest.mark.usefixtures("in_store")
def test_reproduce_refuses_a_run_of_a_dirty_tree() -> None:
    with pytest.raises(
        ReproduceError, match=r"Version 3 cannot be reproduced.*uncommitted changes"
    ):
        reproduce("3")


@pytest.mark.usefixtures("in_store")
def test_reproduce_refuses_a_run_from_before_data_versioning(project: Project) -> None:
    run_id, _, _ = run_of(project, "1")
    client = project.client()
    client.delete_tag(run_id, "reproducible")
    try:
        with pytest.raises(ReproduceError, match="before runs recorded their data version"):
            reproduce("1")
    finally:
        client.set_tag(run_id, "reproducible", "true")


@pytest.mark.usefixtures("in_store")
def test_reproduce_of_an_unknown_model_names_it() -> None:
    with pytest.raises(ReproduceError, match="has no version 9"):
        reproduce("9")
    with pytest.raises(ReproduceError, match="'nope' is neither"):
        reproduce("nope")


def fake_docker(folder: Path, labels: dict[str, str] | None) -> str:
    """A `docker` that knows one image with these labels (None: it knows no image)."""
    script = folder / "docker"
    if labels is None:
        script.write_text("#!/bin/sh\necho 'Error: No such image: shop/model:9' >&2\nexit 1\n")
    else:
        inspect = folder / "inspect.json"
        inspect.write_text(json.dumps([{"Config": {"Labels": labels}}]))
        script.write_text(f"#!/bin/sh\ncat {inspect}\n")
    script.chmod(0o755)
    return str(script)


def test_reproduce_rebuilds_the_model_an_image_carries_from_its_labels(
    project: Project, tmp_path: Path
) -> None:
    labels_file = tmp_path / "model.labels"
    project.ok("export-model", str(tmp_path / "v1"), "--version", "1", "--labels", str(labels_file))
    labels = dict(line.split("=", 1) for line in labels_file.read_text().splitlines())
    docker = fake_docker(tmp_path, labels)

    result = project.cli("reproduce", "--image", "shop/model:1-abc1234", DOCKER=docker)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Version 1 ")
    assert "metrics identical" in result.stdout


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        (None, "Cannot inspect image shop/model:9: Error: No such image"),
        ({"org.mlflow.model.version": "1"}, "has no org.mlflow.run.id label"),
    ],
)
def test_reproduce_of_an_image_without_its_run_says_why(
    project: Project, tmp_path: Path, labels: dict[str, str] | None, says: str
) -> None:
    docker = fake_docker(tmp_path, labels)

    result = project.cli("reproduce", "--image", "shop/model:9", DOCKER=docker)

    assert says in one_line_error(result)
