"""Batch prediction: score a CSV file with a logged or registered model."""

from pathlib import Path

from mlflow.pyfunc.scoring_server import parse_csv_input

from .config import use_tracking_store
from .serving.model_process import load_model

PREDICTION_COLUMN = "prediction"


def predict_csv(model_uri: str, source: Path, destination: Path) -> int:
    """Write `source`'s rows with a `prediction` column to `destination`; return the row count."""
    use_tracking_store()
    # The model as the server loads it: its fast path, where it has one.
    predict, schema = load_model(model_uri)
    # Parsed as the server parses text/csv: columns take the types of the model's signature.
    with source.open() as file:
        frame = parse_csv_input(file) if schema is None else parse_csv_input(file, schema=schema)
    if schema is not None and schema.has_input_names():
        missing = [name for name in schema.input_names() if name not in frame.columns]
        if missing:
            raise ValueError(
                f"{source.name} lacks the model's input columns {', '.join(map(str, missing))}: "
                "add them (see the model's signature with `evaluate` or the MLflow UI)."
            )
    predictions = predict(frame)
    destination.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(**{PREDICTION_COLUMN: predictions}).to_csv(destination, index=False)
    return len(frame)
