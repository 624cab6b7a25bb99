"""The serving image: size, build and rebuild times, time to healthy; against MLflow's image.

Run it with `make bench-docker` (needs a Docker engine, and BASE_IMAGE set to the base to
build on, e.g. mlpipe-base:3.12 from scripts/build_base_images.sh). From a baked and
trained default project, it measures:

- the size our image adds to its base, and what the image from
  `mlflow models generate-dockerfile` adds to the same base, for the same model;
- a cold build (build cache and cache mounts pruned first) and a rebuild after a change
  to one source file;
- from `docker run` to a 200 on /health, beside the time to import the serving stack
  inside the image (the floor it cannot beat); medians of ROUNDS.

Builds and containers use host networking. Prints a Markdown table.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROUNDS = 5
BUILD_FLAGS = ["--network", "host"]
os.environ["DOCKER_BUILDKIT"] = "1"  # the Dockerfile's cache and bind mounts need BuildKit


def sh(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; stop with its output if it fails."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout.strip()


def timed(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    sh(*args, cwd=cwd, env=env)
    return time.perf_counter() - started


def size(image: str) -> int:
    return int(sh("docker", "image", "inspect", "--format", "{{.Size}}", image))


def healthy_after(image: str, port: int) -> float:
    """Seconds from `docker run` to a 200 on /health."""
    started = time.perf_counter()
    container = sh(
        "docker", "run", "--detach", "--read-only", "--tmpfs", "/tmp", "--network", "host",
        "--env", "HOST=127.0.0.1", "--env", f"PORT={port}", image,
    )  # fmt: skip
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
            if time.perf_counter() - started > 120:
                sys.exit(f"{image} never became healthy:\n{sh('docker', 'logs', container)}")
    finally:
        sh("docker", "rm", "--force", container)


def main(project: Path, base: str) -> None:
    """Measure and print."""
    slug = project.name
    module = slug.replace("-", "_")
    image = f"{slug}:latest"
    build = [
        "make", "docker-build", f"BASE_IMAGE={base}", f"DOCKER_BUILD_FLAGS={' '.join(BUILD_FLAGS)}",
    ]  # fmt: skip
    sh(*build, cwd=project)  # exports the model into build/model

    docker_build = ["docker", "build", *BUILD_FLAGS, "--build-arg", f"BASE_IMAGE={base}", "-t", image, "."]
    sh("docker", "builder", "prune", "--all", "--force")
    cold = timed(*docker_build, cwd=project)
    source = project / "src" / module / "data.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# A change to one source file.\n")
        rebuild = timed(*docker_build, cwd=project)
    finally:
        source.write_text(original)
        sh(*docker_build, cwd=project)

    # MLflow's own image for the same model, on the same base.
    mlflow_dir = project / "build" / "mlflow-dockerfile"
    shutil.rmtree(mlflow_dir, ignore_errors=True)
    sh("uv", "run", "--locked", "mlflow", "models", "generate-dockerfile",
       "-m", f"models:/{slug}@champion", "-d", str(mlflow_dir), cwd=project)  # fmt: skip
    dockerfile = mlflow_dir / "Dockerfile"
    lines = dockerfile.read_text().splitlines()
    # Same base as ours; MLflow's steps call `pip`, which a base may carry as a module only.
    pip = (
        "RUN printf '#!/bin/sh\\nexec python3 -m pip \"$@\"\\n' > /usr/local/bin/pip"
        " && chmod +x /usr/local/bin/pip"
    )
    lines = [f"FROM {base}\n{pip}" if line.startswith("FROM ") else line for line in lines]
    dockerfile.write_text("\n".join(lines) + "\n")
    sh("docker", "build", *BUILD_FLAGS, "-t", f"{slug}-mlflow:latest", str(mlflow_dir))

    ours, theirs = size(image) - size(base), size(f"{slug}-mlflow:latest") - size(base)
    port = 18000 + os.getpid() % 1000
    to_healthy = statistics.median(healthy_after(image, port) for _ in range(ROUNDS))
    import_script = (
        "import time; t = time.perf_counter(); "
        f"import {module}.cli, {module}.serving.app, uvicorn; print(time.perf_counter() - t)"
    )
    in_image = ["docker", "run", "--rm", "--read-only", "--entrypoint", "/opt/venv/bin/python", image]
    imports = statistics.median(float(sh(*in_image, "-c", import_script)) for _ in range(ROUNDS))

    mb = 1e6
    print(f"| measure (base {base}, {size(base) / mb:.0f} MB) | value |")
    print("|---|---|")
    print(f"| our image, added to the base | {ours / mb:.0f} MB |")
    print(f"| `mlflow models generate-dockerfile` image, added to the base | {theirs / mb:.0f} MB |")
    print(f"| ours / MLflow's added size | {ours / theirs:.2f} |")
    print(f"| cold build (cache pruned) | {cold:.1f} s |")
    print(f"| rebuild after changing one source file | {rebuild:.1f} s |")
    print(f"| rebuild / cold | {rebuild / cold:.2f} |")
    print(f"| `docker run` to a 200 on /health, median of {ROUNDS} | {to_healthy:.2f} s |")
    print(f"| importing the serving stack in the image, median of {ROUNDS} | {imports:.2f} s |")
    print(json.dumps({"added_mb": ours / mb, "mlflow_added_mb": theirs / mb}), file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), sys.argv[2])
