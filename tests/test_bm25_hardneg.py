"""BM25HardNeg end to end on small frames: every guard, statuses, storage round trip, index reuse."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from rare_core.errors import InputColumnError
from rare_core.operators.bm25_hardneg import BM25HardNeg, BM25HardNegConfig
from rare_core.retrieval import BM25Index
from rare_core.storage import FileStorage, read_frame, write_frame

GARDEN = [
    ("g1", "Tomatoes grow best in warm soil with full sun and regular watering."),
    ("g2", "Tomato plants need staking; water tomatoes deeply at the soil line."),
    ("g3", "Roses prefer rich soil and morning sun; water roses at the base."),
    ("g4", "Cucumbers grow fast in warm soil when watered every day."),
    ("g5", "Basil grows well beside tomatoes in warm sunny beds."),
    ("g6", "Bank interest rates rose again this quarter."),
]


def frame(rows=GARDEN, questions=None):
    ids, texts = zip(*rows)
    qs = questions or ["how should tomatoes be watered in warm soil?"] * len(rows)
    return pd.DataFrame({"id": list(ids), "text": list(texts), "question": qs})


@pytest.fixture
def op(tmp_path):
    # frame() asks every row the same question: without group exclusion the other rows' documents are candidates
    return BM25HardNeg(index_dir=str(tmp_path / "idx"), max_score_ratio=None, exclude_group_positives=False)


def test_output_columns_and_best_first_negatives(op):
    out = op.process(frame(), num_neg=3)
    row = out.iloc[0]
    assert list(out.columns[-6:]) == ["hard_negatives", "hard_negatives_ids", "hard_negatives_scores",
                                      "positive_score", "positive_rank", "rare_hardneg_status"]
    assert row["hard_negatives_ids"] == ["g2", "g4", "g5"]
    assert row["hard_negatives"] == [dict(GARDEN)[i] for i in row["hard_negatives_ids"]]
    assert row["hard_negatives_scores"] == sorted(row["hard_negatives_scores"], reverse=True)
    assert row["positive_rank"] >= 1 and row["positive_score"] > 0
    assert row["rare_hardneg_status"] == "ok" and row["rare_status"] == "ok"
    assert "g6" not in sum(out["hard_negatives_ids"], [])  # shares no term: never a negative


def test_planted_copies_of_the_positive_are_never_negatives(op):
    rows = GARDEN + [("copy1", "  TOMATOES grow best in warm soil with full sun and regular   watering. "),
                     ("copy2", "tomatoes grow best in warm soil with full sun and regular watering.")]
    df = frame(rows)
    out = op.process(df, num_neg=3)
    negs = out.iloc[0]["hard_negatives_ids"]
    assert not {"g1", "copy1", "copy2"} & set(negs) and len(negs) == 3
    assert all(out.iloc[i]["hard_negatives_ids"].count(c) == 0 for i in (6, 7) for c in ("g1", "copy1", "copy2"))


def test_near_duplicates_among_candidates_are_kept_once(op):
    rows = GARDEN + [("g2b", "tomato plants need staking;   WATER tomatoes deeply at the soil line.")]
    out = op.process(frame(rows), num_neg=4)
    negs = out.iloc[0]["hard_negatives_ids"]
    assert ("g2" in negs) != ("g2b" in negs)


def test_corpus_smaller_than_num_neg_gives_short_rows_counted_in_the_summary(op):
    df = frame(GARDEN[:3])
    out = op.process(df, num_neg=5)
    assert (out["rare_hardneg_status"] == "short").all() and (out["rare_status"] == "ok").all()
    assert out["hard_negatives_ids"].map(len).tolist() == [2, 2, 2]
    s = op.last_summary
    assert s.extra["short_rows"] == 3 and s.failed == 0 and s.extra["queries"] == 3


def test_failed_upstream_rows_are_skipped_and_keep_their_error(op):
    df = frame()
    df["rare_status"] = ["ok", "failed"] + ["ok"] * 4
    df["rare_error"] = ["", "doc2query: invalid JSON"] + [""] * 4
    out = op.process(df, num_neg=2)
    row = out.iloc[1]
    assert (row["rare_status"], row["rare_error"], row["rare_hardneg_status"]) == ("failed", "doc2query: invalid JSON", "skipped")
    assert row["hard_negatives"] == [] and row["hard_negatives_ids"] == [] and row["positive_rank"] == -1
    assert op.last_summary.skipped_upstream_failed == 1 and op.last_summary.extra["queries"] == 5
    assert "g2" in out.iloc[0]["hard_negatives_ids"]  # its document still belongs to the corpus


def test_empty_or_missing_question_fails_the_row_with_a_reason(op):
    df = frame()
    df.loc[2, "question"] = "   "
    df.loc[3, "question"] = None
    out = op.process(df, num_neg=2)
    for i in (2, 3):
        assert out.loc[i, "rare_status"] == "failed" and out.loc[i, "rare_hardneg_status"] == "failed"
        assert out.loc[i, "rare_error"] == "hardneg: invalid input: the question is empty or missing"
    assert op.last_summary.failed == 2 and op.last_summary.failures_by_reason == {"invalid input": 2}
    assert (out.loc[[0, 1, 4, 5], "rare_status"] == "ok").all()


def test_unicode_texts(op):
    rows = [("u1", "Die Straße in Zürich ist groß und schön."), ("u2", "Zürich hat eine große Straße am See."),
            ("u3", "北京 是 中国 的 首都"), ("u4", "Crème brûlée à la française, très délicieux.")]
    out = op.process(frame(rows, ["Wo ist die Straße in Zürich?", "Zürich See?", "中国 的 首都", "crème brûlée"]),
                     num_neg=2)
    assert out.iloc[0]["hard_negatives_ids"] == ["u2"] and out.iloc[1]["hard_negatives_ids"] == ["u1"]
    assert out.iloc[0]["hard_negatives"] == ["Zürich hat eine große Straße am See."]
    assert (out["rare_hardneg_status"] == "short").all()


def test_zero_score_documents_are_never_negatives(op):
    out = op.process(frame(questions=["interest rates"] * 6), num_neg=3)
    first = out.iloc[0]  # only g6 shares a term with the question; the positive itself scores 0
    assert first["hard_negatives_ids"] == ["g6"] and first["rare_hardneg_status"] == "short"
    assert (first["positive_score"], first["positive_rank"]) == (0.0, -1)
    assert out.iloc[5]["positive_rank"] == 1 and out.iloc[5]["hard_negatives_ids"] == []


def test_max_score_ratio_drops_candidates_that_match_as_well_as_the_positive(tmp_path):
    rows = [("p", "solar panels convert sunlight into electricity"),
            ("better", "solar panels convert sunlight into electricity efficiently; solar panels"),
            ("weak", "panels of experts met on Tuesday"), ("weak2", "the sunlight was bright")]
    df = frame(rows, ["how do solar panels convert sunlight?"] * 4).head(1)
    df = pd.concat([df, frame(rows[1:], ["x"] * 3)])
    guarded = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=0.95)
    out = guarded.process(df, num_neg=3).iloc[0]
    assert sorted(out["hard_negatives_ids"]) == ["weak", "weak2"] and out["rare_hardneg_status"] == "short"
    assert all(s < 0.95 * out["positive_score"] for s in out["hard_negatives_scores"])
    unguarded = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None).process(df, num_neg=3).iloc[0]
    assert unguarded["hard_negatives_ids"][0] == "better"
    assert unguarded["hard_negatives_scores"][0] > unguarded["positive_score"]


def test_positive_outside_the_searched_depth_is_scored_exactly(tmp_path):
    # 30 short lectures match all query words; the long positive only matches "lecture" once
    rows = [("pos", "a lecture " + " ".join(f"word{i}" for i in range(60)))]
    rows += [(f"n{i:02d}", f"quantum physics lecture number {i}") for i in range(30)]
    df = frame(rows, ["quantum physics lecture"] + ["filler"] * 30)
    op = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None, reserve_top=0)  # first depth 2 * 2 + 10
    out = op.process(df, num_neg=2).iloc[0]
    assert out["positive_rank"] == -1 and len(out["hard_negatives_ids"]) == 2
    ids, scores = BM25Index.build(df, tmp_path).search(["quantum physics lecture"], 100)  # same corpus: reused
    assert ids[0][-1] == "pos" and out["positive_score"] == scores[0][-1] > 0


def test_skip_top_skips_the_best_ranks(tmp_path):
    df = frame()
    base = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None).process(df, num_neg=4).iloc[0]
    skipped = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None, skip_top=2).process(df, num_neg=2).iloc[0]
    assert base["positive_rank"] == 1
    ranking = ["g1"] + base["hard_negatives_ids"]
    assert skipped["hard_negatives_ids"] == ranking[2:4]


def test_the_search_deepens_when_copies_fill_the_first_depth(tmp_path):
    copies = [(f"c{i:02d}", "Tomatoes grow best in warm soil with full sun and regular watering.") for i in range(40)]
    df = frame(GARDEN + copies).head(1)
    df = pd.concat([df, frame(GARDEN[1:] + copies, ["x"] * (len(GARDEN) - 1 + 40))])
    op = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None, reserve_top=0)  # first depth 2 * 3 + 10
    out = op.process(df, num_neg=3).iloc[0]
    assert out["hard_negatives_ids"] == ["g2", "g4", "g5"] and out["rare_hardneg_status"] == "ok"
    assert op.last_summary.extra["search_rounds"] >= 2


def test_max_depth_bounds_the_deepening(tmp_path):
    copies = [(f"c{i:02d}", "Tomatoes grow best in warm soil with full sun and regular watering.") for i in range(40)]
    df = frame(GARDEN + copies)
    op = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=None, max_depth=30, reserve_top=0,
                     exclude_group_positives=False)
    out = op.process(df, num_neg=3).iloc[0]
    assert out["hard_negatives_ids"] == [] and out["rare_hardneg_status"] == "short"
    assert op.last_summary.extra["search_rounds"] == 2  # 16 deep, then 30 deep (the cap)


def test_a_positive_scoring_zero_is_not_searched_deeper(tmp_path):
    rows = [("pos", "nothing in common")] + [(f"n{i:02d}", f"quantum lecture {i}") for i in range(40)]
    op = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=0.95)
    out = op.process(frame(rows, ["quantum lecture"] + ["zzz"] * 40), num_neg=2).iloc[0]
    assert (out["positive_score"], out["hard_negatives_ids"], out["rare_hardneg_status"]) == (0.0, [], "short")
    assert op.last_summary.extra["search_rounds"] == 1


def test_deterministic_across_runs_and_fresh_indexes(tmp_path):
    df = frame(GARDEN, ["warm soil water", "tomato staking", "roses sun", "cucumber water", "basil", "rates"])
    a = BM25HardNeg(index_dir=str(tmp_path / "a"), threads=2).process(df, num_neg=2)
    b = BM25HardNeg(index_dir=str(tmp_path / "a"), threads=2).process(df, num_neg=2)
    c = BM25HardNeg(index_dir=str(tmp_path / "c"), threads=1).process(df, num_neg=2)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)


def test_rows_without_an_id_column_use_a_hash_of_their_text(op):
    df = frame().drop(columns=["id"])
    out = op.process(df, num_neg=2)
    first = out.iloc[0]["hard_negatives_ids"]
    assert all(i.startswith("h") and len(i) == 17 for i in first)
    assert out.iloc[0]["hard_negatives"][0] == GARDEN[1][1]


def test_separate_corpus_file(tmp_path):
    corpus = pd.DataFrame({"id": [r[0] for r in GARDEN], "text": [r[1] for r in GARDEN],
                           "title": ["Tomatoes", "Tomatoes", "Roses", "Cucumbers", "Basil", "Banking"]})
    path = write_frame(corpus, tmp_path / "corpus.parquet")
    rows = pd.DataFrame({"id": ["g1", "new"], "text": [GARDEN[0][1], "Watering tomatoes in warm soil."],
                         "question": ["how to water tomatoes?", "what about banking interest?"]})
    op = BM25HardNeg(index_dir=str(tmp_path / "idx"), corpus_path=str(path), max_score_ratio=0.95)
    out = op.process(rows, num_neg=2)
    first = out.iloc[0]
    assert "g1" not in first["hard_negatives_ids"] and len(first["hard_negatives_ids"]) == 2
    assert first["positive_score"] > 0 and max(first["hard_negatives_scores"]) < 0.95 * first["positive_score"]
    assert out.iloc[1]["hard_negatives_ids"] == ["g6"]  # "banking" matches the title only
    assert out.iloc[1]["positive_rank"] == -1 and pd.isna(out.iloc[1]["positive_score"])
    assert op.last_summary.extra["index_docs"] == 6


def test_file_storage_round_trip_with_run(tmp_path):
    entry = write_frame(frame(), tmp_path / "questions.jsonl")
    storage = FileStorage(first_entry_file_name=entry, cache_path=tmp_path / "cache", cache_type="jsonl")
    op = BM25HardNeg(index_dir=str(tmp_path / "idx"), exclude_group_positives=False)  # frame(): one question
    keys = op.run(storage=storage.step(), input_question_key="question", input_text_key="text",
                  output_negatives_key="hard_negatives", num_neg=3)
    assert keys == ["hard_negatives"]  # run() returns the output keys, as the seed API does
    path = str(storage.step_path(1))
    back = read_frame(path)
    first = json.loads(open(path, encoding="utf-8").readline())
    assert isinstance(first["hard_negatives"], list) and len(first["hard_negatives"]) == 3
    assert back["hard_negatives"].tolist() == op.process(frame(), num_neg=3)["hard_negatives"].tolist()
    assert op.last_summary.extra["index_reused"] is True


def test_index_is_reused_until_the_corpus_changes(tmp_path):
    op = BM25HardNeg(index_dir=str(tmp_path))
    op.process(frame(), num_neg=2)
    assert op.last_summary.extra["index_reused"] is False and op.last_summary.extra["index_seconds"] > 0
    op.process(frame(), num_neg=2)
    assert op.last_summary.extra["index_reused"] is True and op.last_summary.extra["index_seconds"] == 0
    changed = frame()
    changed.loc[5, "text"] = "Bank interest rates fell this quarter."
    op.process(changed, num_neg=2)
    assert op.last_summary.extra["index_reused"] is False
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("bm25-")]) == 2


def test_missing_input_column_names_it(op):
    with pytest.raises(ValueError, match="'query'") as err:
        op.process(frame(), input_question_key="query")
    assert isinstance(err.value, InputColumnError)
    with pytest.raises(InputColumnError, match="'body'"):
        op.process(frame(), input_text_key="body")


def test_existing_outputs_need_overwrite(op):
    out = op.process(frame(), num_neg=1)
    with pytest.raises(InputColumnError, match="overwrite=True"):
        op.process(out, num_neg=1)
    again = op.process(out, num_neg=2, overwrite=True)
    assert again["hard_negatives_ids"].map(len).max() == 2 and list(again.columns) == list(out.columns)


def test_config_is_validated():
    with pytest.raises(ValueError):
        BM25HardNegConfig(query_weighting="tfidf")
    with pytest.raises(ValueError):
        BM25HardNeg(unknown_setting=1)
    with pytest.raises(ValueError, match="num_neg"):
        BM25HardNeg().process(frame(), num_neg=0)


def test_question_chunks_give_the_same_output_as_one_chunk(tmp_path, monkeypatch):
    import rare_core.operators.bm25_hardneg as module
    import rare_core.retrieval.index as index_module

    copies = [(f"c{i:02d}", "Tomatoes grow best in warm soil with full sun and regular watering.") for i in range(40)]
    df = frame(GARDEN + copies, ["warm soil water", "tomato staking", "roses sun", "cucumber water", "basil",
                                 "rates"] + ["tomatoes warm soil"] * 40)
    op = BM25HardNeg(index_dir=str(tmp_path), max_score_ratio=0.95)
    whole = op.process(df, num_neg=3)
    monkeypatch.setattr(module, "CHUNK_QUESTIONS", 4)
    monkeypatch.setattr(index_module, "CHUNK_DOCS", 3)
    pd.testing.assert_frame_equal(op.process(df, num_neg=3), whole)


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_negative_texts_are_read_back_by_row_from_a_corpus_file(tmp_path, monkeypatch, suffix):
    import rare_core.operators.bm25_hardneg as module

    monkeypatch.setattr(module, "READ_BATCH", 2)  # several batches, wanted rows spread over them
    docs = [("z9", "Tomato soil water warm."), ("g1", GARDEN[0][1]), ("e0", "   ")] + GARDEN  # g1 twice: one document
    corpus = pd.DataFrame({"id": [d for d, _ in docs], "text": [t for _, t in docs]})
    path = write_frame(corpus, tmp_path / f"corpus.{suffix}")
    rows = pd.DataFrame({"id": ["g1", "g4"], "text": [GARDEN[0][1], GARDEN[3][1]],
                         "question": ["water tomatoes warm soil", "cucumbers warm soil watered"]})
    op = BM25HardNeg(index_dir=str(tmp_path / "idx"), corpus_path=str(path), max_score_ratio=None)
    out = op.process(rows, num_neg=4)
    text_of = dict(docs[:1] + GARDEN)
    for ids, texts in zip(out["hard_negatives_ids"], out["hard_negatives"]):
        assert len(ids) == 4 and texts == [text_of[i] for i in ids]
    assert op.last_summary.extra["index_docs"] == 7


@pytest.mark.parametrize("where", ["input", "corpus.jsonl", "corpus.parquet"])
def test_one_id_for_two_different_documents_is_a_named_error(tmp_path, where):
    rows = pd.DataFrame({"id": ["g1", "g2", "g1"], "text": ["Tomatoes like warm soil.", "Basil grows fast.",
                                                            "Bank interest rates rose."],
                         "question": ["why warm soil?", "why basil?", "why rates?"]})
    settings = {"index_dir": str(tmp_path / "idx")}
    if where != "input":
        settings["corpus_path"] = str(write_frame(rows[["id", "text"]], tmp_path / where))
        rows = rows.iloc[:2]
    with pytest.raises(InputColumnError, match="id 'g1' at rows 0, 2: ids must identify one document"):
        BM25HardNeg(**settings).process(rows)


def test_ids_keep_their_type_and_a_custom_id_column_is_used(tmp_path):
    rows = pd.DataFrame({"doc_id": pd.array([101, 102, 103, None], dtype="Int64"),
                         "text": ["Tomatoes like warm soil and water.", "Basil likes warm soil and sun.",
                                  "Peppers like warm soil and water too.", "Cucumbers want warm soil and water."],
                         "question": ["why do tomatoes want warm soil and water?"] * 4})
    out = BM25HardNeg(index_dir=str(tmp_path / "idx"), max_score_ratio=None, exclude_group_positives=False).process(
        rows, num_neg=2, input_id_key="doc_id")
    ids = [i for row in out["hard_negatives_ids"] for i in row]
    assert ids and all(isinstance(i, int) or i.startswith("h") for i in ids)
    assert 101 in ids or 102 in ids
    assert all(i not in (101,) for i in out.loc[0, "hard_negatives_ids"])  # never its own negative
    # The row without an id gets a content-hash id; the others keep 101..103 (not '101.0').
    assert not any(isinstance(i, str) and i.endswith(".0") for i in ids)


def test_a_parquet_corpus_read_batch_by_batch_mines_as_the_same_corpus_held_in_memory(tmp_path, monkeypatch):
    """The parquet corpus_path's texts are walked from the file (never held): same negatives,
    ids (ints stay ints), scores and index as the same documents read whole from jsonl."""
    import rare_core.operators.bm25_hardneg as module
    import rare_core.retrieval.index as index_module

    docs = pd.DataFrame({
        "id": [7, 3, 11, 3, 20, 5, 9, 14],  # 3 twice with the same text: one document
        "title": ["Garden", None, "Roses", None, "Bank", "Herbs", "Soil", ""],
        "text": [GARDEN[0][1], GARDEN[1][1], GARDEN[2][1], GARDEN[1][1], GARDEN[5][1], GARDEN[4][1], "  ",
                 GARDEN[3][1]]})
    rows = pd.DataFrame({"id": [7, 14], "text": [GARDEN[0][1], GARDEN[3][1]],
                         "question": ["water tomatoes in warm soil", "cucumbers watered in warm soil"]})
    results = {}
    for suffix in ("jsonl", "parquet"):
        path = write_frame(docs, tmp_path / f"corpus.{suffix}")
        op = BM25HardNeg(index_dir=str(tmp_path / "idx"), corpus_path=str(path), max_score_ratio=None)
        results[suffix] = (op.process(rows, num_neg=3), op.last_summary.extra)
    monkeypatch.setattr(module, "READ_BATCH", 3)  # batches cut across the duplicate and the empty text
    monkeypatch.setattr(index_module, "CHUNK_DOCS", 2)
    streamed = BM25HardNeg(index_dir=str(tmp_path / "idx2"), corpus_path=str(tmp_path / "corpus.parquet"),
                           max_score_ratio=None)
    results["small batches"] = (streamed.process(rows, num_neg=3), streamed.last_summary.extra)
    reference, extra = results["jsonl"]
    assert extra["index_docs"] == 6  # the duplicate and the blank text are not documents
    assert all(isinstance(i, int) for ids in reference["hard_negatives_ids"] for i in ids)
    for name in ("parquet", "small batches"):
        pd.testing.assert_frame_equal(results[name][0], reference)
        assert results[name][1]["index_docs"] == extra["index_docs"]
    assert not any(name.startswith(".") for name in os.listdir(tmp_path / "idx"))
    assert len([name for name in os.listdir(tmp_path / "idx") if name.startswith("bm25-")]) == 1  # one key


def test_a_corpus_file_that_changes_while_read_is_a_named_error():
    from rare_core.errors import RetrievalError
    from rare_core.retrieval.index import Corpus

    corpus = Corpus.streamed(pd.Series(["b", "a", "c"]), lambda: iter([(["text b", "text a"], None)]))
    assert corpus.rows.tolist() == [1, 0, 2] and corpus.input_rows.tolist() == [1, 0, 2]
    with pytest.raises(RetrievalError, match="gave 2 texts for 3 ids: it changed while read"):
        corpus.key()


def test_parquet_take_reads_any_rows_in_the_asked_order(tmp_path, monkeypatch):
    import rare_core.operators.bm25_hardneg as module

    monkeypatch.setattr(module, "READ_BATCH", 3)
    path = write_frame(pd.DataFrame({"text": [f"t{i}" for i in range(10)]}), tmp_path / "c.parquet")
    rows = np.array([9, 0, 4, 4, 3, 8, 0])
    assert module._parquet_take(str(path), "text", rows) == [f"t{i}" for i in rows]
    assert module._parquet_take(str(path), "text", np.zeros(0, dtype=np.int64)) == []
