"""Model input: rows and frames made into the frame the model's signature describes.

The server (rows of JSON) and batch scoring (chunks of a file) give the model the same
frame: the signature's columns, in its order, each of its type. Numbers, booleans and
strings are cast here, column by column, ten times faster than MLflow's own cast;
other types (dates, binary, arrays) go through MLflow's.
"""

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from mlflow.types import ColSpec, DataType, Schema
from mlflow.utils.proto_json_utils import cast_df_types_according_to_schema

from ..errors import PayloadError

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
                columns[name] = pd.array(values, dtype=column_dtype(data_type))
            else:
                columns[name] = np.array(values, dtype=column_dtype(data_type))
        except (TypeError, ValueError) as error:
            raise PayloadError(
                f"Column {name!r} must hold {data_type.name} values: {error}."
            ) from None
    return pd.DataFrame(columns)


def column_dtype(data_type: DataType) -> Any:
    """The dtype of a column of this signature type in the frames the model is given.

    Strings take pandas' string dtype, as `read_csv` gives: a missing value is NaN,
    which imputers see as missing, whether or not other rows of the batch have a value.
    """
    return "str" if data_type == DataType.string else data_type.to_pandas()


def typed_frame(frame: pd.DataFrame, schema: Schema | None) -> pd.DataFrame:
    """`to_frame` for a DataFrame (a chunk of a batch job): the signature's columns and types.

    Raises ValueError naming the first column whose values are not of its type.
    """
    if schema is None or not schema.has_input_names():
        return frame
    if not is_direct(schema):
        cast: pd.DataFrame = cast_df_types_according_to_schema(frame, schema)  # type: ignore[no-untyped-call]
        return cast
    columns: dict[str, Any] = {}
    for spec in schema.inputs:
        name, data_type = str(spec.name), spec.type
        assert isinstance(data_type, DataType)  # is_direct checked it
        try:
            columns[name] = frame[name].astype(column_dtype(data_type))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"column {name!r} must hold {data_type.name} values: {error}"
            ) from None
    return pd.DataFrame(columns)


def missing_inputs(schema: Schema | None, columns: Iterable[str]) -> list[str]:
    """The model's required input columns that `columns` lacks, in the signature's order.

    What a request (`protocol.py`) and a batch job (`batch/`) check before scoring.
    """
    if schema is None or not schema.has_input_names():
        return []
    present = set(columns)
    return [str(name) for name in schema.required_input_names() if name not in present]
