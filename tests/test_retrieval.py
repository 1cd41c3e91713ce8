"""BM25Index on small corpora: build, cache reuse, ranking, tie-breaking, single-document scores."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from rare_core.errors import RetrievalError
from rare_core.retrieval import BM25Index, SearchHits

DOCS = pd.DataFrame({
    "id": ["d1", "d2", "d3", "d4", "d5"],
    "title": ["Felines", "", "", "Canines", ""],
    "text": [
        "The cat sat on the mat and the cat slept.",
        "A dog chased a cat across the garden.",
        "Stock markets fell sharply on Monday.",
        "Dogs bark loudly at night.",
        "Café crème brûlée est délicieux à Zürich.",
    ],
})


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return BM25Index.build(DOCS, tmp_path_factory.mktemp("idx"), title_col="title")


def test_import_starts_no_jvm_and_loads_no_torch():
    code = ("import sys, rare_core, rare_core.retrieval; "
            "print(sorted(m for m in ('torch', 'jnius', 'pyserini', 'prefect') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_search_ranks_by_bm25_with_stemming_and_stopwords(index):
    hits = index.search(["cats", "the", "markets falling"], k=10)
    assert isinstance(hits, SearchHits)
    ids, scores = hits
    assert ids[0] == ["d1", "d2"]  # "cats" is stemmed to "cat"; d1 has it twice
    assert scores[0][0] > scores[0][1] > 0
    assert ids[1] == []  # only a stopword
    assert ids[2] == ["d3"]


def test_title_is_indexed_with_the_text(index):
    assert index.search(["felines"], k=5).ids == [["d1"]]


def test_unicode_documents_and_queries(index):
    ids, scores = index.search(["brûlée zürich", "ZÜRICH"], k=5)
    assert ids == [["d5"], ["d5"]]
    assert scores[0][0] > scores[1][0] > 0


def test_k_limits_the_hits(index):
    ids, scores = index.search(["cat dog"], k=1)
    assert len(ids[0]) == len(scores[0]) == 1


def test_score_of_a_given_document_equals_its_ranking_score(index):
    ids, scores = index.search(["dog cat garden"], k=10)
    ranked = dict(zip(ids[0], scores[0]))
    assert index.score(["dog cat garden"] * 3, ["d2", "d4", "d3"]) == [ranked["d2"], ranked["d4"], 0.0]


def test_score_ties_are_broken_by_document_id(tmp_path):
    docs = pd.DataFrame({"id": ["z", "m", "a", "q"], "text": ["same words here"] * 3 + ["other"]})
    ids, scores = BM25Index.build(docs, tmp_path).search(["same words"], k=10)
    assert ids == [["a", "m", "z"]]
    assert scores[0][0] > scores[0][1] > scores[0][2] > scores[0][0] - 1e-5


def test_query_side_bm25_weighting(tmp_path):
    bow = BM25Index.build(DOCS, tmp_path)
    bm25q = BM25Index.build(DOCS, tmp_path, query_weighting="bm25")
    assert bm25q.path == bow.path and bm25q.reused  # query weighting is a search setting
    q = ["cat cat cat cat cat cat dog"]
    assert bm25q.search(q, 5).ids[0][0] == "d2"  # query tf saturates: the dog term keeps its weight
    assert bow.search(q, 5).ids[0][0] == "d1"  # bag of words counts "cat" six times


def test_same_corpus_reuses_the_index_and_a_changed_one_builds_another(tmp_path):
    first = BM25Index.build(DOCS, tmp_path)
    again = BM25Index.build(DOCS.copy(), tmp_path, k1=1.2, b=0.75)
    assert not first.reused and first.build_seconds > 0
    assert again.reused and again.path == first.path and again.build_seconds == 0
    changed = DOCS.copy()
    changed.loc[2, "text"] = "Stock markets rose on Monday."
    other = BM25Index.build(changed, tmp_path)
    assert not other.reused and other.path != first.path
    assert other.search(["rose"], 3).ids == [["d3"]] and first.search(["rose"], 3).ids == [[]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, other.path.name])


def test_bm25_parameters_change_the_scores(tmp_path):
    default = BM25Index.build(DOCS, tmp_path).search(["cat"], 5).scores
    tuned = BM25Index.build(DOCS, tmp_path, k1=2.0, b=1.0).search(["cat"], 5).scores
    assert default != tuned


def test_bad_corpora_raise_retrieval_errors(tmp_path):
    with pytest.raises(RetrievalError, match="duplicate ids"):
        BM25Index.build(pd.DataFrame({"id": ["a", "a"], "text": ["x", "y"]}), tmp_path)
    with pytest.raises(RetrievalError, match="empty corpus"):
        BM25Index.build(pd.DataFrame({"id": [], "text": []}), tmp_path)
    with pytest.raises(RetrievalError, match="'body'"):
        BM25Index.build(DOCS, tmp_path, text_col="body")
    with pytest.raises(RetrievalError, match="not a complete"):
        BM25Index(tmp_path)
