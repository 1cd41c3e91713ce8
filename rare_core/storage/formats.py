"""What every storage format shares.

In: a path (its extension names the format), cells as pandas and pyarrow hand them out, a frame
being written. Out: the format of a path (``format_of``, ``FORMATS``); cells as plain python or
JSON-ready values (``_to_plain``, ``_json_safe``, ``_records``); the one-line ``StorageError``
that names the file a reader could not read (``_reading``, ``_decode``) or the lone surrogate a
format cannot store (``_surrogate_error``); and ``_Sink``, the interface through which
``FrameWriter`` (``frames.py``) writes each format's temp file.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from rare_core.errors import StorageError

FORMATS = ("json", "jsonl", "csv", "parquet")
STREAMED_FORMATS = ("jsonl", "parquet")  # what iter_frames reads piece by piece and count_rows counts cheaply
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def format_of(path: str | os.PathLike) -> str:
    """The storage format of ``path``, from its extension; ``StorageError`` when unsupported."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise StorageError(f"unsupported file type '.{ext}' for {path}: use one of {', '.join(FORMATS)}")
    return ext


def _is_missing(value: Any) -> bool:
    """True for None, NaN, pd.NA and NaT (scalars only; a list is never missing)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _to_plain(value: Any) -> Any:
    """numpy arrays and scalars (as parquet and pandas hand out) -> python values, recursively,
    also inside dicts (struct cells) and lists; other values unchanged."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _json_safe(v: Any) -> Any:
    """A cell -> the python value ``json.dumps`` writes: plain python, NaN/NA/NaT -> None at
    every depth (standard JSON has no NaN)."""
    v = _to_plain(v)
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    return None if _is_missing(v) else v


def _records(df: pd.DataFrame) -> list[dict]:
    """A frame -> its rows as JSON-ready dicts (see ``_json_safe``)."""
    return [{k: _json_safe(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]


def _common_dtype(a: Any, b: Any) -> Any:
    """The dtype ``pd.concat`` gives a column that is ``a`` in one frame and ``b`` in another."""
    if a == b:
        return a
    return pd.concat([pd.Series([], dtype=a), pd.Series([], dtype=b)], ignore_index=True).dtype


@contextlib.contextmanager
def _reading(path: Path, fmt: str) -> Iterator[None]:
    """Around reading ``path``: what a reader raises (ValueError, OSError, arrow errors) becomes
    a one-line ``StorageError`` naming the file; a ``StorageError`` passes as it is."""
    try:
        yield
    except StorageError:
        raise
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read {path} as {fmt}: {exc}") from exc


def _plain_objects(df: pd.DataFrame) -> pd.DataFrame:
    """A frame as read -> the same frame, each object column's cells made plain python
    (``_to_plain``: lists, dicts, no numpy values)."""
    for col in df.columns:
        if df[col].dtype == object:  # Series.map would re-infer the dtype: build it as object
            df[col] = pd.Series([_to_plain(v) for v in df[col].array], index=df.index, dtype=object)
    return df


def _decode(data: bytes, path: Path, line_offset: int = 0) -> str:
    """UTF-8 bytes (a leading BOM allowed) -> text; ``StorageError`` with the line otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = line_offset + data[: exc.start].count(b"\n") + 1
        raise StorageError(
            f"{path}, line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from exc


def _find_surrogate(df: pd.DataFrame, row: int = 0) -> str | None:
    """The first lone surrogate in ``df`` (column names, then cells at any depth) -> a message
    naming it, its row counted from ``row`` for the frame's first, or None."""
    def find(value: Any) -> str | None:
        if isinstance(value, str):
            m = _SURROGATE.search(value)
            return m.group() if m else None
        if isinstance(value, dict):
            return next((c for kv in value.items() for c in map(find, kv) if c), None)
        if isinstance(value, (list, tuple, np.ndarray)):
            return next((c for c in map(find, value) if c), None)
        return None

    for col in df.columns:
        if ch := find(col):
            return f"column name {col!r} holds a lone surrogate (U+{ord(ch):04X}) that UTF-8 cannot store"
    for col in df.columns:
        for i, value in enumerate(df[col].array):
            if ch := find(value):
                return (f"column '{col}', row {row + i} holds a lone surrogate (U+{ord(ch):04X}) "
                        "that UTF-8 cannot store")
    return None


def _surrogate_error(df: pd.DataFrame, path: Path, fmt: str, exc: Exception, row: int = 0) -> StorageError:
    found = _find_surrogate(df, row)
    if found:
        return StorageError(f"{path}: {found}; use jsonl or json")
    return StorageError(f"cannot write {path} as {fmt}: {exc}")


def _same_columns(df: pd.DataFrame, columns: list, path: Path, fmt: str) -> pd.DataFrame:
    """A later frame -> its columns in the order ``columns`` of the first; ``StorageError``
    naming a column one of them lacks."""
    if list(df.columns) == columns:
        return df
    rule = f"every frame written to one {fmt} file needs the same columns"
    for col in df.columns:
        if col not in columns:
            raise StorageError(f"{path}: column '{col}' is not in the frames written before; {rule}")
    for col in columns:
        if col not in df.columns:
            raise StorageError(f"{path}: the frame has no column '{col}', which the frames written before have; {rule}")
    return df[columns]


class _Sink:
    """How one format writes a ``FrameWriter``'s temp file ``tmp``: ``write(df, row)`` for each
    frame with rows (``row``: the rows written before it, for the positions errors name; only
    the first frame may have none), then ``commit()`` (finish the file, rename it over
    ``path``) or ``abort()`` (close what is open, quietly)."""

    def __init__(self, path: Path, tmp: str) -> None:
        self.path, self.tmp = path, tmp

    def write(self, df: pd.DataFrame, row: int) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        pass
