"""The documents of a run, checked before anything is paid for, whole or in chunks.

In: a :class:`~rare_core.config.PipelineConfig`. Out:

* :func:`iter_documents` -> the input's documents in order, in frames of at most
  :data:`CHUNK_ROWS` rows (``limit`` applied, an id column added from the text's hash when the
  input has none, each frame with a RangeIndex from 0): a jsonl or parquet input is read
  chunk by chunk (:func:`rare_core.storage.iter_frames`), so a million documents never sit in
  memory at once; the checks that look across rows (one id for two texts) run over the whole
  stream and fail when it ends;
* :func:`load_documents` -> all of them in one frame; :func:`count_documents` -> how many
  there are, without reading a jsonl's JSON;
* :func:`preflight` -> the number of documents, after the whole stream was checked and what
  the run needs besides the input (the BM25 engine, a separate corpus file) was found.

Everything a user can get wrong in the input is one :class:`InputError` (or
:class:`~rare_core.errors.StorageError` from reading) whose one line names the file, the
column or the row:

* an empty input ("has no documents"), a missing text column (with the columns present);
* a column whose name starts with ``rare_`` (the pipeline's bookkeeping namespace);
* a column some step would write (``document_order``, ``hard_negatives_ids``...), which the
  run would otherwise refuse only when it reaches that step, after paying for the earlier ones;
* an id column with missing ids, ids of different types (numbers and strings: the parquet
  dataset and the ``hf`` export could not store them after the run paid), or one id naming
  two different texts.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from rare_core.config import PipelineConfig
from rare_core.errors import RareError
from rare_core.filters.decontaminate import check_benchmarks
from rare_core.operators.base import RESERVED_PREFIX, document_id, is_blank
from rare_core.pipeline import STEPS
from rare_core.storage import count_rows, format_of, iter_frames

CHUNK_ROWS = 20_000  # documents read and checked at once


class InputError(RareError, ValueError):
    """The input cannot be used as it is; the message says why in one line."""


def _names(columns) -> str:
    return ", ".join(repr(str(c)) for c in columns)


def _text_key(text: object) -> int:
    return int.from_bytes(hashlib.blake2b(str(text).encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class _Checks:
    """The checks of one pass over the input: each new column when it first appears, each
    chunk's ids as it comes, and at the end what needs every row (see :meth:`finish`)."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config, self.path, self.k = config, config.input_path, config.columns
        self.columns: dict[str, None] = {}  # every column seen, in first-seen order
        self.rows = 0
        self.has_ids: bool | None = None  # decided by the first chunk
        self._ids: list[pa.Array] = []
        self._id_types: dict[str, int] = {}  # type of the ids -> its first row (1-based)
        self._text_keys: list[np.ndarray] = []
        self._writes: dict[str, str] = {}  # column -> label of the first step that writes it
        for spec in (spec for spec in STEPS if spec.enabled(config)):
            for column in spec.writes(config):
                self._writes.setdefault(column, spec.label)

    def chunk(self, df: pd.DataFrame) -> pd.DataFrame:
        """One chunk, checked and completed (id column; required columns present) -> the chunk."""
        self._new_columns([c for c in df.columns if c not in self.columns])
        if self.config.limit is not None:
            df = df.head(self.config.limit - self.rows)
        df = df.reset_index(drop=True)
        for required in self._required():
            if required not in df.columns:  # a jsonl key first seen in a later chunk; finish() checks it exists
                df[required] = None
        k = self.k
        if self.has_ids is None:
            self.has_ids = k.id in df.columns
        if self.has_ids:
            self._check_ids(df)
        elif k.id in df.columns:
            raise InputError(f"{self.path}: column {k.id!r} (columns.id) first appears at row {self.rows + 1}, so it is "
                             f"empty in rows 1-{self.rows}: give every document an id, or drop the column to use "
                             "content hashes")
        else:
            df.insert(0, k.id, df[k.text].map(document_id))
        self.rows += len(df)
        return df

    def _required(self) -> list[str]:
        k, config = self.k, self.config
        cols = [k.text]
        if config.questions_given:
            cols.append(k.question)
            if config.verify.method != "none":
                cols.append(k.gold_answer)
        return cols

    def _new_columns(self, new: list) -> None:
        reserved = [c for c in new if str(c).startswith(RESERVED_PREFIX)]
        if reserved:
            raise InputError(f"{self.path}: column(s) {_names(reserved)} use the prefix {RESERVED_PREFIX!r}, which is "
                             "the pipeline's own bookkeeping; rename them")
        clash = [c for c in new if c in self._writes]
        if clash:
            label = self._writes[clash[0]]
            raise InputError(f"{self.path}: column(s) {_names([c for c in clash if self._writes[c] == label])} would be "
                             f"overwritten by {label}'s output; rename them (or set the matching columns.* key)")
        self.columns.update(dict.fromkeys(new))

    def _check_ids(self, df: pd.DataFrame) -> None:
        id_col = self.k.id
        ids = df[id_col] if id_col in df.columns else pd.Series(None, index=df.index, dtype=object)
        blank = ids.map(is_blank)
        if blank.any():
            rows = df.index[blank]
            raise InputError(f"{self.path}: column {id_col!r} (columns.id) is empty in {len(rows)} row(s), "
                             f"first row {self.rows + rows[0] + 1}: give every document an id, or drop the column to use "
                             "content hashes")
        self._check_id_types(ids)
        self._ids.append(pa.array(ids.astype(str).tolist(), type=pa.string()))
        self._text_keys.append(np.fromiter((_text_key(t) for t in df[self.k.text].tolist()), dtype=np.uint64,
                                           count=len(df)))

    def _check_id_types(self, ids: pd.Series) -> None:
        kinds = ids.map(_id_type) if ids.dtype == object else pd.Series(_id_type(ids.iloc[0]), index=ids.index)
        for row, kind in kinds.drop_duplicates().items():
            self._id_types.setdefault(kind, self.rows + int(row) + 1)
        if len(self._id_types) > 1:
            seen = " and ".join(f"{kind} (first at row {row})" for kind, row in self._id_types.items())
            raise InputError(f"{self.path}: column {self.k.id!r} (columns.id) mixes ids of types {seen}: the dataset "
                             "and its exports need one type; write every id as a string (or every one as a number)")

    def finish(self) -> None:
        """The checks that need the whole input: documents at all, the text (and question) columns, unique ids."""
        k, config, path = self.k, self.config, self.path
        if self.rows == 0:
            raise InputError(f"{path}: the input has no documents")
        if k.text not in self.columns:
            raise InputError(f"{path}: input column {k.text!r} not found (columns.text); columns present: "
                             f"{_names(self.columns)}")
        if config.questions_given and k.question not in self.columns:
            raise InputError(f"{path}: questions_given is set but the input has no {k.question!r} column "
                             f"(columns.question); columns present: {_names(self.columns)}")
        if config.questions_given and config.verify.method != "none" and k.gold_answer not in self.columns:
            raise InputError(f"{path}: verify.method={config.verify.method} checks answers against the gold answer, "
                             f"but the input has no {k.gold_answer!r} column (columns.gold_answer); set "
                             "verify.method=none to skip")
        if self.has_ids:
            self._check_unique_ids()

    def _check_unique_ids(self) -> None:
        ids = pd.Series(pa.chunked_array(self._ids, type=pa.string()), dtype=pd.ArrowDtype(pa.string()))
        keys = pd.Series(np.concatenate(self._text_keys))
        dup = ids.duplicated(keep=False).to_numpy()
        if not dup.any():
            return
        differ = keys[dup].groupby(ids[dup].to_numpy()).nunique()
        differ = differ[differ > 1]
        if len(differ):
            first = differ.index[0]
            rows = [int(r) + 1 for r in np.flatnonzero((ids == first).to_numpy())[:3]]
            raise InputError(f"{self.path}: id {first!r} (column {self.k.id!r}) names {int(differ.iloc[0])} different "
                             f"documents (rows {', '.join(map(str, rows))}); ids must be unique per document")


def _id_type(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, np.integer, float, np.floating)):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def iter_documents(config: PipelineConfig, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The run's documents, checked, in order, in frames of at most ``chunk_rows`` rows (default
    :data:`CHUNK_ROWS`; see the module docstring). The checks across rows raise when the stream
    ends, after the last frame."""
    checks = _Checks(config)
    if config.limit is None or config.limit > 0:
        for frame in iter_frames(config.input_path, chunk_rows or CHUNK_ROWS):
            if config.limit is not None and checks.rows >= config.limit:
                break
            if not frame.empty:
                yield checks.chunk(frame)
    checks.finish()


def load_documents(config: PipelineConfig) -> pd.DataFrame:
    """The run's documents, checked, in one frame."""
    chunks = list(iter_documents(config))
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def count_documents(config: PipelineConfig) -> int:
    """How many documents the run has (``limit`` applied), without decoding a jsonl's records."""
    rows = count_rows(config.input_path)
    return rows if config.limit is None else min(rows, config.limit)


def writable_folder(path: str | Path, setting: str) -> None:
    """Raise :class:`InputError` unless ``path`` is, or can be made, a folder this process may
    write to: its nearest existing ancestor must be a writable folder (not a file, not on a
    read-only mount). Creates nothing."""
    folder = Path(path).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{setting} {path} cannot be a folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only(existing) else "is not writable by this user"
        raise InputError(f"{setting} {path} cannot be written: {existing} {why}")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def preflight(config: PipelineConfig) -> int:
    """The whole input checked (:func:`iter_documents`, chunk by chunk), the output, cache and
    export folders checked to be writable, plus the BM25 engine (``RetrievalError`` saying how
    to install it), a separate corpus file and the decontamination's benchmark files checked to be
    there, in a supported format -> the number of documents."""
    writable_folder(config.output_path, "output_path (--output)")
    writable_folder(config.cache_path, "cache_path (--cache-path)")
    if config.export and config.export_path:
        writable_folder(config.export_path, "export_path")
    if config.llm.cache_path:
        writable_folder(Path(config.llm.cache_path).parent, "llm.cache_path's folder")
    check_benchmarks(config.filters.decontaminate)
    rows = sum(len(chunk) for chunk in iter_documents(config))
    from rare_core.retrieval.jvm import anserini_jar  # finds the jar without starting Java

    anserini_jar()
    corpus = config.hardneg.corpus_path
    if corpus:
        format_of(corpus)
        if not Path(corpus).is_file():
            raise InputError(f"hardneg.corpus_path {corpus} is not a file")
    return rows
