"""The requests of MLflow's own scoring-server tests, as cases any tabular model can be sent.

Taken from `tests/pyfunc/test_scoring_server.py` and `tests/helper_functions.py` in
mlflow/mlflow (every request they send to a table-shaped model), and from what
`mlflow models serve` 3.17 was measured to answer beside them (content-type
parameters, empty tables, extra keys and columns, values of other types). Built
from a model's own input example, so every case fits the model under test.

Each case says what `mlflow models serve` answers: 200 with the predictions of
`scored` (rows of the example, as a request would carry them), or an error status.
Where this project's server deliberately answers otherwise, `ours` holds its status
and `why` the reason; the README's "Serving" section lists the same differences.
This module needs only the standard library and pandas: the template's tests load
it too, to send every case to both servers.
"""

import io
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

JSON = "application/json"
CSV = "text/csv"


@dataclass(frozen=True)
class Case:
    """One request to /invocations and what the servers answer."""

    name: str
    content_type: str | None
    body: bytes
    # What `mlflow models serve` answers.
    status: int
    # The rows a 200 answer predicts, in order.
    scored: tuple[dict[str, Any], ...] = ()
    # Where this server deliberately differs: its status, and why.
    ours: int | None = None
    why: str = ""
    # MLflow's `error_code` of a refusal in JSON (a 415 of MLflow's is plain text):
    # BAD_REQUEST where it cannot parse the body, INVALID_PARAMETER_VALUE where the
    # model's schema does not find its columns in what it parsed.
    error_code: str | None = None

    @property
    def expected_status(self) -> int:
        """What this project's server answers."""
        return self.status if self.ours is None else self.ours


def dumps(payload: Any) -> bytes:
    """JSON as MLflow's clients send it."""
    return json.dumps(payload).encode()


def numeric_column(columns: list[str], rows: list[list[Any]]) -> str | None:
    """A column whose example values are all numbers (missing ones aside), if there is one."""
    for index, column in enumerate(columns):
        values = [row[index] for row in rows if row[index] is not None]
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return column
    return None


def text_column(columns: list[str], rows: list[list[Any]]) -> str | None:
    """A column whose example values are all text (missing ones aside), if there is one."""
    for index, column in enumerate(columns):
        values = [row[index] for row in rows if row[index] is not None]
        if values and all(isinstance(v, str) for v in values):
            return column
    return None


def tensor_error_code(
    columns: list[str], rows: list[list[Any]], sent: list[Any] | None = None
) -> str:
    """MLflow's code for values without names: it casts each to the first column's type.

    A word (among the values `sent`, the example's own by default) where the first
    column is numeric fails that cast (BAD_REQUEST); otherwise the cast works and the
    schema finds none of the model's columns.
    """
    first_is_numeric = numeric_column(columns[:1], [row[:1] for row in rows]) is not None
    values = [value for row in rows for value in row] if sent is None else sent
    words = any(isinstance(value, str) for value in values)
    return "BAD_REQUEST" if first_is_numeric and words else "INVALID_PARAMETER_VALUE"


def cases(columns: list[str], rows: list[list[Any]]) -> list[Case]:
    """Every case, for a model whose input example has `columns` and `rows` (JSON values)."""
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    scored = tuple(records)
    split = {"columns": columns, "data": rows}
    with_index = {"index": list(range(len(rows))), **split}
    frame = pd.DataFrame(records, columns=columns)
    csv = frame.to_csv(index=False).encode()
    shuffled = list(reversed(columns))
    one = scored[:1]
    found = [
        # test_scoring_server_responds_to_malformed_json_input_with_error_code_and_message
        Case("malformed JSON", JSON, b"this is,,,, not valid json", 400, error_code="BAD_REQUEST"),
        # ..._responds_to_invalid_json_format_with_error_code_and_message
        Case("a number", JSON, b"1", 400, error_code="BAD_REQUEST"),
        Case("a string", JSON, b'"1"', 400, error_code="BAD_REQUEST"),
        Case("a list", JSON, b"[1]", 400, error_code="BAD_REQUEST"),
        Case(
            "no format key",
            JSON,
            dumps({"not": "a serialized dataframe"}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "two format keys",
            JSON,
            dumps({"dataframe_records": [], "dataframe_split": {"data": []}}),
            400,
            error_code="BAD_REQUEST",
        ),
        # ..._responds_to_invalid_pandas_input_format_with_stacktrace_and_error_code
        Case(
            "records under dataframe_split",
            JSON,
            dumps({"dataframe_split": records}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "split under dataframe_records",
            JSON,
            dumps({"dataframe_records": with_index}),
            400,
            error_code="BAD_REQUEST",
        ),
        # ..._responds_to_invalid_dataframe_with_stacktrace_and_error_code
        Case(
            "split whose index and data disagree",
            JSON,
            dumps({"dataframe_split": {"index": [1, 2], "data": [[1], [2], [3]]}}),
            400,
            error_code="BAD_REQUEST",
        ),
        # ..._responds_to_incompatible_inference_dataframe_with_stacktrace_and_error_code
        Case(
            "a frame of other columns",
            JSON,
            dumps(
                {
                    "dataframe_split": {
                        "index": list(range(10)),
                        "columns": [0],
                        "data": [[i] for i in range(10)],
                    }
                }
            ),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        # ..._responds_to_invalid_csv_input_with_stacktrace_and_error_code
        Case("empty CSV", CSV, b"", 400, error_code="BAD_REQUEST"),
        # ..._successfully_evaluates_correct_dataframes_with_pandas_records_orientation
        Case("dataframe_records", JSON, dumps({"dataframe_records": records}), 200, scored),
        Case(
            "dataframe_records, charset=UTF-8",
            f"{JSON}; charset=UTF-8",
            dumps({"dataframe_records": records}),
            200,
            scored,
        ),
        # ..._successfully_evaluates_correct_dataframes_with_pandas_split_orientation
        # (and ScoringServerClient.invoke, which sends a DataFrame this way)
        Case(
            "dataframe_split with index", JSON, dumps({"dataframe_split": with_index}), 200, scored
        ),
        Case(
            "dataframe_split, charset=UTF-8",
            f"{JSON}; charset=UTF-8",
            dumps({"dataframe_split": with_index}),
            200,
            scored,
        ),
        # ..._responds_to_invalid_content_type_request_with_unsupported_content_type_code
        Case("unsupported content type", "not_a_supported_content_type", dumps(split), 415),
        Case("unknown content-type parameter", f"{JSON}; something=something", dumps(split), 415),
        # ..._successfully_evaluates_correct_tf_serving_sklearn (a table needs its names)
        Case(
            "instances as lists of values",
            JSON,
            dumps({"instances": rows}),
            400,
            error_code=tensor_error_code(columns, rows),
        ),
        # test_serving_model_with_schema: columns in another order, records, columnar inputs
        Case(
            "dataframe_split, columns in another order",
            JSON,
            dumps(
                {
                    "dataframe_split": {
                        "columns": shuffled,
                        "data": [[r[c] for c in shuffled] for r in records],
                    }
                }
            ),
            200,
            scored,
        ),
        Case(
            "inputs as columns",
            JSON,
            dumps({"inputs": {c: [r[c] for r in records] for c in columns}}),
            200,
            scored,
        ),
        # test_serving_model_with_param_schema: params beside the data
        Case(
            "params beside the data",
            JSON,
            dumps({"dataframe_split": split, "params": {"param1": "value"}}),
            200,
            scored,
        ),
        Case(
            "params that are not an object",
            JSON,
            dumps({"dataframe_split": split, "params": "x"}),
            200,
            scored,
        ),
        # Measured beside the test suite.
        Case(
            "an unknown key beside the data",
            JSON,
            dumps({"dataframe_split": split, "extra": 1}),
            200,
            scored,
        ),
        Case(
            "a language model's key",
            JSON,
            dumps({"dataframe_split": split, "input": 1}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case("instances as records", JSON, dumps({"instances": records}), 200, scored),
        Case("inputs as records", JSON, dumps({"inputs": records}), 200, scored),
        Case(
            "dataframe_records and instances",
            JSON,
            dumps({"dataframe_records": records, "instances": records}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "empty dataframe_records",
            JSON,
            dumps({"dataframe_records": []}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "empty instances",
            JSON,
            dumps({"instances": []}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "empty inputs", JSON, dumps({"inputs": []}), 400, error_code="INVALID_PARAMETER_VALUE"
        ),
        Case(
            "dataframe_split without rows",
            JSON,
            dumps({"dataframe_split": {"columns": columns, "data": []}}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "dataframe_split without columns",
            JSON,
            dumps({"dataframe_split": {"data": rows}}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "JSON with a byte-order mark",
            JSON,
            b"\xef\xbb\xbf" + dumps({"dataframe_records": records}),
            200,
            scored,
        ),
        Case(
            "charset=utf-8 without a space",
            f"{JSON};charset=utf-8",
            dumps({"dataframe_records": records}),
            200,
            scored,
        ),
        Case("CSV", CSV, csv, 200, scored),
        Case("CSV, charset=utf-8", f"{CSV}; charset=utf-8", csv, 200, scored),
        Case(
            "CSV, columns in another order",
            CSV,
            frame[shuffled].to_csv(index=False).encode(),
            200,
            scored,
        ),
        Case("CSV with a header parameter", f"{CSV}; header=present", csv, 415),
        Case(
            "media type in capitals", "Application/JSON", dumps({"dataframe_records": records}), 415
        ),
        Case(
            "Charset in capitals",
            f"{JSON}; Charset=UTF-8",
            dumps({"dataframe_records": records}),
            415,
        ),
        Case(
            "quoted charset", f'{JSON}; charset="utf-8"', dumps({"dataframe_records": records}), 415
        ),
        Case("charset utf8", f"{JSON}; charset=utf8", dumps({"dataframe_records": records}), 415),
        Case(
            "charset latin-1",
            f"{JSON}; charset=latin-1",
            dumps({"dataframe_records": records}),
            415,
        ),
        Case(
            "format=pandas-split",
            f"{JSON}; format=pandas-split",
            dumps({"dataframe_split": split}),
            415,
        ),
        Case("a trailing semicolon", f"{JSON};", dumps({"dataframe_records": records}), 415),
        Case("text/json", "text/json", dumps({"dataframe_records": records}), 415),
        Case(
            "an extra column",
            JSON,
            dumps({"dataframe_records": [{**r, "unused extra": 1} for r in records]}),
            200,
            scored,
        ),
        Case(
            "a missing column (JSON)",
            JSON,
            dumps(
                {
                    "dataframe_records": [
                        {k: v for k, v in r.items() if k != columns[0]} for r in records
                    ]
                }
            ),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "a missing column (CSV)",
            CSV,
            frame.drop(columns=columns[0]).to_csv(index=False).encode(),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        # The payloads of issue "The last differences from `mlflow models serve`", and the
        # shapes MLflow's `parse_tf_serving_input` reads beside them (MLflow 3.17.2).
        Case("inputs as a row of single values", JSON, dumps({"inputs": one[0]}), 200, one),
        Case("instances as a row of single values", JSON, dumps({"instances": one[0]}), 200, one),
        Case(
            "inputs: single values beside a column",
            JSON,
            dumps({"inputs": {**one[0], columns[0]: [r[columns[0]] for r in scored[:2]]}}),
            200,
            tuple({**one[0], columns[0]: r[columns[0]]} for r in scored[:2]),
        ),
        Case(
            "inputs: columns of different lengths",
            JSON,
            dumps(
                {"inputs": {c: [r[c] for r in scored[: 1 + (c == columns[0])]] for c in columns}}
            ),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "instances whose values are vectors",
            JSON,
            dumps({"instances": [{**r, columns[0]: [r[columns[0]]] * 2} for r in one]}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "inputs whose columns are matrices",
            JSON,
            dumps({"inputs": {c: [[r[c]] for r in records] for c in columns}}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "instances: rows of other columns",
            JSON,
            dumps(
                {
                    "instances": [
                        records[0],
                        {k: v for k, v in records[1].items() if k != columns[0]},
                    ]
                }
            ),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "inputs: an empty object",
            JSON,
            dumps({"inputs": {}}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "inputs: columns without values",
            JSON,
            dumps({"inputs": {c: [] for c in columns}}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "a chat request",
            JSON,
            dumps({"messages": [{"role": "user", "content": "Hello"}]}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "a completions request",
            JSON,
            dumps({"prompt": "Hello"}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "an embeddings request",
            JSON,
            dumps({"input": "Hello"}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        # Issue 28: the shapes MLflow 3.17.2 parses beside those above.
        Case(
            "instances as columns",
            JSON,
            dumps({"instances": {c: [r[c] for r in records] for c in columns}}),
            200,
            scored,
        ),
        Case(
            # MLflow's instances parser compares the lengths of the model's required
            # columns (here every column has a length of its own).
            "instances: columns of different lengths",
            JSON,
            dumps(
                {
                    "instances": {
                        c: [rows[j % len(rows)][i] for j in range(i + 1)]
                        for i, c in enumerate(columns)
                    }
                }
            ),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "inputs as lists of values",
            JSON,
            dumps({"inputs": rows}),
            400,
            error_code=tensor_error_code(columns, rows),
        ),
        Case(
            "inputs as one list of values",
            JSON,
            dumps({"inputs": rows[0]}),
            400,
            error_code=tensor_error_code(columns, rows[:1]),
        ),
        Case(
            "instances as one list of values",
            JSON,
            dumps({"instances": rows[0]}),
            400,
            error_code=tensor_error_code(columns, rows[:1]),
        ),
        Case(
            "inputs as a number",
            JSON,
            dumps({"inputs": 1}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "instances as a number",
            JSON,
            dumps({"instances": 1}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "inputs as a word",
            JSON,
            dumps({"inputs": "x"}),
            400,
            error_code=tensor_error_code(columns, rows, ["x"]),
        ),
        Case(
            "instances: a record then a list",
            JSON,
            dumps({"instances": [records[0], rows[1]]}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            # pandas numbers the columns of rows given as lists: none is the model's.
            "dataframe_records as lists of values",
            JSON,
            dumps({"dataframe_records": rows}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "dataframe_records as a number",
            JSON,
            dumps({"dataframe_records": 1}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "dataframe_records: a row without a column",
            JSON,
            dumps(
                {
                    "dataframe_records": [
                        records[0],
                        {k: v for k, v in records[1].items() if k != columns[0]},
                    ]
                }
            ),
            200,
            (records[0], {k: v for k, v in records[1].items() if k != columns[0]}),
        ),
        Case(
            "dataframe_split without data",
            JSON,
            dumps({"dataframe_split": {"columns": columns}}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "dataframe_split with an unknown key",
            JSON,
            dumps({"dataframe_split": {**split, "dtypes": {}}}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "dataframe_split: rows shorter than the columns",
            JSON,
            dumps({"dataframe_split": {"columns": columns, "data": [r[:-1] for r in rows]}}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "dataframe_split as a string",
            JSON,
            dumps({"dataframe_split": "x"}),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "a list as a column name",
            JSON,
            dumps(
                {"dataframe_split": {"columns": [*columns, ["x"]], "data": [[*r, 1] for r in rows]}}
            ),
            500,
            ours=400,
            why="MLflow's server fails (500) on a column name pandas cannot hash; "
            "this one says the names must be text.",
        ),
        Case(
            "a key given twice (the last one counts)",
            JSON,
            b'{"dataframe_records": [], "dataframe_records": ' + dumps(records) + b"}",
            200,
            scored,
        ),
        Case("params null", JSON, dumps({"dataframe_split": split, "params": None}), 200, scored),
        Case("params alone", JSON, dumps({"params": {"a": 1}}), 400, error_code="BAD_REQUEST"),
        Case("an empty body", JSON, b"", 400, error_code="BAD_REQUEST"),
        Case("null", JSON, b"null", 400, error_code="BAD_REQUEST"),
        Case("true", JSON, b"true", 400, error_code="BAD_REQUEST"),
        Case(
            "JSON that is not UTF-8",
            JSON,
            b'{"dataframe_records": "\xff"}',
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "JSON in UTF-16",
            JSON,
            json.dumps({"dataframe_records": records}).encode("utf-16"),
            200,
            scored,
        ),
        Case(
            "spaces around the media type",
            f" {JSON} ; charset=utf-8 ",
            dumps({"dataframe_records": records}),
            200,
            scored,
        ),
        Case(
            "charset without a value",
            f"{JSON}; charset",
            dumps({"dataframe_records": records}),
            415,
        ),
        Case(
            "charset=utf-8 twice",
            f"{JSON}; charset=utf-8; charset=utf-8",
            dumps({"dataframe_records": records}),
            200,
            scored,
        ),
        Case("multipart/form-data", "multipart/form-data; boundary=x", b"--x--", 415),
        Case("text/plain", "text/plain", dumps({"dataframe_records": records}), 415),
        Case(
            "a chat request beside the data",
            JSON,
            dumps({"messages": [], "dataframe_split": split}),
            400,
            error_code="INVALID_PARAMETER_VALUE",
        ),
        Case(
            "signature_name beside instances",
            JSON,
            dumps({"instances": records, "signature_name": "x"}),
            200,
            scored,
        ),
        Case("CSV that is not UTF-8", CSV, csv + b"\xff\xfe\n", 400, error_code="BAD_REQUEST"),
        Case(
            "CSV: a header only",
            CSV,
            frame.iloc[:0].to_csv(index=False).encode(),
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "CSV: an extra column",
            CSV,
            frame.assign(**{"unused extra": 1}).to_csv(index=False).encode(),
            200,
            scored,
        ),
        Case("CSV with the index (pandas' to_csv)", CSV, frame.to_csv().encode(), 200, scored),
        Case(
            "CSV: a row of its first value alone",
            CSV,
            csv + pd.DataFrame([rows[0][:1]]).to_csv(header=False, index=False).encode(),
            200,
            (*scored, {columns[0]: rows[0][0]}),
        ),
        Case("CSV, charset=latin-1", f"{CSV}; charset=latin-1", csv, 415),
        Case("CSV, a trailing semicolon", f"{CSV};", csv, 415),
        Case("CSV, Charset in capitals", f"{CSV}; Charset=utf-8", csv, 415),
        Case(
            "malformed Parquet",
            "application/vnd.apache.parquet",
            b"not parquet",
            400,
            error_code="BAD_REQUEST",
        ),
        Case(
            "no content type",
            None,
            dumps({"dataframe_records": records}),
            500,
            ours=415,
            why="MLflow's server fails (500) on a request without a Content-Type; "
            "this one says which types it takes.",
        ),
    ]
    number = numeric_column(columns, rows)
    if number is not None:

        def change(value: Any) -> list[dict[str, Any]]:
            return [{**record, number: value(record[number])} for record in one]

        found += [
            Case(
                "a number as a string",
                JSON,
                dumps({"dataframe_records": change(lambda v: None if v is None else str(v))}),
                200,
                one,
            ),
            Case(
                "a word in a numeric column",
                JSON,
                dumps({"dataframe_records": change(lambda v: "abc")}),
                400,
                error_code="BAD_REQUEST",
            ),
            Case(
                "a missing number",
                JSON,
                dumps({"dataframe_records": change(lambda v: None)}),
                200,
                tuple(change(lambda v: None)),
            ),
            # Issue 28: the shapes MLflow 3.17.2 parses beside those above.
            Case(
                "a word in a numeric column (instances)",
                JSON,
                dumps({"instances": change(lambda v: "abc")}),
                400,
                error_code="BAD_REQUEST",
            ),
            Case(
                "a word in a numeric column (inputs)",
                JSON,
                dumps({"inputs": change(lambda v: "abc")[0]}),
                400,
                error_code="BAD_REQUEST",
            ),
            Case(
                "a word in a numeric column (dataframe_split)",
                JSON,
                dumps(
                    {
                        "dataframe_split": {
                            "columns": columns,
                            "data": [list(r.values()) for r in change(lambda v: "abc")],
                        }
                    }
                ),
                400,
                error_code="BAD_REQUEST",
            ),
            Case(
                "a word in a numeric column (CSV)",
                CSV,
                frame.iloc[:1].assign(**{number: "abc"}).to_csv(index=False).encode(),
                400,
                error_code="BAD_REQUEST",
            ),
            Case(
                "an object in a numeric column",
                JSON,
                dumps({"dataframe_records": change(lambda v: {"a": 1})}),
                400,
                error_code="BAD_REQUEST",
            ),
            Case(
                "a list in a numeric column",
                JSON,
                dumps({"dataframe_records": change(lambda v: [1, 2])}),
                400,
                error_code="BAD_REQUEST",
            ),
            Case(
                "a boolean in a numeric column",
                JSON,
                dumps({"dataframe_records": change(lambda v: True)}),
                200,
                tuple(change(lambda v: True)),
            ),
            Case(
                "NaN in a numeric column",
                JSON,
                dumps({"dataframe_records": change(lambda v: float("nan"))}),
                200,
                tuple(change(lambda v: float("nan"))),
            ),
            Case(
                "Infinity in a numeric column",
                JSON,
                dumps({"dataframe_records": change(lambda v: float("inf"))}),
                400,
                error_code="BAD_REQUEST",
            ),
            Case(
                "CSV: a missing number",
                CSV,
                frame.assign(**{number: None}).to_csv(index=False).encode(),
                200,
                tuple({**record, number: None} for record in scored),
            ),
            Case(
                # MLflow's cast of the column works; its schema check fails on it.
                "dataframe_split: a numeric column given twice",
                JSON,
                dumps(
                    {
                        "dataframe_split": {
                            "columns": [*columns, number],
                            "data": [[*r, r[columns.index(number)]] for r in rows],
                        }
                    }
                ),
                400,
                error_code="INVALID_PARAMETER_VALUE",
            ),
        ]
    text = text_column(columns, rows)
    if text is not None:
        found += [
            Case(
                "a number in a text column",
                JSON,
                dumps({"dataframe_records": [{**record, text: 5} for record in one]}),
                200,
                tuple({**record, text: 5} for record in one),
            ),
            Case(
                # MLflow's cast of a text column fails on a column given twice.
                "dataframe_split: a text column given twice",
                JSON,
                dumps(
                    {
                        "dataframe_split": {
                            "columns": [*columns, text],
                            "data": [[*r, r[columns.index(text)]] for r in rows],
                        }
                    }
                ),
                400,
                error_code="BAD_REQUEST",
            ),
        ]
    return found


def parquet(columns: list[str], rows: list[list[Any]]) -> list[Case]:
    """Parquet bodies (MLflow reads them with pyarrow, which the serving image leaves out)."""
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    body = io.BytesIO()
    pd.DataFrame(records, columns=columns).to_parquet(body)
    media = "application/vnd.apache.parquet"
    return [
        Case("Parquet", media, body.getvalue(), 200, tuple(records)),
        # MLflow reads a charset parameter of any content type, and UTF-8 is allowed.
        Case(
            "Parquet, charset=utf-8",
            f"{media}; charset=utf-8",
            body.getvalue(),
            200,
            tuple(records),
        ),
    ]
