"""Docker tier: the baked project's image builds on a real engine, runs read-only as
non-root, is healthy, serves the model's own predictions, and stops cleanly.

The engine is the `docker` on PATH. The base image of each Python version comes from
MLPIPE_TEST_BASE_IMAGE_<major>_<minor> (e.g. MLPIPE_TEST_BASE_IMAGE_3_12=mlpipe-base:3.12,
built by scripts/build_base_images.sh where no registry is reachable); unset, the
Dockerfile's default (python:<version>-slim) is pulled. Builds and containers use host
networking and bind to 127.0.0.1.
"""

import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import clean_env, free_port, http, require_tier, run, sample, wait_healthy, which

pytestmark = pytest.mark.docker

SECRET = "MLPIPE_TEST_SECRET=never-in-an-image"


def engine_missing() -> str | None:
    """The reason no engine can be used here, or None."""
    if reason := which("docker"):
        return reason
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    return (
        None if probe.returncode == 0 else f"no Docker engine answers `docker info`: {probe.stderr.strip()}"
    )


def docker(*args: str) -> str:
    return run(["docker", *args], Path.cwd()).strip()


def python_version(project: Path) -> str:
    return (project / ".python-version").read_text().strip()


@pytest.fixture(scope="session")
def image(project: Path) -> Iterator[str]:
    """`make docker-build` of the project, with a secret in .env that must stay out."""
    require_tier("docker", engine_missing())
    (project / ".env").write_text(SECRET + "\n")
    base = os.environ.get(f"MLPIPE_TEST_BASE_IMAGE_{python_version(project).replace('.', '_')}")
    name = f"mlpipe-test-{uuid.uuid4().hex[:8]}-{project.name}"  # no clash with other runs' images
    args = ["make", "docker-build", f"IMAGE={name}", "DOCKER_BUILD_FLAGS=--network host"]
    run([*args, f"BASE_IMAGE={base}"] if base else args, project)
    yield f"{name}:latest"
    docker("image", "rm", "--force", f"{name}:latest", f"{name}:1")


def start(image: str) -> tuple[str, str]:
    """Run the image read-only, with a writable /tmp only, until healthy; return its id and URL."""
    port = free_port()
    container_id = docker(
        "run", "--detach", "--read-only", "--tmpfs", "/tmp", "--network", "host",
        "--env", "HOST=127.0.0.1", "--env", f"PORT={port}", image,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    if not wait_healthy(url, timeout=90):
        logs = docker("logs", container_id)
        subprocess.run(["docker", "rm", "--force", container_id], capture_output=True, check=False)
        pytest.fail(f"the container never answered /health:\n{logs}")
    return container_id, url


@pytest.fixture(scope="session")
def container(image: str) -> Iterator[tuple[str, str]]:
    """The image running, for the tests that only look at it."""
    container_id, url = start(image)
    yield container_id, url
    subprocess.run(["docker", "rm", "--force", container_id], capture_output=True, check=False)


def in_image(image: str, script: str) -> str:
    """Run a shell script in a throwaway container of the image."""
    return docker("run", "--rm", "--network", "host", "--entrypoint", "sh", image, "-c", script)


def test_image_runs_as_a_fixed_non_root_user(container: tuple[str, str]) -> None:
    assert docker("exec", container[0], "id", "-u") == "10001"


def test_image_serves_exactly_the_models_predictions(project: Path, container: tuple[str, str]) -> None:
    columns, rows = sample(project, 8)
    payload = {"dataframe_split": {"columns": columns, "data": [[float(v) for v in r] for r in rows]}}
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        "payload = json.load(sys.stdin)['dataframe_split']\n"
        "frame = pd.DataFrame(payload['data'], columns=payload['columns'])\n"
        "model = mlflow.pyfunc.load_model('build/model')\n"
        "print(json.dumps(list(model.predict(frame).tolist())))\n"
    )
    local = subprocess.run(
        ["uv", "run", "--locked", "python", "-c", script],
        cwd=project, env=clean_env(), input=json.dumps(payload), capture_output=True, text=True, check=True,
    )  # fmt: skip

    status, answer = http(f"{container[1]}/invocations", json.dumps(payload).encode())

    assert status == 200, answer
    assert answer["predictions"] == json.loads(local.stdout.strip().splitlines()[-1])


def test_image_reports_the_baked_model_and_labels(
    project: Path, image: str, container: tuple[str, str]
) -> None:
    version = http(f"{container[1]}/model")[1]
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", image))
    head = run(["git", "rev-parse", "HEAD"], project).strip()

    assert (version["model_name"], version["model_version"]) == (project.name, "1")
    assert labels["org.mlflow.model.name"] == project.name
    assert labels["org.mlflow.model.version"] == "1"
    assert labels["org.opencontainers.image.revision"] == head
    assert labels["org.opencontainers.image.title"] == project.name
    by_version = image.replace(":latest", ":1")  # tagged with the model version too
    assert docker("image", "inspect", "--format", "{{.Id}}", by_version) == docker(
        "image", "inspect", "--format", "{{.Id}}", image
    )


def test_healthcheck_turns_healthy(container: tuple[str, str]) -> None:
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "--format", "{{.State.Health.Status}}", container[0])
        if status == "healthy":
            break
        time.sleep(1)
    assert status == "healthy"


def test_image_holds_no_full_mlflow_no_compiler_no_secret_no_data(project: Path, image: str) -> None:
    python = "/opt/venv/bin/python"
    distributions = in_image(
        image,
        f'{python} -c "import importlib.metadata as m; print(sorted(d.name for d in m.distributions()))"',
    )
    found = in_image(
        image,
        "command -v gcc cc g++ || true; "
        "find / -xdev \\( -name .env -o -name sample.csv -o -name mlflow.db -o -name mlartifacts \\) "
        "-print 2>/dev/null; grep -rl never-in-an-image /app /opt 2>/dev/null || true",
    )

    assert "'mlflow-skinny'" in distributions
    assert "'mlflow'" not in distributions
    assert found == ""
    assert in_image(image, "ls -A /app") == "model"


def test_docker_stop_is_quick_and_clean(image: str) -> None:
    """SIGTERM reaches the server (exec-form entrypoint): it exits well within 10 s."""
    container_id, _ = start(image)
    try:
        started = time.monotonic()
        docker("stop", "--time", "10", container_id)
        stopped = time.monotonic() - started
        exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", container_id)
    finally:
        subprocess.run(["docker", "rm", "--force", container_id], capture_output=True, check=False)

    assert stopped < 10
    assert exit_code == "0"


def test_make_docker_smoke_checks_a_prediction(project: Path, image: str) -> None:
    """The CI workflows' check of a running container, as they run it."""
    port = free_port()
    flags = f"DOCKER_RUN_FLAGS=--network host --env HOST=127.0.0.1 --env PORT={port}"

    output = run(["make", "docker-smoke", f"IMAGE={image.removesuffix(':latest')}", flags], project)

    assert "serving_input_example.json -> 200" in output


def test_image_carries_the_monitoring_profile_and_serves_live_drift(
    project: Path, image: str, container: tuple[str, str]
) -> None:
    columns, rows = sample(project, 8)
    payload = {"dataframe_split": {"columns": columns, "data": [[float(v) for v in r] for r in rows]}}
    profile = json.loads(in_image(image, "cat /app/model/extra_files/monitoring_profile.json"))

    status, _ = http(f"{container[1]}/invocations", json.dumps(payload).encode())
    deadline = time.monotonic() + 15
    while True:  # the model process writes its counts about once a second
        with urllib.request.urlopen(f"{container[1]}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        if "monitoring_window_rows 0.0" not in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert status == 200
    assert set(profile["features"]) == set(columns)
    drifted = {line.split('"')[1] for line in metrics.splitlines() if line.startswith("feature_drift_psi{")}
    assert drifted == set(columns)
    assert re.search(r"^monitoring_window_rows [1-9]", metrics, re.MULTILINE)


def test_parquet_in_the_image_is_refused_naming_pyarrow(project: Path, container: tuple[str, str]) -> None:
    """The image leaves pyarrow out (README: the differences from `mlflow models serve`)."""
    status, answer = http(f"{container[1]}/invocations", b"PAR1 not really", "application/vnd.apache.parquet")

    assert status == 400
    assert "pyarrow" in answer["message"]
