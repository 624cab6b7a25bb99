"""The package's floor plan: the import-linter contracts of pyproject.toml hold."""

import importlib.metadata
import re
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


def test_serving_may_import_nothing_the_image_leaves_out() -> None:
    """The image installs `[project] dependencies` alone: serving must not need a group's."""
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    contract = next(
        contract
        for contract in pyproject["tool"]["importlinter"]["contracts"]
        if contract["name"].startswith("Serving:")
    )
    in_image = set().union(*import_names(pyproject["project"]["dependencies"]).values())
    groups = pyproject["dependency-groups"]
    left_out = {
        distribution: modules
        for distribution, modules in import_names(groups["train"] + groups["spark"]).items()
        if not modules <= in_image  # mlflow: the image has mlflow-skinny's
    }

    assert {"matplotlib", "pyspark"} <= left_out.keys()
    unguarded = sorted(
        name
        for name, modules in left_out.items()
        if not modules & set(contract["forbidden_modules"])
    )
    assert not unguarded, f"add their modules to the contract's forbidden_modules: {unguarded}"


def import_names(requirements: list[str]) -> dict[str, set[str]]:
    """The top-level modules each requirement's distribution installs."""
    installed: dict[str, set[str]] = {}
    for module, owners in importlib.metadata.packages_distributions().items():
        for owner in owners:
            installed.setdefault(normalized(owner), set()).add(module)
    names = {normalized(re.split(r"[\[=<>~ ;]", requirement)[0]) for requirement in requirements}
    return {name: installed[name] for name in names}


def normalized(distribution: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", distribution).lower()
