"""The core: data, pipeline, metrics, the fast path, the reference profile and drift.

Pure computation on frames and fitted models. It knows no MLflow store, no HTTP and no
Spark (import-linter forbids them here), so every other layer can build on it.
"""
