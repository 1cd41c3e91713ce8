"""json and jsonl files.

In: a .jsonl file (one JSON object per line, blank lines skipped, one BOM allowed) or a .json
file (a list of objects); frames to write. Out: the records as a frame (``_frame_from_records``:
JSON integers as ``int64`` / ``Int64``), a jsonl read ``rows`` records at a time
(``_jsonl_frames``) or its rows counted in binary blocks without parsing (``_count_jsonl``); and
``_JsonSink``, which writes frames as JSON records (NaN/NA as ``null``, a record holding a lone
surrogate with ``\\uXXXX`` escapes).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import pyarrow as pa

from rare_core.errors import StorageError
from rare_core.storage.formats import (
    _INT64_MAX, _INT64_MIN, _Sink, _decode, _plain_objects, _reading, _records, format_of,
)

_BOM = b"\xef\xbb\xbf"
# What str.strip() strips (the code points where str.isspace() holds), as UTF-8: a jsonl line of
# only these, after one BOM, is blank (count_rows finds blank lines without decoding them).
_WHITESPACE = (*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
               0x2028, 0x2029, 0x202F, 0x205F, 0x3000)
_LINE_SPACE = (b"(?:" + re.escape(_BOM) + b")?(?:"
               + b"|".join(re.escape(chr(c).encode("utf-8")) for c in _WHITESPACE if c != 0x0A) + b")*")
_BLANK_LINE = re.compile(b"\n" + _LINE_SPACE + b"(?=\n)")  # found by the newline ending the line before
_BLANK_FIRST_LINE = re.compile(_LINE_SPACE + b"(?:\n|\\Z)")
_COUNT_BLOCK = 1 << 24  # bytes count_rows reads at once


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
