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
  (such a line is written with ``\\uXXXX`` escapes). A zero-row frame keeps no columns.
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
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rare_core.errors import StorageError

FORMATS = ("json", "jsonl", "csv", "parquet")

# csv has no list type: such cells are written as JSON text, and a sidecar file records which
# columns hold JSON, every column's dtype and the sha256 of the csv bytes it belongs to.
_CSV_JSON_COLUMNS_SUFFIX = ".jsoncols"
_CSV_LINE_TERMINATOR = "\r\n"  # RFC 4180: a field holding "\r" or "\n" gets quoted
_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


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


# ---------------------------------------------------------------------------------------------
# reading


def read_frame(path: str | os.PathLike) -> pd.DataFrame:
    """Read a json/jsonl/csv/parquet file (by extension) -> a DataFrame whose list and dict
    cells are python lists and dicts. Any file that cannot be read raises a one-line
    ``StorageError`` naming it (missing, a directory, empty, not UTF-8, broken JSON with its
    line, not parquet, csv not matching its sidecar)."""
    path = Path(path)
    fmt = format_of(path)
    if not path.exists():
        raise StorageError(f"input file not found: {path}")
    if path.is_dir():
        raise StorageError(f"{path} is a directory, not a file")
    try:
        if path.stat().st_size == 0:
            raise StorageError(f"{path} is empty: the input has no documents")
        if fmt == "parquet":
            df = _read_parquet(path)
        elif fmt == "jsonl":
            df = _frame_from_records(_read_jsonl(path))
        elif fmt == "json":
            df = _frame_from_records(_read_json(path))
        else:
            df = _read_csv(path)
    except StorageError:
        raise
    except (ValueError, OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read {path} as {fmt}: {exc}") from exc
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


def _read_jsonl(path: Path) -> list[dict]:
    """A jsonl file -> its records (blank lines skipped); errors name the line."""
    records = []
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
            records.append(rec)
    return records


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


def _frame_from_records(records: list[dict]) -> pd.DataFrame:
    """JSON records -> a frame, one column per key (first-seen order, an absent key = None).

    A column whose non-null values are all python ints (bools excluded) becomes ``int64`` or,
    with nulls, ``Int64``; other columns get pandas' inference, or stay ``object`` when pandas
    cannot hold them (a lone surrogate does not fit pandas' arrow-backed ``str``)."""
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


def _read_parquet(path: Path) -> pd.DataFrame:
    """A parquet file -> a frame: flat columns through pandas metadata, nested (list, struct,
    map) columns as exact python values (``to_pylist``: no float-cast ints, no numpy arrays)."""
    table = pq.read_table(path)
    nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
    if not nested:
        return table.to_pandas()
    flat = table.drop_columns(nested).to_pandas()
    if len(flat) != table.num_rows:  # no flat column left: keep the row count
        flat = pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    for name in nested:
        flat[name] = pd.Series(table.column(name).to_pylist(maps_as_pydicts="strict"), index=flat.index, dtype=object)
    return flat[[c for c in table.column_names if c in flat.columns]]


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
    line (an empty file is refused on read as an empty input)."""
    path = Path(path)
    fmt = format_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        _atomic(path, lambda tmp: _write_parquet(df, path, tmp))
    elif fmt == "jsonl":
        _atomic(path, lambda tmp: Path(tmp).write_bytes(b"".join(_jsonl_lines(df)) or b"\n"))
    elif fmt == "json":
        _atomic(path, lambda tmp: Path(tmp).write_bytes(_json_encode(_records(df), indent=1)))
    else:
        _write_csv(df, path)
    return path


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _find_surrogate(df: pd.DataFrame) -> str | None:
    """The first lone surrogate in ``df`` (column names, then cells at any depth) -> a message
    naming it, or None."""
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
        for row, value in enumerate(df[col].array):
            if ch := find(value):
                return f"column '{col}', row {row} holds a lone surrogate (U+{ord(ch):04X}) that UTF-8 cannot store"
    return None


def _surrogate_error(df: pd.DataFrame, path: Path, fmt: str, exc: Exception) -> StorageError:
    found = _find_surrogate(df)
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


def _write_parquet(df: pd.DataFrame, path: Path, tmp: str) -> None:
    """``df`` -> parquet at ``tmp``; object columns of ints with None go as ``Int64`` (not float);
    arrow's refusals become ``StorageError`` naming the column (mixed types) or the file."""
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
        out.to_parquet(tmp, index=False)
    except UnicodeEncodeError as exc:
        raise _surrogate_error(df, path, "parquet", exc) from exc
    except (pa.ArrowException, ValueError, TypeError) as exc:
        for col in df.columns:
            if df[col].dtype == object:
                found = _type_conflict(list(df[col]))
                if found:
                    where, types = found
                    raise StorageError(
                        f"{path}: column '{col}' mixes {_type_names(types)}{where}; parquet needs one type "
                        "per column: use jsonl or json, or convert it") from exc
        raise StorageError(f"cannot write {path} as parquet: {exc}") from exc


def _csv_json_column(series: pd.Series) -> bool:
    """True when a csv column must be stored as JSON text: an object or string column that is
    not purely non-null strings."""
    if series.dtype != object and not isinstance(series.dtype, pd.StringDtype):
        return False
    return not all(isinstance(v, str) for v in series.array)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """``df`` -> csv at ``path`` plus its sidecar (json_columns, dtypes, sha256 of the csv bytes).

    Order: the csv, then the sidecar; when no sidecar exists yet, one naming the new csv is
    written first as well, so that an interruption never leaves a step csv that reads as a
    user csv. Either way a reader of a half-done pair finds a hash mismatch."""
    json_columns = [c for c in df.columns if _csv_json_column(df[c])]
    out = df.copy()
    for col in json_columns:
        out[col] = pd.Series([json.dumps(_json_safe(v), ensure_ascii=False) for v in df[col]],
                             index=df.index, dtype=object)
    text = out.to_csv(index=False, lineterminator=_CSV_LINE_TERMINATOR)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _surrogate_error(df, path, "csv", exc) from exc
    meta = {"json_columns": [str(c) for c in json_columns],
            "dtypes": {str(c): str(df[c].dtype) for c in df.columns},
            "sha256": hashlib.sha256(data).hexdigest()}
    sidecar = _sidecar_of(path)
    if not sidecar.exists():
        write_text_atomic(sidecar, json.dumps(meta))
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))
    write_text_atomic(sidecar, json.dumps(meta))


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
