"""csv files and their ``.jsoncols`` sidecar.

In: a .csv file, with the sidecar this package writes beside it or without one (a user's csv);
frames to write. Out: the frame (``_read_csv``): with a sidecar, checked against the csv's
sha256 and every dtype and JSON cell restored; without one, strings with empty fields missing.
``_CsvSink`` writes frames as one csv (columns that are not purely strings as JSON text per
cell) and then its sidecar (JSON columns, dtypes, the csv's sha256), so that a pair left
mismatched by an interrupted write is refused on read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from rare_core.errors import StorageError
from rare_core.storage.atomic import write_text_atomic
from rare_core.storage.formats import (
    _Sink, _common_dtype, _decode, _is_missing, _json_safe, _same_columns, _surrogate_error,
)


# csv has no list type: such cells are written as JSON text, and a sidecar file records which
# columns hold JSON, every column's dtype and the sha256 of the csv bytes it belongs to.
_CSV_JSON_COLUMNS_SUFFIX = ".jsoncols"
_CSV_LINE_TERMINATOR = "\r\n"  # RFC 4180: a field holding "\r" or "\n" gets quoted


def _sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + _CSV_JSON_COLUMNS_SUFFIX)


def _read_csv(path: Path) -> pd.DataFrame:
    """A csv file -> a frame. With our sidecar: checked against the csv's sha256, read with
    ``""`` kept as ``""``, JSON columns decoded and every dtype restored. Without one: strings,
    an empty field missing."""
    data = path.read_bytes()
    text = _decode(data, path)
    sidecar = _sidecar_of(path)
    if not sidecar.exists():
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as exc:
        raise StorageError(f"cannot read {sidecar}, the sidecar of {path}: {exc}; rerun the step") from exc
    legacy = "sha256" not in meta  # sidecar of an earlier version: no hash, empty field = missing
    if not legacy and meta["sha256"] != hashlib.sha256(data).hexdigest():
        raise StorageError(
            f"{path} does not match its sidecar {sidecar} (sha256 differs): "
            f"{path.name} was written by an interrupted write; rerun the step")
    dtypes: dict[str, str] = meta.get("dtypes", {})
    if not dtypes and not text.strip():
        return pd.DataFrame()
    if legacy:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    else:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False,
                         skip_blank_lines=False)  # a lone " " cell is a row, not a blank line
    json_columns = set(meta.get("json_columns", []))
    for col in df.columns:
        series = df[col]
        if col in json_columns:
            series = pd.Series([_load_cell(s) for s in series], index=df.index, dtype=object)
        df[col] = _restore_dtype(series, dtypes.get(col, "object" if col in json_columns else "str"))
    return df


def _load_cell(s: Any) -> Any:
    return json.loads(s) if isinstance(s, str) and s != "" else None


def _restore_dtype(series: pd.Series, dtype: str) -> pd.Series:
    """A csv column (strings, ``""`` or NaN for a missing number) -> ``dtype`` as the sidecar
    names it. Numbers are parsed per cell with ``int``/``float``: exact, no float detour."""
    def parsed(parse):
        return [None if _is_missing(s) or s == "" else parse(s) for s in series]

    if dtype in ("int64", "Int64") or dtype.startswith(("int", "uint", "Int", "UInt")):
        return pd.Series(pd.array(parsed(int), dtype=dtype), index=series.index)
    if dtype.startswith(("float", "Float")):
        values = parsed(float)
        if dtype.startswith("float"):
            values = [np.nan if v is None else v for v in values]
        return pd.Series(pd.array(values, dtype=dtype), index=series.index)
    if dtype in ("bool", "boolean"):
        values = parsed(lambda s: {"True": True, "False": False}[s])
        return pd.Series(pd.array(values, dtype=dtype), index=series.index)
    if dtype == "object":
        return series.astype(object)
    if dtype in ("str", "string"):
        return series.astype(dtype)
    try:  # datetimes, categories, ...: pandas parses its own text
        return series.map(lambda s: None if s == "" else s).astype(dtype)
    except (ValueError, TypeError):
        return series


def _textual(dtype: Any) -> bool:
    """True for the dtypes of text-or-anything columns: object and pandas' string dtypes."""
    return dtype == object or isinstance(dtype, pd.StringDtype)


def _csv_json_column(series: pd.Series) -> bool:
    """True when a csv column must be stored as JSON text: an object or string column that is
    not purely non-null strings."""
    return _textual(series.dtype) and not all(isinstance(v, str) for v in series.array)


def _csv_bytes(df: pd.DataFrame, json_columns: list, path: Path, row: int = 0, header: bool = True) -> bytes:
    """Rows of a csv -> its UTF-8 bytes (the header line first when ``header``), the cells of
    ``json_columns`` as JSON text; a lone surrogate raises a ``StorageError`` naming its row,
    counted from ``row`` for the frame's first."""
    out = df.copy()
    for col in json_columns:
        out[col] = pd.Series([json.dumps(_json_safe(v), ensure_ascii=False) for v in df[col]],
                             index=df.index, dtype=object)
    text = out.to_csv(index=False, header=header, lineterminator=_CSV_LINE_TERMINATOR)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _surrogate_error(df, path, "csv", exc, row) from exc


class _CsvSink(_Sink):
    """csv plus its sidecar (json_columns, dtypes, sha256 of the csv bytes): frames spooled, the
    last one held, the csv written at the end as ``write_frame`` writes the concatenation (see
    ``FrameWriter``)."""

    def __init__(self, path: Path, tmp: str) -> None:
        super().__init__(path, tmp)
        self.columns: list | None = None
        self.dtypes: dict = {}  # column -> the dtype of the frames' concatenation
        self.plain: dict = {}  # column -> every frame had it as text of nothing but strings
        self.held: pd.DataFrame | None = None  # the last frame; those before are in the spool
        self.spool = None

    def write(self, df: pd.DataFrame, row: int) -> None:
        if self.columns is None:
            self.columns = list(df.columns)
        else:
            df = _same_columns(df, self.columns, self.path, "csv")
        for col in self.columns:
            s = df[col]
            self.dtypes[col] = _common_dtype(self.dtypes[col], s.dtype) if col in self.dtypes else s.dtype
            self.plain[col] = self.plain.get(col, True) and _textual(s.dtype) and not _csv_json_column(s)
        if self.held is not None:
            if self.spool is None:
                self.spool = tempfile.TemporaryFile(prefix=f".{self.path.name}.", suffix=".spool", dir=self.path.parent)
            pickle.dump(self.held, self.spool, protocol=pickle.HIGHEST_PROTOCOL)
        self.held = df.copy(deep=False)

    def _frames(self) -> Iterator[pd.DataFrame]:
        if self.spool is not None:
            self.spool.seek(0)
            while True:
                try:
                    yield pickle.load(self.spool)
                except EOFError:
                    break
        yield self.held

    def commit(self) -> None:
        json_columns = [c for c in self.columns if _textual(self.dtypes[c]) and not self.plain[c]]
        digest, row = hashlib.sha256(), 0
        with open(self.tmp, "wb") as fh:
            for i, df in enumerate(self._frames()):
                recast = {c: d for c, d in self.dtypes.items() if df[c].dtype != d}
                data = _csv_bytes(df.astype(recast) if recast else df, json_columns, self.path, row, header=i == 0)
                digest.update(data)
                fh.write(data)
                row += len(df)
        self.abort()  # the spool is read
        meta = {"json_columns": [str(c) for c in json_columns],
                "dtypes": {str(c): str(self.dtypes[c]) for c in self.columns},
                "sha256": digest.hexdigest()}
        _publish_csv(self.path, json.dumps(meta), lambda: os.replace(self.tmp, self.path))

    def abort(self) -> None:
        if self.spool is not None:
            self.spool.close()


def _publish_csv(path: Path, meta: str, replace) -> None:
    """Put a finished csv in place with ``replace()`` and its sidecar ``meta`` after it. When no
    sidecar exists yet, one naming the new csv is written first as well, so that an
    interruption never leaves a step csv that reads as a user csv. Either way a reader of a
    half-done pair finds a hash mismatch."""
    sidecar = _sidecar_of(path)
    if not sidecar.exists():
        write_text_atomic(sidecar, meta)
    replace()
    write_text_atomic(sidecar, meta)
