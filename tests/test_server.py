"""Server tier: `make tracking-server` on a real PostgreSQL, with the project's make
targets pointed at it through MLFLOW_TRACKING_URI.

PostgreSQL comes from its own binaries (`initdb`, `pg_ctl`; Debian puts them in
/usr/lib/postgresql/<version>/bin) on a temporary data directory and a loopback port.
As root, they run as the `postgres` user, since initdb refuses root.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Background, bake, clean_env, free_port, http, require_tier, run, which
from pytest_cookies.plugin import Cookies

pytestmark = [pytest.mark.server, pytest.mark.xdist_group("server")]

ADMIN = ("admin", "an-admin-password-for-tests")


def postgres_bin() -> Path | None:
    """The newest of Debian's PostgreSQL bin folders, else the one of pg_ctl on PATH."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(path.split("/")[4]))
    found = debian[-1] if debian else shutil.which("pg_ctl")
    return Path(found).parent if found else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on a free loopback port; yields its base URI."""
    bindir = postgres_bin()
    require_tier("server", None if bindir else "no PostgreSQL binaries (initdb, pg_ctl) found")
    assert bindir is not None
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Not under pytest's temporary folders: those are private to this user.
    folder = Path(tempfile.mkdtemp(prefix="mlpipe-postgres-"))
    data = folder / "data"
    if as_postgres:
        shutil.chown(folder, "postgres")
    port = free_port()
    run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"], folder)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder}"
    run(
        [
            *as_postgres,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "log"),
            "-w",
            "start",
        ],
        folder,
    )
    try:
        for database in ("mlflow", "mlflow_auth", "mlflow_steps", "mlflow_tune", "mlflow_hooks", "optuna"):
            run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
                folder,
            )
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], check=False
        )


def sql(postgres: str, database: str, query: str) -> list[list[str]]:
    bindir = postgres_bin()
    assert bindir is not None
    output = run([str(bindir / "psql"), f"{postgres}/{database}", "-AtF", "|", "-c", query], Path.cwd())
    return [line.split("|") for line in output.splitlines() if line]


@pytest.fixture(scope="module")
def team_project(cookies_session: Cookies) -> Path:
    require_tier("project", which("uv", "make", "git"))
    path = bake(cookies_session, project_name="Team Model")
    run(["make", "install", "data"], path)
    return path


class TrackingServer(Background):
    """`make tracking-server` on a free port; start, stop, start again."""

    def __init__(self, project: Path, env: dict[str, str], log: Path) -> None:
        super().__init__(["make", "tracking-server", "MLFLOW_PORT={port}"], project, env, log)

    def start(self, timeout: float = 180) -> None:
        """The first start against an empty database runs MLflow's migrations."""
        super().start(timeout)


def status_of(url: str) -> int:
    """The HTTP status of a GET, whatever the body."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def server_env(backend: str, folder: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        MLFLOW_BACKEND_STORE_URI=backend, MLFLOW_ARTIFACTS_DESTINATION=str(folder / "artifacts"), **extra
    )


@contextmanager
def started(project: Path, backend: str, folder: Path, **extra: str) -> Iterator[TrackingServer]:
    """`make tracking-server` on `backend`, its artifacts and log in `folder`, for the block."""
    tracking = TrackingServer(project, server_env(backend, folder, **extra), folder / "server.log")
    tracking.start()
    try:
        yield tracking
    finally:
        tracking.stop()


@pytest.fixture(scope="module")
def server(
    team_project: Path, postgres: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrackingServer]:
    with started(team_project, f"{postgres}/mlflow", tmp_path_factory.mktemp("tracking")) as tracking:
        yield tracking


# A forest of 10 trees: this tier tests the tracking server, not the fit (the project's
# own suite tests the fit), and a smaller model is logged and served faster.
SMALL_FOREST = '{"n_estimators": 10, "random_state": 42}'


def client_env(url: str, **extra: str) -> dict[str, str]:
    # Fail fast on a dead server: MLflow's default retries take minutes.
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "TEAM_MODEL_ESTIMATOR__PARAMS": SMALL_FOREST}
    return clean_env(**{**settings, "MLFLOW_TRACKING_URI": url, **extra})


@pytest.fixture(scope="module")
def trained_twice(team_project: Path, server: TrackingServer) -> list[str]:
    return [run(["make", "train"], team_project, env=client_env(server.url)) for _ in range(2)]


def test_runs_versions_and_aliases_are_in_postgresql(
    trained_twice: list[str], postgres: str, server: TrackingServer
) -> None:
    assert "version 1 is now @champion" in trained_twice[0]
    assert "version 2 stays @challenger" in trained_twice[1]
    assert sql(postgres, "mlflow", "SELECT status FROM runs ORDER BY start_time") == [
        ["FINISHED"],
        ["FINISHED"],
    ]
    versions = sql(
        postgres, "mlflow", "SELECT version FROM model_versions WHERE name = 'team-model' ORDER BY 1"
    )
    assert versions == [["1"], ["2"]]
    aliases = sql(postgres, "mlflow", "SELECT alias, version FROM registered_model_aliases ORDER BY 1")
    assert aliases == [["challenger", "2"], ["champion", "1"]]


def test_artifacts_live_behind_the_server(
    trained_twice: list[str], team_project: Path, server: TrackingServer
) -> None:
    stored = list((Path(server.env["MLFLOW_ARTIFACTS_DESTINATION"])).rglob("MLmodel"))

    assert len(stored) == 2
    assert not (team_project / "mlartifacts").exists(), "clients write no artifacts of their own"
    assert not (team_project / "mlflow.db").exists()


def test_evaluate_scores_the_champion_through_the_server(
    trained_twice: list[str], team_project: Path, server: TrackingServer
) -> None:
    """Serving through the server and a restart that loses nothing: the docker tier's stack test."""
    output = run(["make", "evaluate"], team_project, env=client_env(server.url))

    assert '"model_uri": "models:/team-model@champion"' in output
    status, answer = http(f"{server.url}/api/2.0/mlflow/registered-models/get?name=team-model")
    assert status == 200
    assert {a["alias"]: a["version"] for a in answer["registered_model"]["aliases"]} == {
        "champion": "1",
        "challenger": "2",
    }


def test_a_server_that_dies_during_training_leaves_nothing_half_registered(
    trained_twice: list[str], team_project: Path, server: TrackingServer, postgres: str
) -> None:
    log = Path(server.env["MLFLOW_ARTIFACTS_DESTINATION"]).parent / "train.log"
    # 3000 trees: the fit, between the run's start and its registration, lasts seconds,
    # so that the server is stopped while the run is RUNNING and nothing is registered yet.
    slow = client_env(server.url, TEAM_MODEL_ESTIMATOR__PARAMS='{"n_estimators": 3000}')
    with log.open("w") as output:
        training = subprocess.Popen(
            ["make", "train"], cwd=team_project, env=slow,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while not sql(postgres, "mlflow", "SELECT run_uuid FROM runs WHERE status = 'RUNNING'"):
        assert time.monotonic() < deadline and training.poll() is None, log.read_text()
        time.sleep(0.1)
    server.stop()

    assert training.wait(timeout=300) != 0
    assert "is unreachable" in log.read_text()
    server.start()
    [[failed_run]] = sql(postgres, "mlflow", "SELECT run_uuid FROM runs WHERE status <> 'FINISHED'")
    assert sql(postgres, "mlflow", f"SELECT version FROM model_versions WHERE run_id = '{failed_run}'") == []
    assert sql(postgres, "mlflow", "SELECT count(*) FROM model_versions") == [["2"]]


def test_basic_auth_refuses_anonymous_requests_and_accepts_credentials(
    team_project: Path, postgres: str, tmp_path: Path
) -> None:
    env = server_env(
        f"{postgres}/mlflow_auth", tmp_path, MLFLOW_AUTH="1",
        MLFLOW_AUTH_ADMIN_USERNAME=ADMIN[0], MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY="a-secret-key-for-tests",
    )  # fmt: skip
    secured = TrackingServer(team_project, env, tmp_path / "auth-server.log")
    secured.start()
    try:
        status = status_of(f"{secured.url}/api/2.0/mlflow/experiments/search?max_results=1")
        anonymous = subprocess.run(
            ["make", "train"],
            cwd=team_project,
            env=client_env(secured.url),
            capture_output=True,
            text=True,
            check=False,
        )
        credentials = {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
        output = run(["make", "train"], team_project, env=client_env(secured.url, **credentials))
    finally:
        secured.stop()

    assert status == 401
    assert anonymous.returncode != 0
    assert "is now @champion" in output


def test_docker_build_exports_the_champion_through_the_server(
    trained_twice: list[str], team_project: Path, server: TrackingServer
) -> None:
    """The first step of `make docker-build`; the image build itself is the docker tier's."""
    version = run(["uv", "run", "--locked", "team-model", "export-model", "build/model"], team_project,
                  env=client_env(server.url)).strip()  # fmt: skip

    assert version.splitlines()[-1] == "1"
    assert (team_project / "build" / "model" / "MLmodel").is_file()
    info = json.loads((team_project / "build" / "model" / "registered_model.json").read_text())
    assert (info["name"], info["version"]) == ("team-model", "1")


class StoppingProxy:
    """A pass-through proxy to a tracking server that stops the server at one request.

    `stop_at(method, path, body)` says which request is the step: the proxy stops the
    server there, before forwarding it, and answers nothing, as a server that went away;
    every request after it fails the same way, until the server is started again.
    """

    def __init__(self, upstream: TrackingServer, stop_at: Callable[[str, str, bytes], bool]) -> None:
        self.upstream, self.stop_at, self.stopped = upstream, stop_at, False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not proxy.stopped and proxy.stop_at(self.command, self.path, body):
                    proxy.stopped = True
                    proxy.upstream.stop()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection"}}
                try:
                    connection = HTTPConnection("127.0.0.1", proxy.upstream.port, timeout=300)
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                except OSError:
                    self.close_connection = True  # no answer at all
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in {"connection", "content-length", "transfer-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alias_request(alias: str) -> Callable[[str, str, bytes], bool]:
    def matches(method: str, path: str, body: bytes) -> bool:
        return (method, path) == ("POST", "/api/2.0/mlflow/registered-models/alias") and (
            json.loads(body).get("alias") == alias
        )

    return matches


# Each step of `make train` after the fit, as the request that starts it; whether the
# run has finished by then; whether a version exists by then (it stays behind: the
# server is gone before the version could be deleted again, and the error names it).
STEPS: dict[str, tuple[Callable[[str, str, bytes], bool], bool, bool]] = {
    "gate": (
        lambda method, path, body: (
            method == "GET"
            and path.startswith("/api/2.0/mlflow/registered-models/alias?")
            and "alias=champion" in path
        ),
        False,
        False,
    ),
    "end of the run": (
        lambda method, path, body: path == "/api/2.0/mlflow/runs/update" and b"FINISHED" in body,
        False,
        False,
    ),
    "registration": (
        lambda method, path, body: path == "/api/2.0/mlflow/model-versions/create",
        True,
        False,
    ),
    "challenger alias": (alias_request("challenger"), True, True),
    "promotion": (alias_request("champion"), True, True),
}


@pytest.fixture(scope="module")
def weak_champion(
    team_project: Path, postgres: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrackingServer]:
    """A tracking server of its own whose champion is a stump: any default model beats it."""
    with started(team_project, f"{postgres}/mlflow_steps", tmp_path_factory.mktemp("steps")) as tracking:
        stump = client_env(tracking.url, TEAM_MODEL_ESTIMATOR__PARAMS='{"n_estimators": 1, "max_depth": 1}')
        assert "version 1 is now @champion" in run(["make", "train"], team_project, env=stump)
        yield tracking


def steps_sql(postgres: str, query: str) -> list[list[str]]:
    return sql(postgres, "mlflow_steps", query)


@pytest.mark.parametrize("step", STEPS)
def test_a_server_that_dies_after_the_fit_leaves_no_usable_version(
    step: str, weak_champion: TrackingServer, team_project: Path, postgres: str
) -> None:
    """Only a finished run has a version, it went through the gate, and @champion holds."""
    stop_at, run_finished, version_left = STEPS[step]
    runs_before = steps_sql(postgres, "SELECT run_uuid FROM runs")
    proxy = StoppingProxy(weak_champion, stop_at)
    try:
        training = subprocess.run(
            ["make", "train"], cwd=team_project, env=client_env(proxy.url),
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    finally:
        proxy.close()
        if proxy.stopped:
            weak_champion.start()
    output = training.stdout + training.stderr
    [[new_run, status]] = steps_sql(
        postgres, f"SELECT run_uuid, status FROM runs WHERE run_uuid NOT IN ({quoted(runs_before)})"
    )
    new_versions = steps_sql(postgres, f"SELECT version FROM model_versions WHERE run_id = '{new_run}'")
    champion = steps_sql(postgres, "SELECT version FROM registered_model_aliases WHERE alias = 'champion'")
    untagged = steps_sql(
        postgres,
        "SELECT v.version FROM model_versions v LEFT JOIN model_version_tags t ON t.name = v.name "
        "AND t.version = v.version AND t.key = 'promotion' WHERE t.value IS NULL",
    )
    unfinished = steps_sql(
        postgres,
        "SELECT v.version FROM model_versions v JOIN runs r ON r.run_uuid = v.run_id "
        "WHERE r.status <> 'FINISHED'",
    )
    for [version] in new_versions:  # left behind on purpose: delete it, as the error says
        delete_version(weak_champion.url, version)

    assert proxy.stopped, f"training never reached the {step}"
    assert training.returncode != 0
    assert "is unreachable" in output or "could not be undone" in output, output
    assert (status == "FINISHED") == run_finished
    assert len(new_versions) == (1 if version_left else 0)
    if version_left:
        assert "delete it by hand" in output and f"'{new_versions[0][0]}'" in output, output
    assert champion == [["1"]]
    assert untagged == [] and unfinished == []


def quoted(rows: list[list[str]]) -> str:
    return ",".join(f"'{row[0]}'" for row in rows) or "''"


def delete_version(url: str, version: str) -> None:
    body = json.dumps({"name": "team-model", "version": version}).encode()
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/model-versions/delete", data=body, method="DELETE",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


# A small search, so that a study of a few trials takes seconds.
SMALL_SEARCH = {
    "TEAM_MODEL_TUNING__FOLDS": "2",
    "TEAM_MODEL_TUNING__SPACE": json.dumps(
        {"n_estimators": {"low": 5, "high": 40}, "max_depth": {"low": 2, "high": 8}}
    ),
}


@pytest.fixture(scope="module")
def tune_server(
    team_project: Path, postgres: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrackingServer]:
    with started(team_project, f"{postgres}/mlflow_tune", tmp_path_factory.mktemp("tune")) as tracking:
        yield tracking


def tune_env(server: TrackingServer, postgres: str) -> dict[str, str]:
    return client_env(server.url, OPTUNA_STORAGE=f"{postgres}/optuna", **SMALL_SEARCH)


def study_trials(postgres: str, study: str) -> list[list[str]]:
    """The number and state of each trial of `study`; none before Optuna made its tables."""
    if sql(postgres, "optuna", "SELECT to_regclass('public.trials') IS NULL") == [["t"]]:
        return []
    return sql(
        postgres, "optuna",
        "SELECT t.number, t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
        f"WHERE s.study_name = '{study}' ORDER BY t.number",
    )  # fmt: skip


def test_two_tune_processes_share_one_study_and_register_its_best_once(
    tune_server: TrackingServer, team_project: Path, postgres: str
) -> None:
    env = tune_env(tune_server, postgres)
    logs = [Path(tune_server.env["MLFLOW_ARTIFACTS_DESTINATION"]).parent / f"tune-{n}.log" for n in (1, 2)]
    processes = []
    for log, trials in zip(logs, (6, 3), strict=True):
        with log.open("w") as output:
            processes.append(subprocess.Popen(
                ["make", "tune", f"TRIALS={trials}", "STUDY=shared"], cwd=team_project, env=env,
                stdout=output, stderr=subprocess.STDOUT,
            ))  # fmt: skip
    codes = [process.wait(timeout=900) for process in processes]
    outputs = [log.read_text() for log in logs]
    trials = study_trials(postgres, "shared")
    nested = sql(postgres, "mlflow_tune",
                 "SELECT t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                 "AND t.key = 'optuna_trial' WHERE r.run_uuid IN "
                 "(SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')")  # fmt: skip
    registered = sql(postgres, "mlflow_tune",
                     "SELECT t.value FROM model_versions v JOIN tags t ON t.run_uuid = v.run_id "
                     "AND t.key = 'optuna_trial'")  # fmt: skip

    assert codes == [0, 0], outputs
    assert trials == [[str(n), "COMPLETE"] for n in range(9)]  # both budgets, each trial once
    assert sorted(int(value) for [value] in nested) == list(range(9))  # a run per trial
    # Each process trains the study's best trial as it stands when it ends: the same
    # trial twice is registered once.
    bests = {re.search(r"best: trial (\d+),", text).group(1) for text in outputs}  # type: ignore[union-attr]
    assert sorted(value for [value] in registered) == sorted(bests)


def test_an_interrupted_tune_fails_its_running_trial_and_a_new_one_resumes(
    tune_server: TrackingServer, team_project: Path, postgres: str
) -> None:
    env = tune_env(tune_server, postgres)
    log = Path(tune_server.env["MLFLOW_ARTIFACTS_DESTINATION"]).parent / "interrupted.log"
    with log.open("w") as output:
        tuning = subprocess.Popen(
            ["make", "tune", "TRIALS=100", "STUDY=resumed"], cwd=team_project, env=env,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 300
    while len([s for _, s in study_trials(postgres, "resumed") if s == "COMPLETE"]) < 2:
        assert time.monotonic() < deadline and tuning.poll() is None, log.read_text()
        time.sleep(0.2)
    os.killpg(tuning.pid, signal.SIGTERM)
    interrupted = tuning.wait(timeout=120)
    states = [state for _, state in study_trials(postgres, "resumed")]
    resumed = run(["make", "tune", "TRIALS=2", "STUDY=resumed"], team_project, env=env)
    after = study_trials(postgres, "resumed")

    assert interrupted != 0
    assert "Interrupted: the finished trials stay in the study" in log.read_text()
    assert "RUNNING" not in states and states.count("COMPLETE") >= 2
    assert len(after) == len(states) + 2
    assert [state for _, state in after[len(states) :]] == ["COMPLETE", "COMPLETE"]
    assert "Study resumed: 2 trials here" in resumed


# What MLflow needs to call a receiver on this machine: plain http, a loopback address,
# a key to keep webhook secrets encrypted at rest, and a list of webhooks read afresh.
WEBHOOKS_ON = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": "8tWXjBhS0jTJv3nXKOoPvl_jNcUeEb7uLSqm2yE4V7Y=",
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}
WEBHOOK_SECRET = "a secret MLflow and the server share"


@pytest.fixture(scope="module")
def hooks_server(
    team_project: Path, postgres: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrackingServer]:
    folder = tmp_path_factory.mktemp("hooks")
    with started(team_project, f"{postgres}/mlflow_hooks", folder, **WEBHOOKS_ON) as tracking:
        for _ in range(2):  # version 1 @champion, version 2 @challenger
            run(["make", "train"], team_project, env=client_env(tracking.url))
        yield tracking


def test_a_promotion_through_the_tracking_server_reaches_a_following_server_by_webhook(
    hooks_server: TrackingServer, team_project: Path, tmp_path: Path
) -> None:
    """MLflow's own webhook, signed by MLflow: the server swaps at once, not at its next check."""
    serving = Background(
        ["make", "serve", "PORT={port}"], team_project,
        client_env(hooks_server.url, MODEL_REFRESH_S="3600", MLFLOW_WEBHOOK_SECRET=WEBHOOK_SECRET),
        tmp_path / "serve.log",
    )  # fmt: skip
    serving.start()
    try:
        hook = {
            "name": "serving", "url": f"{serving.url}/webhooks/mlflow", "secret": WEBHOOK_SECRET,
            "events": [{"entity": "MODEL_VERSION_ALIAS", "action": "CREATED"}],
        }  # fmt: skip
        created, _ = http(f"{hooks_server.url}/api/2.0/mlflow/webhooks", json.dumps(hook).encode())
        before = http(f"{serving.url}/model")[1]["model_version"]
        run(["make", "promote", "VERSION=2"], team_project, env=client_env(hooks_server.url))
        promoted = time.monotonic()
        while http(f"{serving.url}/model")[1]["model_version"] != "2":
            assert time.monotonic() - promoted < 120, serving.log.read_text()[-3000:]
            time.sleep(0.1)
        seconds = time.monotonic() - promoted
        forged = urllib.request.Request(
            f"{serving.url}/webhooks/mlflow", data=b"{}", headers={
                "X-MLflow-Signature": "v1,Zm9yZ2Vk", "X-MLflow-Timestamp": str(int(time.time())),
                "X-MLflow-Delivery-Id": "forged", "Content-Type": "application/json",
            },
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=30)
    finally:
        serving.stop()

    assert created == 200
    assert before == "1"
    # Far sooner than the next check (an hour away): MLflow's webhook, not the poll.
    assert seconds < 60, f"the swap took {seconds:.1f} s"
    assert refused.value.code == 401
