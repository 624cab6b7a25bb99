"""The local engine: score files of any size on one machine, one chunk of rows at a time.

Each chunk is read, typed by the model's signature, scored and written before the
next is read, so memory follows `[batch] chunk_rows`, not the input's size. CSV is
parsed by pandas as training and the server parse it (the same numbers, to the bit);
Parquet by pyarrow, a row group slice at a time. Every file's columns (and a Parquet
file's types) are checked before the first row is scored.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
from mlflow.types import DataType
from tqdm import tqdm

from ..errors import BatchJobError
from ..runtime.model import frame_predictor
from ..runtime.model_input import column_dtype, typed_frame
from .job import (
    MODEL_NAME,
    MODEL_VERSION,
    PREDICTION,
    BatchModel,
    Inputs,
    id_columns,
    is_uri,
    probability_column,
    staged,
)

NUMERIC = {DataType.integer, DataType.long, DataType.float, DataType.double, DataType.boolean}


@dataclass(frozen=True)
class Chunk:
    """Rows of one input file: the columns read, as pandas; how far into the file they end."""

    frame: pd.DataFrame
    # Arrow columns carried as they are (a Parquet file's own types).
    carried: dict[str, pa.Array]
    # Bytes of the file behind these rows, for the progress bar.
    position: int


class Source(Protocol):
    """An input file, checked when opened: its id columns and their types, then its chunks."""

    path: str
    ids: list[str]

    def id_type(self, name: str) -> pa.DataType:
        """The output type of an id column that is not a model input."""
        ...

    def chunks(self) -> Iterator[Chunk]:
        """The file's rows, `chunk_rows` at a time."""
        ...


def unreadable(path: str, kind: str, error: BaseException) -> BatchJobError:
    """The error of a file that is not what its name says."""
    return BatchJobError(f"{path} is not a readable {kind} file ({type(error).__name__}: {error}).")


class CsvSource:
    """A CSV file, read by pandas with the signature's types; id columns as text."""

    def __init__(self, path: str, model: BatchModel, ids: Sequence[str], chunk_rows: int) -> None:
        self.path, self.model, self.chunk_rows = path, model, chunk_rows
        try:
            header = pd.read_csv(path, nrows=0).columns
        except (ValueError, pd.errors.EmptyDataError) as error:  # UnicodeDecodeError included
            raise unreadable(path, "CSV", error) from None
        self.ids = id_columns(ids, [str(name) for name in header], model, path)
        assert model.schema is not None
        # As MLflow's server parses CSV: each input column takes its signature's type.
        self.dtypes: dict[str, Any] = dict(
            zip(model.inputs, model.schema.pandas_types(), strict=True)
        )
        for spec in model.schema.inputs:
            if isinstance(spec.type, DataType):
                self.dtypes[str(spec.name)] = column_dtype(spec.type)
        # An id is text: CSV has no types, and an id's leading zeros are part of it.
        self.dtypes.update({name: "str" for name in self.ids if name not in self.dtypes})
        self.columns = [*model.inputs, *(name for name in self.ids if name not in model.inputs)]

    def id_type(self, name: str) -> pa.DataType:
        """Ids of a CSV file are text."""
        return pa.string()

    def chunks(self) -> Iterator[Chunk]:
        """The rows of the file, `chunk_rows` at a time, each column of its type."""
        with open(self.path, "rb") as handle:
            try:
                reader = pd.read_csv(
                    handle, usecols=self.columns, dtype=self.dtypes, chunksize=self.chunk_rows
                )
            except ValueError as error:
                raise unreadable(self.path, "CSV", error) from None
            start = 0
            while True:
                try:
                    frame = next(reader)
                except StopIteration:
                    return
                except ValueError as error:
                    raise BatchJobError(self.explain(start, error)) from None
                yield Chunk(frame, {}, handle.tell())
                start += len(frame)

    def explain(self, start: int, error: ValueError) -> str:
        """Name the line and column of the value that stopped the chunk starting at row `start`."""
        schema = self.model.schema
        assert schema is not None
        numeric = [str(s.name) for s in schema.inputs if s.type in NUMERIC]
        try:
            text = pd.read_csv(
                self.path, usecols=numeric, dtype="str", skiprows=range(1, start + 1),
                nrows=self.chunk_rows,
            )  # fmt: skip
        except ValueError:
            text = pd.DataFrame()
        for spec in schema.inputs:
            name = str(spec.name)
            if name not in text:
                continue
            values = text[name]
            problem = "a value that is not a number"
            bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
            if not bad.any() and spec.type in {DataType.integer, DataType.long}:
                problem, bad = "a missing value", values.isna()
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                # Line numbers as an editor shows them: the header is line 1.
                return (
                    f"{self.path}, line {start + row + 2}: column {name!r} has {problem} "
                    f"({values.iloc[row]!r}); the model takes {type_name(spec.type)} values there."
                )
        return f"{self.path}: rows {start + 1} onwards cannot be read: {error}."


def type_name(data_type: Any) -> str:
    """A signature type as the model's signature names it (double, string, ...)."""
    return str(getattr(data_type, "name", data_type))


def compatible(data_type: Any, arrow: pa.DataType) -> bool:
    """Whether a Parquet column of type `arrow` can be cast to the signature's `data_type`."""
    if pa.types.is_null(arrow) or not isinstance(data_type, DataType):
        return True
    if pa.types.is_dictionary(arrow):
        arrow = arrow.value_type
    if data_type in NUMERIC:
        return bool(
            pa.types.is_integer(arrow)
            or pa.types.is_floating(arrow)
            or pa.types.is_boolean(arrow)
            or pa.types.is_decimal(arrow)
        )
    if data_type == DataType.string:
        return bool(pa.types.is_string(arrow) or pa.types.is_large_string(arrow))
    return True


class ParquetSource:
    """A Parquet file, read by pyarrow; id columns keep the file's types."""

    def __init__(self, path: str, model: BatchModel, ids: Sequence[str], chunk_rows: int) -> None:
        self.path, self.model, self.chunk_rows = path, model, chunk_rows
        try:
            self.file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as error:
            raise unreadable(path, "Parquet", error) from None
        schema = self.file.schema_arrow
        self.ids = id_columns(ids, schema.names, model, path)
        assert model.schema is not None
        for spec in model.schema.inputs:
            arrow = schema.field(str(spec.name)).type
            if not compatible(spec.type, arrow):
                # pandas 3 writes text as large_string: to a reader, both are string.
                held = str(arrow).removeprefix("large_")
                raise BatchJobError(
                    f"{path}: column {spec.name!r} holds {held} values; the model takes "
                    f"{type_name(spec.type)} values there."
                )
        self.types = {name: schema.field(name).type for name in self.ids}
        self.columns = [*model.inputs, *(name for name in self.ids if name not in model.inputs)]

    def id_type(self, name: str) -> pa.DataType:
        """A Parquet file's id column keeps its type."""
        return self.types[name]

    def chunks(self) -> Iterator[Chunk]:
        """The rows of the file, `chunk_rows` at a time."""
        size, rows, done = Path(self.path).stat().st_size, max(self.file.metadata.num_rows, 1), 0
        try:
            for batch in self.file.iter_batches(batch_size=self.chunk_rows, columns=self.columns):
                done += batch.num_rows
                carried = {
                    name: batch.column(name) for name in self.ids if name not in self.model.inputs
                }
                yield Chunk(
                    batch.select(self.model.inputs).to_pandas(), carried, size * done // rows
                )
        except (pa.ArrowException, OSError) as error:
            raise unreadable(self.path, "Parquet", error) from None


SOURCES: dict[str, Callable[[str, BatchModel, Sequence[str], int], Source]] = {
    "csv": CsvSource,
    "parquet": ParquetSource,
}


def output_schema(sources: Sequence[Source], model: BatchModel) -> pa.Schema:
    """The output's columns: the ids, then the model's; every file must give the ids one type."""
    first = sources[0]
    for source in sources[1:]:
        if source.ids != first.ids:
            raise BatchJobError(
                f"{source.path} and {first.path} have different columns besides the model's "
                f"({source.ids} and {first.ids}): set [batch] id_columns or --id-column."
            )
    fields = []
    for name in first.ids:
        if name in model.inputs:  # an input carried as an id: as the model was given it
            fields.append(pa.field(name, model.input_type(name)))
            continue
        types = {source.path: str(source.id_type(name)) for source in sources}
        if len(set(types.values())) > 1:
            raise BatchJobError(f"Column {name!r} has different types in the inputs: {types}.")
        fields.append(pa.field(name, first.id_type(name)))
    return pa.schema([*fields, *model.fixed_columns()])


class ChunkScorer:
    """Scores a chunk into a table of the output's schema."""

    def __init__(self, model: BatchModel, schema: pa.Schema) -> None:
        self.model, self.schema = model, schema
        # The model as the server runs it: its fast path, where it has one.
        self.predict = frame_predictor(model.pyfunc)
        self.raw = model.pyfunc.get_raw_model() if model.classes is not None else None  # type: ignore[no-untyped-call]

    def score(self, chunk: Chunk, source: Source) -> pa.Table:
        """The chunk's ids, predictions (and probabilities), model name and version."""
        try:
            typed = typed_frame(chunk.frame, self.model.schema)
        except ValueError as error:
            raise BatchJobError(f"{source.path}: {error}.") from None
        columns: dict[str, Any] = {}
        for name in source.ids:
            columns[name] = chunk.carried.get(
                name, typed[name] if name in typed else chunk.frame[name]
            )
        columns[PREDICTION] = np.asarray(self.predict(typed))
        if self.raw is not None:
            probabilities = np.asarray(self.raw.predict_proba(typed))
            for label, values in zip(self.model.classes or [], probabilities.T, strict=True):
                columns[probability_column(label)] = values
        rows = len(typed)
        columns[MODEL_NAME] = pa.repeat(self.model.described.name, rows).cast(pa.string())
        columns[MODEL_VERSION] = pa.repeat(self.model.version, rows).cast(pa.int64())
        arrays = [
            pa.array(columns[field.name], type=field.type, from_pandas=True)
            if not isinstance(columns[field.name], pa.Array | pa.ChunkedArray)
            else columns[field.name].cast(field.type)
            for field in self.schema
        ]
        return pa.Table.from_arrays(arrays, schema=self.schema)


@contextmanager
def writer(path: Path, schema: pa.Schema, csv: bool) -> Iterator[Callable[[pa.Table], None]]:
    """Append tables to a Parquet file, or to a CSV file with one header row."""
    if csv:
        with pyarrow.csv.CSVWriter(str(path), schema) as csv_writer:
            yield csv_writer.write_table
    else:
        with pq.ParquetWriter(str(path), schema) as parquet_writer:
            yield parquet_writer.write_table


def score_locally(
    inputs: Inputs, output: str, model: BatchModel, ids: Sequence[str], chunk_rows: int
) -> int:
    """Score every row of `inputs` into `output` (.csv, else Parquet); return the rows."""
    remote = [location for location in (*inputs.files[:1], output) if is_uri(location)]
    if remote:
        raise BatchJobError(
            f"The local engine reads and writes local files: use --engine spark for {remote[0]}."
        )
    destination = Path(output)
    kind = SOURCES[inputs.format]
    sources: list[Source] = [kind(file, model, ids, chunk_rows) for file in inputs.files]
    schema = output_schema(sources, model)
    scorer = ChunkScorer(model, schema)
    sizes = [Path(source.path).stat().st_size for source in sources]
    rows = 0
    with (
        staged(destination) as temporary,
        writer(temporary, schema, csv=destination.suffix.lower() == ".csv") as write,
        # On a terminal only: a log or a pipe gets no progress bar.
        tqdm(total=sum(sizes), unit="B", unit_scale=True, disable=None, desc="predict") as bar,
    ):
        for source, size in zip(sources, sizes, strict=True):
            done = 0
            for chunk in source.chunks():
                part = scorer.score(chunk, source)
                write(part)
                rows += part.num_rows
                bar.update(chunk.position - done)
                done = chunk.position
            bar.update(size - done)
    return rows
