"""Batch prediction: score a CSV file with a logged or registered model."""

from pathlib import Path

import mlflow
from mlflow.pyfunc.scoring_server import parse_csv_input

from .config import use_tracking_store

PREDICTION_COLUMN = "prediction"


def predict_csv(model_uri: str, source: Path, destination: Path) -> int:
    """Write `source`'s rows with a `prediction` column to `destination`; return the row count."""
    use_tracking_store()
    model = mlflow.pyfunc.load_model(model_uri)
    # Parsed as the server parses text/csv: columns take the types of the model's signature.
    schema = model.metadata.get_input_schema()
    with source.open() as file:
        frame = parse_csv_input(file, schema=schema)
    predictions = model.predict(frame)
    destination.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(**{PREDICTION_COLUMN: predictions}).to_csv(destination, index=False)
    return len(frame)
