"""Negatives never taken from the question's other positives, its positive's near-duplicates or,
unless a row needs them, the very top of the ranking; and the defaults against NFCorpus's judgments."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rare_core.operators.bm25_hardneg import BM25HardNeg, BM25HardNegConfig
from rare_core.retrieval.mining import NearDuplicates, jaccard, question_groups
from rare_core.retrieval.negatives import select_negatives, text_key

ROOT = Path(__file__).resolve().parents[1]
NFCORPUS_ZIP = ROOT.parent / "shared/data/nfcorpus/nfcorpus.zip"

TEXTS = {"pos": "The cat sat on the mat.", "other": "A cat slept on a warm mat.", "n1": "A dog sat on a log.",
         "n2": "Birds sit on wires.", "n3": "Fish swim in the sea.", "n4": "Cows graze in fields."}


def pick(ranking, num_neg=3, **kw):
    return select_negatives([d for d, _ in ranking], [s for _, s in ranking], num_neg=num_neg, positive_ids={"pos"},
                            positive_key=text_key(TEXTS["pos"]), key_of=lambda d: text_key(TEXTS[d]),
                            max_score_ratio=None, **kw)


RANKING = [("pos", 9.0), ("other", 8.0), ("n1", 7.0), ("n2", 6.0), ("n3", 5.0), ("n4", 4.0)]


def test_another_rows_positive_is_dropped_by_id_or_by_text_and_counted():
    assert pick(RANKING).ids == ["other", "n1", "n2"]
    by_id = pick(RANKING, excluded_ids={"pos", "other"})
    by_text = pick(RANKING, excluded_keys={text_key(" a CAT slept on a warm mat. ")})
    for sel in (by_id, by_text):
        assert (sel.ids, sel.group_excluded, sel.positive_rank) == (["n1", "n2", "n3"], 1, 1)


def test_near_duplicates_named_by_the_caller_are_dropped_and_counted():
    sel = pick(RANKING, near_duplicates={"other", "n2"})
    assert (sel.ids, sel.near_duplicates, sel.group_excluded) == (["n1", "n3", "n4"], 2, 0)


def test_the_reserve_is_used_only_to_fill_a_short_row_best_first():
    ranking = [("pos", 9.0), ("other", 8.0), ("n1", 7.0), ("n2", 6.0), ("n3", 5.0)]
    assert pick(ranking, num_neg=2, reserve_top=2).ids == ["n1", "n2"]  # rank 2 held back
    short = pick(ranking, num_neg=3, reserve_top=3)  # two below the reserve: the best held back fills the row
    assert (short.ids, short.scores, short.exhausted) == (["other", "n2", "n3"], [8.0, 6.0, 5.0], True)
    assert pick(ranking, num_neg=3, reserve_top=10).ids == pick(ranking, num_neg=3).ids  # all inside: as before
    assert pick(ranking, num_neg=3, reserve_top=10, excluded_ids={"other"}).ids == ["n1", "n2", "n3"]


def test_question_groups_join_rows_asking_the_same_words():
    questions = ["What do cats eat?", "what do CATS eat", "What do dogs eat?", "What do dogs eat?", None, "x"]
    ids = ["d1", "d2", "d3", "d3", "d4", "d5"]
    texts = ["cats eat fish", "cats eat mice", "dogs eat meat", "dogs eat meat", "none", "x"]
    from rare_core.filters.common import words
    groups = question_groups([" ".join(words(q)) if q else None for q in questions], ids, texts)
    assert groups[0] is groups[1] and groups[0].ids == {"d1", "d2"}
    assert groups[0].keys == {text_key("cats eat fish"), text_key("cats eat mice")}
    assert groups[2:] == [None] * 4  # one positive asked twice, no question, or asked once: nothing to add


LONG = ("Regular aerobic exercise lowers resting blood pressure in adults with hypertension, and the effect "
        "grows with the weekly minutes of moderate activity reported by the participants of the trial.")


def test_near_duplicate_test_on_word_shingles():
    near = LONG.replace("participants", "volunteers").upper()  # one word changed, case aside
    clean = "Dietary sodium raises blood pressure in adults; exercise was not measured in this trial at all."
    texts = {0: near, 1: clean, 2: LONG}
    test = NearDuplicates(lambda rows: [texts[int(r)] for r in rows], 0.8)
    assert test.flags([LONG, LONG], [[0, 1], [2]]) == [{0}, {2}]
    assert 0.8 <= jaccard(*(test._shingles(t) for t in (LONG, near))) < 1.0
    assert jaccard(set(), set()) == 0.0


def garden(questions: list[str]) -> pd.DataFrame:
    docs = [("g1", "Tomatoes grow best in warm soil with full sun and regular watering."),
            ("g2", "Tomato plants need staking; water tomatoes deeply at the soil line."),
            ("g3", "Roses prefer rich soil and morning sun; water roses at the base."),
            ("g4", "Cucumbers grow fast in warm soil when watered every day."),
            ("g5", "Basil grows well beside tomatoes in warm sunny beds.")]
    return pd.DataFrame({"id": [d for d, _ in docs], "text": [t for _, t in docs], "question": questions})


def test_rows_asking_the_same_question_never_get_each_others_positive(tmp_path):
    asked = "How should tomatoes be watered in warm soil?"
    df = garden([asked, asked.upper().rstrip("?"), "roses", "cucumbers", "basil"])  # rows 0 and 1: one question
    op = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None)
    out = op.process(df, num_neg=3)
    assert "g2" not in out.loc[0, "hard_negatives_ids"] and "g1" not in out.loc[1, "hard_negatives_ids"]
    assert out.loc[0, "hard_negatives_ids"] == ["g4", "g5", "g3"]
    assert op.last_summary.extra["group_rows"] == 2 and op.last_summary.extra["group_excluded"] == 2
    ungrouped = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None, exclude_group_positives=False)
    assert ungrouped.process(df, num_neg=3).loc[0, "hard_negatives_ids"][0] == "g2"


def test_a_group_positive_is_excluded_by_text_in_a_separate_corpus(tmp_path):
    corpus = garden(["-"] * 5)[["id", "text"]]
    corpus.loc[len(corpus)] = ["copy-of-g2", corpus.loc[1, "text"]]  # g2's text under another id
    path = tmp_path / "corpus.jsonl"
    corpus.to_json(path, orient="records", lines=True)
    rows = garden(["how should tomatoes be watered in warm soil?"] * 5).head(2)
    out = BM25HardNeg(index_dir=str(tmp_path / "idx"), corpus_path=str(path), max_score_ratio=None).process(
        rows, num_neg=3)
    assert not {"g2", "copy-of-g2"} & set(out.loc[0, "hard_negatives_ids"])
    assert not {"g1"} & set(out.loc[1, "hard_negatives_ids"])


def test_a_near_duplicate_of_the_positive_is_excluded_and_a_clean_candidate_is_not(tmp_path):
    df = pd.DataFrame({"id": ["pos", "near", "clean", "far"],
                       "text": [LONG, LONG.replace("participants", "volunteers"),
                                "Blood pressure in adults falls with weekly exercise, a small trial reported.",
                                "Weekly reports of exercise by trial participants."],
                       "question": ["does aerobic exercise lower blood pressure in hypertension?", "a", "b", "c"]})
    op = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None)
    row = op.process(df, num_neg=2).iloc[0]
    assert row["hard_negatives_ids"] == ["clean", "far"]
    assert op.last_summary.extra["near_duplicates_excluded"] == 1
    unguarded = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None, near_duplicate_threshold=None)
    assert unguarded.process(df, num_neg=2).iloc[0]["hard_negatives_ids"] == ["near", "clean"]


def test_a_corpus_inside_the_reserve_gets_the_negatives_it_got_without_one(tmp_path):
    df = garden(["warm soil water", "tomato staking", "roses sun", "cucumber water", "basil tomatoes"])
    reserved = BM25HardNeg(index_dir=str(tmp_path)).process(df, num_neg=2)
    plain = BM25HardNeg(index_dir=str(tmp_path), reserve_top=0).process(df, num_neg=2)
    pd.testing.assert_frame_equal(reserved, plain)
    assert reserved["hard_negatives_ids"].map(len).sum() > 0


def _bench():
    spec = importlib.util.spec_from_file_location("negatives_quality", ROOT / "bench" / "negatives_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_defaults_meet_the_targets_on_nfcorpus_matched_rows(tmp_path):
    """Issue targets on NFCorpus, 3,000 (query, relevant document) rows, the rows whose positive
    shares a term with the question: false negatives per negative <= 17% / 15.5% (k=3 / k=7),
    median rank <= 110 / 115, median score ratio >= 0.85, short rows <= 21% / 26%, and no
    negative scoring at or above the positive."""
    if not NFCORPUS_ZIP.exists():
        pytest.skip(f"BEIR NFCorpus not found at {NFCORPUS_ZIP} (shared/ beside the repo)")
    bench = _bench()
    docs, queries, qrels = bench.load(bench.beir_folder(NFCORPUS_ZIP, tmp_path / "beir"), "test")
    rows = bench.draw_rows(docs, queries, qrels, 3000, 13)
    relevant = qrels.groupby("query-id")["corpus-id"].agg(set).to_dict()
    docs.to_parquet(tmp_path / "corpus.parquet", index=False)
    ranks = bench.ranks_of(docs, sorted(set(rows["question"])), BM25HardNegConfig().max_depth, tmp_path / "idx")
    op = BM25HardNeg(index_dir=str(tmp_path / "idx"), corpus_path=str(tmp_path / "corpus.parquet"))
    for k, fn, rank, short in ((3, 0.17, 110, 0.21), (7, 0.155, 115, 0.26)):
        out = op.process(rows, num_neg=k, input_id_key="id")
        matched = out[out["positive_score"] > 0]
        assert len(matched) > 500
        got = bench.measure(matched, k, relevant, ranks)
        assert got["fn_neg"] <= fn and got["rank"] <= rank and got["ratio"] >= 0.85 and got["short"] <= short, got
        assert bench.measure(out, k, relevant, ranks)["above"] == 0
        assert np.isfinite(got["rank"])
