"""Refresh the generated project's uv.lock after a change to its pyproject.toml.

Bakes the defaults into a temporary folder, runs `uv lock` there, and writes the
lock back into the template with the project's name turned into its variable.
Run it with `make lock`.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_LOCK = ROOT / "{{cookiecutter.project_slug}}" / "uv.lock"


def main() -> int:
    """Bake, lock, and copy the lock back."""
    with tempfile.TemporaryDirectory() as folder:
        project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=folder))
        slug = project.name
        # Start from the current lock, so that `uv lock` changes only what it must.
        previous = TEMPLATE_LOCK.read_text().replace("{{ cookiecutter.project_slug }}", slug)
        (project / "uv.lock").write_text(previous)
        subprocess.run(["uv", "lock", *sys.argv[1:]], cwd=project, check=True)
        lock = (project / "uv.lock").read_text()
    marker = f'\nname = "{slug}"\n'
    if lock.count(marker) != 1:
        raise SystemExit(f"Expected the project's name once in uv.lock, found {lock.count(marker)}.")
    TEMPLATE_LOCK.write_text(lock.replace(marker, '\nname = "{{ cookiecutter.project_slug }}"\n'))
    print(f"Wrote {TEMPLATE_LOCK.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
