"""The corpus file: documents a BM25 step searches, one file, written by a sharded run's load
and read back by :class:`~rare_core.operators.bm25_hardneg.BM25HardNeg` (as its ``corpus_path``).

The format: columns :data:`ID` and :data:`TEXT`, and :data:`TITLE` when the documents have
titles. A title column is written when the input's first chunk has the ``title_key`` column,
and read when ``title_key`` is set and the file has :data:`TITLE` (a corpus file's title column
is always named ``title``, whatever the input's is called).

* :class:`CorpusWriter` - the frames of the documents (as they stream by) in -> the corpus file
  (parquet, else jsonl) -> its :class:`~rare_core.artifacts.refs.ArtifactRef`.
* :func:`check_columns` / :func:`title_column` - a corpus file's column names in -> refused
  (``InputColumnError``) without ``id`` or ``text``; the column of titles to read, if any.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rare_core.artifacts.refs import ArtifactRef
from rare_core.hashing import file_sha256
from rare_core.operators.base import is_blank, require_columns

ID, TEXT, TITLE = "id", "text", "title"


def check_columns(names: Iterable[str], where: str) -> None:
    """``InputColumnError`` (naming ``where``) when a corpus file's columns ``names`` lack ``id`` or ``text``."""
    require_columns(pd.DataFrame(columns=list(names)), [ID, TEXT], where)


def title_column(names: Iterable[str], title_key: str | None) -> str | None:
    """The column of a corpus file (columns ``names``) whose titles are indexed before the texts:
    :data:`TITLE` when titles are on (``title_key`` set) and the file has one, else None."""
    return TITLE if title_key and TITLE in names else None


class CorpusWriter:
    """The corpus file at ``path``, written as the documents stream by: :data:`ID` from the
    ``id_key`` column, :data:`TEXT` from ``text_key`` and :data:`TITLE` from ``title_key`` (when
    the first chunk has that column), from which one BM25 index is built.

    Parquet, so that each process reads back only the texts of the negatives it chose: ids keep
    their type (integers stay integers). When the ids are neither all integers nor all text, or
    a jsonl's title column first appears after the first chunk, parquet cannot hold the corpus as
    the single-file run sees it: it is then written as jsonl (``path`` with the suffix
    ``.jsonl``) from the documents given again to :meth:`close`.
    """

    def __init__(self, path: Path, id_key: str, text_key: str, title_key: str | None) -> None:
        self.path = path
        self.id_key, self.text_key, self.title_key = id_key, text_key, title_key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._fallback = False
        self.rows = 0

    def _columns(self, chunk: pd.DataFrame, title: bool) -> dict[str, pd.Series]:
        def as_text(column: pd.Series) -> list:
            return [None if is_blank(v) and not isinstance(v, str) else str(v) for v in column.tolist()]

        cols = {ID: chunk[self.id_key], TEXT: as_text(chunk[self.text_key])}
        if title:
            cols[TITLE] = as_text(chunk[self.title_key])
        return cols

    def write(self, chunk: pd.DataFrame) -> None:
        """Append the corpus columns of ``chunk``."""
        self.rows += len(chunk)
        if self._fallback:
            return
        title_key = self.title_key
        if self._schema is None:
            ids = chunk[self.id_key]
            id_type = pa.int64() if pd.api.types.is_integer_dtype(ids) else pa.string()
            if id_type == pa.string() and not all(isinstance(v, str) for v in ids.tolist()):
                self._fallback = True  # e.g. ints next to text ids: jsonl keeps each id's type
                return
            has_title = bool(title_key) and title_key in chunk.columns
            self._schema = pa.schema([(ID, id_type), (TEXT, pa.string())]
                                     + ([(TITLE, pa.string())] if has_title else []))
            self._writer = pq.ParquetWriter(self._tmp, self._schema)
        has_title = TITLE in self._schema.names
        if (bool(title_key) and title_key in chunk.columns) != has_title:
            self._abandon()
            return
        try:
            table = pa.table(self._columns(chunk, has_title), schema=self._schema)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            self._abandon()
            return
        self._writer.write_table(table)

    def _abandon(self) -> None:
        self._fallback = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def close(self, documents: Callable[[], Iterable[pd.DataFrame]]) -> ArtifactRef:
        """Finish the file (parquet, or jsonl written from the frames ``documents()`` gives
        again, when parquet could not hold them) -> its reference."""
        if not self._fallback and self._writer is not None:
            self._writer.close()
            os.replace(self._tmp, self.path)
            return ArtifactRef(path=str(self.path), sha256=file_sha256(self.path), rows=self.rows)
        path = self.path.with_suffix(".jsonl")
        title_key = self.title_key
        frames = list(documents())
        has_title = bool(title_key) and any(title_key in f.columns for f in frames)
        if has_title:
            frames = [f if title_key in f.columns else f.assign(**{title_key: None}) for f in frames]
        corpus = pd.concat([pd.DataFrame(self._columns(f, has_title)) for f in frames], ignore_index=True)
        return ArtifactRef.write(corpus, path)
