"""Request bodies in MLflow's scoring protocol, turned into rows for the model.

Every payload `mlflow models serve` accepts is accepted here. Tables (the usual
payloads) become a list of rows, checked but not yet typed: turning rows into a
DataFrame cast to the model's signature costs about as much for one row as for
hundreds, so it is done once per batch (`to_frame`), not once per request.
Anything else is parsed by MLflow's own scoring-server functions.
https://mlflow.org/docs/latest/ml/deployment/deploy-model-locally/#local-inference-server-spec
"""

import io
import json
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data, parse_csv_input
from mlflow.types import ColSpec, DataType, Schema
from mlflow.utils.proto_json_utils import cast_df_types_according_to_schema

PAYLOAD_FORMATS = {"dataframe_split", "dataframe_records", "instances", "inputs"}
# The protocol's optional inference parameters, passed beside the data.
PAYLOAD_EXTRAS = {"params"}
FORMATS = ", ".join(sorted(PAYLOAD_FORMATS))

# The request body as documented in /openapi.json.
OPENAPI_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "Exactly one of the keys below, as in MLflow's scoring protocol.",
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "properties": {"columns": {"type": "array"}, "data": {"type": "array"}},
                    },
                    "dataframe_records": {"type": "array", "items": {"type": "object"}},
                    "instances": {"type": "array"},
                    "inputs": {},
                    "params": {"type": "object"},
                },
            }
        },
        "text/csv": {
            "schema": {
                "type": "string",
                "description": "A header row, then one row per prediction.",
            }
        },
    },
}


class PayloadError(ValueError):
    """The request cannot be scored; the message says what is wrong with it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type["PayloadError"], tuple[str, int]]:
        # Raised in the prediction process too: it must cross back intact.
        return PayloadError, (str(self), self.status)


def as_records(payload: dict[str, Any]) -> dict[str, Any]:
    """Rewrite table-shaped `instances` and `inputs` as `dataframe_records`.

    MLflow parses those two keys as tensors, which turns a missing string value
    (null) into the string "None" and silently changes the prediction. Rows
    (a list of objects) and columns (an object of equal-length lists) are tables:
    the dataframe parser keeps their missing values missing.
    """
    key = "instances" if "instances" in payload else "inputs"
    data = payload.get(key)
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        rows = data
    elif isinstance(data, dict) and data and all(isinstance(c, list) for c in data.values()):
        if len({len(c) for c in data.values()}) != 1:
            raise PayloadError(f"The columns of {key!r} must all have the same number of values.")
        rows = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    else:
        return payload
    return {**{k: v for k, v in payload.items() if k != key}, "dataframe_records": rows}


# A table as a list of rows, each a {column: value} mapping.
Rows = list[dict[str, Any]]

# Signature types `to_frame` casts itself.
DIRECT = {
    DataType.boolean,
    DataType.integer,
    DataType.long,
    DataType.float,
    DataType.double,
    DataType.string,
}


def split_rows(split: Any) -> Rows:
    """The rows of a `dataframe_split` payload: {"columns": [...], "data": [[...], ...]}."""
    if not isinstance(split, dict) or not {"columns", "data"} <= split.keys() <= {
        "columns",
        "data",
        "index",
    }:
        raise PayloadError("`dataframe_split` must be an object with `columns` and `data`.")
    columns, data = split["columns"], split["data"]
    if not isinstance(columns, list) or not isinstance(data, list):
        raise PayloadError("`columns` and `data` of `dataframe_split` must be lists.")
    for number, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise PayloadError(
                f"Row {number} of `dataframe_split` must be a list of {len(columns)} values, "
                "one per column."
            )
    return [dict(zip(columns, row, strict=True)) for row in data]


def parse_json(body: bytes, schema: Schema | None) -> Rows:
    """Parse a JSON payload in any of the protocol's formats into rows."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"The body is not valid JSON: {error}.") from None
    if not isinstance(payload, dict):
        raise PayloadError(f"The JSON body must be an object with one of {FORMATS}.")
    unknown = set(payload) - PAYLOAD_FORMATS - PAYLOAD_EXTRAS
    if unknown:
        raise PayloadError(f"Unknown keys {sorted(unknown)}: use exactly one of {FORMATS}.")
    if len(payload.keys() & PAYLOAD_FORMATS) != 1:
        raise PayloadError(f"Use exactly one of {FORMATS}.")
    payload = as_records(payload)
    if "dataframe_split" in payload:
        return split_rows(payload["dataframe_split"])
    if "dataframe_records" in payload:
        rows = payload["dataframe_records"]
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise PayloadError("`dataframe_records` must be a list of {column: value} objects.")
        return rows
    # A tensor: MLflow's parser, which needs the schema to make a table of it.
    frame = infer_and_parse_data(payload, schema=schema)  # type: ignore[arg-type]
    if not isinstance(frame, pd.DataFrame):
        raise PayloadError(
            "The model takes a table: send rows of {column: value} objects, "
            "or `dataframe_split` with columns and data."
        )
    return frame.to_dict(orient="records")  # type: ignore[return-value]


def parse(body: bytes, content_type: str, schema: Schema | None, max_rows: int) -> Rows:
    """Turn a request body into rows, or raise PayloadError naming what is wrong."""
    try:
        if content_type == "application/json":
            rows = parse_json(body, schema)
        elif content_type == "text/csv":
            frame = parse_csv_input(io.StringIO(body.decode("utf-8")), schema=schema)  # type: ignore[arg-type]
            rows = frame.to_dict(orient="records")
        else:
            raise PayloadError(
                f"Content type {content_type or 'none'!r} is not supported: "
                "send application/json or text/csv.",
                status=415,
            )
    except UnicodeDecodeError as error:
        raise PayloadError(f"The body is not valid UTF-8 text: {error}.") from None
    except MlflowException as error:
        raise PayloadError(error.message) from None
    if not rows:
        raise PayloadError("The payload has no rows to predict.")
    if len(rows) > max_rows:
        raise PayloadError(
            f"The payload has {len(rows)} rows; the limit is {max_rows} a request. "
            "Send fewer rows a request, or score a file with the `predict` command.",
            status=413,
        )
    if schema is not None and schema.has_input_names():
        present = set().union(*rows)
        missing = [name for name in schema.required_input_names() if name not in present]
        if missing:
            raise PayloadError(f"Missing columns the model needs: {missing}.")
    return rows


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
