"""FileStorage and frame I/O.

``FileStorage`` keeps the layout of the system we implement: the first ``step()`` reads the
entry file, and the operator it serves writes ``{cache_path}/{file_name_prefix}_step1.{cache_type}``;
the next ``step()`` reads that file and its operator writes ``..._step2``, and so on.

``read_frame``/``write_frame`` are the format layer used by everything else: json, jsonl, csv
and parquet chosen by extension. List and dict cells survive every format exactly (csv stores
them as JSON text and decodes them on read). Writes are atomic: temp file + ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from rare_core.errors import StorageError

FORMATS = ("json", "jsonl", "csv", "parquet")

# csv has no list type: such cells are written as JSON text, and a sidecar file records which
# columns hold JSON (and every column's dtype) so that reading restores them exactly.
_CSV_JSON_COLUMNS_SUFFIX = ".jsoncols"


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


def _to_plain(value: Any) -> Any:
    """numpy arrays (as parquet returns list cells) -> python lists, recursively."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _nested_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if df[c].dtype == object and df[c].map(_is_nested).any()]


def read_frame(path: str | os.PathLike) -> pd.DataFrame:
    """Read a json/jsonl/csv/parquet file into a DataFrame with list cells as python lists."""
    path = Path(path)
    fmt = format_of(path)
    if not path.exists():
        raise StorageError(f"input file not found: {path}")
    try:
        if fmt == "parquet":
            df = pd.read_parquet(path)
        elif fmt == "jsonl":
            df = pd.DataFrame.from_records(_read_jsonl(path))
        elif fmt == "json":
            with open(path, encoding="utf-8") as fh:
                records = json.load(fh)
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise StorageError(f"{path}: a .json input must hold a list of records (objects)")
            df = pd.DataFrame.from_records(records)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            sidecar = path.with_name(path.name + _CSV_JSON_COLUMNS_SUFFIX)
            if sidecar.exists():
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
                for col in meta.get("json_columns", []):
                    if col in df.columns:
                        df[col] = df[col].map(lambda s: json.loads(s) if isinstance(s, str) else s)
                for col, dtype in meta.get("dtypes", {}).items():
                    if col in df.columns and col not in meta.get("json_columns", []):
                        df[col] = _restore_dtype(df[col], dtype)
    except StorageError:
        raise
    except (ValueError, json.JSONDecodeError, OSError) as exc:
        raise StorageError(f"cannot read {path} as {fmt}: {exc}") from exc
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].map(_to_plain)
    return df


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
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


def _restore_dtype(series: pd.Series, dtype: str) -> pd.Series:
    if dtype.startswith(("int", "Int")):
        return pd.to_numeric(series).astype("Int64" if series.isna().any() else "int64")
    if dtype.startswith("float"):
        return pd.to_numeric(series).astype("float64")
    if dtype == "bool":
        return series.map({"True": True, "False": False, True: True, False: False})
    return series


def write_frame(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    fmt = format_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        elif fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in _records(df):
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        elif fmt == "json":
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(_records(df), fh, ensure_ascii=False, indent=1)
        else:
            nested = _nested_columns(df)
            out = df.copy()
            for col in nested:
                out[col] = out[col].map(lambda v: json.dumps(_to_plain(v), ensure_ascii=False))
            out.to_csv(tmp, index=False)
            sidecar = path.with_name(path.name + _CSV_JSON_COLUMNS_SUFFIX)
            meta = {"json_columns": nested, "dtypes": {c: str(df[c].dtype) for c in df.columns}}
            write_text_atomic(sidecar, json.dumps(meta))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: temp file in the same folder, then rename."""
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


def _records(df: pd.DataFrame) -> list[dict]:
    recs = []
    for rec in df.to_dict(orient="records"):
        recs.append({k: _json_safe(v) for k, v in rec.items()})
    return recs


def _json_safe(v: Any) -> Any:
    v = _to_plain(v)  # numpy scalars and arrays become python values here
    if isinstance(v, float) and v != v:  # NaN -> null
        return None
    if v is pd.NA or v is pd.NaT:
        return None
    return v


class FileStorage:
    """Step-by-step file storage with the layout of the system we implement.

    >>> storage = FileStorage(first_entry_file_name="docs.jsonl", cache_path="./cache",
    ...                       file_name_prefix="dataflow_cache_step", cache_type="jsonl")
    >>> Doc2Query(llm_serving=llm).run(storage=storage.step(), input_key="text")   # doctest: +SKIP

    ``step()`` advances to the next step and returns the storage itself; ``read()`` returns the
    previous step's frame (the entry file for step 1); ``write(df)`` writes this step's file.
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
        """Advance to the next step; returns ``self`` so that ``storage.step()`` can be passed to ``run``."""
        self.operator_step += 1
        return self

    def step_path(self, step: int) -> Path:
        """The file written by step ``step`` (1-based)."""
        return Path(self.cache_path) / f"{self.file_name_prefix}_step{step}.{self.cache_type}"

    def input_path(self) -> Path:
        if self.operator_step < 1:
            raise StorageError("call storage.step() before running an operator")
        if self.operator_step == 1:
            return Path(self.first_entry_file_name)
        return self.step_path(self.operator_step - 1)

    def output_path(self) -> Path:
        if self.operator_step < 1:
            raise StorageError("call storage.step() before running an operator")
        return self.step_path(self.operator_step)

    def read(self, output_type: str = "dataframe") -> pd.DataFrame:
        """The input frame of the current step. ``output_type='dict'`` gives a list of records."""
        df = read_frame(self.input_path())
        if output_type == "dict":
            return _records(df)
        return df

    def write(self, data: pd.DataFrame | list[dict]) -> Path:
        """Write the current step's output file atomically; returns its path."""
        df = data if isinstance(data, pd.DataFrame) else pd.DataFrame.from_records(data)
        return write_frame(df, self.output_path())
