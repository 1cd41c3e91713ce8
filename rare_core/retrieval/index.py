"""Build, cache and open a Lucene BM25 index with Anserini's own indexer.

In: a DataFrame of documents (id, text and optionally title columns) and a cache root folder.
Out: :class:`BM25Index`, whose ``search``/``score`` run BM25 on that index (see
:mod:`rare_core.retrieval.search`).

The index lives in ``{index_dir_root}/bm25-{key}`` where ``key`` hashes every (id, title, text)
in order plus the analyzer settings and the Anserini jar, so the same corpus reuses its index
and any change builds a new one. A build writes the documents as JsonCollection jsonl files
(``{"id", "contents"}``, contents = ``title + " " + text``) into a temp folder beside the
target, runs ``io.anserini.index.IndexCollection`` there (Lucene English analyzer: lowercase,
English stopwords, Porter stemming, as pyserini's BM25 defaults; ids stored for retrieval,
contents not stored: texts stay on the Python side), writes ``rare_index.json`` last and then
renames the folder into place, so a cache folder either is complete or does not exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field

from rare_core.errors import RetrievalError
from rare_core.retrieval.jvm import anserini_jar, jclass
from rare_core.retrieval.search import LuceneSearcher, SearchHits

INDEX_FORMAT = 1
META_FILE = "rare_index.json"
QueryWeighting = Literal["bow", "bm25"]


class SearchSettings(BaseModel):
    """How an index is searched: BM25 ``k1``/``b``, query weighting and Java search threads."""

    k1: float = Field(0.9, gt=0)
    b: float = Field(0.4, ge=0, le=1)
    query_weighting: QueryWeighting = "bow"
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)


def corpus_frame(docs: pd.DataFrame, id_col: str = "id", text_col: str = "text",
                 title_col: str | None = None) -> pd.DataFrame:
    """``docs`` as an ``id``/``contents`` frame (contents = title + " " + text); ``RetrievalError`` on bad ids."""
    missing = [c for c in (id_col, text_col, title_col) if c is not None and c not in docs.columns]
    if missing:
        raise RetrievalError(f"corpus column(s) {missing} not found; columns present: {list(docs.columns)}")
    if docs[id_col].isna().any():
        raise RetrievalError("corpus has missing document ids")
    ids = docs[id_col].astype(str)
    if (ids.str.len() == 0).any():
        raise RetrievalError("corpus has empty document ids")
    if ids.duplicated().any():
        raise RetrievalError(f"corpus has duplicate ids, e.g. {ids[ids.duplicated()].iloc[0]!r}")
    contents = docs[text_col].fillna("").astype(str)
    if title_col is not None:
        contents = docs[title_col].fillna("").astype(str) + " " + contents
    return pd.DataFrame({"id": ids.to_numpy(), "contents": contents.to_numpy()})


def corpus_key(corpus: pd.DataFrame) -> str:
    """Hex digest identifying the corpus content (ids and contents, in order) and the index settings."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({"format": INDEX_FORMAT, "jar": anserini_jar().name,
                              "analyzer": "DefaultEnglishAnalyzer/porter/default-stopwords"}).encode())
    for doc_id, contents in zip(corpus["id"], corpus["contents"]):
        digest.update(doc_id.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
        digest.update(contents.encode("utf-8", "surrogatepass"))
        digest.update(b"\x01")
    return digest.hexdigest()


def _write_collection(corpus: pd.DataFrame, folder: Path, shards: int) -> None:
    """JsonCollection files, one per indexing thread so that Anserini indexes them in parallel."""
    folder.mkdir(parents=True)
    shards = max(1, min(shards, len(corpus)))
    for shard in range(shards):
        part = corpus.iloc[shard::shards]
        part.to_json(folder / f"part{shard:03d}.jsonl", orient="records", lines=True, force_ascii=False)


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
    the cache; ``build_seconds``: time spent building (0 when reused).
    """

    def __init__(self, path: str | os.PathLike, settings: SearchSettings | None = None, *,
                 reused: bool = True, build_seconds: float = 0.0) -> None:
        self.path = Path(path)
        meta_path = self.path / META_FILE
        if not meta_path.exists():
            raise RetrievalError(f"{self.path} is not a complete rare_core BM25 index (no {META_FILE})")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.num_docs = int(self.meta["num_docs"])
        self.settings = settings or SearchSettings()
        self.reused = reused
        self.build_seconds = build_seconds
        self._searcher: LuceneSearcher | None = None

    @classmethod
    def build(cls, docs_df: pd.DataFrame, index_dir_root: str | os.PathLike, *, id_col: str = "id",
              text_col: str = "text", title_col: str | None = None, k1: float = 0.9, b: float = 0.4,
              query_weighting: QueryWeighting = "bow", threads: int | None = None,
              memory_buffer_mb: int = 256) -> "BM25Index":
        """The index of ``docs_df`` under ``index_dir_root``: reused when the corpus hash matches, else built."""
        settings = SearchSettings(k1=k1, b=b, query_weighting=query_weighting,
                                  **({"threads": threads} if threads else {}))
        corpus = corpus_frame(docs_df, id_col, text_col, title_col)
        if corpus.empty:
            raise RetrievalError("cannot build a BM25 index from an empty corpus")
        root = Path(index_dir_root)
        target = root / f"bm25-{corpus_key(corpus)}"
        if (target / META_FILE).exists():
            return cls(target, settings, reused=True)
        start = time.perf_counter()
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
        try:
            _write_collection(corpus, work / "collection", settings.threads)
            num_docs = _run_indexer(work / "collection", work / "index", settings.threads, memory_buffer_mb)
            if num_docs != len(corpus):
                raise RetrievalError(f"Anserini indexed {num_docs} of {len(corpus)} documents")
            meta = {"format": INDEX_FORMAT, "num_docs": num_docs, "jar": anserini_jar().name}
            (work / "index" / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
            try:
                os.rename(work / "index", target)
            except OSError:
                if not (target / META_FILE).exists():  # not a concurrent build of the same corpus
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return cls(target, settings, reused=False, build_seconds=time.perf_counter() - start)

    @property
    def searcher(self) -> LuceneSearcher:
        if self._searcher is None:
            self._searcher = LuceneSearcher(self.path, self.settings)
        return self._searcher

    def search(self, queries: list[str], k: int) -> SearchHits:
        """Top-``k`` (ids, scores) per query, best first, score ties broken by id."""
        return self.searcher.search(queries, k)

    def score(self, queries: list[str], doc_ids: list[str]) -> list[float | None]:
        """BM25 score of ``doc_ids[i]`` for ``queries[i]``; 0.0 if it matches no query term, None if not indexed."""
        return self.searcher.score(queries, doc_ids)

    def close(self) -> None:
        """Release the Lucene readers (the next search reopens them)."""
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None
