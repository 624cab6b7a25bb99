"""A server following its alias: steady against swapping versions, under wrk's load.

Run it with `make bench-swap`: it bakes the default project, trains two versions (a
stump and the configured forest, so that their predictions differ), aliases `bench`
to the first, and serves `models:/<slug>@bench` with a registry check every second.
wrk sends a single-row request at 16 connections, side by side in one run:

- steady:    ROUNDS runs of SECONDS with the alias still;
- swapping:  ROUNDS runs of SECONDS while the alias moves between the two versions
             every SWAP_EVERY seconds (each move loads and warms a model process,
             then swaps it in between two batches);
- pinned:    the same server with MODEL_REFRESH_S=0, steady (what following costs).

Prints a Markdown table: requests/s, p50 and p99, errors, and the ratios to steady.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROUNDS = 3
SECONDS = 12
SWAP_EVERY = 3.0
ALIAS = "bench"
# wrk sends the body of BODY_FILE and prints its summary as one JSON line.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("BODY_FILE"), "r")
wrk.body = file:read("*a")
file:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "errors": %d, "non2xx": %d, "seconds": %f, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, e.connect + e.read + e.write + e.timeout, e.status,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
"""


# The request: the first row of the project's data, as MLflow's dataframe_split.
ROW = """
import json
import pandas as pd
from customer_churn.config import load_config
config = load_config()
frame = pd.read_csv(config.data.path).drop(columns=config.data.target).head(1).astype(float)
print(json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python(project: Path, code: str) -> str:
    """Run `code` in the project's environment; return what it printed."""
    return subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "-c", code], cwd=project, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip


def train_two(project: Path) -> str:
    """Two versions whose predictions differ; the alias on the first. Returns the slug."""
    make = ["make", "train"]
    env = {**os.environ, "CUSTOMER_CHURN_ESTIMATOR__PARAMS": '{"n_estimators": 1, "max_depth": 1}'}
    subprocess.run(make, cwd=project, env=env, check=True, capture_output=True)
    subprocess.run(make, cwd=project, check=True, capture_output=True)
    return python(project, "from customer_churn.config import PROJECT_SLUG; print(PROJECT_SLUG)").strip()


MOVER = """
import sys
from mlflow import MlflowClient
from customer_churn.store.tracking import use_tracking_store
use_tracking_store()
client = MlflowClient()
for line in sys.stdin:
    slug, alias, version = line.split()
    client.set_registered_model_alias(slug, alias, version)
    print("moved", flush=True)
"""


class AliasMover:
    """One process of the project's Python that moves the alias when told (MLflow imported once)."""

    def __init__(self, project: Path, slug: str) -> None:
        self.slug = slug
        self.process = subprocess.Popen(
            [str(project / ".venv" / "bin" / "python"), "-c", MOVER], cwd=project, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip

    def move(self, version: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{self.slug} {ALIAS} {version}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "moved"

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def serve(project: Path, slug: str, port: int, refresh: str, log: Path) -> subprocess.Popen[bytes]:
    """`models:/<slug>@bench` served on `port`, checking the registry every `refresh` s."""
    env = {"MODEL_URI": f"models:/{slug}@{ALIAS}", "MODEL_REFRESH_S": refresh}
    return start_server(project, port, log, env)


def start_server(
    project: Path, port: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The project's `serve` on `port` (with `env` added), once it answers /health."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(project / ".venv" / "bin" / project.name), "serve", "--port", str(port)],
            cwd=project, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"{project} did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.3)


def wrk(
    port: int, body: Path, script: Path, connections: int = 16, seconds: int = SECONDS
) -> dict[str, float]:
    """wrk's summary of POSTing `body` to /invocations: req/s, p50 and p99 (ms), errors."""
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}/invocations"],
        env={**os.environ, "BODY_FILE": str(body)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    summary = json.loads(output.strip().splitlines()[-1])
    return {
        "rps": summary["requests"] / summary["seconds"], "p50": summary["p50_us"] / 1000,
        "p99": summary["p99_us"] / 1000, "errors": summary["errors"] + summary["non2xx"],
    }  # fmt: skip


def swapping(mover: AliasMover, stop: threading.Event) -> None:
    """Move the alias between the two versions every SWAP_EVERY seconds until stopped."""
    version = "1"
    while not stop.wait(SWAP_EVERY):
        version = "2" if version == "1" else "1"
        mover.move(version)


def main(project: Path) -> None:
    slug = train_two(project)
    mover = AliasMover(project, slug)
    mover.move("1")
    work = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    row = python(project, ROW)
    body, script = work / "body.json", work / "request.lua"
    body.write_text(row)
    script.write_text(WRK_SCRIPT)
    runs: dict[str, list[dict[str, float]]] = {"steady": [], "swapping": [], "pinned": []}
    following = serve(project, slug, port := free_port(), "1", work / "following.log")
    pinned_port = free_port()
    pinned = serve(project, slug, pinned_port, "0", work / "pinned.log")
    try:
        for _ in range(ROUNDS):
            runs["pinned"].append(wrk(pinned_port, body, script))
            runs["steady"].append(wrk(port, body, script))
            stop = threading.Event()
            moving = threading.Thread(target=swapping, args=(mover, stop))
            moving.start()
            runs["swapping"].append(wrk(port, body, script))
            stop.set()
            moving.join()
            mover.move("1")
            time.sleep(3)  # back on version 1 before the next steady run
    finally:
        for process in (following, pinned):
            process.terminate()
            process.wait(timeout=30)
        mover.close()
    swaps = sum(line.count("Serving models:/") for line in [(work / "following.log").read_text()])
    steady = {k: statistics.median(r[k] for r in runs["steady"]) for k in ("rps", "p50", "p99")}
    print(f"{ROUNDS} rounds of {SECONDS} s at 16 connections; alias moved every {SWAP_EVERY:g} s "
          f"while swapping ({swaps - 1} swaps in all)\n")  # fmt: skip
    print("| server | req/s | p50 ms | p99 ms | errors | req/s vs steady | p99 vs steady |")
    print("|---|---|---|---|---|---|---|")
    for name, results in runs.items():
        median = {k: statistics.median(r[k] for r in results) for k in ("rps", "p50", "p99")}
        errors = int(sum(r["errors"] for r in results))
        print(f"| {name} | {median['rps']:.0f} | {median['p50']:.2f} | {median['p99']:.2f} | {errors} | "
              f"{median['rps'] / steady['rps']:.2f}x | {median['p99'] / steady['p99']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
