"""Build, cache and open a Lucene BM25 index with Anserini's own indexer.

In: a DataFrame of documents (id, text and optionally title columns), or a :class:`Corpus`
that reads them from a file, and a cache root folder.
Out: :class:`BM25Index`, whose ``search``/``score`` run BM25 on that index (see
:mod:`rare_core.retrieval.search`).

Index rows are the documents in id order (code point order). Lucene's ``id`` field holds the
zero-padded row number (:func:`~rare_core.retrieval.search.row_key`), so a ranking comes back
as integers and ties broken by that field are broken by document id; the ids themselves are
kept in ``ids.parquet`` (row order). The index lives in ``{index_dir_root}/bm25-{key}`` where
``key`` combines a digest of every (id, title + " " + text), in row order, with the analyzer
settings and the Anserini jar, so the same documents (in any input order) reuse their index and
any change builds a new one. The texts are walked in their source order in chunks of
:data:`CHUNK_DOCS` documents (once for the key and, when building, once more to write the
files), so they never exist as one big list of Python strings, and a corpus file is read front
to back. A build writes JsonCollection jsonl files (``{"id", "contents"}``) into a temp
folder beside the target, runs ``io.anserini.index.IndexCollection`` there (Lucene English
analyzer: lowercase, English stopwords, Porter stemming, as pyserini's BM25 defaults; ids stored
for retrieval, contents not stored: texts stay on the Python side), writes ``rare_index.json``
last and then renames the folder into place, so a cache folder either is complete or does not
exist. The builder holds a lock on ``.building`` in its temp folder while it works; a temp
folder whose lock nobody holds is what a killed build left (a copy of the corpus text) and is
removed by the next build under the same root (:func:`remove_stale_builds`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from rare_core.errors import RetrievalError
from rare_core.memory import release_free_memory
from rare_core.retrieval.jvm import anserini_jar, jclass
from rare_core.retrieval.search import LuceneSearcher, RunHits, SearchHits, row_key

INDEX_FORMAT = 3  # 3: the key combines per-document digests in row order
META_FILE = "rare_index.json"
IDS_FILE = "ids.parquet"
BUILD_LOCK = ".building"
UNLOCKED_GRACE = 600.0  # seconds a temp folder without its lock file is left alone (a build just starting)


def remove_stale_builds(root: Path) -> list[Path]:
    """Remove the temp folders of builds that no process is running any more under ``root``
    (their ``.building`` lock is free: the builder was killed) -> the folders removed. A live
    build holds its lock; a folder without a lock file is removed once older than
    :data:`UNLOCKED_GRACE` (a build between making its folder and taking the lock is younger)."""
    removed = []
    for folder in root.glob(".bm25-*"):
        if not folder.is_dir():
            continue
        lock_path = folder / BUILD_LOCK
        try:
            if not lock_path.exists():
                if time.time() - folder.stat().st_mtime < UNLOCKED_GRACE:
                    continue
            else:
                with open(lock_path) as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while its builder runs
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
CHUNK_DOCS = 50_000
QueryWeighting = Literal["bow", "bm25"]


class SearchSettings(BaseModel):
    """How an index is searched: BM25 ``k1``/``b``, query weighting and Java search threads."""

    k1: float = Field(0.9, gt=0)
    b: float = Field(0.4, ge=0, le=1)
    query_weighting: QueryWeighting = "bow"
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)


Batches = Callable[[], Iterator[tuple[list[str], list[str] | None]]]


def _checked_ids(ids: pd.Series) -> pd.Series:
    """``ids`` as text with a fresh index; ``RetrievalError`` on missing, empty or duplicate ids."""
    if ids.isna().any():
        raise RetrievalError("corpus has missing document ids")
    ids = ids.astype(str).reset_index(drop=True)
    if (ids.str.len() == 0).any():
        raise RetrievalError("corpus has empty document ids")
    duplicated = ids.duplicated()
    if duplicated.any():
        raise RetrievalError(f"corpus has duplicate ids, e.g. {ids[duplicated].iloc[0]!r}")
    return ids


class Corpus:
    """The documents of a build: ids and index row order in memory, texts read chunk by chunk.

    In: the docs frame and its column names, or (:meth:`streamed`) the ids and a function that
    reads the texts again from wherever they are. The documents have a *source order* (the
    frame's, the file's); ``ids``: their ids as text in that order; ``input_rows[r]``: the
    source position of index row ``r`` (document id order); ``rows[p]``: the index row of
    source position ``p``. ``batches()`` walks the texts in source order, so a file is read
    front to back, never by index row. ``RetrievalError`` on missing columns or bad ids.
    """

    def __init__(self, docs: pd.DataFrame, id_col: str = "id", text_col: str = "text",
                 title_col: str | None = None) -> None:
        missing = [c for c in (id_col, text_col, title_col) if c is not None and c not in docs.columns]
        if missing:
            raise RetrievalError(f"corpus column(s) {missing} not found; columns present: {list(docs.columns)}")
        text = docs[text_col].reset_index(drop=True)
        title = docs[title_col].reset_index(drop=True) if title_col is not None else None
        self._init(docs[id_col], self._frame_batches(text, title))
        self.text, self.title = text, title

    @classmethod
    def streamed(cls, ids: pd.Series, batches: Batches) -> "Corpus":
        """A corpus whose texts stay where they are: ``batches()`` yields ``(texts, titles or None)``
        in source order, ``len(ids)`` documents in all, each time it is called."""
        corpus = cls.__new__(cls)
        corpus._init(ids, batches)
        corpus.text = corpus.title = None
        return corpus

    def _init(self, ids: pd.Series, batches: Batches) -> None:
        self.ids = _checked_ids(ids)
        self.input_rows = np.asarray(pc.array_sort_indices(pa.array(self.ids, type=pa.string())), dtype=np.int64)
        self.rows = np.empty_like(self.input_rows)
        self.rows[self.input_rows] = np.arange(len(self.input_rows))
        self._batches: Batches | None = batches

    @staticmethod
    def _frame_batches(text: pd.Series, title: pd.Series | None) -> Batches:
        def batches() -> Iterator[tuple[list[str], list[str] | None]]:
            for start in range(0, len(text), CHUNK_DOCS):
                part = slice(start, start + CHUNK_DOCS)
                yield (text.iloc[part].fillna("").astype(str).tolist(),
                       title.iloc[part].fillna("").astype(str).tolist() if title is not None else None)
        return batches

    def __len__(self) -> int:
        return len(self.input_rows)

    def release(self) -> None:
        """Let go of the texts (``batches``/``key``/``write_collection`` no longer work); ids stay.

        Their memory is freed when no one else holds the columns (e.g. the caller deleted its
        frame after making this Corpus), and handed back to the system
        (:func:`~rare_core.memory.release_free_memory`).
        """
        self.text = self.title = self._batches = None
        release_free_memory()

    def batches(self) -> Iterator[tuple[int, list[str], list[str] | None]]:
        """``(first source position, texts, titles or None)`` of consecutive chunks in source order."""
        if self._batches is None:
            raise RetrievalError("the corpus texts were released")
        start = 0
        for texts, titles in self._batches():
            yield start, texts, titles
            start += len(texts)
        if start != len(self):
            raise RetrievalError(f"the corpus source gave {start} texts for {len(self)} ids: it changed while read")

    def contents(self) -> Iterator[tuple[int, list[str]]]:
        """``(first source position, contents)`` of consecutive chunks; contents = title + " " + text."""
        for start, texts, titles in self.batches():
            yield start, texts if titles is None else [f"{title} {text}" for title, text in zip(titles, texts)]

    def key(self) -> str:
        """Hex digest identifying the documents (each id with its contents) and the index settings.

        Each document's (id, contents) is digested in source order and the digests are combined
        in index row order, so any order of the same documents gives the same key.
        """
        digests = np.zeros((len(self), 16), dtype=np.uint8)
        for start, contents in self.contents():
            ids = self.ids.iloc[start:start + len(contents)].tolist()
            chunk = b"".join(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass") + b"\x00"
                                             + text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                             for doc_id, text in zip(ids, contents))
            digests[self.rows[start:start + len(contents)]] = np.frombuffer(chunk, dtype=np.uint8).reshape(-1, 16)
        digest = hashlib.blake2b(digest_size=16)
        digest.update(json.dumps({"format": INDEX_FORMAT, "jar": anserini_jar().name,
                                  "analyzer": "DefaultEnglishAnalyzer/porter/default-stopwords"}).encode())
        digest.update(digests.tobytes())
        return digest.hexdigest()

    def write_collection(self, folder: Path, shards: int) -> None:
        """JsonCollection files (``id`` = row key), chunks dealt round-robin to ``shards`` files for parallel indexing."""
        folder.mkdir(parents=True)
        shards = max(1, min(shards, -(-len(self) // CHUNK_DOCS)))
        files = [open(folder / f"part{shard:03d}.jsonl", "w", encoding="utf-8", errors="surrogatepass")
                 for shard in range(shards)]
        try:
            for number, (start, contents) in enumerate(self.contents()):
                out = files[number % shards]
                for row, text in zip(self.rows[start:start + len(contents)].tolist(), contents):
                    out.write(json.dumps({"id": row_key(row, len(self)), "contents": text}, ensure_ascii=False))
                    out.write("\n")
        finally:
            for out in files:
                out.close()

    def write_ids(self, path: Path) -> None:
        """The document ids in row order, as a one-column parquet file."""
        pq.write_table(pa.table({"id": pa.array(self.ids.take(self.input_rows), type=pa.string())}), path)


def _run_indexer(collection: Path, target: Path, threads: int, memory_buffer_mb: int) -> int:
    """Run Anserini's IndexCollection; returns the number of indexed documents."""
    args = jclass("io.anserini.index.IndexCollection$Args")()
    args.collectionClass = "JsonCollection"
    args.generatorClass = "DefaultLuceneDocumentGenerator"
    args.input = str(collection)
    args.index = str(target)
    args.threads = threads
    args.memoryBuffer = memory_buffer_mb
    args.optimize = True  # one segment: faster search, and the index is built once per corpus
    args.quiet = True
    indexer = jclass("io.anserini.index.IndexCollection")(args)
    indexer.run()
    counters = indexer.getCounters()
    if counters.errors.get() > 0:
        raise RetrievalError(f"Anserini reported {counters.errors.get()} indexing errors in {collection}")
    return int(counters.indexed.get()) + int(counters.empty.get())


class BM25Index:
    """A Lucene BM25 index on disk plus its searcher (opened lazily, shared by all calls).

    ``path``: the index folder; ``num_docs``; ``reused``: True when ``build`` found the index in
    the cache; ``build_seconds``: time spent building (0 when reused); ``input_rows``: from
    ``build`` only, ``input_rows[r]`` = position in the built frame of index row ``r``.
    """

    def __init__(self, path: str | os.PathLike, settings: SearchSettings | None = None, *,
                 reused: bool = True, build_seconds: float = 0.0, input_rows: np.ndarray | None = None) -> None:
        self.path = Path(path).resolve()  # absolute: see build()
        meta_path = self.path / META_FILE
        if not meta_path.exists():
            raise RetrievalError(f"{self.path} is not a complete rare_core BM25 index (no {META_FILE})")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.num_docs = int(self.meta["num_docs"])
        self.settings = settings or SearchSettings()
        self.reused = reused
        self.build_seconds = build_seconds
        self.input_rows = input_rows
        self._searcher: LuceneSearcher | None = None
        self._ids: pa.ChunkedArray | None = None

    @classmethod
    def build(cls, docs_df: pd.DataFrame | Corpus, index_dir_root: str | os.PathLike, *, id_col: str = "id",
              text_col: str = "text", title_col: str | None = None, k1: float = 0.9, b: float = 0.4,
              query_weighting: QueryWeighting = "bow", threads: int | None = None,
              memory_buffer_mb: int = 64) -> "BM25Index":
        """The index of ``docs_df`` under ``index_dir_root``: reused when the corpus hash matches, else built.

        ``docs_df`` may be a :class:`Corpus` (the column names are then its own): it is
        :meth:`~Corpus.release`-d once hashed and written, before Java indexes, so a caller that
        keeps no other reference to the texts does not hold them while the JVM runs.
        """
        settings = SearchSettings(k1=k1, b=b, query_weighting=query_weighting,
                                  **({"threads": threads} if threads else {}))
        corpus = docs_df if isinstance(docs_df, Corpus) else Corpus(docs_df, id_col, text_col, title_col)
        if not len(corpus):
            raise RetrievalError("cannot build a BM25 index from an empty corpus")
        # Absolute paths only go to Java: the JVM resolves relative ones against the working
        # directory it started in, which is not Python's after an os.chdir.
        root = Path(index_dir_root).resolve()
        target = root / f"bm25-{corpus.key()}"
        if (target / META_FILE).exists():
            corpus.release()
            return cls(target, settings, reused=True, input_rows=corpus.input_rows)
        start = time.perf_counter()
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_builds(root)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
        lock = open(work / BUILD_LOCK, "w")  # noqa: SIM115 - held until the build ends (see remove_stale_builds)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            corpus.write_collection(work / "collection", settings.threads)
            corpus.release()
            num_docs = _run_indexer(work / "collection", work / "index", settings.threads, memory_buffer_mb)
            if num_docs != len(corpus):
                raise RetrievalError(f"Anserini indexed {num_docs} of {len(corpus)} documents")
            corpus.write_ids(work / "index" / IDS_FILE)
            meta = {"format": INDEX_FORMAT, "num_docs": num_docs, "jar": anserini_jar().name}
            (work / "index" / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
            try:
                os.rename(work / "index", target)
            except OSError:
                if not (target / META_FILE).exists():  # not a concurrent build of the same corpus
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            lock.close()
        return cls(target, settings, reused=False, build_seconds=time.perf_counter() - start,
                   input_rows=corpus.input_rows)

    @property
    def searcher(self) -> LuceneSearcher:
        if self._searcher is None:
            self._searcher = LuceneSearcher(self.path, self.settings, self.num_docs)
        return self._searcher

    @property
    def ids(self) -> pa.ChunkedArray:
        """Document ids by index row (read from ``ids.parquet`` on first use)."""
        if self._ids is None:
            self._ids = pq.read_table(self.path / IDS_FILE, columns=["id"]).column("id")
        return self._ids

    def rows_of(self, doc_ids: list[str]) -> np.ndarray:
        """Index row of each id, -1 for ids not in the index."""
        rows = pc.index_in(pa.array(doc_ids, type=pa.string()), value_set=self.ids.combine_chunks())
        return np.asarray(rows.fill_null(-1), dtype=np.int64)

    def search_rows(self, queries: list[str], k: int) -> RunHits:
        """Top-``k`` hits of every query as flat arrays of (query number, index row, score)."""
        return self.searcher.search(queries, k)

    def search(self, queries: list[str], k: int) -> SearchHits:
        """Top-``k`` (ids, scores) per query, best first, score ties broken by id."""
        hits = self.search_rows(queries, k)
        ids, scores = self.ids.take(pa.array(hits.row)).to_pylist(), hits.score.tolist()
        bounds = hits.bounds(len(queries)).tolist()
        return SearchHits([ids[a:z] for a, z in zip(bounds, bounds[1:])],
                          [scores[a:z] for a, z in zip(bounds, bounds[1:])])

    def score_rows(self, queries: list[str], rows: list[int]) -> list[float]:
        """BM25 score of index row ``rows[i]`` for ``queries[i]``; 0.0 if it matches no query term."""
        return self.searcher.score(queries, rows)

    def score(self, queries: list[str], doc_ids: list[str]) -> list[float | None]:
        """BM25 score of ``doc_ids[i]`` for ``queries[i]``; 0.0 if it matches no query term, None if not indexed."""
        rows = self.rows_of(doc_ids)
        known = np.flatnonzero(rows >= 0)
        out: list[float | None] = [None] * len(doc_ids)
        for j, value in zip(known, self.score_rows([queries[j] for j in known], rows[known].tolist())):
            out[j] = value
        return out

    @property
    def truncated_queries(self) -> int:
        """Queries cut to the searcher's length limit since the searcher opened (see ``search``)."""
        return self._searcher.truncated_queries if self._searcher is not None else 0

    def close(self) -> None:
        """Release the Lucene readers (the next search reopens them)."""
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None
