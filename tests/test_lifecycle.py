"""The template's lifecycle: its own hooks pass, and its updates reach existing projects."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEMPLATE, clean_env, require_tier, run, which

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]


def cruft(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("cruft")), *args]
    return subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, check=False)


def git_copy_of_the_template(tmp_path: Path) -> Path:
    """The template's tracked files, committed in a repository of their own."""
    template = tmp_path / "template"
    template.mkdir()
    tracked = run(["git", "ls-files", "-z"], TEMPLATE).split("\0")
    for name in filter(None, tracked):
        (template / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TEMPLATE / name, template / name)
    run(["git", "init", "-q"], template)
    run([*GIT, "add", "-A"], template)
    run([*GIT, "commit", "-qm", "v1"], template)
    return template


def test_the_templates_pre_commit_hooks_pass_and_change_nothing(tmp_path: Path) -> None:
    require_tier("project", which("git"))
    template = git_copy_of_the_template(tmp_path)
    pre_commit = str(Path(sys.executable).with_name("pre-commit"))

    run([pre_commit, "run", "--all-files", "--show-diff-on-failure"], template)

    assert run(["git", "status", "--porcelain"], template) == ""


def test_cruft_update_brings_a_template_change_into_a_project(tmp_path: Path) -> None:
    require_tier("project", which("git"))
    template = git_copy_of_the_template(tmp_path)

    created = cruft(
        "create", str(template), "--no-input", "--output-dir", str(tmp_path / "out"), cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    project = tmp_path / "out" / "customer-churn"
    assert (project / ".cruft.json").is_file()
    run(["git", "init", "-q"], project)
    run([*GIT, "add", "-A"], project)
    run([*GIT, "commit", "-qm", "Bake"], project)
    assert cruft("check", cwd=project).returncode == 0

    readme = template / "{{cookiecutter.project_slug}}" / "README.md"
    readme.write_text(readme.read_text() + "\nA line added by a template update.\n")
    run([*GIT, "commit", "-qam", "v2"], template)

    assert cruft("check", cwd=project).returncode != 0, "cruft check must see the project is behind"
    updated = cruft("update", "--skip-apply-ask", "--allow-untracked-files", cwd=project)
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert "A line added by a template update." in (project / "README.md").read_text()
    assert not list(project.rglob("*.rej")), "the update must apply without conflicts"
    assert cruft("check", cwd=project).returncode == 0


pytestmark = pytest.mark.project
