"""parquet files.

In: a .parquet file, whole or as an open ``ParquetFile`` read batch by batch; frames to write.
Out: frames with the dtypes the file's pandas metadata keeps, list/map/struct cells as exact
python values (``_frame_from_table``, ``_parquet_frames``); and ``_ParquetSink``, which writes
frames through one ``ParquetWriter``, promoting the file when a later frame brings a wider type.
What arrow refuses (a mixed-type column, a lone surrogate) becomes a ``StorageError`` naming the
column (``_parquet_error``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rare_core.errors import StorageError
from rare_core.storage.atomic import _temp_beside
from rare_core.storage.formats import (
    _INT64_MAX, _INT64_MIN, _Sink, _common_dtype, _is_missing, _plain_objects, _reading, _same_columns,
    _surrogate_error, _to_plain,
)


def _frame_from_table(table: pa.Table, nulls: Iterable[str] = ()) -> pd.DataFrame:
    """A parquet table (a whole file, or one batch of it) -> a frame: flat columns through
    pandas metadata, nested (list, struct, map) columns as exact python values (``to_pylist``:
    no float-cast ints, no numpy arrays).

    ``nulls``: the columns holding a null somewhere in the file; a bool or int column among them
    that converts to numpy ``bool``/``int`` (a batch without nulls) becomes ``object`` /
    ``float64``, as the whole file's column does."""
    nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
    if not nested:
        df = table.to_pandas()
    else:
        df = table.drop_columns(nested).to_pandas()
        if len(df) != table.num_rows:  # no flat column left: keep the row count
            df = pd.DataFrame(index=pd.RangeIndex(table.num_rows))
        for name in nested:
            df[name] = pd.Series(table.column(name).to_pylist(maps_as_pydicts="strict"), index=df.index, dtype=object)
        df = df[[c for c in table.column_names if c in df.columns]]
    for name in nulls:
        kind = df[name].dtype.kind if isinstance(df[name].dtype, np.dtype) else ""
        if kind == "b":
            df[name] = df[name].astype(object)
        elif kind in ("i", "u"):
            df[name] = df[name].astype("float64")
    return df


def _parquet_frames(file: pq.ParquetFile, path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """An open parquet file -> its record batches of ``rows`` rows as frames (see
    ``iter_frames``)."""
    with _reading(path, "parquet"), file:
        nulls = _null_columns(file)
        for batch in file.iter_batches(batch_size=rows):
            if batch.num_rows:
                yield _plain_objects(_frame_from_table(pa.Table.from_batches([batch]), nulls))


def _null_columns(file: pq.ParquetFile) -> list[str]:
    """The bool and integer columns of a parquet file that hold a null: from the row groups'
    statistics, or, where a row group has none, from reading the column."""
    meta = file.metadata
    leaf = {meta.schema.column(j).path: j for j in range(meta.num_columns)}
    found = []
    for field in file.schema_arrow:
        if not (pa.types.is_boolean(field.type) or pa.types.is_integer(field.type)) or field.name not in leaf:
            continue
        stats = [meta.row_group(g).column(leaf[field.name]).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_null_count for s in stats):
            has_null = any(s.null_count for s in stats)
        else:
            has_null = file.read(columns=[field.name]).column(0).null_count > 0
        if has_null:
            found.append(field.name)
    return found


def _type_names(types: Iterable[str]) -> str:
    names = sorted(set(types))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _type_conflict(values: list, where: str = "") -> tuple[str, list[str]] | None:
    """The first place in a column's cells where python types mix in a way arrow refuses
    (ints with floats are fine) -> (where, type names), or None."""
    present = [_to_plain(v) for v in values if not _is_missing(v)]
    types = {"list" if isinstance(v, (list, tuple)) else type(v).__name__ for v in present}
    if len(types - {"int", "float"}) + bool(types & {"int", "float"}) > 1:
        return where, sorted(types)
    if types == {"list"}:
        return _type_conflict([x for v in present for x in v], where or " in its list items")
    if types == {"dict"}:
        for key in dict.fromkeys(k for v in present for k in v):
            found = _type_conflict([v.get(key) for v in present], where or f" under key '{key}'")
            if found:
                return found
    return None


def _parquet_table(df: pd.DataFrame, path: Path, row: int = 0) -> tuple[pa.Table, pd.DataFrame]:
    """``df`` -> (the arrow table parquet stores for it, the frame that table was made from):
    object columns of ints with None go as ``Int64`` (not float). What arrow refuses raises
    ``_parquet_error``'s ``StorageError``."""
    out = df
    for col in df.columns:
        s = df[col]
        if s.dtype == object:
            present = [v for v in s if not _is_missing(v)]
            if present and len(present) < len(s) and all(
                    type(v) is int and _INT64_MIN <= v <= _INT64_MAX for v in present):
                out = out.copy() if out is df else out
                out[col] = pd.array([None if _is_missing(v) else v for v in s], dtype="Int64")
    try:
        return pa.Table.from_pandas(out, preserve_index=False), out
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise _parquet_error(df, path, exc, row) from exc


def _parquet_error(df: pd.DataFrame, path: Path, exc: Exception, row: int = 0) -> StorageError:
    """Arrow's refusal to convert or write ``df`` -> a ``StorageError`` naming the lone
    surrogate (its row counted from ``row``) or the mixed-type column, else the file."""
    if isinstance(exc, UnicodeEncodeError):
        return _surrogate_error(df, path, "parquet", exc, row)
    for col in df.columns:
        if df[col].dtype == object:
            found = _type_conflict(list(df[col]))
            if found:
                where, types = found
                return StorageError(
                    f"{path}: column '{col}' mixes {_type_names(types)}{where}; parquet needs one type "
                    "per column: use jsonl or json, or convert it")
    return StorageError(f"cannot write {path} as parquet: {exc}")


def _pandas_entries(table: pa.Table) -> list[dict]:
    """The per-column entries of a table's pandas metadata (name, pandas_type, numpy_type...)."""
    return json.loads(table.schema.metadata[b"pandas"])["columns"]


def _pandas_entry(dtype: Any, like: dict) -> dict:
    """The pandas-metadata entry pyarrow writes for a column of ``dtype``, named as ``like``."""
    empty = pa.Table.from_pandas(pd.DataFrame({"c": pd.Series([], dtype=dtype)}), preserve_index=False)
    return {**_pandas_entries(empty)[0], "name": like["name"], "field_name": like["field_name"]}


class _ParquetSink(_Sink):
    """parquet: a ``ParquetWriter`` opened with the first frame's schema; later frames cast to
    it, or the file promoted (rewritten) when they bring a wider type (see ``FrameWriter``)."""

    def __init__(self, path: Path, tmp: str) -> None:
        super().__init__(path, tmp)
        self.writer: pq.ParquetWriter | None = None
        self.columns: list = []
        self.dtypes: dict[str, Any] = {}  # field -> the dtype of the frames' concatenation
        self.entries: dict[str, dict[str, dict]] = {}  # field -> {dtype: a frame's pandas metadata entry}

    def write(self, df: pd.DataFrame, row: int) -> None:
        if self.writer is not None:
            df = _same_columns(df, self.columns, self.path, "parquet")
        table, out = _parquet_table(df, self.path, row)
        entries = _pandas_entries(table)
        try:
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.tmp, table.schema)
                self.columns = list(df.columns)
            else:
                table = self._conform(table)
            self.writer.write_table(table)
        except StorageError:
            raise
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise _parquet_error(df, self.path, exc, row) from exc
        for col, entry in zip(out.columns, entries):
            name, dtype = entry["field_name"], out[col].dtype
            self.dtypes[name] = _common_dtype(self.dtypes[name], dtype) if name in self.dtypes else dtype
            self.entries.setdefault(name, {}).setdefault(str(dtype), entry)

    def _conform(self, table: pa.Table) -> pa.Table:
        """A later frame's table (columns in the file's order) -> cast to the file's schema, the
        file first promoted to the types both unify to (``promote_options="permissive"``)."""
        schema = self.writer.schema
        fields = []
        for old, new in zip(schema, table.schema):
            if old.type.equals(new.type):
                fields.append(old)
                continue
            try:
                wide = pa.unify_schemas([pa.schema([old]), pa.schema([new])], promote_options="permissive")
            except pa.ArrowException as exc:
                raise StorageError(
                    f"{self.path}: column '{old.name}' is {new.type} in this frame but {old.type} in the frames "
                    "written before; parquet needs one type per column: convert it, or use jsonl or json") from exc
            fields.append(old.with_type(wide.field(0).type))
        target = pa.schema(fields, metadata=schema.metadata)
        if not target.equals(schema):
            self._promote(target)
        return self._cast(table, target)

    def _cast(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        """``table`` -> its columns cast (safely) to ``schema``'s types; ``StorageError`` naming the
        column arrow cannot cast. A column of the right type is not cast (pyarrow 26 breaks a
        ``list<null>`` cast to itself) and a cast one is validated."""
        columns = []
        for field, column in zip(schema, table.columns):
            if column.type.equals(field.type):
                columns.append(column)
                continue
            try:
                columns.append(column.cast(field.type))
                columns[-1].validate(full=True)
            except pa.ArrowException as exc:
                raise StorageError(
                    f"{self.path}: column '{field.name}' cannot be stored as {field.type} ({exc}); "
                    "parquet needs one type per column: convert it, or use jsonl or json") from exc
        return pa.Table.from_arrays(columns, schema=schema)

    def _promote(self, schema: pa.Schema) -> None:
        """Rewrite the row groups written so far with the wider ``schema``; go on writing that."""
        self.writer.close()
        tmp, writer = _temp_beside(self.path), None
        try:
            writer = pq.ParquetWriter(tmp, schema)
            for batch in pq.ParquetFile(self.tmp).iter_batches():
                writer.write_table(self._cast(pa.Table.from_batches([batch]), schema))
            os.replace(tmp, self.tmp)  # the open writer's file, now under the temp file's name
        except BaseException:
            if writer is not None:
                writer.close()
            Path(tmp).unlink(missing_ok=True)
            raise
        self.writer = writer

    def _final_metadata(self) -> dict[str, str] | None:
        """The file's pandas metadata, each column's entry the one for the dtype of the frames'
        concatenation -> the key-value metadata replacing the first frame's, or None when equal.
        ``ARROW:schema`` (the serialized arrow schema, which readers prefer) is replaced too."""
        schema = self.writer.schema
        meta = json.loads(schema.metadata[b"pandas"])
        columns = []
        for entry in meta["columns"]:
            name = entry["field_name"]
            dtype = self.dtypes[name]
            columns.append(self.entries[name].get(str(dtype)) or _pandas_entry(dtype, entry))
        if columns == meta["columns"]:
            return None
        text = json.dumps({**meta, "columns": columns})
        final = schema.with_metadata({**schema.metadata, b"pandas": text.encode("utf-8")})
        return {"pandas": text, "ARROW:schema": base64.b64encode(final.serialize().to_pybytes()).decode("ascii")}

    def commit(self) -> None:
        metadata = self._final_metadata()
        if metadata:
            self.writer.add_key_value_metadata(metadata)
        self.writer.close()
        super().commit()

    def abort(self) -> None:
        if self.writer is not None and self.writer.is_open:
            with contextlib.suppress(Exception):
                self.writer.close()
