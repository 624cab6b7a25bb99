"""Serving: the model behind an HTTP API that speaks MLflow's scoring protocol."""
