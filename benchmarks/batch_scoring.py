"""Batch scoring at size: the local engine and Spark against the old read-everything predict.

Run it with `make bench-batch`: it bakes and trains the default project and runs this
file in the project's environment. For each size in SIZES it writes a CSV of that many
rows, drawn with replacement from the sample dataset, with a `row_id` column and no
target, then scores it once with each way, each a fresh process as `make predict` is:

- read-everything: the template's `predict` before batch scoring, verbatim below: the
                   whole CSV parsed into one frame, predicted in one call, written as CSV;
- local:           `predict --input rows.csv --output scored.parquet` (chunks of
                   [batch] chunk_rows);
- spark local[2]:  `predict --engine spark` with SPARK_MASTER=local[2], into a folder of
                   Parquet files.

Each way runs on the same champion (its fast path, where it has one) and the same file.
Wall time is the whole process (imports, model load, JVM start included); peak memory
is the highest sum of the resident memory of the process and all its children (Spark's
JVM and Python workers), sampled every 20 ms from /proc. Prints a Markdown table.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv

SIZES = [1_000_000, 4_000_000]
WAYS = ["read-everything", "local", "spark local[2]"]
GENERATED_CHUNK = 250_000

# The template's `predict` before batch scoring (its predict.py), as a script.
READ_EVERYTHING = """
import sys
from pathlib import Path
from mlflow.pyfunc.scoring_server import parse_csv_input
from {module}.config import use_tracking_store
from {module}.serving.model_process import load_model

model_uri, source, destination = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
use_tracking_store()
predict, schema = load_model(model_uri)
with source.open() as file:
    frame = parse_csv_input(file) if schema is None else parse_csv_input(file, schema=schema)
predictions = predict(frame)
frame.assign(prediction=predictions).to_csv(destination, index=False)
print(f"Wrote {{len(frame)}} predictions")
"""


def generate(sample: Path, target: str, rows: int, path: Path) -> None:
    """`rows` rows drawn from `sample` with replacement, with a row_id, without the target."""
    features = pd.read_csv(sample).drop(columns=[target])
    rng = np.random.default_rng(rows)
    writer = None
    for start in range(0, rows, GENERATED_CHUNK):
        count = min(GENERATED_CHUNK, rows - start)
        part = features.iloc[rng.integers(0, len(features), size=count)].reset_index(drop=True)
        part.insert(0, "row_id", [f"r{n:09d}" for n in range(start, start + count)])
        table = pa.Table.from_pandas(part, preserve_index=False)
        writer = writer or pyarrow.csv.CSVWriter(str(path), table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (0 for a process that has ended)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0]) * 1024 if "VmRSS:" in status else 0
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def measure(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak resident bytes of the process tree, and its last line of output."""
    peak = 0
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode:
        sys.exit(f"{' '.join(command[:6])}... failed:\n{err[-3000:]}")
    return seconds, peak, out.strip().splitlines()[-1]


def main() -> None:
    module = sys.argv[1]
    config = __import__(f"{module}.config", fromlist=["load_config"])
    settings = config.load_config()
    model_uri = config.registered_model_uri(alias="champion")
    env = {**os.environ, "SPARK_MASTER": "local[2]", "SPARK_LOCAL_IP": "127.0.0.1"}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-", dir=Path.cwd()) as scratch:
        folder = Path(scratch)
        for rows in SIZES:
            source = folder / f"rows-{rows}.csv"
            generate(settings.data.path, settings.data.target, rows, source)
            size_mb = source.stat().st_size / 1e6
            commands = {
                "read-everything": [
                    sys.executable, "-c", READ_EVERYTHING.format(module=module), model_uri, str(source),
                    str(folder / "everything.csv"),
                ],
                "local": [
                    sys.executable, "-m", module, "predict", "--input", str(source),
                    "--output", str(folder / "local.parquet"), "--model-uri", model_uri,
                ],
                "spark local[2]": [
                    sys.executable, "-m", module, "predict", "--engine", "spark", "--input", str(source),
                    "--output", str(folder / "spark"), "--model-uri", model_uri,
                ],
            }  # fmt: skip
            for way in WAYS:
                seconds, peak, said = measure(commands[way], env)
                assert f"Wrote {rows} predictions" in said, said
                results.append((rows, size_mb, way, seconds, peak))
                print(f"{rows:>9,} rows {way:<16} {seconds:7.1f} s {peak / 2**20:8.0f} MiB", file=sys.stderr)
            source.unlink()

    print("| rows | CSV (MB) | way | wall (s) | rows/s | peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for rows, size_mb, way, seconds, peak in results:
        mib = peak / 2**20
        print(f"| {rows:,} | {size_mb:,.0f} | {way} | {seconds:.1f} | {rows / seconds:,.0f} | {mib:,.0f} |")
    print()
    peaks = {(rows, way): peak for rows, _, way, _, peak in results}
    speeds = {(rows, way): rows / seconds for rows, _, way, seconds, _ in results}
    small, large = SIZES[0], SIZES[-1]
    for way in WAYS:
        growth = peaks[large, way] / peaks[small, way]
        print(f"{way}: peak memory at {large:,} rows / at {small:,} rows: {growth:.2f}")
    baseline = WAYS[0]
    for way in WAYS[1:]:
        speed = speeds[large, way] / speeds[large, baseline]
        memory = peaks[large, way] / peaks[large, baseline]
        print(f"{way} / {baseline} at {large:,} rows: rows/s {speed:.2f}, peak memory {memory:.2f}")


if __name__ == "__main__":
    main()
