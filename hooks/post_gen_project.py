"""Remove the files of options not chosen and print the next steps.

Standard library only, no network, no `git init`. Idempotent: cruft runs it
again on every update, so removing what is already gone is not an error.
"""

import json
import shutil
from pathlib import Path

CONTEXT = json.loads(r"""{{ cookiecutter | tojson }}""")

# Files that belong to one option value only, relative to the project root.
FILES_BY_OPTION = {
    ("ci_provider", "github"): [".github"],
    ("ci_provider", "gitlab"): [".gitlab-ci.yml"],
}


def remove(path: Path) -> None:
    """Delete a file or a folder if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def main() -> None:
    """Remove unchosen files, then say what to run next."""
    root = Path.cwd()
    for (option, value), paths in FILES_BY_OPTION.items():
        if CONTEXT[option] != value:
            for relative in paths:
                remove(root / relative)

    print(
        f"\nCreated {CONTEXT['project_slug']}. Next:\n\n"
        f"    cd {CONTEXT['project_slug']}\n"
        "    make install    # create .venv with uv\n"
        "    make train      # train, track in MLflow, register, promote\n"
        "    make serve      # serve the champion model on http://127.0.0.1:8080\n"
    )


if __name__ == "__main__":
    main()
