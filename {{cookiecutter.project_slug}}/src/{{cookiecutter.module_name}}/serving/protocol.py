"""MLflow's scoring protocol: request bodies become rows, predictions and errors become JSON.

Every payload `mlflow models serve` accepts is accepted here, and what it refuses
is refused, with the differences listed in the README's "Serving" section. Tables
(the usual payloads) become a list of rows, checked but not yet typed: the model's
process types the rows of a whole batch at once. Anything else is parsed by
MLflow's own scoring-server functions.
https://mlflow.org/docs/latest/ml/deployment/deploy-model-locally/#local-inference-server-spec
"""

import io
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pandas as pd
from fastapi.responses import JSONResponse, Response
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import (
    infer_and_parse_data,
    parse_csv_input,
    parse_parquet_input,
    predictions_to_json,
)
from mlflow.types import Schema
from mlflow.types.schema import Array
from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

from ..errors import PayloadError
from ..runtime.model_input import Rows, missing_inputs

PAYLOAD_FORMATS = {"dataframe_split", "dataframe_records", "instances", "inputs"}
# Keys of MLflow's unified input for language models, which take no table.
LLM_KEYS = {"messages", "prompt", "input"}
FORMATS = ", ".join(sorted(PAYLOAD_FORMATS))
JSON, CSV, PARQUET = "application/json", "text/csv", "application/vnd.apache.parquet"
CONTENT_TYPES = (JSON, CSV, PARQUET)

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


# A request's id and its rows, as the model process receives them.
IdentifiedRows = tuple[str, Rows]


def as_records(payload: dict[str, Any], schema: Schema | None) -> dict[str, Any]:
    """Rewrite table-shaped `instances` and `inputs` as `dataframe_records`.

    MLflow parses those two keys as tensors, which turns a missing string value
    (null) into the string "None" and silently changes the prediction. Rows
    (a list of objects) and columns (an object of lists, or of single values for one
    row, as MLflow reads them) are tables: the dataframe parser keeps their missing
    values missing. Refused as MLflow refuses them: rows of `instances` with other
    columns, columns of different lengths, and vectors where a value belongs.
    """
    key = "instances" if "instances" in payload else "inputs"
    data = payload.get(key)
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        if key == "instances" and len({frozenset(row) for row in data}) > 1:
            raise PayloadError("The rows of 'instances' must all have the same columns.")
        rows = data
    elif isinstance(data, dict) and data and all(map(is_column_or_value, data.values())):
        rows = column_rows(key, data, schema)
    else:
        return payload
    if any(isinstance(value, list | dict) for row in rows for value in row.values()):
        raise PayloadError(
            f"Each value of {key!r} must be a single value of its column and row, "
            "not a list or an object: the model takes a table.",
            code="INVALID_PARAMETER_VALUE",
        )
    return {**{k: v for k, v in payload.items() if k != key}, "dataframe_records": rows}


def is_column_or_value(value: Any) -> bool:
    """A column (a list of values) or a single value, as `inputs` may give a column."""
    return value is None or isinstance(value, list | str | int | float | bool)


def column_rows(key: str, columns: dict[str, Any], schema: Schema | None) -> Rows:
    """The rows of columns: lists of one length, or single values repeated down every row.

    MLflow builds its frame from them the same way (`pd.DataFrame`), so a payload of
    single values alone is one row. Columns of different lengths are refused as MLflow
    refuses them: its parser of `instances` checks the lengths of the model's required
    columns (a bad request, `parse_instances_data`); other columns, and those of
    `inputs`, fail when its schema check cannot build a frame of them.
    """
    lengths = {name: len(column) for name, column in columns.items() if isinstance(column, list)}
    if len(set(lengths.values())) > 1:
        checked = lengths.keys() & required_columns(schema, lengths)
        parsing = key == "instances" and len({lengths[name] for name in checked}) > 1
        raise PayloadError(
            f"The columns of {key!r} must all have the same number of values.",
            code="BAD_REQUEST" if parsing else "INVALID_PARAMETER_VALUE",
        )
    count = set(lengths.values()).pop() if lengths else 1
    lists = [value if isinstance(value, list) else [value] * count for value in columns.values()]
    return [dict(zip(columns, values, strict=True)) for values in zip(*lists, strict=True)]


def required_columns(schema: Schema | None, columns: Iterable[str]) -> set[str]:
    """The columns whose lengths MLflow's `instances` parser compares.

    The signature's required columns but arrays (all `columns` for a model without
    named inputs).
    """
    if schema is None or not schema.has_input_names():
        return set(columns)
    return {
        str(spec.name)
        for spec in schema.inputs
        if spec.required and not isinstance(spec.type, Array)
    }


def record_rows(records: Any, schema: Schema | None) -> Rows:
    """The rows of a `dataframe_records` payload: [{column: value}, ...]."""
    if isinstance(records, list) and all(isinstance(row, dict) for row in records):
        return records
    # As MLflow: what pandas cannot make a frame of is a bad request (raised here);
    # rows of lists or single values make a frame of numbered columns, none the model's.
    dataframe_from_parsed_json(records, pandas_orient="records", schema=schema)  # type: ignore[no-untyped-call]
    raise PayloadError(
        "`dataframe_records` must be a list of {column: value} objects: "
        "rows of values without names name none of the model's inputs.",
        code="INVALID_PARAMETER_VALUE",
    )


def split_rows(split: Any, schema: Schema | None) -> Rows:
    """The rows of a `dataframe_split` payload: {"columns": [...], "data": [[...], ...]}."""
    if isinstance(split, dict) and "data" in split and "columns" not in split:
        # As MLflow: a frame it cannot build is a bad request (raised here); one it
        # can build has numbered columns, none of them the model's.
        dataframe_from_parsed_json(split, pandas_orient="split")  # type: ignore[no-untyped-call]
        raise PayloadError(
            "`dataframe_split` must be an object with `columns` and `data`: "
            "without `columns`, none of the model's inputs is named.",
            code="INVALID_PARAMETER_VALUE",
        )
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
    try:  # one set of the names: the common case (all distinct) costs nothing more
        distinct = len(set(columns)) == len(columns)
    except TypeError:  # a list or an object: MLflow's server fails (500), pandas cannot hash it
        raise PayloadError("The names in `columns` of `dataframe_split` must be text.") from None
    if not distinct:
        refuse_model_columns_twice(split, schema)
    return [dict(zip(columns, row, strict=True)) for row in data]


def refuse_model_columns_twice(split: dict[str, Any], schema: Schema | None) -> None:
    """Refuse a `dataframe_split` that names a column of the model twice, as MLflow does."""
    columns = split["columns"]
    inputs = set(schema.input_names()) if schema is not None and schema.has_input_names() else set()
    names = Counter(column for column in columns if isinstance(column, str) and column in inputs)
    if twice := sorted(name for name, count in names.items() if count > 1):
        # As MLflow: its parser casts the model's columns and fails on a column of text
        # given twice (a bad request, raised here); its schema check then fails on any
        # of the model's columns given twice. Other columns given twice are ignored.
        dataframe_from_parsed_json(split, pandas_orient="split", schema=schema)  # type: ignore[no-untyped-call]
        raise PayloadError(
            f"Columns of the model given more than once in `dataframe_split`: {twice}.",
            code="INVALID_PARAMETER_VALUE",
        )


def parse_json(body: bytes, schema: Schema | None) -> Rows:
    """Parse a JSON payload in any of the protocol's formats into rows."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"The body is not valid JSON: {error}.") from None
    if not isinstance(payload, dict):
        raise PayloadError(f"The JSON body must be an object with one of {FORMATS}.")
    if llm := sorted(payload.keys() & LLM_KEYS):
        raise PayloadError(
            f"The model takes a table, not a language model's input {llm}.",
            code="INVALID_PARAMETER_VALUE",
        )
    # As MLflow's server: keys other than the formats (and `params`) are ignored.
    formats = sorted(payload.keys() & PAYLOAD_FORMATS)
    if len(formats) != 1:
        raise PayloadError(
            f"Use exactly one of {FORMATS}; the body has "
            f"{', '.join(formats) if formats else 'none'} (keys: {sorted(payload)})."
        )
    if formats[0] != "dataframe_split" and payload[formats[0]] in ([], {}):
        # MLflow finds no column in it, and says the model misses its inputs.
        raise PayloadError("The payload has no rows to predict.", code="INVALID_PARAMETER_VALUE")
    payload = as_records({formats[0]: payload[formats[0]]}, schema)
    if "dataframe_split" in payload:
        return split_rows(payload["dataframe_split"], schema)
    if "dataframe_records" in payload:
        return record_rows(payload["dataframe_records"], schema)
    # A tensor: MLflow's parser, which needs the schema to make a table of it.
    frame = infer_and_parse_data(payload, schema=schema)  # type: ignore[arg-type]
    if not isinstance(frame, pd.DataFrame):
        # MLflow's schema check finds none of the model's columns in it.
        raise PayloadError(
            "The model takes a table: send rows of {column: value} objects, "
            "or `dataframe_split` with columns and data.",
            code="INVALID_PARAMETER_VALUE",
        )
    return frame.to_dict(orient="records")  # type: ignore[return-value]


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header; PayloadError (415) for what MLflow refuses.

    Exactly as MLflow's server: the media type as written (case matters), a `charset`
    parameter other than UTF-8, or any other parameter (`format=pandas-split` of
    the protocol before MLflow 2.0), is refused.
    """
    media, *parameters = (part.strip() for part in content_type.split(";"))
    values = {key: value for key, _, value in (part.partition("=") for part in parameters)}
    if values.get("charset", "utf-8").lower() != "utf-8":
        raise PayloadError("The body must be UTF-8 text: send charset=utf-8 or no charset.", 415)
    if unknown := sorted(values.keys() - {"charset"}):
        raise PayloadError(
            f"Unknown content type parameters {unknown}: send only the media type "
            "(MLflow 2.0 replaced `format=...` by the payload's key).",
            status=415,
        )
    if media not in CONTENT_TYPES:
        raise PayloadError(
            f"Content type {content_type or 'none'!r} is not supported: "
            f"send one of {', '.join(CONTENT_TYPES)}.",
            status=415,
        )
    return media


def parse(body: bytes, content_type: str, schema: Schema | None, max_rows: int) -> Rows:
    """Turn a request body into rows, or raise PayloadError naming what is wrong."""
    media = media_type(content_type)
    try:
        if media == JSON:
            rows = parse_json(body, schema)
        elif media == CSV:
            frame = parse_csv_input(io.StringIO(body.decode("utf-8")), schema=schema)  # type: ignore[arg-type]
            rows = frame.to_dict(orient="records")
        else:
            frame = parse_parquet_input(io.BytesIO(body))  # type: ignore[no-untyped-call]
            rows = frame.to_dict(orient="records")
    except UnicodeDecodeError as error:
        raise PayloadError(f"The body is not valid UTF-8 text: {error}.") from None
    except MlflowException as error:
        raise PayloadError(error.message, code=error.error_code) from None
    if not rows:
        raise PayloadError("The payload has no rows to predict.")
    if len(rows) > max_rows:
        raise PayloadError(
            f"The payload has {len(rows)} rows; the limit is {max_rows} a request. "
            "Send fewer rows a request, or score a file with the `predict` command.",
            status=413,
        )
    if missing := missing_inputs(schema, set().union(*rows)):
        raise PayloadError(
            f"Missing columns the model needs: {missing}.", code="INVALID_PARAMETER_VALUE"
        )
    return rows


def predictions_response(predictions: Any) -> Response:
    """The answer to a scored request: `{"predictions": ...}`, written by MLflow's own encoder."""
    body = io.StringIO()
    predictions_to_json(predictions, body)  # type: ignore[no-untyped-call]
    return Response(body.getvalue(), media_type=JSON)


def error_response(message: str, status: int, code: str | None = None) -> JSONResponse:
    """An error in the shape MLflow's clients parse (`error_code`, `message`), no stack trace."""
    code = code or ("BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    return JSONResponse({"error_code": code, "message": message}, status_code=status)
