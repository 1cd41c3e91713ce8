"""Frame I/O by extension: the format layer used by everything else.

In: a path whose extension picks json, jsonl, csv or parquet, and frames to write. Out:
``read_frame`` / ``write_frame`` for a whole file, ``iter_frames`` / ``count_rows`` /
``frame_columns`` / ``FrameWriter`` for files too big to hold at once, ``remove_frame``. Each
format's reading and writing lives in its own module (``json_format``, ``csv_format``,
``parquet_format``); writes are atomic (``atomic``): temp file + ``os.replace``. What each format
gives back (``read_frame(write_frame(df, p))``):

* **jsonl / json**: every cell as its JSON value (NaN, None and pd.NA all become ``null``, also
  inside lists and dicts); on read a column whose non-null values are all JSON integers is
  ``int64`` (no nulls) or ``Int64`` (with nulls), other columns get pandas' usual inference
  (``str`` for strings, ``float64`` for numbers, ``object`` otherwise). Lone surrogates survive
  (such a record is written with ``\\uXXXX`` escapes). A zero-row frame keeps no columns.
* **csv** (written with a ``.jsoncols`` sidecar): exact dtypes and values. Object/string
  columns that are not purely non-null strings (lists, dicts, bools, None, mixed types) are
  stored as JSON text per cell; ``""`` stays ``""``. The sidecar records the sha256 of the csv
  it describes, so a csv/sidecar pair left mismatched by an interrupted write is refused. A
  user csv without a sidecar reads as strings with empty fields missing.
* **parquet**: the dtypes pandas metadata keeps (``Int64`` included); list and dict cells come
  back as python lists/dicts, a dict column being a struct: every dict reads back with the
  union of the column's keys (an absent key as None). One type per column: mixed columns are
  refused with a ``StorageError`` naming them.

csv and parquet cannot store a lone surrogate: writing one raises a ``StorageError`` naming the
column and row (the 0-based position, as in ``df.iloc``).

Streaming, for files too big to hold at once (a sharded run of a million documents):

* ``iter_frames(path, rows)`` -> the file's rows in order, in frames of at most ``rows`` rows,
  each converted as ``read_frame`` converts a file; jsonl and parquet are read piece by piece,
  json and csv are read whole (no incremental parser here) and then cut.
* ``count_rows(path)`` -> how many rows ``read_frame`` would return: a jsonl's lines counted
  without parsing them, a parquet's footer.
* ``FrameWriter(path)``: ``with FrameWriter(p) as w: w.write(df1); w.write(df2)`` writes one
  file from frame after frame, atomically when the block ends, reading back as ``write_frame``
  of the frames' concatenation; ``write_frame`` is a ``FrameWriter`` given one frame.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow.parquet as pq

from rare_core.errors import StorageError
from rare_core.storage.atomic import _temp_beside, writing
from rare_core.storage.csv_format import _CsvSink, _read_csv, _sidecar_of
from rare_core.storage.formats import _Sink, _plain_objects, _reading, format_of
from rare_core.storage.json_format import (
    _JsonSink, _count_jsonl, _frame_from_records, _jsonl_frames, _jsonl_records, _read_json,
)
from rare_core.storage.parquet_format import _ParquetSink, _frame_from_table, _parquet_frames


def read_frame(path: str | os.PathLike) -> pd.DataFrame:
    """Read a json/jsonl/csv/parquet file (by extension) -> a DataFrame whose list and dict
    cells are python lists and dicts. Any file that cannot be read raises a one-line
    ``StorageError`` naming it (missing, a directory, empty, not UTF-8, broken JSON with its
    line, not parquet, csv not matching its sidecar)."""
    path, fmt = _input(path)
    with _reading(path, fmt):
        if fmt == "parquet":
            df = _frame_from_table(pq.read_table(path))
        elif fmt == "jsonl":
            df = _frame_from_records(list(_jsonl_records(path)))
        elif fmt == "json":
            df = _frame_from_records(_read_json(path))
        else:
            df = _read_csv(path)
    return _plain_objects(df)


def iter_frames(path: str | os.PathLike, rows: int) -> Iterator[pd.DataFrame]:
    """The rows of a json/jsonl/csv/parquet file (by extension) -> an iterator of frames of at
    most ``rows`` rows each, in file order, each with a RangeIndex from 0; a file without rows
    yields no frame.

    Each frame is converted as ``read_frame`` converts a whole file, so that
    ``pd.concat(list(iter_frames(p, n)), ignore_index=True)`` holds ``read_frame(p)``'s rows:

    * jsonl: ``rows`` records at a time (blank lines skipped). A frame's columns are the keys
      seen so far in the file, in first-seen order: a key a record lacks is None, a key first
      seen in a later frame is absent from the earlier ones. dtypes are inferred per frame, as
      ``read_frame`` infers them for a file of those records: an int column with a null in one
      frame only is ``Int64`` there and ``int64`` in the others.
    * parquet: the file's record batches of ``rows`` rows (``ParquetFile.iter_batches``), each
      converted with the file's pandas metadata, so dtypes are the file's (``Int64`` included);
      a bool or int column holding a null somewhere in the file is ``object`` / ``float64`` in
      every frame, as ``read_frame`` gives it, also in a batch without nulls.
    * json, csv: read whole by ``read_frame`` (neither can be read in pieces without a parser of
      its own), then cut into frames: all the rows are in memory at once.

    A missing, directory, empty or unsupported file raises ``read_frame``'s ``StorageError``
    when ``iter_frames`` is called; an error in a jsonl line (named as ``read_frame`` names it,
    with its line number in the file) is raised when the iteration reaches it, after the frames
    before it. ``rows`` that is not a positive int raises ``ValueError``."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a positive integer, got {rows!r}")
    path, fmt = _input(path)
    if fmt == "jsonl":
        return _jsonl_frames(path, rows)
    if fmt == "parquet":
        with _reading(path, fmt):
            file = pq.ParquetFile(path)
        return _parquet_frames(file, path, rows)
    df = read_frame(path)
    return (df.iloc[i:i + rows].reset_index(drop=True) for i in range(0, len(df), rows))


def count_rows(path: str | os.PathLike) -> int:
    """How many rows ``read_frame(path)`` would return, found cheaply -> that number.

    * jsonl: the lines holding anything but whitespace (what ``str.strip`` strips; a BOM opening
      the line does not count either), counted in binary blocks without decoding or parsing
      them: a line ``read_frame`` would refuse (broken JSON, not UTF-8) counts as a row.
    * parquet: the row count in the file's footer.
    * json, csv: ``len(read_frame(path))``.

    A missing, directory, empty or unsupported file raises ``read_frame``'s ``StorageError``."""
    path, fmt = _input(path)
    with _reading(path, fmt):
        if fmt == "jsonl":
            return _count_jsonl(path)
        if fmt == "parquet":
            with pq.ParquetFile(path) as file:
                return file.metadata.num_rows
    return len(read_frame(path))


def frame_columns(path: str | os.PathLike) -> list[str]:
    """The columns ``read_frame(path)`` would return, for a file this module wrote (every record
    of a jsonl has every column): a jsonl's first record's keys, a parquet file's schema; json
    and csv are read whole. A file without rows has none."""
    path, fmt = _input(path)
    with _reading(path, fmt):
        if fmt == "jsonl":
            first = next(_jsonl_records(path), None)
            return list(first) if first is not None else []
        if fmt == "parquet":
            return [name for name in pq.read_schema(path).names if name != "__index_level_0__"]
    return list(read_frame(path).columns)


def _input(path: str | os.PathLike) -> tuple[Path, str]:
    """A file to read -> (its path, its format); ``StorageError`` when its extension is not
    supported or it is missing, a directory or empty."""
    path = Path(path)
    fmt = format_of(path)
    if not path.exists():
        raise StorageError(f"input file not found: {path}")
    if path.is_dir():
        raise StorageError(f"{path} is a directory, not a file")
    with _reading(path, fmt):
        if path.stat().st_size == 0:
            raise StorageError(f"{path} is empty: the input has no documents")
    return path, fmt


def write_frame(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to ``path`` (format by extension) atomically -> ``path``.

    The file is written to a temp file in the same folder, then renamed over ``path``; a failed
    write leaves the previous file untouched. csv also writes its sidecar (after the csv, with
    the csv's sha256). Raises ``StorageError`` for what the format cannot store (lone
    surrogates in csv/parquet, mixed-type columns in parquet); a zero-row jsonl is one blank
    line (an empty file is refused on read as an empty input). It is a ``FrameWriter`` given
    ``df`` alone."""
    with FrameWriter(path) as writer:
        writer.write(df)
    return writer.path


class FrameWriter:
    """Writes one json/jsonl/csv/parquet file (by extension) from frames given one after another.

    >>> with FrameWriter("out/rows.parquet") as out:   # doctest: +SKIP
    ...     for frame in frames:
    ...         out.write(frame)
    >>> out.rows                                        # doctest: +SKIP

    In: ``path``, then ``write(df)`` per frame inside the ``with`` block. Out: when the block ends
    cleanly, the file at ``path``, atomically (a temp file in the same folder, then
    ``os.replace``; the csv sidecar after it), reading back (``read_frame``) as
    ``write_frame(pd.concat(frames, ignore_index=True), path)`` would; ``rows`` counts the rows
    written. When the block raises, the temp file is removed and a previous file at ``path`` is
    untouched. A frame ``write`` refuses with a ``StorageError`` is not written and the writer
    goes on (unless a parquet promotion's rewrite failed). Frames without rows are skipped; when
    no frame has rows, the file is what ``write_frame`` writes for the first one given (or for
    an empty frame). ``write_frame``'s errors are raised for the frame that causes them, a lone
    surrogate's row counted from the file's first row.

    * jsonl: each frame's lines appended; json: the list ``write_frame`` writes (``indent=1``),
      item by item. Frames may have different columns (records read back with the union of the
      keys); a record holding a lone surrogate is written with ``\\uXXXX`` escapes (lossless).
    * parquet: a ``ParquetWriter`` opened with the first frame's schema, after
      ``write_frame``'s conversions (object ints with None as ``Int64``; mixed-type columns
      refused). Every frame needs the first one's columns (in any order). A later frame's type
      the file's type does not hold is promoted as concatenating and writing would (null to any
      type, ``list<null>`` of empty lists to ``list<T>``, a struct gaining fields, int to
      double): the row groups written so far are rewritten once with the wider schema; types
      that do not unify (int and string) raise a ``StorageError`` naming the column. The pandas
      metadata is settled at the end from the dtype the concatenation would have per column
      (``int64`` then ``Int64`` -> ``Int64``), so that ``read_frame`` gives the same dtypes.
    * csv: every frame needs the first one's columns (in any order). The sidecar's JSON columns
      and dtypes depend on every frame (a text column's first None makes it a JSON column), so
      the frames are spooled (pickled to an anonymous temp file in the same folder; only the
      last one is held in memory) and the csv is written at the end, frame by frame, each
      column cast to the dtype the concatenation would give it: the csv and its sidecar are
      byte for byte ``write_frame``'s for the concatenation. The disk holds the frames twice
      until then; a lone surrogate is reported when the block ends.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.format = format_of(self.path)
        self.rows = 0
        self._sink: _Sink | None = None
        self._tmp: str | None = None
        self._empty: pd.DataFrame | None = None  # the first frame without rows

    def __enter__(self) -> "FrameWriter":
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = _temp_beside(self.path)
        try:
            with writing(self.path):
                self._sink = _SINKS[self.format](self.path, self._tmp)
        except BaseException:
            Path(self._tmp).unlink(missing_ok=True)
            raise
        return self

    def write(self, df: pd.DataFrame) -> None:
        """Append the rows of ``df`` to the file (see the class docstring) -> None."""
        if self._sink is None:
            raise RuntimeError(f"FrameWriter({str(self.path)!r}).write() outside its with block")
        if len(df) == 0:
            if self._empty is None:
                self._empty = df
            return
        with writing(self.path):
            self._sink.write(df, self.rows)
        self.rows += len(df)

    def __exit__(self, exc_type, exc, tb) -> None:
        sink, self._sink = self._sink, None
        try:
            if exc_type is None:
                with writing(self.path):
                    if self.rows == 0:
                        sink.write(self._empty if self._empty is not None else pd.DataFrame(), 0)
                    sink.commit()
            else:
                sink.abort()
        except BaseException:
            sink.abort()
            raise
        finally:
            Path(self._tmp).unlink(missing_ok=True)  # gone already when committed


_SINKS = {"jsonl": _JsonSink, "json": _JsonSink, "parquet": _ParquetSink, "csv": _CsvSink}


def remove_frame(path: str | os.PathLike) -> list[str]:
    """Delete a frame file and its csv sidecar, those that exist; returns the names removed."""
    path = Path(path)
    removed = []
    for file in (path, _sidecar_of(path)):
        if file.is_file():
            file.unlink()
            removed.append(file.name)
    return removed
