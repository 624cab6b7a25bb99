"""The hooks' logic, without baking: their source run with a context of our choosing.

Static tier. A bake renders the hooks with Jinja, which only fills in the context:
here the same substitution, then the functions are called for many answers at once.
"""

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import CHOICES, OPTIONS, TEMPLATE
from test_static import FILES_BY_CI

# What a bake of the defaults hands the hooks.
DEFAULTS = {
    **{key: value[0] if isinstance(value, list) else value for key, value in OPTIONS.items()},
    "project_slug": "customer-churn",
    "module_name": "customer_churn",
}


def load_hook(name: str, context: dict[str, Any] = DEFAULTS) -> ModuleType:
    source = (TEMPLATE / "hooks" / f"{name}.py").read_text()
    assert source.count("{{ cookiecutter | tojson }}") == 1
    module = ModuleType(name)
    code = source.replace("{{ cookiecutter | tojson }}", json.dumps(context))
    exec(compile(code, str(TEMPLATE / "hooks" / f"{name}.py"), "exec"), module.__dict__)
    return module


def test_the_defaults_have_no_problem() -> None:
    assert load_hook("pre_gen_project").problems(DEFAULTS) == []


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("project_slug", "-x", "starting with a letter"),
        ("project_slug", "a--", "not ending with a hyphen"),
        ("project_slug", "ÉTÉ", "lowercase letters"),
        ("project_slug", "Churn", "lowercase letters"),
        ("module_name", "from", "keyword"),
        ("module_name", "os", "standard-library"),
        ("module_name", "dvc", "dependency"),
        ("module_name", "yaml", "dependency"),
        ("module_name", "a.b", "not a valid import name"),
        ("author_email", "a@b", "e-mail"),
        ("project_name", "", "empty"),
    ],
)
def test_each_bad_answer_gets_one_message_naming_it(option: str, value: str, says: str) -> None:
    hook = load_hook("pre_gen_project")

    [message] = hook.problems({**DEFAULTS, option: value})

    assert message.startswith(option)
    assert says in message


def test_every_problem_is_reported_at_once() -> None:
    hook = load_hook("pre_gen_project")
    bad = {**DEFAULTS, "project_slug": "9", "module_name": "json", "author_email": "nope"}

    assert len(hook.problems(bad)) == 3


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("My-Model", "my_model"), ("2fast", "fast"), ("___", "my_project"), ("été", "t")],
)
def test_the_suggested_module_name_is_valid(name: str, suggestion: str) -> None:
    hook = load_hook("pre_gen_project")

    assert hook.suggest_module(name) == suggestion
    assert hook.problems({**DEFAULTS, "module_name": suggestion}) == []


def test_the_post_hook_removes_exactly_the_files_of_the_other_ci_providers() -> None:
    """Its list mirrors the template's files: every path exists, every CI file is listed."""
    hook = load_hook("post_gen_project")
    project = TEMPLATE / "{{cookiecutter.project_slug}}"
    listed = {(option, value): paths for (option, value), paths in hook.FILES_BY_OPTION.items()}

    assert {option for option, _ in listed} <= set(CHOICES)
    for (option, value), paths in listed.items():
        assert value in CHOICES[option]
        assert all((project / path).exists() for path in paths), paths
    for provider, files in FILES_BY_CI.items():
        removed_by = {Path(path) for path in listed.get(("ci_provider", provider), [])}
        assert all(any(p == r or r in p.parents for r in removed_by) for p in map(Path, files))


def load_mutants() -> ModuleType:
    """scripts/mutants.py, as `make mutants` runs it."""
    spec = importlib.util.spec_from_file_location("mutants", TEMPLATE / "scripts" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_mutant_changes_text_the_template_has_once_and_names_tests_that_exist() -> None:
    """A mutant whose text moved away would stop `make mutants`: caught here, without a bake."""
    mutants = load_mutants()
    for mutant in mutants.CATALOGUE:
        text = (TEMPLATE / mutant.path).read_text()
        assert text.count(mutant.old) == 1, f"{mutant.name}: its text is not in {mutant.path} once"
        root = TEMPLATE if mutant.where == "template" else TEMPLATE / mutants.PROJECT
        files = [arg.split("::")[0] for arg in mutant.tests if arg.startswith("tests/")]
        assert files, mutant.name
        assert all((root / name).is_file() for name in files), f"{mutant.name}: {files}"
