"""Shared helpers of the template's tests: baking, running commands, test tiers."""

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
OPTIONS: dict[str, Any] = json.loads((TEMPLATE / "cookiecutter.json").read_text())
# The offered values of each choice option, default first.
CHOICES = {
    key: value for key, value in OPTIONS.items() if isinstance(value, list) and not key.startswith("_")
}

# Tiers that must run: a tier that cannot run here fails instead of being skipped.
# `.ci/run` sets MLPIPE_REQUIRE_TIERS=all.
REQUIRED_TIERS = {t.strip() for t in os.environ.get("MLPIPE_REQUIRE_TIERS", "").split(",") if t.strip()}


def require_tier(tier: str, missing: str | None) -> None:
    """Skip the test with `missing` as the reason, or fail if the tier is required."""
    if missing is None:
        return
    if tier in REQUIRED_TIERS or "all" in REQUIRED_TIERS:
        pytest.fail(f"The {tier} tier is required (MLPIPE_REQUIRE_TIERS) but cannot run: {missing}")
    pytest.skip(f"{tier} tier: {missing}")


def check_keys(overrides: dict[str, Any]) -> None:
    """Fail on an override that cookiecutter would silently ignore."""
    unknown = set(overrides) - set(OPTIONS)
    assert not unknown, f"Not options of cookiecutter.json: {sorted(unknown)}"


def bake(output_dir: Path, **overrides: Any) -> Path:
    """Generate a project with the defaults and `overrides`; return its folder."""
    check_keys(overrides)
    return Path(
        cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output_dir), extra_context=overrides)
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no virtualenv of ours leaks into the baked project."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"}}
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """Run a command; on failure, fail the test with the command's own output."""
    process = subprocess.run(
        args,
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if process.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` exited {process.returncode} in {cwd}\n{process.stdout}\n{process.stderr}"
        )
    return process.stdout


def which(*tools: str) -> str | None:
    """Return a reason naming the tools not on PATH, or None if all are."""
    absent = [tool for tool in tools if shutil.which(tool) is None]
    return f"{', '.join(absent)} not on PATH" if absent else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep each baked project's tests on one xdist worker, so each project is built once."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        project = callspec.params.get("project") if callspec else None
        if isinstance(project, str):
            item.add_marker(pytest.mark.xdist_group(project))
