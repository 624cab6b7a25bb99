"""Train, track, register and serve a scikit-learn model."""

from importlib.metadata import version

__version__ = version("{{ cookiecutter.project_slug }}")

# The version of mlpipe-template this project was generated from; tagged on every MLflow run.
TEMPLATE_VERSION = "{{ cookiecutter._template_version }}"
