"""Project tier: baked projects install, pass their own checks, train, register and serve.

Each project runs exactly what its README and CI run: make targets, in a fresh
uv environment (uv's cache is shared, so installs after the first are fast).
"""

import ast
import csv
import importlib.util
import json
import re
import shutil
import subprocess
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest
import yaml
from conftest import (
    DEFAULTS_ONLY,
    TEMPLATE,
    Background,
    clean_env,
    free_port,
    http,
    require_tier,
    run,
    sample,
    which,
)
from mlflow import MlflowClient

pytestmark = pytest.mark.project


def client(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def slug(project: Path) -> str:
    return project.name


def test_training_is_tracked_and_registered(project: Path) -> None:
    mlflow = client(project)
    experiment = mlflow.get_experiment_by_name(slug(project))
    [run_] = mlflow.search_runs([experiment.experiment_id])
    config = (project / "config.toml").read_text()
    head = run(["git", "rev-parse", "HEAD"], project).strip()

    assert run_.info.status == "FINISHED"
    expected_metrics = (
        {"accuracy", "f1", "roc_auc"} if 'task = "classification"' in config else {"rmse", "mae", "r2"}
    )
    assert expected_metrics <= set(run_.data.metrics)
    assert run_.data.params["estimator.n_estimators"] == "100"
    assert run_.data.tags["git_commit"] == head
    assert run_.data.tags["git_dirty"] == "false"
    assert len(run_.data.tags["data_sha256"]) == 64
    assert run_.data.tags["template_version"]
    [dataset] = run_.inputs.dataset_inputs
    assert dataset.dataset.name == "sample.csv"
    version = mlflow.get_model_version_by_alias(slug(project), "champion")
    assert str(version.version) == "1"
    assert version.run_id == run_.info.run_id
    assert (project / "mlartifacts").is_dir(), "artifacts are anchored at the project root"


@pytest.fixture(scope="module")
def server(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make serve` on a free port, stopped with SIGTERM."""
    serving = Background(
        ["make", "serve", "PORT={port}"], project, clean_env(), tmp_path_factory.mktemp("serve") / "log"
    )
    serving.start()
    yield serving.url
    serving.stop()


def test_served_predictions_match_batch_predictions(project: Path, server: str, tmp_path: Path) -> None:
    columns, body = sample(project, 5)
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as file:
        csv.writer(file).writerows([columns, *body])
    run(["make", "predict", f"INPUT={source}", f"OUTPUT={tmp_path / 'out.csv'}"], project)
    with (tmp_path / "out.csv").open() as file:
        batch = [row["prediction"] for row in csv.DictReader(file)]

    status, answer = http(
        f"{server}/invocations",
        json.dumps(
            {"dataframe_split": {"columns": columns, "data": [[float(v) for v in r] for r in body]}}
        ).encode(),
    )

    assert status == 200, answer
    assert [str(p) for p in answer["predictions"]] == batch
    assert http(f"{server}/model")[1]["model_version"] == "1"


def raw(url: str, body: bytes | None = None, content_type: str | None = None) -> tuple[int, bytes]:
    """GET (or POST `body`) and return the status and the body as they are.

    http.client, not urllib: urllib adds a Content-Type of its own to a POST without one.
    """
    address = urllib.parse.urlsplit(url)
    connection = HTTPConnection(address.netloc, timeout=60)
    headers = {} if content_type is None else {"Content-Type": content_type}
    try:
        connection.request("GET" if body is None else "POST", address.path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def error_code(body: bytes) -> str | None:
    """The `error_code` of an error in JSON; None for any other body (MLflow's 415s are text)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer.get("error_code") if isinstance(answer, dict) else None


def mlflow_cases(project: Path):
    """The baked project's catalogue of MLflow's scoring-server cases."""
    path = project / "tests" / "mlflow_scoring_cases.py"
    spec = importlib.util.spec_from_file_location(f"mlflow_scoring_cases_{project.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mlflow_server(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow models serve` on the same champion, from the project's own environment."""
    uri = f"models:/{slug(project)}@champion"
    serving = Background(
        ["uv", "run", "--locked", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", "{port}"],
        project, clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}"),
        tmp_path_factory.mktemp("mlflow-serve") / "log",
    )  # fmt: skip
    serving.start()
    yield serving.url
    serving.stop()


def test_both_servers_answer_every_case_of_mlflows_tests_alike(
    project: Path, server: str, mlflow_server: str
) -> None:
    """A drop-in: where MLflow's server answers 2xx, ours does with the same predictions."""
    catalogue = mlflow_cases(project)
    # The champion's own input example, from its files (no registry URI to set in this process).
    champion = client(project).get_model_version_by_alias(slug(project), "champion")
    model_id = champion.source.removeprefix("models:/")
    example_file = project / "mlartifacts" / "models" / model_id / "artifacts" / "serving_input_example.json"
    example = json.loads(example_file.read_text())["dataframe_split"]
    columns, rows = example["columns"], example["data"]
    cases = [*catalogue.cases(columns, rows), *catalogue.parquet(columns, rows)]

    wrong = []
    for case in cases:
        theirs = raw(f"{mlflow_server}/invocations", case.body, case.content_type)
        ours = raw(f"{server}/invocations", case.body, case.content_type)
        if theirs[0] != case.status:
            wrong.append(f"{case.name}: mlflow models serve answered {theirs[0]}, not {case.status}")
        if ours[0] != case.expected_status:
            wrong.append(f"{case.name}: ours answered {ours[0]} {ours[1][:200]!r}")
        if ours[0] == theirs[0] == 200 and json.loads(ours[1]) != json.loads(theirs[1]):
            wrong.append(f"{case.name}: predictions differ: {ours[1][:200]!r} vs {theirs[1][:200]!r}")
        if 400 <= ours[0] < 500:
            error = json.loads(ours[1])
            if not (error.get("error_code") and error.get("message")):
                wrong.append(f"{case.name}: our error {ours[1][:200]!r} lacks error_code or message")
            their_code = error_code(theirs[1])
            if their_code is not None and error.get("error_code") != their_code:
                wrong.append(f"{case.name}: our error_code {error.get('error_code')}, MLflow's {their_code}")
            if their_code != case.error_code:
                wrong.append(
                    f"{case.name}: MLflow's error_code is {their_code}, the catalogue says {case.error_code}"
                )

    assert not wrong, "\n".join(wrong)
    assert len(cases) > 50
    for route in ("/ping", "/version"):
        assert raw(f"{server}{route}") == raw(f"{mlflow_server}{route}"), route


@DEFAULTS_ONLY
def test_server_names_a_missing_column(project: Path, server: str) -> None:
    columns, body = sample(project, 1)

    status, answer = http(
        f"{server}/invocations",
        json.dumps({"dataframe_split": {"columns": columns[1:], "data": [body[0][1:]]}}).encode(),
    )

    assert status == 400
    assert columns[0] in answer["message"]


@DEFAULTS_ONLY  # on the other bake, locust's start on a loaded CI ate its 4 s (0 requests)
def test_locustfile_load_tests_the_server_without_failures(
    project: Path, server: str, tmp_path: Path
) -> None:
    locust = ["uv", "run", "--locked", "--group", "load", "locust", "--headless", "--host", server]
    run([*locust, "--users", "4", "--run-time", "4s", "--csv", str(tmp_path / "load")], project)

    with (tmp_path / "load_stats.csv").open() as file:
        [total] = [row for row in csv.DictReader(file) if row["Name"] == "Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0


@DEFAULTS_ONLY
def test_a_release_never_ships_a_local_model_and_an_offline_audit_says_so(project: Path) -> None:
    """`make release-image` exports from the team's tracking server only; `make audit` needs
    PyPI's advisories: offline it says so, and fails where it is required (CI)."""
    local = subprocess.run(
        ["make", "release-image"], cwd=project, env=clean_env(), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    unreachable = "AUDIT_SERVICE=http://127.0.0.1:9/pypi/pip/json"
    offline = run(["make", "audit", unreachable], project)
    required = subprocess.run(
        ["make", "audit", unreachable, "AUDIT_REQUIRED=1"], cwd=project, env=clean_env(),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert local.returncode != 0
    assert "not your team's tracking server" in local.stdout + local.stderr
    assert "Building" not in local.stdout  # nothing exported, nothing built
    assert "audit skipped: http://127.0.0.1:9/pypi/pip/json cannot be reached" in offline
    assert required.returncode != 0
    assert "audit skipped" in required.stdout


@DEFAULTS_ONLY
def test_make_bench_compares_the_server_with_mlflow_models_serve(project: Path) -> None:
    require_tier("project", which("wrk"))

    output = run(["make", "bench", "BENCH_SECONDS=2"], project)

    servers = [
        "this project", "  monitoring off", "  fast path off", "  pinned", "  follows, 1 s checks",
        "  with a shadow", "mlflow models serve", "echo (HTTP floor)",
    ]  # fmt: skip
    row = re.compile(rf"^({'|'.join(map(re.escape, servers))}) +(\d+) +([\d.]+) ", re.MULTILINE)
    rates = {(name, connections): float(rate) for name, connections, rate in row.findall(output)}
    assert set(rates) == {(name, connections) for name in servers for connections in ("1", "16")}
    assert all(rate > 0 for rate in rates.values())
    assert "x the throughput of mlflow models serve" in output
    assert "monitoring on keeps" in output
    assert "following the registry (a check every second) keeps" in output
    assert "a shadow scoring every row keeps" in output
    assert "x the throughput of scikit-learn's predict" in output
    ways = ["MLflow pyfunc predict", "scikit-learn predict", "fast path"]
    in_process = re.compile(rf"^({'|'.join(ways)}) +[\d.]+/[\d.]+ ", re.MULTILINE)
    assert set(in_process.findall(output)) == set(ways)


@pytest.mark.parametrize("project", ["regression"], indirect=True)
def test_the_integration_layer_runs_on_the_python_of_the_other_bake(project: Path) -> None:
    """What the fast layer of the regression bake leaves out and its Python (3.13) changes:
    Spark's batch engine (pyspark and its JVM), `reproduce`'s git and DVC chain, and the
    server as a process of its own (workers, signals, crash recovery) serving its model."""
    suites = ["tests/test_batch.py", "tests/test_reproduce.py", "tests/test_server.py"]
    suites += ["tests/test_serving.py"]

    output = run(["uv", "run", "--locked", "pytest", "-m", "integration", *suites], project, timeout=1800)

    assert re.search(r"\d+ passed", output) and " failed" not in output


def bare_path(folder: Path) -> str:
    """A PATH with Python, make and git, and no uv: a new machine's."""
    folder.mkdir()
    for tool in ("make", "git"):
        (folder / tool).symlink_to(shutil.which(tool) or tool)
    # The interpreters themselves, not pyenv's shims (a shim would find pyenv's uv).
    for python in ("python3", "python3.11", "python3.12", "python3.13"):
        if shutil.which(python):
            found = run([python, "-c", "import sys; print(sys.executable)"], folder).strip()
            (folder / python).symlink_to(found)
    path = f"{folder}:/usr/bin:/bin"
    assert shutil.which("uv", path=path) is None, "uv must not be on the bare PATH"
    return path


@pytest.mark.xdist_group("demo")
def test_make_demo_ends_with_a_prediction_on_a_bare_machine(tmp_path: Path) -> None:
    """The README's first command, as a newcomer runs it: a fresh clone, an empty HOME, no uv."""
    require_tier("project", which("make", "git"))
    run(["git", "clone", "--quiet", str(TEMPLATE), str(tmp_path / "clone")], tmp_path)
    cache = run(["uv", "cache", "dir"], tmp_path).strip() if shutil.which("uv") else ""
    (tmp_path / "home").mkdir()
    env = clean_env(HOME=str(tmp_path / "home"), PATH=bare_path(tmp_path / "bin"))
    env.pop("UV", None)
    if cache:  # the packages themselves may come from the machine's cache: uv may not
        env["UV_CACHE_DIR"] = cache

    output = run(
        ["make", "demo", f"DEMO_DIR={tmp_path / 'demo'}", f"PORT={free_port()}"], tmp_path / "clone", env
    )

    [answer] = [line for line in output.splitlines() if line.startswith('{"predictions"')]
    assert len(json.loads(answer)["predictions"]) == 1
    assert (tmp_path / "clone" / ".tools" / "bin" / "uv").is_file()  # installed by `make install`


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ;]", requirement)[0].lower().replace("_", "-")


@DEFAULTS_ONLY
def test_the_pre_hook_refuses_every_import_name_of_the_projects_dependencies(project: Path) -> None:
    """A module_name equal to one would shadow it: the hook's list must hold them all."""
    hook = ast.parse((TEMPLATE / "hooks" / "pre_gen_project.py").read_text())
    [listed] = [
        ast.literal_eval(node.value)
        for node in hook.body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", "") == "DEPENDENCY_MODULES" for t in node.targets)
    ]
    script = "import importlib.metadata as m, json; print(json.dumps(m.packages_distributions()))"
    # Every group (`load` included), whatever the tests before this one installed.
    listing = run(["uv", "run", "--locked", "--all-groups", "python", "-c", script], project)
    modules = json.loads(listing.splitlines()[-1])
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    groups = [r for group in pyproject["dependency-groups"].values() for r in group if isinstance(r, str)]
    direct = {requirement_name(r) for r in [*pyproject["project"]["dependencies"], *groups]}

    imported = {
        module
        for module, distributions in modules.items()
        if module.isidentifier() and not module.startswith("_")
        and any(requirement_name(d) in direct for d in distributions)
    }  # fmt: skip

    assert {"mlflow", "sklearn", "pandas", "fastapi"} <= imported
    assert imported <= listed, f"add to DEPENDENCY_MODULES: {sorted(imported - listed)}"


def test_pre_commit_passes_on_a_fresh_bake_and_changes_nothing(project: Path) -> None:
    """Every hook installs from PyPI; the committed bake is already clean."""
    run(["uv", "run", "--locked", "pre-commit", "run", "--all-files", "--show-diff-on-failure"], project)

    assert run(["git", "status", "--porcelain"], project) == ""


# PromQL words that are not metric names, in the project's rules and dashboard.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "on", "and", "rate", "increase", "histogram_quantile",
}  # fmt: skip
LABELS = {
    "job", "instance", "route", "status", "le", "feature", "method", "version", "outcome", "role",
}  # fmt: skip


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    without_strings = re.sub(r'"[^"]*"', "", re.sub(r"\[[^\]]*\]", "", expression))
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings))
    return words - PROMQL_WORDS - LABELS


def served_metric_names(text: str) -> set[str]:
    """Every metric /metrics declares (a family may have no series: no categorical feature)."""
    names = {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    names |= declared | {f"{name}_total" for name in declared}
    return names | {re.sub(r"_(bucket|sum|count)$", "", name) for name in names} | {"up"}


def post_rows(url: str, columns: list[str], rows: list[list[str]]) -> str:
    """Score rows; return the prediction id the server gave them."""
    body = json.dumps(
        {"dataframe_split": {"columns": columns, "data": [[float(v) for v in r] for r in rows]}}
    )
    request = urllib.request.Request(
        f"{url}/invocations", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(response.headers["X-Prediction-ID"])


def test_monitoring_from_the_served_traffic_to_a_report_that_opens_in_a_browser(
    project: Path, tmp_path: Path
) -> None:
    """`make serve` with an inference log and a shadow (the champion's own version: every
    metric is served), `make monitor`, and its report in headless Chromium."""
    require_tier("project", which("node", "chromium"))
    log_dir, artifacts = tmp_path / "inference", TEMPLATE / ".test-artifacts"
    env = clean_env(INFERENCE_LOG_DIR=str(log_dir), SHADOW_ALIAS="champion")
    serving = Background(["make", "serve", "PORT={port}"], project, env, tmp_path / "log")
    columns, body = sample(project, 400)
    lines = (project / "config.toml").read_text().splitlines()
    target = next(line.split('"')[1] for line in lines if line.startswith("target ="))
    with (project / "data" / "sample.csv").open() as file:
        actual = [row[target] for _, row in zip(range(400), csv.DictReader(file), strict=False)]
    serving.start()
    try:
        ids = [post_rows(serving.url, columns, body[start : start + 40]) for start in range(0, 400, 40)]
        time.sleep(1.5)  # the model process writes its counts about once a second
        metrics = raw(f"{serving.url}/metrics")[1].decode()
    finally:
        serving.stop()
    outcomes = tmp_path / "outcomes.csv"
    with outcomes.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["prediction_id", "actual"])
        writer.writerows(
            [f"{key}-{n}", actual[40 * number + n]] for number, key in enumerate(ids) for n in range(40)
        )

    # Every metric the alerts and the dashboard read is one the server serves.
    rules = yaml.safe_load((project / "deploy" / "prometheus" / "rules.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((project / "deploy" / "grafana" / "dashboard.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    unknown = set().union(*map(metric_names, expressions)) - served_metric_names(metrics)
    assert not unknown, f"rules or dashboard read metrics the server does not serve: {sorted(unknown)}"
    assert "monitoring_window_rows 400.0" in metrics
    assert "shadow_rows_total 400.0" in metrics
    assert "shadow_dropped_total 0.0" in metrics

    output = run(["make", "monitor", f"LOG={log_dir}", f"OUTCOMES={outcomes}"], project)

    # The sample data is the training data: nothing flagged, in the one window there is (two,
    # should the traffic straddle an hour).
    assert re.search(r"No retraining needed: 0 of [12] windows flagged, [34] more to come", output)
    [run_id] = re.findall(r"MLflow run ([0-9a-f]{32})", output)
    report = next((project / "mlartifacts").glob(f"{run_id}/artifacts/monitoring/report.html"))
    artifacts.mkdir(exist_ok=True)
    screenshot = artifacts / f"monitoring-report-{project.name}.png"
    summary = json.loads(run(["node", "scripts/check_report.mjs", str(report), str(screenshot)], TEMPLATE))
    assert summary["title"] == f"Monitoring of {project.name} version 1"
    assert [image["loaded"] for image in summary["images"]] == [True, True]
    assert summary["external"] == []
    assert summary["verdict"].startswith("No retraining needed: 0 of")
    assert summary["verdictClass"] == "fine"
    assert summary["verdictColour"] == "rgb(227, 245, 230)"  # the green of .fine
    heatmap, quality = (image["caption"] for image in summary["images"])
    assert heatmap.startswith(f"Drift of each feature, {project.name} v1: a PSI above 0.2 in 0 of ")
    metric, _, predictions = quality.partition(" / ")
    assert re.fullmatch(r"\w+ of (\d) of \1 windows, from 400 outcomes", metric), quality
    assert predictions.startswith("Prediction drift: a PSI above 0.2 in 0 of "), quality
    assert screenshot.stat().st_size > 10_000
    # The shadow is the champion's own version: it agrees on every row.
    shadow = re.search(r'<table class="shadow">.*?</table>', report.read_text(), re.DOTALL)
    assert shadow is not None
    lines = [re.findall(r"<td>(.*?)</td>", line) for line in re.findall(r"<tr>(.*?)</tr>", shadow[0])]
    lines = [cells for cells in lines if cells]  # the header's cells are <th>
    assert {cells[1] for cells in lines} == {"1"}
    assert sum(int(cells[2]) for cells in lines) == 400
    assert {cells[-1] for cells in lines} <= {"1.000", "0.000"}
