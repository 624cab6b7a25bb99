"""The store: the only package that talks to the MLflow tracking server and registry.

Runs and their logging, the configuration record, `models:/` URIs, aliases, promotion
and rollback, and the git and DVC versions a run is pinned to.
"""
