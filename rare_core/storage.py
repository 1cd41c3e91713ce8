"""FileStorage and frame I/O.

``FileStorage`` keeps the layout of the system we implement: the first ``step()`` reads the
entry file, and the operator it serves writes ``{cache_path}/{file_name_prefix}_step1.{cache_type}``;
the next ``step()`` reads that file and its operator writes ``..._step2``, and so on.

``read_frame``/``write_frame`` are the format layer used by everything else: json, jsonl, csv
and parquet chosen by extension. Writes are atomic: temp file + ``os.replace``. What each format
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

import base64
import contextlib
import copy
import hashlib
import io
import itertools
import json
import math
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rare_core.errors import StorageError

FORMATS = ("json", "jsonl", "csv", "parquet")
STREAMED_FORMATS = ("jsonl", "parquet")  # what iter_frames reads piece by piece and count_rows counts cheaply

# csv has no list type: such cells are written as JSON text, and a sidecar file records which
# columns hold JSON, every column's dtype and the sha256 of the csv bytes it belongs to.
_CSV_JSON_COLUMNS_SUFFIX = ".jsoncols"
_CSV_LINE_TERMINATOR = "\r\n"  # RFC 4180: a field holding "\r" or "\n" gets quoted
_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# What str.strip() strips (the code points where str.isspace() holds), as UTF-8: a jsonl line of
# only these, after one BOM, is blank (count_rows finds blank lines without decoding them).
_WHITESPACE = (*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
               0x2028, 0x2029, 0x202F, 0x205F, 0x3000)
_LINE_SPACE = (b"(?:" + re.escape(_BOM) + b")?(?:"
               + b"|".join(re.escape(chr(c).encode("utf-8")) for c in _WHITESPACE if c != 0x0A) + b")*")
_BLANK_LINE = re.compile(b"\n" + _LINE_SPACE + b"(?=\n)")  # found by the newline ending the line before
_BLANK_FIRST_LINE = re.compile(_LINE_SPACE + b"(?:\n|\\Z)")
_COUNT_BLOCK = 1 << 24  # bytes count_rows reads at once


def format_of(path: str | os.PathLike) -> str:
    """The storage format of ``path``, from its extension; ``StorageError`` when unsupported."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise StorageError(f"unsupported file type '.{ext}' for {path}: use one of {', '.join(FORMATS)}")
    return ext


def _is_nested(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict)) or (
        hasattr(value, "tolist") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0) > 0
    )


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


def _type_names(types: Iterable[str]) -> str:
    names = sorted(set(types))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _textual(dtype: Any) -> bool:
    """True for the dtypes of text-or-anything columns: object and pandas' string dtypes."""
    return dtype == object or isinstance(dtype, pd.StringDtype)


def _common_dtype(a: Any, b: Any) -> Any:
    """The dtype ``pd.concat`` gives a column that is ``a`` in one frame and ``b`` in another."""
    if a == b:
        return a
    return pd.concat([pd.Series([], dtype=a), pd.Series([], dtype=b)], ignore_index=True).dtype


# ---------------------------------------------------------------------------------------------
# reading


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


def _jsonl_records(path: Path) -> Iterator[dict]:
    """A jsonl file -> its records one by one (blank lines skipped); errors name the line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            line = _decode(raw, path, lineno - 1)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StorageError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(rec, dict):
                raise StorageError(f"{path}, line {lineno}: expected a JSON object, got {type(rec).__name__}")
            yield rec


def _jsonl_frames(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """A jsonl file -> frames of ``rows`` records, with every key seen so far as a column (see
    ``iter_frames``)."""
    with _reading(path, "jsonl"):
        records = _jsonl_records(path)
        keys: dict[str, None] = {}
        while chunk := list(itertools.islice(records, rows)):
            keys.update(dict.fromkeys(k for rec in chunk for k in rec))
            yield _plain_objects(_frame_from_records(chunk, keys))


def _count_jsonl(path: Path) -> int:
    """The lines of a jsonl file that are not blank (see ``count_rows``), read in binary blocks
    of ``_COUNT_BLOCK`` bytes."""
    lines = blank = 0
    rest = b""  # the line the last block ended in, unfinished
    with open(path, "rb") as fh:
        rest = fh.read(len(_BOM))
        if rest == _BOM:  # line 1 may carry one BOM more: _jsonl_records strips it
            rest = b""
        while True:
            block = fh.read(_COUNT_BLOCK)
            data = rest + block
            end = data.rfind(b"\n") + 1  # the finished lines are data[:end]
            if end:
                lines += data.count(b"\n", 0, end)
                blank += bool(_BLANK_FIRST_LINE.match(data, 0, end)) + len(_BLANK_LINE.findall(data, 0, end))
            rest = data[end:]
            if not block:
                break
    if rest:  # a last line without a newline
        lines += 1
        blank += bool(_BLANK_FIRST_LINE.match(rest))
    return lines - blank


def _read_json(path: Path) -> list[dict]:
    """A .json file holding a list of objects -> that list; errors name line and column."""
    text = _decode(path.read_bytes(), path)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from exc
    if isinstance(records, dict):
        raise StorageError(
            f"{path} holds a JSON object; a .json input must be a list of records (objects), "
            "or use .jsonl with one object per line")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise StorageError(f"{path}: a .json input must be a list of records (objects)")
    return records


def _frame_from_records(records: list[dict], keys: Iterable[str] | None = None) -> pd.DataFrame:
    """JSON records -> a frame, one column per key: ``keys`` in their order, by default every
    key of the records in first-seen order (an absent key = None).

    A column whose non-null values are all python ints (bools excluded) becomes ``int64`` or,
    with nulls, ``Int64``; other columns get pandas' inference, or stay ``object`` when pandas
    cannot hold them (a lone surrogate does not fit pandas' arrow-backed ``str``)."""
    if keys is None:
        keys = dict.fromkeys(k for rec in records for k in rec)
    columns = {}
    for key in keys:
        values = [rec.get(key) for rec in records]
        present = [v for v in values if v is not None]
        if present and all(type(v) is int and _INT64_MIN <= v <= _INT64_MAX for v in present):
            dtype = "Int64" if len(present) < len(values) else "int64"
            columns[key] = pd.Series(pd.array(values, dtype=dtype), name=key)
            continue
        try:
            columns[key] = pd.Series(values, name=key)
        except (UnicodeEncodeError, pa.ArrowException):
            columns[key] = pd.Series(values, dtype=object, name=key)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


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


# ---------------------------------------------------------------------------------------------
# writing


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


def current_umask() -> int:
    """The process's umask: from ``/proc/self/status`` where Linux shows it, else by setting it
    and setting it back at once (not thread-safe: a file another thread creates meanwhile gets 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Around writing ``path``: an ``OSError`` (a full disk, a read-only folder, a path under a
    file) becomes a one-line ``StorageError`` naming the file and its folder."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc} (in the folder {path.parent})") from exc


def _temp_beside(path: Path) -> str:
    """-> the name of a new empty temp file in ``path``'s folder (where ``os.replace`` is atomic),
    with the mode a file created in place would get: mkstemp's 0600 would make every file
    renamed from it private to this user (a trainer running as another could not read it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    return tmp


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it over ``path``."""
    tmp = _temp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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


class _JsonSink(_Sink):
    """jsonl: the lines of ``_jsonl_lines`` appended, a single blank line for no rows; json: the
    list ``json.dumps(records, indent=1)`` writes (``[]`` for none), item by item."""

    def __init__(self, path: Path, tmp: str) -> None:
        super().__init__(path, tmp)
        self.lines = format_of(path) == "jsonl"
        self.items = 0
        self.fh = open(tmp, "wb")

    def write(self, df: pd.DataFrame, row: int) -> None:
        if not len(df):
            return
        if self.lines:
            data = b"".join(_jsonl_lines(df))
        else:
            data = (b",\n " if self.items else b"[\n ") + b",\n ".join(_json_items(df))
        self.fh.write(data)
        self.items += len(df)

    def commit(self) -> None:
        if self.lines:
            self.fh.write(b"" if self.items else b"\n")
        else:
            self.fh.write(b"\n]" if self.items else b"[]")
        self.fh.close()
        super().commit()

    def abort(self) -> None:
        self.fh.close()


def _json_encode(value: Any, **kwargs) -> bytes:
    """A JSON value -> UTF-8 JSON bytes; when a lone surrogate makes that impossible, the
    ASCII form (``\\ud800`` escapes: lossless)."""
    try:
        return json.dumps(value, ensure_ascii=False, **kwargs).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, **kwargs).encode("ascii")


def _jsonl_lines(df: pd.DataFrame) -> Iterable[bytes]:
    for rec in _records(df):
        yield _json_encode(rec) + b"\n"


def _json_items(df: pd.DataFrame) -> Iterable[bytes]:
    """A frame -> its records as the items of a JSON list dumped with ``indent=1``: each one
    indented by one more space (a JSON text holds no raw newline but its indentation's)."""
    for rec in _records(df):
        yield _json_encode(rec, indent=1).replace(b"\n", b"\n ")


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


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: temp file in the same folder, then rename
    -> ``path``."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


# ---------------------------------------------------------------------------------------------
# FileStorage


class FileStorage:
    """Step-by-step file storage with the layout and API of the system we implement.

    >>> storage = FileStorage(first_entry_file_name="docs.jsonl", cache_path="./cache",
    ...                       file_name_prefix="dataflow_cache_step", cache_type="jsonl")
    >>> Doc2Query(llm_serving=llm).run(storage=storage.step(), input_key="text")   # doctest: +SKIP

    ``step()`` advances the storage to the next step and returns a copy fixed at that step, so
    several handles can be held at once; ``read()`` returns the previous step's frame (the entry
    file for step 1); ``write(df)`` writes this step's file; ``reset()`` goes back to before the
    first step.
    """

    def __init__(
        self,
        first_entry_file_name: str | os.PathLike,
        cache_path: str | os.PathLike = "./cache",
        file_name_prefix: str = "dataflow_cache_step",
        cache_type: str = "jsonl",
    ) -> None:
        if cache_type not in FORMATS:
            raise StorageError(f"unsupported cache_type '{cache_type}': use one of {', '.join(FORMATS)}")
        format_of(first_entry_file_name)
        self.first_entry_file_name = str(first_entry_file_name)
        self.cache_path = str(cache_path)
        self.file_name_prefix = file_name_prefix
        self.cache_type = cache_type
        self.operator_step = 0

    def step(self) -> "FileStorage":
        """Advance to the next step -> a copy of the storage at that step (pass it to ``run``)."""
        self.operator_step += 1
        return copy.copy(self)

    def reset(self) -> "FileStorage":
        """Go back to before the first step -> ``self``."""
        self.operator_step = 0
        return self

    def step_path(self, step: int) -> Path:
        """Step number ``step`` (1-based) -> the file that step writes."""
        return Path(self.cache_path) / f"{self.file_name_prefix}_step{step}.{self.cache_type}"

    def input_path(self) -> Path:
        """-> the file the current step reads (the entry file for step 1)."""
        if self.operator_step < 1:
            raise StorageError("call storage.step() before running an operator")
        if self.operator_step == 1:
            return Path(self.first_entry_file_name)
        return self.step_path(self.operator_step - 1)

    def output_path(self) -> Path:
        """-> the file the current step writes."""
        if self.operator_step < 1:
            raise StorageError("call storage.step() before running an operator")
        return self.step_path(self.operator_step)

    def read(self, output_type: str = "dataframe") -> pd.DataFrame | list[dict]:
        """-> the input frame of the current step; ``output_type='dict'`` gives a list of records."""
        df = read_frame(self.input_path())
        if output_type == "dict":
            return _records(df)
        return df

    def get_keys_from_dataframe(self) -> list[str]:
        """-> the column names of the current step's input frame, in order."""
        return list(read_frame(self.input_path()).columns)

    def write(self, data: pd.DataFrame | list[dict]) -> Path:
        """A frame or a list of records -> the current step's output file (atomic) -> its path."""
        df = data if isinstance(data, pd.DataFrame) else pd.DataFrame.from_records(data)
        return write_frame(df, self.output_path())
