"""The package's floor plan: the import-linter contracts of pyproject.toml hold."""

import subprocess
import sys
import tomllib
from pathlib import Path

from {{ cookiecutter.module_name }}.config import PROJECT_ROOT


def test_every_contract_of_the_floor_plan_is_kept() -> None:
    contracts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"][
        "importlinter"
    ]["contracts"]
    lint_imports = Path(sys.executable).parent / "lint-imports"

    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-4000:]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout
