"""Multi-threaded BM25 batch search on an Anserini index, through ``jnius`` (no torch, no pyserini search package).

In: an index folder (built by :mod:`rare_core.retrieval.index`, whose Lucene ``id`` field holds
:func:`row_key` of each document's index row) and
:class:`~rare_core.retrieval.index.SearchSettings`. Out: :class:`RunHits` (flat numpy arrays of
query number, index row and score) and single-document scores.

Searching runs Anserini's own batch searcher, ``io.anserini.search.SearchCollection`` (a Java
thread pool over the queries), which reads the queries from a TSV topics file and writes a
TREC run file that is parsed with pandas in one go: no Python<->Java call per hit. Queries go in
runs of at most :data:`RUN_HITS` hits, so the Java heap (which keeps a run's hits with their
stored documents until it writes them) and the run file stay small. Its ranking sorts by
score and then by the ``id`` field, and scores are rounded to 1e-4 with ties nudged by 1e-6 in
that order (Anserini's ``ScoreTiesAdjusterReranker``); the run file prints them with 6
decimals (``%f``). Since the ``id`` field is the zero-padded index row and rows are in document
id order, ties are broken by document id, whatever order the multi-threaded indexer stored
the documents in.

Query weighting: ``"bow"`` is Anserini's ``BagOfWordsQueryGenerator`` (each analyzed query token
a SHOULD clause, repeated tokens counted again), ``"bm25"`` is ``QuerySideBm25QueryGenerator``
(``-bm25.querySide``: each distinct query term boosted by its query-side BM25 weight with the
same k1/b).

Long queries: Lucene refuses a query with more clauses (one per distinct analyzed term) than
``IndexSearcher.maxClauseCount``: SearchCollection then logs the error in its thread and gives
that query no hits, and a single-document score raises. :mod:`~rare_core.retrieval.jvm` raises
the limit to :data:`~rare_core.retrieval.jvm.MAX_CLAUSE_COUNT` (16,384) at JVM start, and
:func:`clip_query` (used by both paths) cuts every query to :data:`MAX_QUERY_TOKENS` whitespace
tokens and :data:`MAX_QUERY_CHARS` characters. The second cut makes the limit unreachable, since
an analyzed term takes at least one character (a CJK text has no whitespace to count); the first
keeps a document pasted as a question to its opening. ``LuceneSearcher.truncated_queries``
counts the distinct queries cut so far.
"""

from __future__ import annotations

import os
import re
import tempfile
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from rare_core.errors import RetrievalError
from rare_core.retrieval.jvm import jclass

RUN_HITS = 200_000  # hits per SearchCollection run (queries per run = this // k, at most RUN_QUERIES)
RUN_QUERIES = 20_000
FIELD_CONTENTS = "contents"
FIELD_ID = "id"
# TsvStringTopicReader reads "qid<TAB>query" lines and Java-trims them (drops chars <= U+0020 at
# both ends): tabs and line breaks inside a query would cut it, and a query made only of such
# characters has no second field (the reader fails), so they become spaces and blank queries are
# not sent (no hits, as Lucene would give them). The analyzer treats all of them as spaces anyway.
_TOPIC_BREAKS = re.compile(r"[\t\n\r]")
_JAVA_TRIM = "".join(map(chr, range(33)))
MAX_QUERY_TOKENS = 2_048  # whitespace tokens kept of a query (a question is rarely over 100)
MAX_QUERY_CHARS = 16_000  # characters kept: below jvm.MAX_CLAUSE_COUNT with room for the score path's filter
_TOKEN = re.compile(r"\S+")


def clip_query(query: str) -> tuple[str, bool]:
    """``query`` cut after its first :data:`MAX_QUERY_TOKENS` whitespace tokens and to at most
    :data:`MAX_QUERY_CHARS` characters (at a whitespace when the cut falls inside a token and
    there is one before it), and whether anything was cut."""
    if len(query) < 2 * MAX_QUERY_TOKENS and len(query) <= MAX_QUERY_CHARS:
        return query, False  # n tokens take at least 2n - 1 characters
    cut = query
    for i, m in enumerate(_TOKEN.finditer(query), start=1):
        if i == MAX_QUERY_TOKENS:
            cut = query[:m.end()]
            break
    if len(cut) > MAX_QUERY_CHARS:
        head = cut[:MAX_QUERY_CHARS]
        if not cut[MAX_QUERY_CHARS].isspace() and re.search(r"\s", head):
            head = re.sub(r"\S+$", "", head)
        cut = head
    cut = cut.rstrip()
    return (cut, True) if cut != query.rstrip() else (query, False)


def _java_error(exc: Exception) -> str:
    """The first line of a Java exception's message (jnius appends the Java stack trace)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def row_key(row: int, num_docs: int) -> str:
    """The Lucene ``id`` of index row ``row``: zero-padded so that string order is row order."""
    return str(row).zfill(len(str(max(num_docs - 1, 0))))


def run_score(score: float) -> float:
    """``score`` as a TREC run file prints it (Java ``%f``: 6 decimals, half up), so both paths agree."""
    return float(Decimal(repr(float(score))).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


class SearchHits(NamedTuple):
    """``ids[i]``/``scores[i]``: the hits of query ``i``, best first (unpacks as ``ids, scores``)."""

    ids: list[list[str]]
    scores: list[list[float]]


class RunHits(NamedTuple):
    """Hits of several queries as flat arrays, grouped by query (ascending), best first within one.

    ``query[i]``: the query's position in the searched list; ``row[i]``: the document's index
    row; ``score[i]``: its BM25 score.
    """

    query: np.ndarray
    row: np.ndarray
    score: np.ndarray

    def bounds(self, num_queries: int) -> np.ndarray:
        """``num_queries + 1`` offsets: the hits of query ``j`` are ``[bounds[j], bounds[j + 1])``."""
        return np.searchsorted(self.query, np.arange(num_queries + 1))


def empty_hits() -> RunHits:
    """A :class:`RunHits` without hits."""
    return RunHits(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))


def write_topics(queries: list[str], path: Path) -> None:
    """A TsvString topics file of ``queries`` (topic id = position in the list), blank ones left out."""
    with open(path, "w", encoding="utf-8", errors="replace", newline="\n") as out:
        for i, query in enumerate(queries):
            text = _TOPIC_BREAKS.sub(" ", query)
            if text.strip(_JAVA_TRIM):
                out.write(f"{i}\t{text}\n")


def parse_run(path: Path) -> RunHits:
    """The hits of a TREC run file (``qid Q0 docid rank score tag``, numeric qids and docids)."""
    if os.path.getsize(path) == 0:
        return empty_hits()
    run = pd.read_csv(path, sep=" ", header=None, usecols=[0, 2, 4], names=["query", "row", "score"],
                      dtype={"query": np.int64, "row": np.int64, "score": np.float64}, engine="c")
    order = np.argsort(run["query"].to_numpy(), kind="stable")  # topics come out in qid string order
    return RunHits(*(run[c].to_numpy()[order] for c in ("query", "row", "score")))


class LuceneSearcher:
    """Batch BM25 search (SearchCollection runs) and single-document scores on one index."""

    def __init__(self, path: str | os.PathLike, settings, num_docs: int) -> None:
        self.path, self.settings, self.num_docs = Path(path), settings, num_docs
        try:
            self._searcher = jclass("io.anserini.search.SimpleSearcher")(str(path))
        except Exception as exc:  # jnius.JavaException: Lucene cannot open the folder
            raise RetrievalError(f"cannot open the Lucene index at {path}: {_java_error(exc)}") from exc
        self._searcher.set_bm25(float(settings.k1), float(settings.b))
        self._truncated: set[int] = set()  # hashes of the queries clip_query cut
        self._reader = None
        if settings.query_weighting == "bm25":
            self._reader = jclass("io.anserini.index.IndexReaderUtils").getReader(str(path))
            self._generator = jclass("io.anserini.search.query.QuerySideBm25QueryGenerator")(
                float(settings.k1), float(settings.b), self._reader)
        else:
            self._generator = jclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        # SearchCollection logs a line per 100 queries at INFO; its -quiet flag only acts in main()
        configurator, level = jclass("org.apache.logging.log4j.core.config.Configurator"), jclass(
            "org.apache.logging.log4j.Level")
        configurator.setLevel("io.anserini.search.SearchCollection", level.WARN)

    def _collection_args(self, topics: Path, output: Path, k: int) -> list[str]:
        """SearchCollection command-line arguments for one run."""
        model = "-bm25.querySide" if self.settings.query_weighting == "bm25" else "-bm25"  # they exclude each other
        return ["-index", str(self.path), "-topics", str(topics), "-topicReader", "TsvString",
                "-output", str(output), "-format", "trec", "-hits", str(k), "-threads", str(self.settings.threads),
                model, "-bm25.k1", str(float(self.settings.k1)), "-bm25.b", str(float(self.settings.b))]

    def _run(self, queries: list[str], k: int, folder: Path) -> RunHits:
        """One SearchCollection run over ``queries`` (at most :data:`RUN_QUERIES`)."""
        topics, output = folder / "topics.tsv", folder / "run.txt"
        write_topics(queries, topics)
        if os.path.getsize(topics) == 0:
            return empty_hits()
        args = jclass("io.anserini.search.SearchCollection$Args")()
        try:
            jclass("org.kohsuke.args4j.CmdLineParser")(args).parseArgument(*self._collection_args(topics, output, k))
            collection = jclass("io.anserini.search.SearchCollection")(args)
            try:
                collection.run()
            finally:
                collection.close()
        except Exception as exc:  # jnius.JavaException from the parser or a search thread
            raise RetrievalError(f"BM25 batch search failed: {_java_error(exc)}") from exc
        return parse_run(output)

    @property
    def truncated_queries(self) -> int:
        """Distinct queries that :func:`clip_query` cut since this searcher opened (both paths)."""
        return len(self._truncated)

    def _clip(self, queries: list[str]) -> list[str]:
        """``queries`` through :func:`clip_query`, noting the ones cut."""
        out = []
        for query in queries:
            clipped, cut = clip_query(query)
            if cut:
                self._truncated.add(hash(query))
            out.append(clipped)
        return out

    def search(self, queries: list[str], k: int) -> RunHits:
        """Top-``k`` hits of every query (``k`` >= 1), query numbers = positions in ``queries``."""
        if k < 1:
            raise RetrievalError(f"k must be >= 1, got {k}")
        queries = self._clip(queries)
        step = max(1, min(RUN_QUERIES, RUN_HITS // k))
        parts = []
        with tempfile.TemporaryDirectory(prefix="rare-bm25-run-") as tmp:
            for start in range(0, len(queries), step):
                hits = self._run(queries[start:start + step], k, Path(tmp))
                parts.append(hits._replace(query=hits.query + start))
        return RunHits(*(np.concatenate(arrays) for arrays in zip(*parts))) if parts else empty_hits()

    def score(self, queries: list[str], rows: list[int]) -> list[float]:
        """BM25 score of index row ``rows[i]`` for ``queries[i]``, as :func:`run_score` rounds it.

        Runs the query with a FILTER clause on the row's id (the filter adds nothing to the
        score), so the score is exactly the one the document gets in the ranking. 0.0 when the
        document matches no query term. A Java error becomes :class:`RetrievalError`.
        """
        boolean_builder = jclass("org.apache.lucene.search.BooleanQuery$Builder")
        occur = jclass("org.apache.lucene.search.BooleanClause$Occur")
        term_query, term = jclass("org.apache.lucene.search.TermQuery"), jclass("org.apache.lucene.index.Term")
        analyzer = self._searcher.get_analyzer()
        out = []
        for query, row in zip(self._clip(queries), rows):
            try:
                builder = boolean_builder()
                builder.add(self._generator.buildQuery(FIELD_CONTENTS, analyzer, query), occur.MUST)
                builder.add(term_query(term(FIELD_ID, row_key(int(row), self.num_docs))), occur.FILTER)
                hits = self._searcher.search(builder.build(), 1)
            except Exception as exc:  # jnius.JavaException (e.g. IndexSearcher$TooManyClauses)
                raise RetrievalError(f"BM25 scoring failed for a query of {len(query)} characters: "
                                     f"{_java_error(exc)}") from exc
            out.append(run_score(hits[0].score) if len(hits) else 0.0)
        return out

    def close(self) -> None:
        self._searcher.close()
        if self._reader is not None:
            self._reader.close()
