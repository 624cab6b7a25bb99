"""`make bench`: this project's server against `mlflow models serve`, on the same model.

Both serve `models:/<slug>@champion` on loopback, and wrk (a low-overhead load
generator: `apt-get install wrk`, `brew install wrk`) sends each the same
single-row request at 1 and at 16 connections; this project's server runs once more
with monitoring off (MONITORING=false), to show what live drift costs, once with
scikit-learn's own predict instead of the fast path (FAST_PREDICT=false), and once
pinned to its version (MODEL_REFRESH_S=0) against following its alias with a registry
check every second, to show what following the registry costs, and with a shadow
(SHADOW_ALIAS=champion: the same version scores every row again, off the response
path), to show what shadow scoring costs. A bare ASGI
app that only echoes the body, under the same uvicorn, shows the HTTP floor of the
machine. The table gives requests per second, median and 99th-percentile latency, and
the ratios; a second table the in-process predict of 1 and 16 rows: MLflow's pyfunc,
scikit-learn's own, and the fast path.

    make bench                      # 10 s per run
    make bench BENCH_SECONDS=30     # steadier figures
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from starlette.types import Receive, Scope, Send

from {{ cookiecutter.module_name }}.config import (
    PROJECT_SLUG,
    load_config,
    registered_model_uri,
)
from {{ cookiecutter.module_name }}.runtime.model import load_model
from {{ cookiecutter.module_name }}.settings import tracking_uri
from {{ cookiecutter.module_name }}.store.tracking import use_tracking_store

CONNECTIONS = (1, 16)
MODEL_URI = registered_model_uri(alias="champion")

# wrk sends the body of BODY_FILE and prints its summary as one JSON line.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = file:read("*a")
file:close()

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "p50_us": %d, "p99_us": %d, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50),
    latency:percentile(99), summary.errors.status + summary.errors.timeout
      + summary.errors.read + summary.errors.write + summary.errors.connect))
end
"""


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """The HTTP floor: an ASGI app that answers each request with its own body."""
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def free_port() -> int:
    """A port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(
    command: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Start a server, wait until it answers /health (or /), stop it afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{command[0]} stopped:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{' '.join(command)} did not start within 120 s") from None
                time.sleep(0.3)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def load(port: int, connections: int, seconds: int, body: Path, script: Path) -> dict[str, float]:
    """Drive the server with wrk; return requests/s, p50 and p99 in milliseconds."""
    # One wrk thread is enough for 16 connections and leaves the cores to the server.
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script)]
    output = subprocess.run(
        [*command, f"http://127.0.0.1:{port}/invocations"],
        env={**os.environ, "BODY_FILE": str(body)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    summary = json.loads(output.strip().splitlines()[-1])
    if summary["errors"] or not summary["requests"]:
        raise SystemExit(f"wrk saw {summary['errors']} errors on port {port}:\n{output}")
    return {
        "rps": summary["requests"] / summary["seconds"],
        "p50": summary["p50_us"] / 1000,
        "p99": summary["p99_us"] / 1000,
    }


def in_process_ms(predict: Callable[[pd.DataFrame], Any], rows: pd.DataFrame) -> float:
    """Median time of one predict call on `rows`, in milliseconds."""
    times = []
    for _ in range(200):
        started = time.perf_counter()
        predict(rows)
        times.append(time.perf_counter() - started)
    return statistics.median(times[20:]) * 1000


def in_process(frame: pd.DataFrame) -> dict[str, dict[int, float]]:
    """The three ways to predict in process, on 1 and 16 rows: median milliseconds."""
    model = mlflow.pyfunc.load_model(MODEL_URI)
    fast, _ = load_model(MODEL_URI)
    ways = {"MLflow pyfunc predict": model.predict, "fast path": fast}
    if model.loader_module == "mlflow.sklearn":
        ways["scikit-learn predict"] = model.get_raw_model().predict
    return {
        name: {n: in_process_ms(way, frame.head(n)) for n in (1, 16)} for name, way in ways.items()
    }


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 10)))
    seconds = parser.parse_args().seconds
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` or `brew install wrk`.")
    use_tracking_store()
    config = load_config()
    frame = pd.read_csv(config.data.path).drop(columns=config.data.target).head(16)
    frame = frame.astype(dict.fromkeys(frame.select_dtypes("integer").columns, "float64"))
    row = frame.head(1)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    body, script = work / "body.json", work / "request.lua"
    body.write_text(json.dumps({"dataframe_split": row.to_dict(orient="split", index=False)}))
    script.write_text(WRK_SCRIPT)
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri())

    ours = [PROJECT_SLUG, "serve", "--model-uri", MODEL_URI]
    servers = {
        # The console scripts of the project's environment (`uv run` puts them on PATH).
        "this project": ours,
        "  monitoring off": ours,
        "  fast path off": ours,
        "  pinned": ours,
        "  follows, 1 s checks": ours,
        "  with a shadow": ours,
        "mlflow models serve": [
            "mlflow",
            "models",
            "serve",
            "--model-uri",
            MODEL_URI,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
        ],
        "echo (HTTP floor)": ["uvicorn", "--app-dir", str(Path(__file__).parent)],
    }
    # The model's own time, before and after the servers: this machine may drift meanwhile.
    before = in_process(frame)
    results: dict[str, dict[int, dict[str, float]]] = {}
    for name, command in servers.items():
        port = free_port()
        if name.startswith("echo"):
            command = [*command, "serving:echo", "--port", str(port), "--no-access-log"]
        else:
            command = [*command, "--port", str(port)]
        print(f"{name}: {seconds} s at each of {CONNECTIONS} connections...", flush=True)
        env = {
            "  monitoring off": {"MONITORING": "false"},
            "  fast path off": {"FAST_PREDICT": "false"},
            "  pinned": {"MODEL_REFRESH_S": "0"},
            "  follows, 1 s checks": {"MODEL_REFRESH_S": "1"},
            "  with a shadow": {"SHADOW_ALIAS": "champion"},
        }.get(name, {})
        with running(command, port, work / f"{port}.log", env):
            results[name] = {c: load(port, c, seconds, body, script) for c in CONNECTIONS}

    after = in_process(frame)
    print()
    print(f"{'server':<22}{'conns':>6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, by_connections in results.items():
        for connections, figures in by_connections.items():
            print(
                f"{name:<22}{connections:>6}{figures['rps']:>10.1f}"
                f"{figures['p50']:>10.2f}{figures['p99']:>10.2f}"
            )
    ours, unmonitored, slow, pinned, following, shadowed, theirs, floor = results.values()
    busy = max(CONNECTIONS)
    print()
    print(f"{'in process (ms, before/after the servers)':<44}{'1 row':>14}{'16 rows':>14}")
    for name in before:
        cells = "".join(f"{f'{before[name][n]:.2f}/{after[name][n]:.2f}':>14}" for n in (1, 16))
        print(f"{name:<44}{cells}")
    predict_ms = (before["fast path"][1] + after["fast path"][1]) / 2
    print()
    print(
        f"at {busy} connections: {ours[busy]['rps'] / theirs[busy]['rps']:.1f}x the throughput "
        f"of mlflow models serve, {ours[busy]['p99'] / theirs[busy]['p99']:.2f}x its p99, "
        f"{ours[busy]['rps'] / floor[busy]['rps']:.3f}x the echo floor's throughput"
    )
    print(
        f"at 1 connection: p50 {ours[1]['p50'] / predict_ms:.2f}x the in-process fast path's time"
    )
    print(
        f"the fast path: {ours[busy]['rps'] / slow[busy]['rps']:.2f}x the throughput of "
        f"scikit-learn's predict at {busy} connections, {ours[1]['p50'] / slow[1]['p50']:.2f}x "
        f"its p50 at 1, {ours[busy]['p99'] / slow[busy]['p99']:.2f}x its p99 at {busy}"
    )
    print(
        f"monitoring on keeps {ours[busy]['rps'] / unmonitored[busy]['rps']:.2f}x of the "
        f"throughput without it at {busy} connections "
        f"({ours[1]['p50'] / unmonitored[1]['p50']:.2f}x its p50 at 1 connection)"
    )

    print(
        f"following the registry (a check every second) keeps "
        f"{following[busy]['rps'] / pinned[busy]['rps']:.2f}x of the pinned throughput at "
        f"{busy} connections, {following[busy]['p99'] / pinned[busy]['p99']:.2f}x its p99"
    )
    print(
        f"a shadow scoring every row keeps {shadowed[busy]['rps'] / ours[busy]['rps']:.2f}x of "
        f"the throughput at {busy} connections, {shadowed[busy]['p99'] / ours[busy]['p99']:.2f}x "
        f"its p99"
    )


if __name__ == "__main__":
    main()
