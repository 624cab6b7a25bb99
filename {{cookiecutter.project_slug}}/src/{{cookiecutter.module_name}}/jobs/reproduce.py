"""Reproduce: rebuild a registered model from its run's commit and data, and compare.

`reproduce` checks the run's commit out into a scratch folder (a clone that shares
the project's git objects), fetches the run's data from the DVC remote by its hash,
retrains there, with the code of that commit and the run's own configuration (its
`config.json` artifact), and compares the rebuilt model with the registered one on
the held-out split. It registers nothing and never touches the project's work tree;
the verdict is tagged on the original run.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import PROJECT_ROOT, Config, registered_model_uri
from ..core import data
from ..core.evaluation import fit_and_evaluate
from ..core.pipeline import build_pipeline
from ..errors import ReproduceError
from ..settings import environment_without_overrides, locations
from ..store.tracking import CONFIG_ARTIFACT
from ..store.versioning import dvc, dvc_file, git, last_line, relative, remote_url, use_remote


@dataclass(frozen=True)
class Reproduction:
    """How a rebuilt model compares with the registered one."""

    version: str
    run_id: str
    commit: str
    metric_differences: dict[str, float]
    predictions: int
    mismatches: int
    max_difference: float
    tolerance: float
    seconds: float

    @property
    def reproduced(self) -> bool:
        """Every metric and every held-out prediction within the tolerance."""
        return self.mismatches == 0 and all(
            difference <= self.tolerance for difference in self.metric_differences.values()
        )

    def summary(self) -> str:
        """One line: what was rebuilt, and how it compares."""
        differing = {
            name: difference
            for name, difference in self.metric_differences.items()
            if difference > self.tolerance
        }
        metrics = (
            ", ".join(f"{name} differs by {value:.3g}" for name, value in differing.items())
            if differing
            else f"{len(self.metric_differences)} metrics identical"
            if not any(self.metric_differences.values())
            else f"{len(self.metric_differences)} metrics within {self.tolerance}"
        )
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        return (
            f"Version {self.version} (run {self.run_id}, commit {self.commit[:12]}) {verdict} "
            f"in {self.seconds:.1f} s: {metrics}; {self.predictions - self.mismatches} of "
            f"{self.predictions} held-out predictions the same "
            f"(largest difference {self.max_difference:.3g})."
        )


def rebuild(record_file: Path, out: Path) -> None:
    """Train again with a run's configuration, in this checkout; write what `reproduce` compares.

    This runs in the scratch checkout, with the code of the run's commit.
    """
    config = Config(**json.loads(record_file.read_text()))
    dataset = data.load(config.data)
    parts = data.split(dataset, config.data, config.task)
    model = build_pipeline(config.estimator, config.task)
    training, held_out = (parts.x_train, parts.y_train), (parts.x_test, parts.y_test)
    evaluation = fit_and_evaluate(model, training, held_out, config.task, plots=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(evaluation.metrics))
    parts.x_test.to_parquet(out / "heldout.parquet")
    pd.DataFrame({"prediction": evaluation.predicted}).to_parquet(out / "predictions.parquet")


def image_run(image: str) -> str:
    """The run whose model an image carries, from its labels (`make docker-build` sets them)."""
    from ..store.registry import IMAGE_LABELS

    inspected = subprocess.run(
        [locations().docker, "image", "inspect", image], capture_output=True, text=True, check=False
    )
    if inspected.returncode != 0:
        raise ReproduceError(f"Cannot inspect image {image}: {last_line(inspected)}")
    labels = json.loads(inspected.stdout)[0]["Config"].get("Labels") or {}
    run_id = labels.get(IMAGE_LABELS["run_id"])
    if not run_id:
        raise ReproduceError(
            f"Image {image} has no {IMAGE_LABELS['run_id']} label: it was built before images "
            "named their run. Reproduce its version instead: make reproduce VERSION=<n>."
        )
    return str(run_id)


def reproduce(reference: str, tolerance: float = 0.0) -> Reproduction:
    """Rebuild the version `reference` names (number, alias or run id), compare, tag its run."""
    import mlflow.artifacts

    from ..store import tracking

    started = time.perf_counter()
    client = tracking.setup()
    version = resolve(client, reference)
    run = client.get_run(version.run_id)
    tags = pinned_tags(run.data.tags, f"Version {version.version}")
    record = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{CONFIG_ARTIFACT}")
    with tempfile.TemporaryDirectory(prefix="reproduce-") as folder:
        metrics, heldout, rebuilt = rebuilt_in_checkout(Path(folder), record, tags, version)
    mismatches, largest = compare(str(version.version), heldout, rebuilt, record["task"], tolerance)
    result = Reproduction(
        version=str(version.version),
        run_id=version.run_id,
        commit=tags["git_commit"],
        metric_differences={
            metric: abs(value - run.data.metrics[metric])
            for metric, value in metrics.items()
            if metric in run.data.metrics
        },
        predictions=len(rebuilt),
        mismatches=mismatches,
        max_difference=largest,
        tolerance=tolerance,
        seconds=time.perf_counter() - started,
    )
    client.set_tag(version.run_id, "reproduced", str(result.reproduced).lower())
    client.set_tag(version.run_id, "reproduced_detail", result.summary())
    client.set_tag(version.run_id, "reproduced_at", datetime.now(UTC).isoformat(timespec="seconds"))
    return result


def pinned_tags(tags: dict[str, str], name: str) -> dict[str, str]:
    """The run's tags, if they pin its code and data; else say why it cannot be rebuilt."""
    if "reproducible" not in tags:
        raise ReproduceError(
            f"{name} was trained before runs recorded their data version: it cannot be "
            "reproduced. Version the data (`make data-version`), commit, and train again."
        )
    if tags["reproducible"] != "true":
        raise ReproduceError(
            f"{name} cannot be reproduced: when it was trained, "
            f"{tags.get('not_reproducible_because', 'its code or data was not versioned')}."
        )
    return tags


def rebuilt_in_checkout(
    folder: Path, record: dict[str, Any], tags: dict[str, str], version: Any
) -> tuple[dict[str, float], pd.DataFrame, np.ndarray[Any, Any]]:
    """Train again in a checkout of the run's commit, on its data: metrics, rows, predictions."""
    commit = tags["git_commit"]
    scratch = check_out(commit, folder / "checkout", f"Version {version.version}")
    fetch_data(scratch, tags["data_path"], tags["data_dvc_md5"])
    record_file, out = folder / CONFIG_ARTIFACT, folder / "rebuilt"
    record_file.write_text(json.dumps(record))
    run_rebuild(scratch, record_file, out, commit)
    metrics = json.loads((out / "metrics.json").read_text())
    heldout = pd.read_parquet(out / "heldout.parquet")
    rebuilt = pd.read_parquet(out / "predictions.parquet")["prediction"].to_numpy()
    return metrics, heldout, rebuilt


def compare(
    version: str, heldout: pd.DataFrame, rebuilt: np.ndarray[Any, Any], task: str,
    tolerance: float,
) -> tuple[int, float]:  # fmt: skip
    """The registered version's predictions against the rebuilt ones: mismatches, largest gap."""
    import mlflow.sklearn

    registered: Any = mlflow.sklearn.load_model(registered_model_uri(version))
    predicted = np.asarray(registered.predict(heldout))
    if task == "regression":
        differences = np.abs(predicted.astype(float) - rebuilt.astype(float))
        return int((differences > tolerance).sum()), float(differences.max(initial=0.0))
    mismatches = int((predicted != rebuilt).sum())
    return mismatches, float(mismatches > 0)


def resolve(client: Any, reference: str) -> Any:
    """The registered version a version number, an alias or a run id names."""
    from mlflow.exceptions import MlflowException

    from ..config import PROJECT_SLUG
    from ..store.registry import version_by_alias

    if reference.isdigit():
        try:
            return client.get_model_version(PROJECT_SLUG, reference)
        except MlflowException:
            raise ReproduceError(f"Model {PROJECT_SLUG} has no version {reference}.") from None
    found = version_by_alias(client, reference)
    if found is None:
        versions = client.search_model_versions(f"run_id = '{reference}'")
        found = versions[0] if versions else None
    if found is None:
        raise ReproduceError(
            f"{reference!r} is neither a version, nor an alias, nor the run of a version of "
            f"{PROJECT_SLUG}."
        )
    return found


def check_out(commit: str, destination: Path, name: str) -> Path:
    """Clone the project's repository into `destination` at `commit`; return the project there."""
    try:
        top = Path(git("rev-parse", "--show-toplevel"))
        git("clone", "--quiet", "--shared", "--no-checkout", str(top), str(destination))
        git("-c", "advice.detachedHead=false", "checkout", "--quiet", commit, cwd=destination)
    except subprocess.CalledProcessError:
        raise ReproduceError(
            f"{name}'s commit {commit} is not in this repository (history rewritten, or "
            f"another clone's?): fetch it (`git fetch origin {commit}`) and try again."
        ) from None
    return destination / PROJECT_ROOT.resolve().relative_to(top.resolve())


def fetch_data(project: Path, data_path: str, md5: str) -> None:
    """Fetch the data file of the run by its DVC hash, from the remote, into `project`."""
    url = remote_url()
    if "://" not in url and not Path(url).is_dir():
        raise ReproduceError(
            f"No DVC remote at {url}: set DVC_REMOTE to the remote the data was pushed to "
            "(`make data-version` pushes it)."
        )
    hash_file = relative(dvc_file(project / data_path), project)
    use_remote(url, cwd=project)
    pulled = dvc("pull", hash_file, cwd=project)
    if pulled.returncode != 0 or not (project / data_path).is_file():
        raise ReproduceError(
            f"Data version {md5} of {data_path} is not in the DVC remote {url}: it was never "
            f"pushed there (`make data-version` pushes it). DVC said: {last_line(pulled)}"
        )
    if data.fingerprint(project / data_path).md5 != md5:
        raise ReproduceError(f"The remote's {data_path} does not have the run's hash {md5}.")


def run_rebuild(project: Path, record_file: Path, out: Path, commit: str) -> None:
    """Run `rebuild` with the commit's code: here if its uv.lock is ours, else in its own env."""
    arguments = ["-m", __name__.split(".")[0], "rebuild", str(record_file), str(out)]
    # Only the run's configuration counts: no override from this shell's environment.
    env = environment_without_overrides()
    if (project / "uv.lock").read_bytes() == (PROJECT_ROOT / "uv.lock").read_bytes():
        command = [sys.executable, *arguments]
        env["PYTHONPATH"] = str(project / "src")
    else:
        uv = shutil.which("uv") or str(PROJECT_ROOT / ".tools" / "bin" / "uv")
        command = [uv, "run", "--frozen", "--project", str(project), "python", *arguments]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ReproduceError(
            f"Retraining with the code of commit {commit[:12]} failed: {last_line(result)}"
        )
