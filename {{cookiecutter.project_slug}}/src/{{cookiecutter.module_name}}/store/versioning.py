"""Versioning: the git state of the code and the DVC version of the data a run used.

A run can be rebuilt (`reproduce`) only if both are pinned: a commit with no
uncommitted change, and a data file whose DVC hash file (`<file>.dvc`, committed
with the code) matches its bytes. The data itself lives in a DVC remote:
`DVC_REMOTE` (any URL DVC knows: a folder, s3://, gs://, azure://), by default a
folder beside the project. `data-version` records a new version of the data and
pushes it there.
https://dvc.org/doc/start/data-management/data-versioning
"""

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import PROJECT_ROOT
from ..core.data import Fingerprint, fingerprint
from ..errors import VersioningError
from ..settings import child_environment, locations

# The remote's name in `.dvc/config.local` (git-ignored), written by the commands below.
REMOTE_NAME = "project"


@dataclass(frozen=True)
class DataVersion:
    """What pins a data file: its DVC hash, if DVC tracks it, and why not otherwise."""

    path: str  # relative to the project root where it lies inside it
    fingerprint: Fingerprint
    dvc_md5: str | None
    problem: str | None


@dataclass(frozen=True)
class CodeVersion:
    """The git commit of the project and whether its work tree had uncommitted changes."""

    commit: str
    dirty: bool


def remote_url() -> str:
    """The DVC remote: `DVC_REMOTE`, or the default folder beside the project."""
    return locations().dvc_remote


def code_version(root: Path = PROJECT_ROOT) -> CodeVersion:
    """Return the project's git commit ("unknown" outside git) and its dirty flag."""
    try:
        commit = git("rev-parse", "HEAD", cwd=root)
        dirty = bool(git("status", "--porcelain", cwd=root))
    except (OSError, subprocess.CalledProcessError):
        return CodeVersion("unknown", False)
    return CodeVersion(commit, dirty)


def git(*args: str, cwd: Path = PROJECT_ROOT) -> str:
    """Run git in `cwd` and return what it printed."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


def relative(path: Path, root: Path = PROJECT_ROOT) -> str:
    """`path` relative to the project root if it lies inside, else as it is."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def dvc_file(path: Path) -> Path:
    """The hash file DVC writes beside a file it tracks."""
    return path.with_name(path.name + ".dvc")


def tracked_md5(path: Path) -> str | None:
    """The MD5 that `<path>.dvc` records for `path`, or None if DVC does not track it."""
    hash_file = dvc_file(path)
    if not hash_file.is_file():
        return None
    outs = (yaml.safe_load(hash_file.read_text()) or {}).get("outs") or []
    for out in outs:
        if out.get("path") == path.name and out.get("md5"):
            return str(out["md5"])
    return None


def data_version(path: Path, fingerprint: Fingerprint) -> DataVersion:
    """Compare a data file's MD5 (DVC 3 hashes a file's bytes with MD5) with its DVC record."""
    recorded = tracked_md5(path)
    problem = None
    if recorded is None:
        problem = f"DVC does not track {relative(path)}: run `make data-version`"
    elif recorded != fingerprint.md5:
        problem = f"{relative(path)} changed since its DVC version: run `make data-version`"
    return DataVersion(relative(path), fingerprint, recorded, problem)


def reproducibility(code: CodeVersion, data: DataVersion) -> str | None:
    """Why a run with this code and data could not be rebuilt, or None if it could."""
    if code.commit == "unknown":
        return "the project is not a git repository: `git init` and commit it"
    if code.dirty:
        return "the work tree has uncommitted changes: commit them first"
    return data.problem


def dvc(*args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    """Run DVC's command line, from this environment, in `cwd`."""
    if importlib.util.find_spec("dvc") is None:
        raise VersioningError("DVC is not installed here: run `make install` (the dev group).")
    # DVC's usage analytics would try to reach the internet: off, whatever the config says.
    env = child_environment(DVC_NO_ANALYTICS="1")
    command = [sys.executable, "-m", "dvc", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def use_remote(url: str, cwd: Path = PROJECT_ROOT) -> None:
    """Make `url` the default DVC remote of the checkout at `cwd` (its git-ignored local config)."""
    result = dvc("remote", "add", "--local", "--default", "--force", REMOTE_NAME, url, cwd=cwd)
    if result.returncode != 0:
        raise VersioningError(f"DVC refused the remote {url}: {last_line(result)}")


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    """DVC's (or git's) own explanation: its last error line, else the last line it printed."""
    lines = (result.stderr or result.stdout).strip().splitlines()
    errors = [line for line in lines if line.startswith(("ERROR", "error", "fatal"))]
    return (errors or lines or [f"exit status {result.returncode}"])[-1]


def record_data_version(path: Path) -> DataVersion:
    """Hash `path` with DVC, stage its hash file in git, and push the data to the remote."""
    if code_version().commit == "unknown":
        raise VersioningError(
            "Versioning data needs git: run `git init`, commit the project, then try again."
        )
    if not path.is_file():
        raise VersioningError(f"{path} not found: there is no data to version.")
    if relative(path) == str(path):
        raise VersioningError(
            f"{path} lies outside the project: DVC versions files inside it; copy it under data/."
        )
    added = dvc("add", relative(path))
    if added.returncode != 0:
        raise VersioningError(f"`dvc add {relative(path)}` failed: {last_line(added)}")
    # `core.autostage` (in .dvc/config) stages the hash file; git add says so if it did not.
    git("add", relative(dvc_file(path)))
    url = remote_url()
    use_remote(url)
    pushed = dvc("push", relative(dvc_file(path)))
    if pushed.returncode != 0:
        raise VersioningError(f"Pushing {relative(path)} to {url} failed: {last_line(pushed)}")
    return data_version(path, fingerprint(path))
