"""BM25Index on small corpora: build, cache reuse, ranking, tie-breaking, single-document scores, long
queries; and BM25HardNeg on Unicode copies of the positive."""

from __future__ import annotations

import random
import string
import subprocess
import sys
import unicodedata

import pandas as pd
import pytest

from rare_core.errors import RetrievalError
from rare_core.retrieval import BM25Index, SearchHits, normalize_text
from rare_core.retrieval.index import BUILD_LOCK, remove_stale_builds

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


def test_run_file_parser_groups_hits_by_query_in_rank_order(tmp_path):
    from rare_core.retrieval.search import parse_run

    run = tmp_path / "run.txt"
    run.write_text("10 Q0 007 1 3.500000 Anserini\n10 Q0 002 2 3.499999 Anserini\n"
                   "2 Q0 001 1 1.250000 Anserini\n", encoding="utf-8")
    hits = parse_run(run)
    assert hits.query.tolist() == [2, 10, 10] and hits.row.tolist() == [1, 7, 2]
    assert hits.score.tolist() == [1.25, 3.5, 3.499999]
    assert hits.bounds(12).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3]
    (tmp_path / "empty.txt").write_text("")
    assert len(parse_run(tmp_path / "empty.txt").row) == 0


def test_topics_file_keeps_one_line_per_query_and_leaves_out_blank_ones(tmp_path):
    from rare_core.retrieval.search import write_topics

    write_topics(["a\tb\nc", " \t\r\n", "Zürich?", ""], tmp_path / "t.tsv")
    assert (tmp_path / "t.tsv").read_text(encoding="utf-8").splitlines() == ["0\ta b c", "2\tZürich?"]


def test_queries_with_tabs_newlines_or_nothing_searchable(index):
    hits = index.search(["cats\tdog\nmarkets", "", "  \t ", "cats"], k=10)
    assert hits.ids[0][0] == "d2" and set(hits.ids[0]) == {"d1", "d2", "d3", "d4"}
    assert index.search(["cats dog markets"], k=10) == index.search(["cats\tdog\nmarkets"], k=10)
    assert hits.ids[1] == hits.ids[2] == [] and hits.ids[3] == ["d1", "d2"]


def test_run_score_rounds_like_java_percent_f():
    from rare_core.retrieval.search import run_score

    assert run_score(5.466800212860107) == 5.4668
    assert run_score(0.0390625) == 0.039063  # half up, as java.util.Formatter
    assert run_score(2.0) == 2.0


def test_small_runs_and_chunks_give_the_same_ranking(index, monkeypatch):
    import rare_core.retrieval.index as index_module
    import rare_core.retrieval.search as search_module

    queries = ["cat", "dog garden", "markets", "zürich", "the", "cat dog night"]
    whole = index.search(queries, k=3)
    monkeypatch.setattr(search_module, "RUN_QUERIES", 2)
    assert index.search(queries, k=3) == whole
    monkeypatch.setattr(search_module, "RUN_HITS", 1)  # one query per run
    assert index.search(queries, k=3) == whole
    monkeypatch.setattr(index_module, "CHUNK_DOCS", 2)  # the corpus walked in chunks of 2: same key and files
    assert BM25Index.build(DOCS, index.path.parent, title_col="title").path == index.path


def test_rows_follow_id_order_whatever_the_input_order(tmp_path):
    shuffled = DOCS.iloc[[3, 0, 4, 2, 1]]
    built = BM25Index.build(shuffled, tmp_path)
    assert built.ids.to_pylist() == ["d1", "d2", "d3", "d4", "d5"]
    assert shuffled["id"].to_numpy()[built.input_rows].tolist() == ["d1", "d2", "d3", "d4", "d5"]
    assert built.rows_of(["d4", "nope", "d1"]).tolist() == [3, -1, 0]
    assert BM25Index.build(DOCS, tmp_path).reused  # same documents in another order: same index
    assert built.score(["dogs"], ["nope"]) == [None]


def test_a_corpus_object_builds_the_same_index_and_is_released(tmp_path):
    from rare_core.retrieval.index import Corpus

    built = BM25Index.build(DOCS, tmp_path, title_col="title")
    corpus = Corpus(DOCS.iloc[[2, 0, 1, 4, 3]], title_col="title")
    again = BM25Index.build(corpus, tmp_path)
    assert again.reused and again.path == built.path
    assert corpus.text is None and corpus.title is None and len(corpus) == len(DOCS)
    fresh = Corpus(DOCS, title_col="title")
    assert BM25Index.build(fresh, tmp_path / "other").search(["cat"], k=2) == built.search(["cat"], k=2)
    assert fresh.text is None


# -- long queries: Lucene's clause limit --------------------------------------------------------

def _vocabulary(n: int, seed: int = 3) -> list[str]:
    """``n`` distinct made-up lower-case words of 7 to 10 letters (no stopword, no shared stem)."""
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < n:
        words["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(7, 10)))] = None
    return list(words)


VOCAB = _vocabulary(4_000)
LONG_DOCS = pd.DataFrame({"id": [f"L{j:02d}" for j in range(40)],
                          "text": [" ".join(VOCAB[j * 100:(j + 1) * 100]) for j in range(40)]})


@pytest.fixture(scope="module")
def long_index(tmp_path_factory):
    return BM25Index.build(LONG_DOCS, tmp_path_factory.mktemp("long"))


def test_the_jvm_raises_lucenes_clause_limit(long_index):
    from rare_core.retrieval.jvm import MAX_CLAUSE_COUNT, jclass

    long_index.search(["x"], k=1)
    assert jclass("org.apache.lucene.search.IndexSearcher").getMaxClauseCount() == MAX_CLAUSE_COUNT >= 16_384


def test_a_query_of_1500_distinct_words_gets_hits_and_a_score(long_index):
    query = " ".join(random.Random(5).sample(VOCAB[:2_000], 1_500))  # > 1,024 clauses, < MAX_QUERY_TOKENS
    ids, scores = long_index.search([query, "nothing"], k=5)
    assert len(ids[0]) == 5 and ids[1] == []
    top = ids[0][0]
    assert long_index.score([query], [top]) == [scores[0][0]]
    assert isinstance(scores[0][0], float) and scores[0][0] > 0
    assert long_index.searcher.truncated_queries == 0


def test_queries_over_the_length_limit_are_cut_and_counted(long_index):
    from rare_core.retrieval.search import MAX_QUERY_CHARS, MAX_QUERY_TOKENS, clip_query

    query = " ".join(VOCAB[i % 4_000] for i in range(3 * MAX_QUERY_TOKENS))  # 6,144 words, ~60,000 characters
    head, cut = clip_query(query)
    assert cut and query.startswith(head) and len(head) <= MAX_QUERY_CHARS and len(head.split()) <= MAX_QUERY_TOKENS
    searcher = long_index.searcher
    before = searcher.truncated_queries
    hits = long_index.search([query], k=40)
    assert hits == long_index.search([head], k=40) and 10 < len(hits.ids[0]) < 40  # the head's words only
    [score] = long_index.score([query], [hits.ids[0][0]])
    assert score == hits.scores[0][0] and isinstance(score, float)
    assert searcher.truncated_queries == before + 1  # the same query cut on both paths counts once
    long_index.search([query + " more"], k=1)
    assert searcher.truncated_queries == before + 2


def test_clip_query():
    from rare_core.retrieval.search import MAX_QUERY_CHARS, MAX_QUERY_TOKENS, clip_query

    assert clip_query("why does x cause y?") == ("why does x cause y?", False)
    assert clip_query("a " * MAX_QUERY_TOKENS) == ("a " * MAX_QUERY_TOKENS, False)
    cut, was_cut = clip_query("a " * MAX_QUERY_TOKENS + "b")
    assert was_cut and cut == " ".join(["a"] * MAX_QUERY_TOKENS)
    cut, was_cut = clip_query("字" * (MAX_QUERY_CHARS + 5))  # no whitespace to count: cut by characters
    assert was_cut and cut == "字" * MAX_QUERY_CHARS
    cut, was_cut = clip_query("abcdefgh " * (MAX_QUERY_CHARS // 9 + 1))  # long words: the last whole one kept
    assert was_cut and len(cut) <= MAX_QUERY_CHARS and cut.endswith("abcdefgh") and len(cut.split()) < MAX_QUERY_TOKENS


def test_a_java_error_while_scoring_is_a_retrieval_error(long_index):
    from rare_core.retrieval.jvm import jclass

    lucene_searcher = jclass("org.apache.lucene.search.IndexSearcher")
    limit = lucene_searcher.getMaxClauseCount()
    lucene_searcher.setMaxClauseCount(8)
    try:
        with pytest.raises(RetrievalError, match="TooManyClauses") as err:
            long_index.score([" ".join(VOCAB[:20])], ["L00"])
    finally:
        lucene_searcher.setMaxClauseCount(limit)
    assert "\n" not in str(err.value)


# -- copies of the positive in other Unicode forms, end to end ---------------------------------

def test_unicode_copies_of_the_positive_are_never_hard_negatives(tmp_path):
    from rare_core.operators.bm25_hardneg import BM25HardNeg

    positive = "Tomatoes grow best in warm soil at the café with full sun and regular watering."
    copies = {
        "nfd": unicodedata.normalize("NFD", positive),
        "wide": positive.replace("Tomatoes", "Ｔｏｍａｔｏｅｓ"),
        "zwsp": positive.replace("regular", "regu\u200blar"),
        "shy": positive.replace("watering", "water\u00ading"),
        "bom": "\ufeff" + positive.replace("soil", "so\u2060il"),
    }
    others = [("g2", "Tomato plants need staking; water tomatoes deeply at the soil line."),
              ("g3", "Roses prefer rich soil and morning sun; water roses at the base."),
              ("g4", "Cucumbers grow fast in warm soil when watered every day."),
              ("g5", "Basil grows well beside tomatoes in warm sunny beds.")]
    rows = [("g1", positive), *copies.items(), *others]
    df = pd.DataFrame({"id": [i for i, _ in rows], "text": [t for _, t in rows],
                       "question": ["how should tomatoes be watered in warm soil with full sun?"] * len(rows)})
    # every row asks one question: without group exclusion the other rows' documents are candidates
    out = BM25HardNeg(index_dir=str(tmp_path / "idx"), max_score_ratio=None,
                      exclude_group_positives=False).process(df, num_neg=3)
    family = {"g1", *copies}
    for i in range(len(copies) + 1):  # the positive and each copy: none of the family comes back
        negs = out.iloc[i]["hard_negatives_ids"]
        assert len(negs) == 3 and not family & set(negs), (out.iloc[i]["id"], negs)
        assert not {normalize_text(t) for t in out.iloc[i]["hard_negatives"]} & {normalize_text(positive)}


_KILLED_BUILD = """
import os, sys
import pandas as pd
from rare_core.retrieval import index as index_module
from rare_core.retrieval.index import BM25Index

def stop_here(*args, **kwargs):  # the build has written its copy of the corpus: die as kill -9 would
    os._exit(9)

index_module._run_indexer = stop_here
docs = pd.DataFrame({"id": [str(i) for i in range(50)], "text": [f"document {i} about the heart" for i in range(50)]})
BM25Index.build(docs, sys.argv[1])
"""


def test_a_killed_build_leaves_a_folder_the_next_build_removes(tmp_path):
    root = tmp_path / "indexes"
    done = subprocess.run([sys.executable, "-c", _KILLED_BUILD, str(root)], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    stale = [p for p in root.iterdir() if p.name.startswith(".bm25-")]
    assert len(stale) == 1 and (stale[0] / "collection").exists()  # the corpus text, left behind
    live = root / ".bm25-live.build"  # another process's build in progress: its lock is held
    live.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
                               str(live / BUILD_LOCK)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        BM25Index.build(pd.DataFrame({"id": ["a", "b"], "text": ["one text", "another text"]}), root)
        assert not stale[0].exists() and live.exists()
    finally:
        holder.stdin.close()
        holder.wait()
    assert remove_stale_builds(root) == [live]  # its builder is gone now
