"""Multi-threaded BM25 batch search on an Anserini index, through ``jnius`` (no torch, no pyserini search package).

In: an index folder and :class:`~rare_core.retrieval.index.SearchSettings`. Out:
:class:`SearchHits` (per query: doc ids and scores, best first) and single-document scores.

Searching runs Anserini's ``SimpleSearcher.batch_search`` (a Java thread pool over the queries;
Anserini 1.7.1 ignores its ``threads`` argument and uses a work-stealing pool over all cores)
in chunks of at most :data:`CHUNK_HITS` hits, so the Java heap holds one chunk's results. Its
ranking sorts by score and then by document id (Lucene doc values), and scores are rounded to
1e-4 with ties nudged by 1e-6 in that order (Anserini's ``ScoreTiesAdjusterReranker``), so a
ranking is the same whatever order the multi-threaded indexer stored the documents in.

Query weighting: ``"bow"`` is Anserini's ``BagOfWordsQueryGenerator`` (each analyzed query token
a SHOULD clause, repeated tokens counted again), ``"bm25"`` is ``QuerySideBm25QueryGenerator``
(each distinct query term boosted by its query-side BM25 weight with the same k1/b).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from rare_core.errors import RetrievalError
from rare_core.retrieval.jvm import jclass

CHUNK_HITS = 200_000  # hits held in the Java heap at once (queries per chunk = this // k, at most 10k)
FIELD_CONTENTS = "contents"
FIELD_ID = "id"


class SearchHits(NamedTuple):
    """``ids[i]``/``scores[i]``: the hits of query ``i``, best first (unpacks as ``ids, scores``)."""

    ids: list[list[str]]
    scores: list[list[float]]


class LuceneSearcher:
    """An open Anserini ``SimpleSearcher`` with BM25(k1, b) and the configured query generator."""

    def __init__(self, path: str | os.PathLike, settings) -> None:
        self.settings = settings
        try:
            self._searcher = jclass("io.anserini.search.SimpleSearcher")(str(path))
        except Exception as exc:  # jnius.JavaException: Lucene cannot open the folder
            raise RetrievalError(f"cannot open the Lucene index at {path}: {exc}") from exc
        self._searcher.set_bm25(float(settings.k1), float(settings.b))
        self._analyzer = self._searcher.get_analyzer()
        self._reader = None
        if settings.query_weighting == "bm25":
            self._reader = jclass("io.anserini.index.IndexReaderUtils").getReader(str(path))
            self._generator = jclass("io.anserini.search.query.QuerySideBm25QueryGenerator")(
                float(settings.k1), float(settings.b), self._reader)
        else:
            self._generator = jclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        self._array_list = jclass("java.util.ArrayList")

    def search(self, queries: list[str], k: int) -> SearchHits:
        """Top-``k`` hits of every query (``k`` >= 1)."""
        if k < 1:
            raise RetrievalError(f"k must be >= 1, got {k}")
        ids: list[list[str]] = []
        scores: list[list[float]] = []
        step = max(1, min(10_000, CHUNK_HITS // k))
        for start in range(0, len(queries), step):
            chunk = queries[start:start + step]
            jqueries, jqids = self._array_list(), self._array_list()
            for i, query in enumerate(chunk):
                jqueries.add(query)
                jqids.add(str(i))
            try:
                results = self._searcher.batch_search(self._generator, jqueries, jqids, int(k),
                                                      int(self.settings.threads))
            except Exception as exc:  # jnius.JavaException from a search thread
                raise RetrievalError(f"BM25 batch search failed: {exc}") from exc
            for i in range(len(chunk)):
                hits = results.get(str(i))
                ids.append([hit.docid for hit in hits])
                scores.append([hit.score for hit in hits])
        return SearchHits(ids, scores)

    def score(self, queries: list[str], doc_ids: list[str]) -> list[float]:
        """BM25 score of ``doc_ids[i]`` for ``queries[i]``, rounded like search scores.

        Runs the query with a FILTER clause on the document id (the filter adds nothing to the
        score), so the score is exactly the one the document gets in the ranking. 0.0 when the
        document matches no query term or is not in the index.
        """
        boolean_builder = jclass("org.apache.lucene.search.BooleanQuery$Builder")
        occur = jclass("org.apache.lucene.search.BooleanClause$Occur")
        term_query, term = jclass("org.apache.lucene.search.TermQuery"), jclass("org.apache.lucene.index.Term")
        out = []
        for query, doc_id in zip(queries, doc_ids):
            builder = boolean_builder()
            builder.add(self._generator.buildQuery(FIELD_CONTENTS, self._analyzer, query), occur.MUST)
            builder.add(term_query(term(FIELD_ID, doc_id)), occur.FILTER)
            hits = self._searcher.search(builder.build(), 1)
            out.append(float(hits[0].score) if len(hits) else 0.0)
        return out

    def close(self) -> None:
        self._searcher.close()
        if self._reader is not None:
            self._reader.close()
