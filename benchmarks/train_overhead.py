"""MLflow's overhead in `make train`: pinned requirements against automatic inference.

Run it with `make bench-train`: it bakes the default project and runs this file in the
project's environment. Each variant is one fresh process, as `make train` is, timed
from outside, the variants interleaved, ROUNDS times, on the same data and store:

- fit:          load, split, fit and evaluate with plots; no MLflow (the floor);
- ours:         the project's `train()`: fit + tracking, logging, registration, gate;
- naive:        the same with the model's requirements left to MLflow, which captures
                the imports of a subprocess that loads the model (MLflow's classic
                inference; MLFLOW_UV_AUTO_DETECT=false);
- naive-uv:     the same, in MLflow's default mode for a uv project: `uv export` of the
                whole lock, dev tools included.

Overhead = variant - fit. Prints a Markdown table.
"""

import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

ROUNDS = 5
VARIANTS = ["fit", "ours", "naive", "naive-uv"]


def run_variant(module: str, variant: str) -> None:
    """Run one variant in this process; print how many requirements its model pins."""
    config = importlib.import_module(f"{module}.config").load_config()
    if variant == "fit":
        data = importlib.import_module(f"{module}.core.data")
        pipeline = importlib.import_module(f"{module}.core.pipeline")
        evaluation = importlib.import_module(f"{module}.core.evaluation")
        parts = data.split(data.load(config.data), config.data, config.task)
        model = pipeline.build_pipeline(config.estimator, config.task).fit(parts.x_train, parts.y_train)
        evaluation.evaluate(model, parts.x_test, parts.y_test, config.task)
        print(json.dumps({"requirements": None, "log_model": None}))
        return

    import mlflow

    train = importlib.import_module(f"{module}.jobs.train")
    tracking = importlib.import_module(f"{module}.store.tracking")
    log_model = tracking.log_model
    seconds = []

    def timed_log_model(*args: object) -> object:
        started = time.perf_counter()
        info = log_model(*args)
        seconds.append(time.perf_counter() - started)
        return info

    with mock.patch.object(tracking, "log_model", timed_log_model):
        if variant == "ours":
            result = train.train(config)
        else:
            with mock.patch.object(tracking, "serving_requirements", return_value=None):
                result = train.train(config)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(f"runs:/{result.run_id}/model"))
    print(json.dumps({"requirements": len(requirements.read_text().split()), "log_model": seconds[0]}))


def drive(module: str) -> None:
    """Time every variant in fresh processes and print the medians."""

    def once(variant: str) -> tuple[float, dict[str, float | None]]:
        env = os.environ | {"MLFLOW_UV_AUTO_DETECT": "false" if variant != "naive-uv" else "true"}
        started = time.perf_counter()
        process = subprocess.run(
            [sys.executable, __file__, module, variant], env=env, capture_output=True, text=True, check=True
        )
        elapsed = time.perf_counter() - started
        return elapsed, json.loads(process.stdout.strip().splitlines()[-1])

    once("ours")  # warm-up: creates the store, the experiment and the first champion
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    log_times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    requirements: dict[str, float | None] = {}
    for _ in range(ROUNDS):
        for variant in VARIANTS:
            elapsed, report = once(variant)
            times[variant].append(elapsed)
            requirements[variant] = report["requirements"]
            if report["log_model"] is not None:
                log_times[variant].append(report["log_model"])

    median = {variant: statistics.median(values) for variant, values in times.items()}
    log_model_median = {variant: statistics.median(values) for variant, values in log_times.items() if values}
    print("| variant | `train` process (s) | MLflow overhead (s) | `log_model` (s) | requirements |")
    print("|---|---|---|---|---|")
    for variant in VARIANTS:
        overhead = "-" if variant == "fit" else f"{median[variant] - median['fit']:.2f}"
        log_model = f"{log_model_median[variant]:.2f}" if variant in log_model_median else "-"
        count = "-" if requirements[variant] is None else f"{requirements[variant]:.0f}"
        print(f"| {variant} | {median[variant]:.2f} | {overhead} | {log_model} | {count} |")
    ratio = (median["ours"] - median["fit"]) / (median["naive"] - median["fit"])
    print(f"\nMedians of {ROUNDS} interleaved rounds.")
    print(f"Whole MLflow overhead, ours / naive: {ratio:.2f}.")
    print(f"log_model, ours / naive: {log_model_median['ours'] / log_model_median['naive']:.2f}.")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        run_variant(sys.argv[1], sys.argv[2])
    else:
        drive(sys.argv[1])
