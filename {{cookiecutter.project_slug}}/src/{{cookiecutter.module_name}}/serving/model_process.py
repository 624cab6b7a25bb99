"""Everything that runs in the model's process: load the model, then predict batches.

The server sends each batch of requests over a pipe (`predictor.py` is the server's
end); here the rows of the whole batch become one DataFrame, typed by the model's
signature, and one `predict` call scores them. If the batch fails, its requests are
predicted one by one, so that a bad request fails alone.
"""

import gc
import itertools
import logging
import pickle
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.types import ColSpec, DataType, Schema
from mlflow.utils.proto_json_utils import cast_df_types_according_to_schema

from ..config import use_tracking_store
from .protocol import PayloadError, Rows

log = logging.getLogger(__name__)

# The first message of a model process that has loaded its model.
READY = "ready"
# Predicts rows: the model's `predict`, with the typing of the rows around it.
Predict = Callable[[Rows], Any]

# Signature types `to_frame` casts itself.
DIRECT = {
    DataType.boolean,
    DataType.integer,
    DataType.long,
    DataType.float,
    DataType.double,
    DataType.string,
}


def main(model_uri: str, connection: Connection) -> None:
    """The model process: load the model, then predict each batch received, until EOF."""
    # The server decides when this process stops: signals sent to the whole
    # process group (Ctrl-C, a supervisor) must not cut predictions in flight short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        use_tracking_store()
        predict = load_predict(model_uri)
    except Exception as error:  # reported by the server, which cannot start without it
        connection.send(f"{type(error).__name__}: {error}")
        return
    # The model lives as long as the process: keep the garbage collector from
    # walking through it again and again, which stalls predictions under load.
    gc.freeze()
    connection.send(READY)
    while True:
        try:
            jobs = connection.recv()
        except EOFError:  # the server closed the pipe, or is gone
            return
        outcomes = predict_jobs(predict, jobs)
        try:
            connection.send(outcomes)
        except (pickle.PicklingError, TypeError, AttributeError):
            # An exception that cannot be pickled: send its message instead.
            connection.send([portable(outcome) for outcome in outcomes])


def load_predict(model_uri: str) -> Predict:
    """Load the model; return its predict for rows.

    A scikit-learn model whose signature `to_frame` casts entirely is called directly:
    the frame already has the signature's columns and types, and MLflow's checks in
    `PyFuncModel.predict` would build it once more (1.5 ms a call, about 15 % of the
    default model's). Any other model goes through `PyFuncModel.predict`.
    """
    model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    if is_direct(schema) and model.loader_module == "mlflow.sklearn":
        estimator = model.get_raw_model()
        return lambda rows: estimator.predict(to_frame(rows, schema))
    return lambda rows: model.predict(to_frame(rows, schema))


def predict_jobs(predict: Predict, jobs: list[Rows]) -> list[Any]:
    """Predict the jobs' rows together; if that fails, alone, so a bad request fails alone.

    Returns one item per job: its predictions, or the exception it raised.
    """
    if len(jobs) > 1:
        try:
            batch = [row for rows in jobs for row in rows]
            return split(predict(batch), [len(rows) for rows in jobs])
        except Exception:  # retried one by one below, where each error is reported
            log.debug("A batch of %d requests failed; predicting them one by one.", len(jobs))
    outcomes: list[Any] = []
    for rows in jobs:
        try:
            outcomes.append(split(predict(rows), [len(rows)])[0])
        except Exception as error:  # delivered to the request it belongs to
            outcomes.append(error)
    return outcomes


def split(predictions: Any, sizes: Sequence[int]) -> list[Any]:
    """Cut the predictions of a batch back into one slice per request, in order."""
    bounds = np.cumsum([0, *sizes])
    if len(predictions) != bounds[-1]:
        raise ValueError(
            f"The model returned {len(predictions)} predictions for {bounds[-1]} rows."
        )
    if isinstance(predictions, pd.DataFrame | pd.Series):
        return [predictions.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    array = np.asarray(predictions)
    return [array[a:b] for a, b in itertools.pairwise(bounds)]


def portable(outcome: Any) -> Any:
    """An outcome that can cross the pipe: an exception becomes its message."""
    if isinstance(outcome, Exception):
        return RuntimeError(f"{type(outcome).__name__}: {outcome}")
    return outcome


def is_direct(schema: Schema | None) -> bool:
    """Whether `to_frame` casts every input of the signature itself."""
    return (
        schema is not None
        and schema.has_input_names()
        and all(
            isinstance(spec, ColSpec) and isinstance(spec.type, DataType) and spec.type in DIRECT
            for spec in schema.inputs
        )
    )


def to_frame(rows: Rows, schema: Schema | None) -> pd.DataFrame:
    """Make a DataFrame of rows, each column cast to its type in the model's signature.

    Numbers, booleans and strings are cast here, column by column, which is ten times
    faster than MLflow's cast; other types (dates, binary, arrays) go through MLflow's.
    The frame has the signature's columns, in its order; a missing value is NaN.
    Turning rows into a typed frame costs about as much for one row as for hundreds,
    so it is done once a batch, here, not once a request.
    """
    if schema is None or not schema.has_input_names():
        return pd.DataFrame(rows)
    if not is_direct(schema):
        cast: pd.DataFrame = cast_df_types_according_to_schema(pd.DataFrame(rows), schema)  # type: ignore[no-untyped-call]
        return cast
    columns: dict[str, Any] = {}
    for spec in schema.inputs:
        name, data_type = str(spec.name), spec.type
        assert isinstance(data_type, DataType)  # is_direct checked it
        values = [row.get(name) for row in rows]
        try:
            if data_type == DataType.string:
                # pandas' string dtype, as `read_csv` gives: a missing value is NaN, which
                # imputers see as missing, whether or not other rows of the batch have a value.
                columns[name] = pd.array(values, dtype="str")
            else:
                columns[name] = np.array(values, dtype=data_type.to_pandas())
        except (TypeError, ValueError) as error:
            raise PayloadError(
                f"Column {name!r} must hold {data_type.name} values: {error}."
            ) from None
    return pd.DataFrame(columns)
