"""Docker tier: the baked project's image builds on a real engine, runs read-only as
non-root, is healthy, serves the model's own predictions, and stops cleanly; the
defaults' compose.yaml stack comes up, serves a champion and keeps it across a restart.

The engine is the `docker` on PATH. The base image of each Python version comes from
MLPIPE_TEST_BASE_IMAGE_<major>_<minor> (e.g. MLPIPE_TEST_BASE_IMAGE_3_12=mlpipe-base:3.12,
built by scripts/build_base_images.sh where no registry is reachable); unset, the
Dockerfile's default (python:<version>-slim) is pulled. Builds and containers use host
networking and bind to 127.0.0.1.

Both bakes build their image and check what their options change (the Python version,
the task, the name): predictions, labels, health, contents, live drift. What no option
changes (the user, a clean stop, `make docker-smoke`, Parquet refused, the stack) is
checked on the defaults alone.
"""

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    DEFAULTS_ONLY,
    TEMPLATE,
    clean_env,
    free_port,
    http,
    require_tier,
    run,
    sample,
    wait_healthy,
    which,
)

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


def base_image(project: Path) -> str | None:
    """The stand-in base image of the project's Python, if one was built for the tests."""
    return os.environ.get(f"MLPIPE_TEST_BASE_IMAGE_{python_version(project).replace('.', '_')}")


@pytest.fixture(scope="session")
def image(project: Path) -> Iterator[str]:
    """`make docker-build` of the project, with a secret in .env that must stay out."""
    require_tier("docker", engine_missing())
    (project / ".env").write_text(SECRET + "\n")
    base = base_image(project)
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


@DEFAULTS_ONLY
def test_image_runs_as_a_fixed_non_root_user(container: tuple[str, str]) -> None:
    assert docker("exec", container[0], "id", "-u") == "10001"


def sample_payload(project: Path, rows: int) -> dict[str, Any]:
    """The first rows of the project's sample data, as a `dataframe_split` request."""
    columns, data = sample(project, rows)
    return {"dataframe_split": {"columns": columns, "data": [[float(v) for v in r] for r in data]}}


def local_predictions(project: Path, payload: dict[str, Any]) -> list[Any]:
    """What the baked model (build/model) predicts for `payload`, in the project's own environment."""
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
    return list(json.loads(local.stdout.strip().splitlines()[-1]))


def test_image_serves_exactly_the_models_predictions(project: Path, container: tuple[str, str]) -> None:
    payload = sample_payload(project, 8)

    status, answer = http(f"{container[1]}/invocations", json.dumps(payload).encode())

    assert status == 200, answer
    assert answer["predictions"] == local_predictions(project, payload)


# Version 1's labels as the registry and its run give them, read in the project itself.
REGISTRY_LABELS = """
import json
from mlflow import MlflowClient
client = MlflowClient()
name = client.search_registered_models()[0].name
version = client.get_model_version(name, "1")
tags = client.get_run(version.run_id).data.tags
print(json.dumps({
    "org.mlflow.model.name": name, "org.mlflow.model.version": "1",
    "org.mlflow.run.id": version.run_id, "org.mlflow.run.git_commit": tags["git_commit"],
    "org.mlflow.run.data_sha256": tags["data_sha256"],
    "org.mlflow.run.data_dvc_md5": tags.get("data_dvc_md5", ""),
    "org.mlpipe.template.version": tags["template_version"],
}))
"""


def test_image_reports_the_baked_model_and_labels(
    project: Path, image: str, container: tuple[str, str]
) -> None:
    version = http(f"{container[1]}/model")[1]
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", image))
    head = run(["git", "rev-parse", "HEAD"], project).strip()
    store = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    read = ["uv", "run", "--locked", "python", "-c", REGISTRY_LABELS]
    registered = json.loads(run(read, project, store).strip().splitlines()[-1])

    assert (version["model_name"], version["model_version"]) == (project.name, "1")
    assert labels["org.mlflow.model.name"] == project.name
    assert labels["org.mlflow.model.version"] == "1"
    assert labels["org.opencontainers.image.revision"] == head
    assert labels["org.opencontainers.image.title"] == project.name
    # The model's provenance, as the registry and its run record it.
    assert {key: labels[key] for key in registered} == registered
    # Tagged with the model version, and with the version and the commit built from.
    same = docker("image", "inspect", "--format", "{{.Id}}", image)
    for tag in ("1", f"1-{head[:7]}"):
        assert docker("image", "inspect", "--format", "{{.Id}}", image.replace(":latest", f":{tag}")) == same


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
    assert "'pyspark'" not in distributions  # the `spark` group is for batch jobs only
    assert found == ""
    assert in_image(image, "ls -A /app").split() == ["model", "sbom.cdx.json"]


def test_the_sbom_lists_every_distribution_in_the_image_at_its_version(image: str) -> None:
    """CycloneDX's generator ran on the image's own environment: nothing left out, nothing else."""
    sbom = json.loads(in_image(image, "cat /app/sbom.cdx.json"))
    installed = in_image(
        image,
        '/opt/venv/bin/python -c "import importlib.metadata as m; '
        "print('\\n'.join(sorted({f'{d.name}=={d.version}' for d in m.distributions()})))\"",
    )

    assert sbom["bomFormat"] == "CycloneDX"
    listed = {f"{c['name']}=={c['version']}" for c in sbom["components"]}
    normal = {re.sub(r"[-_.]+", "-", line).lower() for line in installed.splitlines()}
    assert {re.sub(r"[-_.]+", "-", item).lower() for item in listed} == normal


@DEFAULTS_ONLY
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


@DEFAULTS_ONLY
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


@DEFAULTS_ONLY
def test_parquet_in_the_image_is_refused_naming_pyarrow(project: Path, container: tuple[str, str]) -> None:
    """The image leaves pyarrow out (README: the differences from `mlflow models serve`)."""
    status, answer = http(f"{container[1]}/invocations", b"PAR1 not really", "application/vnd.apache.parquet")

    assert status == 400
    assert "pyarrow" in answer["message"]


# ---- The stack: the baked project's compose.yaml, brought up for real by `make stack-up`.
#
# PostgreSQL, the tracking server built from deploy/tracking, the serving image and
# Prometheus start on the engine; training against the stack's tracking server makes a
# champion that the serving container then serves and Prometheus scrapes; the stack goes
# down and up again and its runs and champion are still there.
#
# Where no registry is reachable, PostgreSQL and Prometheus are stand-ins built here from
# Debian's packages (tests/images/, on the project's base image) and passed to compose
# through POSTGRES_IMAGE and PROMETHEUS_IMAGE, as a user would pass a mirror's. The engine
# has no bridge network, so the stack runs with compose.host.yaml on the host's network,
# on the ports compose.yaml publishes (they must be free).
MODEL = "customer-churn"  # the defaults' slug: the one project this test runs on
PORTS = {"PostgreSQL": 5432, "the tracking server": 5000, "serving": 8080, "Prometheus": 9090}
TRACKING = "http://127.0.0.1:5000"
SERVING = "http://127.0.0.1:8080"
PROMETHEUS = "http://127.0.0.1:9090"


def compose_missing() -> str | None:
    """The reason `docker compose` cannot be used here, or None."""
    if reason := engine_missing():
        return reason
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    missing = "the Docker Compose plugin is missing (`docker compose version` fails)"
    return None if probe.returncode == 0 else missing


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stand_in(name: str, base: str | None) -> str:
    """Build tests/images/<name> on the project's base image; return its tag."""
    tag = f"mlpipe-{name}:debian-{(base or 'bookworm').replace(':', '-')}"
    args = ["build", "--quiet", "--network", "host", "--tag", tag]
    if base:
        args += ["--build-arg", f"BASE_IMAGE={base}"]
    docker(*args, str(TEMPLATE / "tests" / "images" / name))
    return tag


@pytest.fixture
def stack_env(project: Path, image: str) -> Iterator[dict[str, str]]:
    """The variables of a user who points compose at their own images, on the host's network."""
    require_tier("docker", compose_missing())
    busy = [f"{name} ({port})" for name, port in PORTS.items() if listening(port)]
    if busy:
        pytest.fail(f"The stack needs these ports of 127.0.0.1, which are taken: {', '.join(busy)}")
    base = base_image(project)
    tracking_image = f"{image.removesuffix(':latest')}-tracking:latest"
    env = clean_env(
        COMPOSE_FILE="compose.yaml:compose.host.yaml",
        COMPOSE_PROJECT_NAME=f"mlpipe-test-{uuid.uuid4().hex[:8]}",
        DOCKER_BUILD_NETWORK="host",
        POSTGRES_PASSWORD=uuid.uuid4().hex,
        POSTGRES_IMAGE=stand_in("postgres", base),
        PROMETHEUS_IMAGE=stand_in("prometheus", base),
        TRACKING_IMAGE=tracking_image,
    )
    yield env
    subprocess.run(
        ["docker", "compose", "down", "--volumes"], cwd=project, env=env, capture_output=True, check=False
    )
    subprocess.run(["docker", "image", "rm", "--force", tracking_image], capture_output=True, check=False)


def make(project: Path, env: dict[str, str], target: str, image: str) -> str:
    """`make <target>` with the image of the docker tier and its base image."""
    base = base_image(project)
    args = ["make", target, f"IMAGE={image.removesuffix(':latest')}"]
    return run([*args, f"BASE_IMAGE={base}"] if base else args, project, env=env)


def services(project: Path, env: dict[str, str]) -> dict[str, str]:
    """Each running service of the stack and its health."""
    output = run(["docker", "compose", "ps", "--format", "json"], project, env=env)
    rows = [json.loads(line) for line in output.splitlines() if line.strip()]
    return {row["Service"]: row["Health"] or row["State"] for row in rows if row["State"] == "running"}


def registry_state() -> tuple[list[str], dict[str, str]]:
    """The run ids of every experiment and the aliases of the model, from the stack's server."""
    body = json.dumps({"experiment_ids": experiment_ids(), "max_results": 1000}).encode()
    status, runs = http(f"{TRACKING}/api/2.0/mlflow/runs/search", body)
    assert status == 200, runs
    return sorted(r["info"]["run_id"] for r in runs.get("runs", [])), aliases()


def experiment_ids() -> list[str]:
    body = json.dumps({"max_results": 100}).encode()
    status, found = http(f"{TRACKING}/api/2.0/mlflow/experiments/search", body)
    assert status == 200, found
    return [e["experiment_id"] for e in found["experiments"]]


def aliases() -> dict[str, str]:
    name = urllib.parse.quote(MODEL)
    status, answer = http(f"{TRACKING}/api/2.0/mlflow/registered-models/get?name={name}")
    assert status == 200, answer
    return {a["alias"]: a["version"] for a in answer["registered_model"].get("aliases", [])}


def scraped(job: str, timeout: float = 90) -> list[dict[str, Any]]:
    """Prometheus' `up` series of `job`, once it has scraped the target at least once."""
    query = urllib.parse.quote(f'up{{job="{job}"}}')
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, answer = http(f"{PROMETHEUS}/api/v1/query?query={query}")
        result = answer["data"]["result"] if status == 200 else []
        if result and result[0]["value"][1] == "1":
            break
        time.sleep(2)
    return result


def predict(project: Path) -> tuple[int, Any]:
    columns, rows = sample(project, 4)
    payload = {"dataframe_split": {"columns": columns, "data": [[float(v) for v in r] for r in rows]}}
    return http(f"{SERVING}/invocations", json.dumps(payload).encode())


@DEFAULTS_ONLY
def test_stack_trains_serves_and_keeps_its_runs_and_champion_across_a_restart(
    project: Path, image: str, stack_env: dict[str, str]
) -> None:
    assert project.name == MODEL

    first = make(project, stack_env, "stack-up", image)
    waiting = services(project, stack_env)
    trained = run(["make", "train"], project, env=clean_env(MLFLOW_TRACKING_URI=TRACKING))
    make(project, stack_env, "stack-up", image)
    healthy = services(project, stack_env)
    served = http(f"{SERVING}/model")[1]
    status, answer = predict(project)
    up = scraped(MODEL)
    before = registry_state()

    make(project, stack_env, "stack-down", image)
    after_down = services(project, stack_env)
    make(project, stack_env, "stack-up", image)
    after = registry_state()
    served_again = http(f"{SERVING}/model")[1]

    assert "make train, then make stack-up again" in first
    assert waiting == {"postgres": "healthy", "tracking": "healthy"}
    assert "version 1 is now @champion" in trained
    assert healthy == {s: "healthy" for s in ("postgres", "tracking", "serving", "prometheus")}
    assert (served["model_uri"], served["model_version"]) == (f"models:/{MODEL}@champion", "1")
    assert status == 200 and len(answer["predictions"]) == 4
    assert [series["value"][1] for series in up] == ["1"], "Prometheus does not scrape the serving container"
    assert len(before[0]) == 1 and before[1]["champion"] == "1"
    assert after_down == {}
    assert after == before
    assert served_again["model_version"] == "1"


# ---- The pod spec, run for real: deploy/k8s/base/deployment.yaml's container, as the kubelet runs it.
#
# No Kubernetes control plane runs here (kube-apiserver is in no package registry CI
# reaches), so the test does the kubelet's part on the engine: every flag of `docker run`
# comes from the manifest (user, read-only root with its emptyDir mounts, capabilities,
# limits, environment, ports), the probes run with the manifest's paths, ports and
# timings, the port and path of the Prometheus annotations are scraped, and SIGTERM must
# stop the container within terminationGracePeriodSeconds. A field the test cannot run
# fails it, naming the field: the manifest never says more than this test proves. What
# only a cluster proves (scheduling, the Service's routing, NetworkPolicy, the HPA, the
# kubelet's own clock) is in DEVELOPERS.md.

# The kubelet's defaults for the fields of a probe and of a pod.
PROBE_DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1, "failureThreshold": 3}
PROBE_FIELDS = {"httpGet", "successThreshold", *PROBE_DEFAULTS}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
GRACE_DEFAULT_S = 30
# The fields the test runs; scheduling fields mean nothing on one engine (a cluster's
# part). Any other field of the pod, its container or a security context fails the test.
POD_FIELDS = {"containers", "volumes", "securityContext", "terminationGracePeriodSeconds",
              "automountServiceAccountToken"}  # fmt: skip
SCHEDULING_FIELDS = {"affinity", "nodeSelector", "tolerations", "topologySpreadConstraints",
                     "priorityClassName", "serviceAccountName"}  # fmt: skip
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "ports", "env", "resources", "securityContext",
                    "volumeMounts", *PROBES}  # fmt: skip
SECURITY_FIELDS = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "supplementalGroups",
                   "seccompProfile", "allowPrivilegeEscalation", "readOnlyRootFilesystem",
                   "capabilities"}  # fmt: skip
# Kubernetes' quantities (resources, sizeLimit): the suffixes a manifest uses.
QUANTITY = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
# The manifests, in the bake.
K8S = Path("deploy", "k8s", "base")
# The downward API here (env valueFrom.fieldRef); a secret's or a config map's key gets a test value.
FIELD_REFS = {"metadata.name": "pod-test", "metadata.namespace": "default", "status.podIP": "127.0.0.1",
              "status.hostIP": "127.0.0.1", "spec.nodeName": "node-test"}  # fmt: skip


@dataclass(frozen=True)
class Pod:
    """The Deployment's pod template, as the kubelet reads it for its one container."""

    spec: dict[str, Any]
    container: dict[str, Any]
    annotations: dict[str, str]

    @property
    def security(self) -> dict[str, Any]:
        """The container's security context over the pod's, field by field, as Kubernetes merges them."""
        return {**self.spec.get("securityContext", {}), **self.container.get("securityContext", {})}

    @property
    def ports(self) -> list[int]:
        return [int(port["containerPort"]) for port in self.container.get("ports", [])]

    @property
    def grace(self) -> int:
        return int(self.spec.get("terminationGracePeriodSeconds", GRACE_DEFAULT_S))

    def port(self, port: int | str) -> int:
        """A probe's or a Service's port: a number, or the name of one of the container's ports."""
        if isinstance(port, int):
            return port
        named = {p["name"]: p["containerPort"] for p in self.container.get("ports", []) if "name" in p}
        assert port in named, f"deployment.yaml: port {port!r} names none of the container's ports {named}"
        return int(named[port])

    def limit(self, resource: str) -> float | None:
        limits = self.container.get("resources", {}).get("limits", {})
        return quantity(limits[resource]) if resource in limits else None


def quantity(value: str | float) -> float:
    """A Kubernetes quantity (`512Mi`, `500m`, `2`) as a number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match[2] in QUANTITY, f"deployment.yaml: {value!r} is not a quantity this test reads"
    return float(match[1]) * QUANTITY[match[2]]


def only_known(fields: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(fields) - known)
    assert not unknown, (
        f"deployment.yaml: {where} has {unknown}, which the pod test (tests/test_docker.py) does not "
        "run: teach it to, or the manifest says more than the tests prove"
    )


def pod_template(project: Path) -> Pod:
    """The pod template of the project's Deployment, refused if it holds a field the test cannot run."""
    manifest = yaml.safe_load((project / K8S / "deployment.yaml").read_text())
    template = manifest["spec"]["template"]
    spec = template["spec"]
    assert len(spec["containers"]) == 1, "the pod test runs a pod of one container"
    pod = Pod(spec, spec["containers"][0], template["metadata"].get("annotations", {}))
    only_known(spec, POD_FIELDS | SCHEDULING_FIELDS, "the pod spec")
    only_known(pod.container, CONTAINER_FIELDS, "the container")
    only_known(pod.security, SECURITY_FIELDS, "the security context")
    for name in PROBES:
        assert name in pod.container, f"deployment.yaml: the container has no {name}"
        only_known(pod.container[name], PROBE_FIELDS, name)
    return pod


def kubelet_refusal(pod: Pod, image: str) -> str | None:
    """Why the kubelet would refuse to start the container as root (runAsNonRoot), or None."""
    security = pod.security
    if not security.get("runAsNonRoot"):
        return "runAsNonRoot is not true: nothing stops an image or a spec that runs as root"
    if "runAsUser" in security:
        user = str(security["runAsUser"])
    else:  # the image's USER
        user = docker("image", "inspect", "--format", "{{.Config.User}}", image)
    uid = user.split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        return f"runAsNonRoot with user {user!r}: the kubelet refuses to start it (uid 0, or not a number)"
    return None


def user_flags(pod: Pod) -> list[str]:
    """User, groups, capabilities and privileges of the security context."""
    security = pod.security
    flags = []
    if "runAsUser" in security:
        group = f":{security['runAsGroup']}" if "runAsGroup" in security else ""
        flags += ["--user", f"{security['runAsUser']}{group}"]
    for group in [
        *([security["fsGroup"]] if "fsGroup" in security else []),
        *security.get("supplementalGroups", []),
    ]:
        flags += ["--group-add", str(group)]
    capabilities = security.get("capabilities", {})
    flags += [f"--cap-drop={name}" for name in capabilities.get("drop", [])]
    flags += [f"--cap-add={name}" for name in capabilities.get("add", [])]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    # The engine's default seccomp profile is the kubelet's RuntimeDefault (unset, the
    # kubelet would run unconfined: stricter here, never looser).
    seccomp = security.get("seccompProfile", {}).get("type", "RuntimeDefault")
    assert seccomp == "RuntimeDefault", f"deployment.yaml: the pod test does not run seccompProfile {seccomp}"
    return flags


def filesystem_flags(pod: Pod) -> list[str]:
    """A read-only root, and a tmpfs at each emptyDir mount: nothing else is writable."""
    flags = ["--read-only"] if pod.security.get("readOnlyRootFilesystem") else []
    volumes = {volume["name"]: volume for volume in pod.spec.get("volumes", [])}
    for mount in pod.container.get("volumeMounts", []):
        only_known(mount, {"name", "mountPath", "readOnly"}, f"volumeMount {mount['name']}")
        volume = volumes.get(mount["name"])
        assert volume is not None, f"deployment.yaml: volumeMount {mount['name']} names no volume of the pod"
        only_known(volume, {"name", "emptyDir"}, f"volume {mount['name']} (only emptyDir runs here)")
        empty = volume["emptyDir"] or {}
        # An emptyDir is an empty, world-writable folder, files in it executable. Here it
        # is a tmpfs whatever its medium: its files count in the memory limit, as a
        # `medium: Memory` one's do on a node (stricter than a node's disk).
        options = ["exec", "mode=1777", *(["ro"] if mount.get("readOnly") else [])]
        size = empty.get("sizeLimit") or (pod.limit("memory") if empty.get("medium") == "Memory" else None)
        if size is not None:
            options.append(f"size={int(quantity(size))}")
        flags += ["--tmpfs", f"{mount['mountPath']}:{','.join(options)}"]
    return flags


def resource_flags(pod: Pod) -> list[str]:
    """The limits, after the API server's own rule: no request above its limit."""
    resources = pod.container.get("resources", {})
    for name, request in resources.get("requests", {}).items():
        limit = resources.get("limits", {}).get(name)
        assert limit is None or quantity(request) <= quantity(limit), (
            f"deployment.yaml: requests.{name} {request} exceeds limits.{name} {limit}: the API refuses it"
        )
    flags = []
    if (memory := pod.limit("memory")) is not None:
        flags += ["--memory", f"{int(memory)}b", "--memory-swap", f"{int(memory)}b"]  # no swap, as on a node
    if (cpu := pod.limit("cpu")) is not None:
        # The engine refuses more CPUs than it has; a node would only throttle less.
        flags += ["--cpus", f"{min(cpu, float(docker('info', '--format', '{{.NCPU}}'))):g}"]
    return flags


def env_flags(pod: Pod) -> list[str]:
    """The container's environment; values from secrets, config maps and fields get test values."""
    flags = []
    for variable in pod.container.get("env", []):
        source = variable.get("valueFrom")
        if source is None:
            value = str(variable.get("value", ""))
        elif "fieldRef" in source:
            value = FIELD_REFS.get(source["fieldRef"]["fieldPath"], "test")
        else:
            reference = source.get("secretKeyRef") or source.get("configMapKeyRef")
            assert reference, f"deployment.yaml: env {variable['name']}: the pod test does not run {source}"
            value = f"test-{reference['key']}"
        flags += ["--env", f"{variable['name']}={value}"]
    return flags


def run_pod(pod: Pod, image: str) -> tuple[str, float]:
    """`docker run` with the manifest's flags, on the host's network; the container's id and start."""
    refusal = kubelet_refusal(pod, image)
    assert refusal is None, f"deployment.yaml: {refusal}"
    busy = [port for port in pod.ports if listening(port)]
    if busy:
        pytest.fail(f"The pod runs on the host's network, on ports {busy} of 127.0.0.1, which are taken")
    flags = [*user_flags(pod), *filesystem_flags(pod), *resource_flags(pod), *env_flags(pod)]
    return docker("run", "--detach", "--network", "host", *flags, image), time.monotonic()


def container_logs(container_id: str) -> str:
    logs = subprocess.run(["docker", "logs", container_id], capture_output=True, text=True, check=False)
    return (logs.stdout + logs.stderr)[-5000:]


def probe(pod: Pod, name: str) -> tuple[bool, str]:
    """One probe as the kubelet sends it: success is a status from 200 to 399 within timeoutSeconds."""
    spec = {**PROBE_DEFAULTS, **pod.container[name]}
    get = spec["httpGet"]
    only_known(get, {"path", "port", "scheme", "httpHeaders"}, f"{name}.httpGet")
    url = f"{get.get('scheme', 'HTTP').lower()}://127.0.0.1:{pod.port(get['port'])}{get.get('path', '/')}"
    headers = {"User-Agent": "kube-probe", **{h["name"]: h["value"] for h in get.get("httpHeaders", [])}}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=spec["timeoutSeconds"]) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:  # refused, or no answer within timeoutSeconds
        return False, f"{name}: GET {url}: {error}"
    return 200 <= status < 400, f"{name}: GET {url} -> {status}"


def still_running(container_id: str, pod: Pod) -> None:
    """Fail at once, saying why, if the container has stopped."""
    state = json.loads(docker("inspect", "--format", "{{json .State}}", container_id))
    if state["Running"]:
        return
    limit = pod.container.get("resources", {}).get("limits", {}).get("memory")
    cause = (
        f"was OOM-killed: resources.limits.memory ({limit}) is below what the server and its model need"
        if state["OOMKilled"]
        else f"exited {state['ExitCode']}"
    )
    pytest.fail(f"The container {cause}, before its startupProbe passed:\n{container_logs(container_id)}")


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def started_up(container_id: str, pod: Pod, started: float) -> float:
    """Probe as the kubelet does until the startupProbe passes; the seconds it took.

    Probes at initialDelaySeconds + k x periodSeconds; failureThreshold failures in a
    row (a window of initialDelaySeconds + periodSeconds x failureThreshold) and the
    kubelet kills the container.
    """
    spec = {**PROBE_DEFAULTS, **pod.container["startupProbe"]}
    said = ""
    for attempt in range(spec["failureThreshold"]):
        sleep_until(started + spec["initialDelaySeconds"] + attempt * spec["periodSeconds"])
        still_running(container_id, pod)
        passed, said = probe(pod, "startupProbe")
        if passed:
            return time.monotonic() - started
    window = spec["initialDelaySeconds"] + spec["periodSeconds"] * spec["failureThreshold"]
    pytest.fail(
        f"The startupProbe failed {spec['failureThreshold']} times in a row, {window} s after the start: "
        f"the kubelet would kill the container. Last: {said}\n{container_logs(container_id)}"
    )


def probed(container_id: str, pod: Pod, name: str, started: float) -> None:
    """The first probe of `name`, once the startup probe passed and its own initial delay is over."""
    sleep_until(started + pod.container[name].get("initialDelaySeconds", 0))
    passed, said = probe(pod, name)
    outcome = "restart the container" if name == "livenessProbe" else "send it no traffic"
    assert passed, f"{said}: the kubelet would {outcome}\n{container_logs(container_id)}"


def service_port(project: Path, pod: Pod) -> int:
    """The container port the Service sends its traffic to (its targetPort)."""
    service = yaml.safe_load((project / K8S / "service.yaml").read_text())
    [port] = service["spec"]["ports"]
    return pod.port(port.get("targetPort", port["port"]))


def scrape(pod: Pod) -> str:
    """GET the port and path that the pod's Prometheus annotations declare."""
    annotations = pod.annotations
    assert annotations.get("prometheus.io/scrape") == "true", "the pod template does not ask to be scraped"
    scheme = annotations.get("prometheus.io/scheme", "http")
    path = annotations.get("prometheus.io/path", "/metrics")
    url = f"{scheme}://127.0.0.1:{annotations['prometheus.io/port']}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def process_ids(container_id: str) -> tuple[int, int]:
    """The real uid and gid of the container's first process (the server), from /proc."""
    status = docker("exec", container_id, "cat", "/proc/1/status").splitlines()
    ids = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("Uid:", "Gid:"))}
    return ids["Uid"], ids["Gid"]


def terminated(container_id: str, grace: int) -> tuple[float, str]:
    """SIGTERM, then wait up to the grace period as the kubelet does; the seconds taken, the exit code."""
    started = time.monotonic()
    docker("kill", "--signal", "TERM", container_id)
    try:
        waited = subprocess.run(
            ["docker", "wait", container_id], capture_output=True, text=True, timeout=grace, check=True
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"The container still ran {grace} s after SIGTERM (terminationGracePeriodSeconds): "
            f"the kubelet would kill it\n{container_logs(container_id)}"
        )
    return time.monotonic() - started, waited.stdout.strip()


def counted(metrics: str, name: str, labels: dict[str, str]) -> float:
    """The value of the series `name` whose labels include `labels` (in any order), else 0."""
    for line in metrics.splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(f"{name}{{") and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return 0.0


@DEFAULTS_ONLY
def test_the_pod_spec_runs_on_the_engine_as_the_kubelet_would_run_it(project: Path, image: str) -> None:
    pod = pod_template(project)
    payload = sample_payload(project, 8)
    container_id, started = run_pod(pod, image)
    try:
        started_up(container_id, pod, started)
        for name in ("readinessProbe", "livenessProbe"):
            probed(container_id, pod, name, started)
        unbound = [port for port in pod.ports if not listening(port)]
        uid, gid = process_ids(container_id)
        url = f"http://127.0.0.1:{service_port(project, pod)}/invocations"
        status, answer = http(url, json.dumps(payload).encode())
        metrics = scrape(pod)
        stopped_in, exit_code = terminated(container_id, pod.grace)
        logs = container_logs(container_id)
    finally:
        subprocess.run(["docker", "rm", "--force", container_id], capture_output=True, check=False)

    assert not unbound, f"deployment.yaml: containerPort {unbound}, where the server does not listen"
    assert uid == pod.security.get("runAsUser"), f"the server runs as uid {uid}, not the manifest's runAsUser"
    assert gid == pod.security.get("runAsGroup", gid), f"the server runs as gid {gid}, not its runAsGroup"
    assert uid != 0
    assert status == 200, answer
    assert answer["predictions"] == local_predictions(project, payload)
    assert counted(metrics, "http_requests_total", {"route": "/invocations", "status": "200"}) == 1, metrics
    assert re.search(r"^serving_ready 1\.0$", metrics, re.MULTILINE), metrics
    assert exit_code == "0", f"exit {exit_code} on SIGTERM\n{logs}"
    assert stopped_in < pod.grace
