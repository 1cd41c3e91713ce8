"""BM25HardNeg: question + positive document in, BM25 hard negatives from a Lucene index out.

``process(df, input_question_key="question", input_text_key="text",
output_negatives_key="hard_negatives", num_neg=None, input_id_key="id", overwrite=False)``
(``num_neg`` defaults to the config's, 3) adds, with ``key`` = ``output_negatives_key``:

* ``key``: the negatives' texts (list of str, best BM25 first), ``key_ids`` (their ids, with
  the type the ids have in the input: ints stay ints) and ``key_scores``;
* ``positive_score``: the positive's BM25 score for the question (NaN when the positive is not
  in the index: a separate ``corpus_path`` without its id or text; the ``max_score_ratio`` guard
  is then not applied to that row);
* ``positive_rank``: 1-based rank of the positive (or a copy of its text) in the BM25 ranking,
  -1 when it is not within the depth that row was searched to (and for rows not searched);
* ``rare_hardneg_status``: ``ok``; ``short`` (fewer than ``num_neg`` negatives: the corpus has
  no more that pass the guards; not a failure); ``skipped`` (failed upstream: keeps its status
  and error, gets empty lists); ``failed`` (empty or missing question);
* with ``spare`` > 0, ``rare_hardneg_spare`` (texts), ``rare_hardneg_spare_ids`` and
  ``rare_hardneg_spare_scores``: up to ``spare`` candidates beyond the negatives, from the same
  selection (:func:`~rare_core.retrieval.negatives.select_negatives`), for a check of the
  negatives (:mod:`rare_core.checks.negatives`) to draw replacements from.

The positive's id is the ``input_id_key`` column when present (else, or where empty, a stable
hash of the row's text, :func:`~rare_core.operators.base.document_id`); ids are compared as
text (:func:`~rare_core.operators.base.canonical_id`: ``101`` and ``101.0`` are one id). The
corpus is the input frame's documents (rows sharing an id and a text are one document, as the
rows of a document's several questions are) or the ``corpus_path`` file (columns ``id``,
``text`` and optionally ``title``: :mod:`rare_core.retrieval.corpus_file`). Two different texts under one id are an
``InputColumnError`` naming the id: the index could hold only one of them, and the other's
row would be scored against the wrong document. The selection
rules are those of :mod:`rare_core.retrieval.negatives`, the search depths those of
:mod:`rare_core.retrieval.mining` (``max_depth`` default 1000, like the reference miner's top 1000).

Beyond its own positive, a row never gets as a negative the positive (id or text) of another
row of the frame asking the same question (the same words; rows failed upstream count too:
their documents still answer it), with ``exclude_group_positives``, nor a near-duplicate of its
positive (``near_duplicate_threshold``); the best ``reserve_top`` ranks only fill a row that
the ranks below leave short. The defaults were chosen on ``bench/negatives_quality.py``. The
summary's ``extra`` counts ``group_rows`` (mined rows whose question rows with another positive
ask), ``group_excluded`` and ``near_duplicates_excluded`` (candidates each rule dropped that
the other guards let through).

Memory: the corpus texts are held only until they are fingerprinted and written for the
indexer (the index build releases them, before Java indexes); a parquet ``corpus_path``'s are
never held, only read batch by batch (it must not change during the call). Search and
selection work on index rows and a uint64 fingerprint array. The chosen negatives' texts are
fetched at the end: from the input frame, or read again by row from a parquet ``corpus_path``;
a corpus file in another format is kept in memory instead. A ``corpus_path``
file is prepared (read, fingerprinted, its index built or opened) once per process and kept
for later calls while the file is unchanged: the shards of a sharded run only search
(:meth:`BM25HardNeg.prepare` does it up front).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from rare_core.errors import InputColumnError, StorageError
from rare_core.hashing import file_sha256_memo
from rare_core.memory import release_free_memory
from rare_core.operators.base import (
    FAILED, INPUT_ERROR, OK, SHORT, SKIPPED, Operator, active_mask, canonical_id, distinct_keys, document_id,
    guard_outputs, init_status, is_blank, mark_failed, require_columns, step_column, summarize,
)
from rare_core.retrieval.corpus_file import ID, TEXT, check_columns, title_column
from rare_core.retrieval.index import BM25Index, Corpus
from rare_core.filters.common import words
from rare_core.retrieval.mining import Miner, NearDuplicates, question_groups
from rare_core.retrieval.negatives import text_key
from rare_core.storage import format_of, read_frame
from rare_core.step_spec import POSITIVE, SEARCH_INDEX, StepSpec

STEP = "hardneg"
POSITIVE_SCORE = "positive_score"
POSITIVE_RANK = "positive_rank"
SPARE = step_column(STEP, "spare")  # rare_hardneg_spare: the spare candidates' texts
SPARE_IDS, SPARE_SCORES = f"{SPARE}_ids", f"{SPARE}_scores"
CHUNK_QUESTIONS = 20_000  # questions searched and selected together (bounds the hits held)
READ_BATCH = 65_536  # rows per batch when a parquet corpus file is read


class BM25HardNegConfig(BaseModel):
    """Settings of the hard-negative step."""

    model_config = ConfigDict(extra="forbid")

    num_neg: int = Field(3, ge=1, le=100, description="Hard negatives to mine per question (process(num_neg=...) overrides).")
    k1: float = Field(0.9, gt=0, description="BM25 term-frequency saturation.")
    b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation.")
    skip_top: int = Field(0, ge=0, description="Ranks at the top of the BM25 ranking never used as negatives.")
    reserve_top: int = Field(
        40, ge=0, description="Ranks at the top of the BM25 ranking used as negatives only to fill a row that the "
                              "ranks below leave short (best first): the documents matching the question best are "
                              "the likeliest unjudged positives. 0: no reserve.")
    max_score_ratio: float | None = Field(
        0.95, gt=0, description="Drop candidates scoring >= this ratio of the positive's score; None disables.")
    spare: int = Field(
        0, ge=0, le=100, description="Candidates kept beyond num_neg, best first, for a check of the negatives "
                                     "(checks.negatives) to draw replacements from (rare_hardneg_spare, "
                                     "rare_hardneg_spare_ids, rare_hardneg_spare_scores); 0: none kept.")
    query_weighting: Literal["bow", "bm25"] = Field("bow", description="Bag of words, or query-side BM25 weights.")
    corpus_path: str | None = Field(None, description="Separate corpus file (id, text[, title]); default: the input rows.")
    index_dir: str = Field("./cache/bm25_index", description="Cache root of the Lucene indexes.")
    max_depth: int = Field(1000, ge=1, description="Deepest ranking searched for a row before it is left short.")
    exclude_group_positives: bool = Field(
        True, description="Never use as a negative the positive (by id or text) of another input row asking the "
                          "same question (the same words: case, punctuation and Unicode forms aside).")
    near_duplicate_threshold: float | None = Field(
        0.8, gt=0, le=1, description="Drop candidates whose word 3-shingles have a MinHash-estimated Jaccard "
                                     "similarity with the positive's at or above this (as the question dedup); "
                                     "None disables.")
    threads: int | None = Field(None, ge=1, description="Indexing threads; default: all cores (search uses all).")
    title_key: str | None = Field(
        "title", description="Input column indexed before the text when present (a corpus_path file: its 'title' "
                             "column); None: no titles.")


_ARROW_STRINGS = {pa.string(): pd.StringDtype(na_value=np.nan), pa.large_string(): pd.StringDtype(na_value=np.nan)}


def _open_parquet(path: str, **options) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path, **options)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(f"cannot read {path} as parquet: {exc}") from exc


def _strings(column: pa.Array) -> list[str]:
    """A column's values as ``str`` (missing -> "")."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return pc.fill_null(column, "").to_pylist()


def _blank_texts(column: pa.Array) -> np.ndarray:
    """True where a text is missing, empty or only whitespace."""
    text = column.to_pandas(types_mapper=_ARROW_STRINGS.get)
    text = text.where(text.notna(), "").astype(str)
    return ((text.str.len() == 0) | text.str.isspace()).to_numpy(dtype=bool)


def _parquet_corpus(path: str, title_col: str | None) -> tuple[Corpus, "_TextSource"]:
    """The documents of a parquet corpus file, its texts left in the file (see :meth:`BM25HardNeg._corpus`).

    Only the ids stay in memory: the texts are read batch by batch, once to find the empty
    ones here and again by each walk of the :class:`Corpus`; the texts of ids seen twice are
    read by row to check that they agree.
    """
    source = _open_parquet(path)
    names = source.schema_arrow.names
    where = f"{STEP} corpus {path}"
    check_columns(names, where)
    raw_ids = source.read(columns=[ID]).column(ID).to_pandas(types_mapper=_ARROW_STRINGS.get)
    ids = raw_ids.map(canonical_id)
    blank = np.zeros(len(ids), dtype=bool)
    start = 0
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=[TEXT]):
        blank[start:start + batch.num_rows] = _blank_texts(batch.column(0))
        start += batch.num_rows
    repeated = ids.duplicated(keep=False).to_numpy()
    if repeated.any():
        rows = np.flatnonzero(repeated)
        _refuse_shared_ids(ids[repeated], pd.Series(_parquet_take(path, TEXT, rows), index=ids.index[rows]), where)
    keep = ~ids.duplicated().to_numpy() & ~blank
    title = title_column(names, title_col)
    columns = [TEXT] + ([title] if title else [])

    def batches():
        first = 0
        for part in _open_parquet(path, pre_buffer=False, buffer_size=1 << 20).iter_batches(
                batch_size=READ_BATCH, columns=columns):
            mask = keep[first:first + part.num_rows]
            first += part.num_rows
            kept = part.filter(pa.array(mask)) if len(mask) == part.num_rows else part
            yield _strings(kept.column(0)), _strings(kept.column(1)) if len(columns) == 2 else None

    corpus = Corpus.streamed(ids[keep], batches)
    return corpus, _TextSource(np.flatnonzero(keep), None, path, _id_values(raw_ids))


def _text_keys(corpus: Corpus) -> np.ndarray:
    """``text_key`` of every document's text (not its title), by index row, as uint64."""
    keys = np.zeros(len(corpus), dtype=np.uint64)
    for start, texts, _ in corpus.batches():
        keys[corpus.rows[start:start + len(texts)]] = [text_key(t) for t in texts]
    return keys


def _parquet_take(path: str, column: str, rows: np.ndarray) -> list[str]:
    """Values of ``column`` at file rows ``rows`` (any order, repeats allowed), read batch by batch.

    The file is streamed (no pre-buffering of a whole row group's column: 250 MB less at 1M
    documents) and only the wanted values of each batch become Python strings.
    """
    if not len(rows):
        return []
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    out = np.empty(len(rows), dtype=object)
    start = 0
    source = _open_parquet(path, pre_buffer=False, buffer_size=1 << 20)
    for batch in source.iter_batches(batch_size=READ_BATCH, columns=[column]):
        lo, hi = np.searchsorted(wanted, [start, start + batch.num_rows])
        if hi > lo:
            out[order[lo:hi]] = batch.column(0).take(pa.array(wanted[lo:hi] - start)).to_pylist()
        start += batch.num_rows
    if start <= wanted[-1]:
        raise StorageError(f"{path} has {start} rows now, fewer than when it was indexed")
    release_free_memory()
    return out.tolist()


@dataclass
class _TextSource:
    """Where the corpus texts (and the ids as the user wrote them) are read back from, for the chosen negatives only.

    ``rows[c]``: the source row of corpus row ``c``; the source is ``series`` (the input
    frame's text column, or a non-parquet corpus file's, held anyway) or the parquet file at
    ``path``, read again column-wise at the end instead of holding 1M texts through the search.
    ``ids``: the source's id values by source row when they are not text (ints stay ints in the
    output); None when the index's text ids are the ids.
    """

    rows: np.ndarray
    series: pd.Series | None = None
    path: str | None = None
    ids: np.ndarray | None = None

    def take(self, corpus_rows: np.ndarray) -> list[str]:
        """The texts (``str``) of ``corpus_rows``, in that order."""
        source_rows = self.rows[corpus_rows]
        if self.series is not None:
            return self.series.take(source_rows).astype(str).tolist()
        return _parquet_take(self.path, TEXT, source_rows)

    def take_ids(self, corpus_rows: np.ndarray) -> list | None:
        """The id values of ``corpus_rows`` as the source holds them (None: use the index's)."""
        if self.ids is None:
            return None
        return [_plain(v) for v in self.ids[self.rows[corpus_rows]]]


def _plain(value: object) -> object:
    """numpy scalars -> Python values; integral floats (ints next to a missing id) -> int."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _id_values(ids: pd.Series, fallback: pd.Series | None = None) -> np.ndarray | None:
    """The id values to write out when they are not plain text (numbers), blanks from ``fallback``."""
    if pd.api.types.is_string_dtype(ids) and ids.map(lambda v: isinstance(v, str) or is_blank(v)).all():
        return None
    values = ids.astype(object).to_numpy(copy=True)
    if fallback is not None:
        blank = ids.map(is_blank).to_numpy()
        values[blank] = fallback.to_numpy()[blank]
    return values


def _negatives_of(index: BM25Index, source: _TextSource,
                  chosen: list[list[int]]) -> tuple[list[list[str]], list[list[object]]]:
    """(texts, ids) of the negatives of each mined row, given as index rows ``chosen[j]``, all fetched at once."""
    doc_rows = np.array([r for rows in chosen for r in rows], dtype=np.int64)
    corpus_rows = index.input_rows[doc_rows]
    ids = source.take_ids(corpus_rows)
    flat_ids = iter(ids if ids is not None else index.ids.take(pa.array(doc_rows)).to_pylist())
    flat_texts = iter(source.take(corpus_rows))
    return ([[next(flat_texts) for _ in rows] for rows in chosen],
            [[next(flat_ids) for _ in rows] for rows in chosen])


def _refuse_shared_ids(ids: pd.Series, texts: pd.Series, where: str) -> None:
    """``InputColumnError`` when one id names two different (non-empty) texts."""
    dup = ids.duplicated(keep=False) & texts.notna() & (texts.astype(str).str.strip() != "")
    if not dup.any():
        return
    groups = pd.DataFrame({"id": ids[dup], "text": texts[dup].astype(str)}).groupby("id", sort=False)["text"]
    clash = groups.nunique()
    clash = clash[clash > 1]
    if len(clash):
        first = clash.index[0]
        rows = [int(r) for r in ids.index[(ids == first).to_numpy()][:3]]
        raise InputColumnError(
            f"{where}: {len(clash)} id(s) name different documents, e.g. id {first!r} at rows "
            f"{', '.join(map(str, rows))}: ids must identify one document (fix the ids, or drop the "
            f"id column to use content hashes)")


@dataclass
class _Mining:
    """A searchable corpus: the index, the fingerprints of its texts by index row, where its
    texts are read back, and whether it is kept for later calls (a corpus file's)."""

    index: BM25Index
    keys: np.ndarray
    source: _TextSource
    kept: bool


# The corpus files prepared in this process (see BM25HardNeg._mining), and the lock that makes
# one thread build while the others wait.
_KEPT: dict[tuple[str, str, str], _Mining] = {}
_KEPT_LOCK = threading.Lock()


class BM25HardNeg(Operator):
    step_name = STEP

    def __init__(self, config: BM25HardNegConfig | None = None, **settings) -> None:
        super().__init__()
        base = config.model_dump() if config else {}
        self.config = BM25HardNegConfig.model_validate({**base, **settings})

    def output_columns(self, output_negatives_key: str = "hard_negatives", **_: object) -> list[str]:
        key = output_negatives_key
        return [key, f"{key}_ids", f"{key}_scores", POSITIVE_SCORE, POSITIVE_RANK]

    def output_keys(self, output_negatives_key: str = "hard_negatives", **_: object) -> list[str]:
        return [output_negatives_key]

    @staticmethod
    def _positive_ids(df: pd.DataFrame, text_col: str, id_col: str) -> tuple[pd.Series, np.ndarray | None]:
        """Each row's document id as text (hash of the text where there is none) and, when the
        ids are not text, their values by row (see :class:`_TextSource`)."""
        hashed = df[text_col].fillna("").astype(str).map(document_id)
        if id_col not in df.columns:
            return hashed, None
        ids = df[id_col]
        return ids.map(canonical_id).where(~ids.map(is_blank), hashed), _id_values(ids, hashed)

    def _corpus(self, df: pd.DataFrame, text_col: str, positive_ids: pd.Series,
                id_values: np.ndarray | None) -> tuple[Corpus, _TextSource]:
        """The documents to mine from (one per id, empty texts dropped) and where their texts are read back.

        Out: a :class:`Corpus` of them (the only holder of their texts, which the index build
        releases; a parquet ``corpus_path``'s texts stay in the file, see :func:`_parquet_corpus`)
        and a :class:`_TextSource` that fetches the chosen negatives' texts by corpus row
        afterwards. The rows to keep are found first and the columns filtered once, so a large
        corpus is copied once.
        """
        title_col, path = self.config.title_key, self.config.corpus_path
        if path and format_of(path) == "parquet" and os.path.exists(path):
            return _parquet_corpus(path, title_col)
        if path:
            src = read_frame(path)  # its errors name a missing file or an unsupported format
            check_columns(src.columns, f"{STEP} corpus {path}")
            cols = {"id": src[ID].map(canonical_id), "text": src[TEXT]}
            if title := title_column(src.columns, title_col):
                cols["title"] = src[title]
            series, id_values, where = src[TEXT], _id_values(src[ID]), f"{STEP} corpus {path}"
        else:
            cols = {"id": positive_ids, "text": df[text_col]}
            if title_col and title_col in df.columns:
                cols["title"] = df[title_col]
            series, where = df[text_col], STEP
        frame = pd.DataFrame({name: col.reset_index(drop=True) for name, col in cols.items()})
        del cols
        _refuse_shared_ids(frame["id"], frame["text"], where)
        text = frame["text"].where(frame["text"].notna(), "").astype(str)
        keep = (~frame["id"].duplicated() & (text.str.len() > 0) & ~text.str.isspace()).to_numpy()
        del text
        frame = frame[keep].reset_index(drop=True)
        frame["text"] = frame["text"].astype(str)
        corpus = Corpus(frame, title_col="title" if "title" in frame.columns else None)
        return corpus, _TextSource(np.flatnonzero(keep), series, None, id_values)

    def prepare(self) -> BM25Index:
        """Build (or open) the index of ``config.corpus_path`` now and keep it for this process's
        later calls: a sharded run does this once before its shards search. Out: the index."""
        if not self.config.corpus_path:
            raise ValueError(f"{STEP}: prepare() needs hardneg.corpus_path (the corpus file every call searches)")
        return self._mining(pd.DataFrame(), "text", pd.Series(dtype=object), None)[0].index

    def _mining(self, df: pd.DataFrame, text_col: str, positive_ids: pd.Series,
                id_values: np.ndarray | None) -> tuple["_Mining", bool]:
        """What a search needs (index, fingerprints, text source) and whether this call built it.

        A ``corpus_path`` file's is made once per process and settings and kept while the file
        is unchanged (:func:`~rare_core.hashing.file_sha256_memo`): each shard of a sharded run
        then only searches, and concurrent calls wait for the one that builds. The input
        frame's own corpus is made per call and released after it."""
        if not self.config.corpus_path:
            return self._new_mining(df, text_col, positive_ids, id_values, kept=False), True
        path = str(Path(self.config.corpus_path).resolve())
        settings = self.config.model_dump(include={"k1", "b", "query_weighting", "title_key", "index_dir"})
        key = (path, file_sha256_memo(path), json.dumps(settings, sort_keys=True))
        with _KEPT_LOCK:
            if key in _KEPT:
                return _KEPT[key], False
            _KEPT[key] = mining = self._new_mining(df, text_col, positive_ids, id_values, kept=True)
            return mining, True

    def _new_mining(self, df: pd.DataFrame, text_col: str, positive_ids: pd.Series,
                    id_values: np.ndarray | None, kept: bool) -> "_Mining":
        corpus, source = self._corpus(df, text_col, positive_ids, id_values)
        keys = _text_keys(corpus)
        index = BM25Index.build(
            corpus, self.config.index_dir, k1=self.config.k1, b=self.config.b,
            query_weighting=self.config.query_weighting, threads=self.config.threads)
        del corpus  # released by the build: only ids and row maps are left
        release_free_memory()
        return _Mining(index=index, keys=keys, source=source, kept=kept)

    def process(self, df: pd.DataFrame, input_question_key: str = "question", input_text_key: str = "text",
                output_negatives_key: str = "hard_negatives", num_neg: int | None = None,
                input_id_key: str = "id", overwrite: bool = False) -> pd.DataFrame:
        started = time.perf_counter()
        num_neg = self.config.num_neg if num_neg is None else num_neg
        if num_neg < 1:
            raise ValueError(f"{STEP}: num_neg must be >= 1, got {num_neg}")
        key = output_negatives_key
        outputs = self.output_columns(key)
        distinct_keys(STEP, input_question_key=input_question_key, input_text_key=input_text_key,
                      output_negatives_key=key, input_id_key=input_id_key)
        require_columns(df, [input_question_key, input_text_key], STEP)
        guard_outputs(df, outputs, STEP, overwrite)
        df_in = df
        own = [step_column(STEP, "status"), SPARE, SPARE_IDS, SPARE_SCORES]
        df = init_status(df.drop(columns=[c for c in [*outputs, *own] if c in df.columns]))
        active = active_mask(df)
        no_question = df[input_question_key].map(is_blank)
        for pos in df.index[active & no_question]:
            mark_failed(df, pos, STEP, "invalid input: the question is empty or missing", INPUT_ERROR)
        todo = np.flatnonzero((active & ~no_question).to_numpy())

        n = len(df)
        negatives: list[list[str]] = [[] for _ in range(n)]
        neg_ids: list[list[object]] = [[] for _ in range(n)]
        neg_scores: list[list[float]] = [[] for _ in range(n)]
        spares: list[list[str]] = [[] for _ in range(n)]
        spare_ids: list[list[object]] = [[] for _ in range(n)]
        spare_scores: list[list[float]] = [[] for _ in range(n)]
        pos_score = np.full(n, np.nan)
        pos_rank = np.full(n, -1, dtype=np.int64)
        status = np.where(active.to_numpy(), OK, SKIPPED).astype(object)
        status[(active & no_question).to_numpy()] = FAILED
        extra = {"short_rows": 0, "queries": int(len(todo)), "index_seconds": 0.0, "search_seconds": 0.0,
                 "index_reused": False, "index_opens": 0, "index_docs": 0, "search_rounds": 0,
                 "truncated_queries": 0, "group_rows": 0, "group_excluded": 0, "near_duplicates_excluded": 0}
        if len(todo):
            positive_ids, id_values = self._positive_ids(df, input_text_key, input_id_key)
            mining, fresh = self._mining(df, input_text_key, positive_ids, id_values)
            index = mining.index
            extra.update(index_seconds=round(index.build_seconds, 3) if fresh else 0.0,
                         index_reused=index.reused or not fresh, index_docs=index.num_docs,
                         index_opens=int(fresh))  # summed over shards: processes that opened it for a shard
            t0 = time.perf_counter()
            threshold = self.config.near_duplicate_threshold
            near = NearDuplicates(lambda r: mining.source.take(index.input_rows[r]), threshold) if threshold else None
            miner = Miner(index, mining.keys, num_neg=num_neg, skip_top=self.config.skip_top,
                          max_score_ratio=self.config.max_score_ratio, max_depth=self.config.max_depth,
                          reserve_top=self.config.reserve_top, near_duplicates=near, spare=self.config.spare)
            questions = df[input_question_key].to_numpy()
            texts = df[input_text_key].to_numpy()
            pids = positive_ids.to_numpy()
            groups = [None] * n  # every row of the frame counts, failed upstream or not: its positive still answers
            if self.config.exclude_group_positives:
                groups = question_groups([None if is_blank(t) else " ".join(words(q)) or None
                                          for q, t in zip(questions, texts)], pids.tolist(), texts.tolist())
                extra["group_rows"] = sum(groups[row] is not None for row in todo)
            chosen = []  # index rows of each mined row's negatives then spares, in todo order
            truncated_before = index.truncated_queries
            for start in range(0, len(todo), CHUNK_QUESTIONS):
                rows = todo[start:start + CHUNK_QUESTIONS]
                mined = miner.mine([str(q) for q in questions[rows]], pids[rows].tolist(), texts[rows].tolist(),
                                   [groups[row] for row in rows])
                extra["search_rounds"] = max(extra["search_rounds"], mined.rounds)
                for row, sel, score in zip(rows, mined.selections, mined.positive_scores):
                    chosen.append(sel.ids + sel.spare_ids)
                    spare_scores[row] = sel.spare_scores
                    extra["group_excluded"] += sel.group_excluded
                    extra["near_duplicates_excluded"] += sel.near_duplicates
                    neg_scores[row], pos_rank[row] = sel.scores, sel.positive_rank
                    if score is not None:
                        pos_score[row] = score
                    if len(sel.ids) < num_neg:
                        status[row] = SHORT
            extra["truncated_queries"] = index.truncated_queries - truncated_before
            if not mining.kept:
                index.close()  # unmaps the index files before the texts are read back
            for row, row_texts, row_ids in zip(todo, *_negatives_of(index, mining.source, chosen)):
                cut = len(row_texts) - len(spare_scores[row])
                negatives[row], neg_ids[row] = row_texts[:cut], row_ids[:cut]
                spares[row], spare_ids[row] = row_texts[cut:], row_ids[cut:]
            extra["search_seconds"] = round(time.perf_counter() - t0, 3)
            extra["short_rows"] = int((status == SHORT).sum())

        df[key] = pd.Series(negatives, index=df.index, dtype=object)
        df[f"{key}_ids"] = pd.Series(neg_ids, index=df.index, dtype=object)
        df[f"{key}_scores"] = pd.Series(neg_scores, index=df.index, dtype=object)
        df[POSITIVE_SCORE] = pos_score
        df[POSITIVE_RANK] = pos_rank
        df[step_column(STEP, "status")] = status
        if self.config.spare:
            for column, values in ((SPARE, spares), (SPARE_IDS, spare_ids), (SPARE_SCORES, spare_scores)):
                df[column] = pd.Series(values, index=df.index, dtype=object)
        self.last_summary = summarize(STEP, df_in, df, active, started, extra=extra)
        return df


def _corpus_hash(config) -> dict:
    corpus = config.hardneg.corpus_path  # a separate corpus: its content counts, like the input's
    return {"corpus_sha256": file_sha256_memo(corpus) if corpus else None}


def describe(summary) -> list[str]:
    short = int(summary.extra.get("short_rows", 0))
    return [f"{short:,} row(s) got fewer negatives than asked (kept, marked `short`)"] if short else []


SPEC = StepSpec(
    name=STEP, label="BM25HardNeg", task_name="bm25-hardneg", section="hardneg", settings_model=BM25HardNegConfig,
    operator=BM25HardNeg,
    keys=lambda c: {"input_question_key": c.columns.question, "input_text_key": c.columns.text,
                    "output_negatives_key": c.columns.hard_negatives, "input_id_key": c.columns.id},
    # The index folder and thread count change how negatives are found, not which.
    cache_exclude=frozenset({"index_dir", "threads"}), cache_inputs=_corpus_hash,
    resources=frozenset({SEARCH_INDEX}), describe=describe, cache_files={"index_dir": "bm25_index"}, input_files=("corpus_path",),
    dataset=lambda c: {POSITIVE: c.columns.text, c.columns.hard_negatives: c.columns.hard_negatives,
                       f"{c.columns.hard_negatives}_ids": f"{c.columns.hard_negatives}_ids"})
