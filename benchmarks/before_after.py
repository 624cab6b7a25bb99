"""The served model of two bakes side by side: this template against an earlier commit.

Run it with `make bench-before-after BEFORE=<git ref>`: it bakes the defaults from
that commit and from the working tree, installs and trains each, starts both servers
(each serving its own champion, as `make serve` does), then sends wrk's single-row
request to one and the other in turn, ROUNDS times, at 1 and at 16 connections (the
order flips every round, so neither always runs first). Both servers run through the
whole run, so that they share the machine's noise alike.

Prints a Markdown table: the medians of req/s and p99, and the ratio of "after" to
"before" (above 1: faster now).
"""

import statistics
import sys
import tempfile
from pathlib import Path

from hot_swap import ROW, WRK_SCRIPT, free_port, python, start_server, wrk

ROUNDS = 3
SECONDS = 10
CONNECTIONS = (1, 16)


def main(before: Path, after: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-before-after-"))
    body, script = work / "body.json", work / "request.lua"
    body.write_text(python(after, ROW))
    script.write_text(WRK_SCRIPT)
    ports = {"before": free_port(), "after": free_port()}
    servers = [start_server(project, ports[name], work / f"{name}.log")
               for name, project in (("before", before), ("after", after))]  # fmt: skip
    runs: dict[tuple[str, int], list[dict[str, float]]] = {
        (name, connections): [] for name in ports for connections in CONNECTIONS
    }
    try:
        for round_number in range(ROUNDS):
            order = ["before", "after"] if round_number % 2 == 0 else ["after", "before"]
            for connections in CONNECTIONS:
                for name in order:
                    result = wrk(ports[name], body, script, connections, SECONDS)
                    assert result["errors"] == 0, f"{name} answered errors: {result}"
                    runs[name, connections].append(result)
    finally:
        for process in servers:
            process.terminate()
            process.wait(timeout=30)
    print(f"{ROUNDS} rounds of {SECONDS} s each, alternating; medians\n")
    print("| connections | server | req/s | p99 ms | req/s after / before | p99 after / before |")
    print("|---:|---|---:|---:|---:|---:|")
    for connections in CONNECTIONS:
        median = {
            name: {k: statistics.median(r[k] for r in runs[name, connections]) for k in ("rps", "p99")}
            for name in ports
        }
        for name in ports:
            print(f"| {connections} | {name} | {median[name]['rps']:.0f} | {median[name]['p99']:.2f} | "
                  f"{median['after']['rps'] / median['before']['rps']:.3f}x | "
                  f"{median['after']['p99'] / median['before']['p99']:.3f}x |")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
