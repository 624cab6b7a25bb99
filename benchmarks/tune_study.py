"""Wall time of a `make tune` study: one process against two sharing the study.

Run it with `make bench-tune`: it bakes the default project, then starts a PostgreSQL
of its own (Debian's binaries, as the server tier does) holding both the Optuna study
and, through `make tracking-server`, the MLflow runs, since two processes writing one
SQLite file would measure SQLite's locks. On the same budget (TRIALS trials in all,
the defaults' search space and folds), each variant is timed from outside, from the
start of the first process to the end of the last, its final training included:

- one process:    `make tune TRIALS=<n>`;
- two processes:  `make tune TRIALS=<n/2>` twice at once, on one study.

The variants alternate, ROUNDS times, each on a study of its own. Prints a Markdown table.
"""

import glob
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROUNDS = 2
TRIALS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres(folder: Path) -> tuple[str, list[str]]:
    """A PostgreSQL on a free loopback port with the databases mlflow and optuna."""
    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]).parent
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(folder, "postgres")
    port = free_port()
    data = folder / "data"
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(
        [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
         "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {folder}", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    for database in ("mlflow", "optuna"):
        createdb = [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
        subprocess.run([*createdb, database], check=True)
    stop = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
    return f"postgresql://postgres@127.0.0.1:{port}", stop


def wait_healthy(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the tracking server at {url} never answered")


def study(project: Path, env: dict[str, str], name: str, processes: int) -> float:
    """Seconds from the start of the first `make tune` to the end of the last."""
    started = time.monotonic()
    running = [
        subprocess.Popen(
            ["make", "tune", f"TRIALS={TRIALS // processes}", f"STUDY={name}"],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    for process in running:
        _, errors = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"make tune failed:\n{errors.decode()[-3000:]}")
    return time.monotonic() - started


def main(project: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    database, stop = postgres(folder)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"}}
    server = subprocess.Popen(
        ["make", "tracking-server", f"MLFLOW_PORT={port}"], cwd=project, start_new_session=True,
        env={**env, "MLFLOW_BACKEND_STORE_URI": f"{database}/mlflow",
             "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        env.update(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}", OPTUNA_STORAGE=f"{database}/optuna")
        times: dict[int, list[float]] = {1: [], 2: []}
        for round_ in range(ROUNDS):
            for processes in (1, 2):
                times[processes].append(study(project, env, f"bench-{round_}-{processes}", processes))
    finally:
        os.killpg(server.pid, 15)
        server.wait()
        subprocess.run(stop, check=False, capture_output=True)
    one = statistics.median(times[1])
    print(f"\n{TRIALS} trials in all, median of {ROUNDS} rounds, {os.cpu_count()} cores:\n")
    print("| variant | wall time (s) | each round (s) | vs one process |")
    print("|---|---:|---|---:|")
    for processes, label in ((1, "one process"), (2, "two processes, one study")):
        median = statistics.median(times[processes])
        rounds = ", ".join(f"{t:.0f}" for t in times[processes])
        print(f"| {label} | {median:.0f} | {rounds} | {median / one:.2f}x |")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
