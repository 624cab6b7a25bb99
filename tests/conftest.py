"""Shared helpers of the template's tests: baking, running commands, test tiers."""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pytest_cookies.plugin import Cookies

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


def bake(cookies: Cookies, **overrides: Any) -> Path:
    """Generate a project with pytest-cookies (a user config of its own, a folder per bake).

    Returns the project's folder. An override that is not an option fails (cookiecutter
    would ignore it); a bake that fails raises what failed it (a hook's exception).
    """
    check_keys(overrides)
    result = cookies.bake(extra_context=overrides, template=str(TEMPLATE))
    if result.exception is not None:
        raise result.exception
    return Path(result.project_path)


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


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, Any]:
    """GET (or POST `body`) and return the status and the JSON answer."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_healthy(url: str, timeout: float = 120) -> bool:
    """Poll `url`/health until it answers 200; False if it never does within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


class Background:
    """A make target serving HTTP in the background: start it, wait for /health, stop it.

    `command` takes the free port chosen for it, e.g. `["make", "serve", "PORT={port}"]`.
    """

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [part.format(port=self.port) for part in command]
        self.cwd, self.env, self.log = cwd, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        with self.log.open("a") as output:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: make and its children stop together
            )  # fmt: skip
        if not wait_healthy(self.url, timeout):
            self.stop()
            pytest.fail(f"`{' '.join(self.command)}` never became healthy:\n{self.log.read_text()[-5000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


# The baked projects of the project and docker tiers: between them, the defaults,
# task=regression and python_version=3.13, and a name that is not ASCII.
PROJECTS = {
    "defaults": {},
    "regression": {"project_name": "Prévision Énergie", "task": "regression", "python_version": "3.13"},
}
# The project's own suite: whole on the defaults (it runs its task-dependent tests on
# both tasks itself, and no Python file of a bake depends on another option); the other
# bake runs its unit layer, and the tiers' own tests check what its options change
# (Python 3.13, a name that is not ASCII, regression end to end).
OWN_TESTS = {"defaults": "test", "regression": "test-fast"}
# A check that no option changes runs on the defaults alone.
DEFAULTS_ONLY = pytest.mark.parametrize("project", ["defaults"], indirect=True)


@pytest.fixture(scope="session", params=list(PROJECTS), ids=lambda name: f"project:{name}")
def project(request: pytest.FixtureRequest, cookies_session: Cookies) -> Path:
    """A baked project, committed to git, through `make install lint test data train`
    (`test-fast` on the bake other than the defaults: see OWN_TESTS)."""
    require_tier("project", which("uv", "make", "git"))
    path = bake(cookies_session, **PROJECTS[request.param])
    run(["git", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "Bake"], path)
    for target in ["install", "lint", OWN_TESTS[request.param], "data", "train"]:
        # The project's own suite (Spark's batch tests included) shares two cores with
        # the other worker's: give it the time it takes there, not a smaller target's.
        run(["make", target], path, timeout=2400 if target.startswith("test") else 900)
    return path


def sample(project: Path, rows: int) -> tuple[list[str], list[list[str]]]:
    """The first rows of a project's sample data, without the target column."""
    lines = (project / "config.toml").read_text().splitlines()
    target = next(line.split('"')[1] for line in lines if line.startswith("target ="))
    with (project / "data" / "sample.csv").open() as file:
        reader = csv.reader(file)
        header = next(reader)
        keep = [i for i, name in enumerate(header) if name != target]
        body = [[row[i] for i in keep] for _, row in zip(range(rows), reader, strict=False)]
    return [header[i] for i in keep], body


@pytest.hookimpl(trylast=True)  # after xdist's own renaming, which pytest 9 ignores
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep each baked project's tests on one xdist worker, so each project is built once.

    The scheduler of `--dist loadgroup` reads a test's group from its id,
    `<nodeid>@<group>`. xdist 3.8 renames `item._nodeid`, but pytest 9 derives the id
    from `item._id`: without the renaming here every group is split across the workers
    (each of them baking every project).
    """
    for item in items:
        callspec = getattr(item, "callspec", None)
        project = callspec.params.get("project") if callspec else None
        if isinstance(project, str):
            item.add_marker(pytest.mark.xdist_group(project))
    # Set by xdist in its workers under --dist loadgroup; absent in a run without xdist.
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id  # pytest 9's own constructor of node ids

    for item in items:
        groups = sorted({str(mark.args[0]) for mark in item.iter_markers("xdist_group") if mark.args})
        if groups and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(groups)}")
