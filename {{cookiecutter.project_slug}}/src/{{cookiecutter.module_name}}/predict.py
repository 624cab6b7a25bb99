"""Batch prediction: score a CSV file with a logged or registered model."""

from pathlib import Path

import mlflow
import pandas as pd

from .tracking import tracking_uri

PREDICTION_COLUMN = "prediction"


def predict_csv(model_uri: str, source: Path, destination: Path) -> int:
    """Write `source`'s rows with a `prediction` column to `destination`; return the row count."""
    mlflow.set_tracking_uri(tracking_uri())
    model = mlflow.pyfunc.load_model(model_uri)
    frame = pd.read_csv(source)
    # The model's signature selects and checks the columns it needs; others are kept as they are.
    predictions = model.predict(frame)
    destination.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(**{PREDICTION_COLUMN: predictions}).to_csv(destination, index=False)
    return len(frame)
