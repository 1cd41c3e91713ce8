"""The data filters (rare_core.filters): each rule both ways, the bookkeeping, the summaries,
determinism and speed of the MinHash dedup."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pandas as pd
import pytest
from pydantic import ValidationError

from rare_core.errors import InputColumnError
from rare_core.filters import (
    FILTERED, FILTERED_ERROR, DocumentFilter, DocumentFilterConfig, LeakageFilter, LengthFilter,
    LengthFilterConfig, QuestionDedup, QuestionDedupConfig,
)
from rare_core.pipeline import STEPS
from rare_core.storage import FileStorage, read_frame, write_frame

# The filters, from the registry: step name -> operator class.
FILTERS = {spec.name: spec.operator for spec in STEPS if spec.section.startswith("filters.")}


def doc(words: int, word: str = "alpha") -> str:
    return " ".join(f"{word}{i}" for i in range(words))


def status(out: pd.DataFrame, step: str) -> list[str]:
    return out[f"rare_{step}_status"].tolist()


def errors(out: pd.DataFrame) -> list[str]:
    return out["rare_error"].tolist()


UPSTREAM = {"rare_status": "failed", "rare_error": "doc2query: invalid JSON", "rare_error_kind": "content"}


# --- the shared contract -------------------------------------------------------------------

def test_registry_kind_and_no_output_columns():
    assert FILTERED_ERROR == "filtered" and FILTERED == "filtered"
    assert {"doc_filter", "question_dedup", "leakage_filter", "length_filter", "decontaminate"} <= set(FILTERS)
    assert FILTERS["doc_filter"] is DocumentFilter and FILTERS["question_dedup"] is QuestionDedup
    for name, cls in FILTERS.items():
        needs = {"benchmarks": [__file__]} if name == "decontaminate" else {}  # its one required setting
        op = cls(**needs)
        assert op.step_name == name and op.output_columns() == [] and op.output_keys() == []
        assert op.config.enabled is True and isinstance(op.config, cls.config_class)
    with pytest.raises(ValidationError):
        DocumentFilter(min_wordz=3)  # extra="forbid": a typo is an error


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_disabled_filter_passes_every_row_through_as_skipped(name):
    df = pd.DataFrame({"text": ["short"], "question": ["q"], "reasoning": ["r"]})
    op = FILTERS[name](enabled=False)
    out = op.process(df)
    assert status(out, name) == ["skipped"] and out["rare_status"].tolist() == ["ok"]
    assert op.last_summary.failed == 0 and op.last_summary.processed == 0
    assert op.last_summary.extra["enabled"] is False
    # a disabled filter needs none of its columns
    FILTERS[name](enabled=False).process(pd.DataFrame({"other": [1]}))


def test_input_frame_is_not_modified_and_any_index_works():
    df = pd.DataFrame({"id": [1, 2, 3], "text": [doc(25), doc(25), "tiny"]}, index=[7, 7, 3])
    before = df.copy()
    out = DocumentFilter().process(df)
    pd.testing.assert_frame_equal(df, before)
    assert list(out.index) == [0, 1, 2]
    assert status(out, "doc_filter") == ["ok", "filtered", "filtered"]


def test_run_through_file_storage(tmp_path):
    entry = tmp_path / "docs.jsonl"
    write_frame(pd.DataFrame({"id": ["a", "b"], "text": [doc(30), doc(30)]}), entry)
    storage = FileStorage(first_entry_file_name=str(entry), cache_path=str(tmp_path / "cache"), cache_type="jsonl")
    assert DocumentFilter().run(storage=storage.step()) == []
    out = read_frame(tmp_path / "cache" / "dataflow_cache_step_step1.jsonl")
    assert out["rare_error"].tolist() == ["", "doc_filter: exact duplicate of a"]
    assert out["rare_error_kind"].tolist() == ["", "filtered"]


# --- DocumentFilter --------------------------------------------------------------------------

def test_document_filter_min_words_both_ways():
    df = pd.DataFrame({"id": [1, 2, 3, 4], "text": [doc(20), doc(19, "beta"), "", None]})
    op = DocumentFilter()
    out = op.process(df)
    assert status(out, "doc_filter") == ["ok", "filtered", "filtered", "filtered"]
    assert errors(out) == ["", "doc_filter: too short (19 words < 20)", "doc_filter: too short (0 words < 20)",
                           "doc_filter: too short (0 words < 20)"]
    assert out["rare_status"].tolist() == ["ok", "failed", "failed", "failed"]
    assert out["rare_error_kind"].tolist() == ["", "filtered", "filtered", "filtered"]
    s = op.last_summary
    assert s.extra["too_short"] == 3 and s.extra["exact_duplicates"] == 0 and s.extra["kept"] == 1
    assert s.failed == 3 and s.failures_by_reason == {"too_short": 3} and s.failures_by_kind == {"filtered": 3}
    assert DocumentFilter(min_words=5).process(df)["rare_doc_filter_status"].tolist()[:2] == ["ok", "ok"]


def test_document_filter_exact_duplicates_after_normalization_keep_the_first():
    text = doc(25)
    copies = [text, "  " + text.upper().replace(" ", "\u00a0 ") + " ", text.replace("alpha1 ", "alpha1\u200b "),
              text + " extra"]
    df = pd.DataFrame({"id": [101, 102, 103, 104], "text": copies})
    op = DocumentFilter()
    out = op.process(df)
    assert status(out, "doc_filter") == ["ok", "filtered", "filtered", "ok"]
    assert errors(out)[1:3] == ["doc_filter: exact duplicate of 101"] * 2
    assert op.last_summary.extra["exact_duplicates"] == 2 and op.last_summary.extra["kept"] == 2
    assert op.last_summary.failures_by_reason == {"exact_duplicates": 2}


def test_document_filter_without_ids_names_the_row_and_can_keep_duplicates():
    df = pd.DataFrame({"text": [doc(25, "x"), doc(25), doc(25)]})
    out = DocumentFilter().process(df)
    assert errors(out) == ["", "", "doc_filter: exact duplicate of row 1"]
    out = DocumentFilter(exact_duplicates=False).process(df)
    assert status(out, "doc_filter") == ["ok", "ok", "ok"]


def test_document_filter_skips_upstream_failed_rows_untouched():
    df = pd.DataFrame({"id": [1, 2, 3], "text": [doc(25), doc(25), "short"]})
    df["rare_status"], df["rare_error"], df["rare_error_kind"] = "ok", "", ""
    df.loc[0, list(UPSTREAM)] = list(UPSTREAM.values())
    df.loc[2, list(UPSTREAM)] = list(UPSTREAM.values())
    op = DocumentFilter()
    out = op.process(df)
    assert status(out, "doc_filter") == ["skipped", "ok", "skipped"]  # row 1 is no copy of a failed row
    assert out.loc[[0, 2], list(UPSTREAM)].to_dict("records") == [UPSTREAM, UPSTREAM]
    assert op.last_summary.skipped_upstream_failed == 2 and op.last_summary.processed == 1
    assert op.last_summary.failed == 0


def test_document_filter_requires_its_column():
    with pytest.raises(InputColumnError, match="'body'"):
        DocumentFilter().process(pd.DataFrame({"text": [doc(25)]}), input_key="body")
    with pytest.raises(InputColumnError, match="both name"):
        DocumentFilter().process(pd.DataFrame({"text": [doc(25)]}), id_key="text")


def test_rerun_replaces_the_filters_own_status_column():
    df = pd.DataFrame({"text": [doc(25)], "rare_doc_filter_status": ["filtered"]})
    assert status(DocumentFilter().process(df), "doc_filter") == ["ok"]


# --- QuestionDedup ---------------------------------------------------------------------------

Q = "what is the effect of long term aspirin therapy on cardiovascular mortality in elderly patients with diabetes"


def test_question_dedup_near_duplicate_filtered_with_row_and_jaccard():
    near = Q + " mellitus"  # one word more: 15 of 16 shingles shared
    other = "how does sleep deprivation affect working memory performance in adolescents during exam periods"
    df = pd.DataFrame({"question": [Q, other, near]})
    op = QuestionDedup()
    out = op.process(df)
    assert status(out, "question_dedup") == ["ok", "ok", "filtered"]
    err = errors(out)[2]
    assert err.startswith("question_dedup: near-duplicate of question at row 0 (estimated Jaccard 0.")
    assert 0.8 <= float(err.rsplit(" ", 1)[1].rstrip(")")) <= 1.0
    assert out["rare_error_kind"].tolist()[2] == "filtered"
    s = op.last_summary
    assert s.extra["near_duplicates"] == 1 and s.extra["exact_duplicates"] == 0 and s.extra["kept"] == 2
    assert s.failures_by_reason == {"near_duplicates": 1}


def test_question_dedup_keeps_template_questions_that_differ_in_their_entity():
    df = pd.DataFrame({"question": [Q, Q.replace("aspirin", "statin"), Q.replace("cardiovascular", "cancer")]})
    out = QuestionDedup().process(df)
    assert status(out, "question_dedup") == ["ok", "ok", "ok"]
    # with single words as shingles the same pair is a near-duplicate: the shingle size matters
    assert status(QuestionDedup(shingle_size=1).process(df), "question_dedup")[1] == "filtered"


def test_question_dedup_threshold_is_configurable():
    df = pd.DataFrame({"question": [Q, Q + " mellitus and obesity"]})
    assert status(QuestionDedup(threshold=0.95).process(df), "question_dedup") == ["ok", "ok"]
    assert status(QuestionDedup(threshold=0.6).process(df), "question_dedup") == ["ok", "filtered"]


def test_question_dedup_exact_duplicates_and_empty_questions():
    df = pd.DataFrame({"question": [Q, "  " + Q.upper() + " ?", None, "   ", "?!", Q + " mellitus", Q + " Mellitus."]})
    op = QuestionDedup()
    out = op.process(df)
    assert status(out, "question_dedup") == ["ok"] + ["filtered"] * 6
    e = errors(out)
    assert e[1] == "question_dedup: exact duplicate of question at row 0"
    assert e[2] == e[3] == e[4] == "question_dedup: the question is empty or has no words"
    assert e[5].startswith("question_dedup: near-duplicate of question at row 0 ")
    assert e[6] == e[5]  # a copy of a filtered near-duplicate names the kept question too
    s = op.last_summary
    assert (s.extra["exact_duplicates"], s.extra["near_duplicates"], s.extra["empty_questions"]) == (1, 2, 3)
    assert s.failed == 6 and s.extra["kept"] == 1


def test_question_dedup_skips_upstream_failed_rows_untouched():
    df = pd.DataFrame({"question": [Q, Q, None]})
    df["rare_status"] = ["failed", "ok", "failed"]
    df["rare_error"] = ["doc2query: invalid JSON", "", "doc2query: invalid JSON"]
    df["rare_error_kind"] = ["content", "", "content"]
    op = QuestionDedup()
    out = op.process(df)
    assert status(out, "question_dedup") == ["skipped", "ok", "skipped"]
    assert errors(out) == ["doc2query: invalid JSON", "", "doc2query: invalid JSON"]
    assert out["rare_error_kind"].tolist() == ["content", "", "content"]
    assert op.last_summary.skipped_upstream_failed == 2 and op.last_summary.failed == 0


def synthetic_questions(n: int, seed: int = 7) -> tuple[list[str], set[int]]:
    """``n`` questions of random words; every 10th is a one-word edit of an earlier one."""
    rng = random.Random(seed)
    vocab = [f"term{i}" for i in range(20_000)]
    questions, planted = [], set()
    for i in range(n):
        if i % 10 == 9:
            base = questions[rng.randrange(i - 9, i)].split()
            base.append(rng.choice(vocab))  # one word added at the end: Jaccard ~ 0.9
            questions.append(" ".join(base))
            planted.add(i)
        else:
            questions.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(15, 30))))
    return questions, planted


def test_question_dedup_is_deterministic_across_runs_and_processes():
    questions, _ = synthetic_questions(2_000, seed=3)
    df = pd.DataFrame({"question": questions})
    first = QuestionDedup().process(df)
    second = QuestionDedup().process(df)
    pd.testing.assert_frame_equal(first, second)
    # another interpreter with another string-hash seed gives the same errors
    code = ("import json, sys, pandas as pd; from rare_core.filters import QuestionDedup; "
            "qs = json.load(sys.stdin); print(json.dumps(QuestionDedup().process(pd.DataFrame({'question': qs}))"
            "['rare_error'].tolist()))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(questions), capture_output=True,
                          text=True, env=env, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert json.loads(done.stdout) == first["rare_error"].tolist()
    # and another seed is another set of permutations (it is a parameter, not a constant)
    assert QuestionDedup(seed=2).config.seed == 2 and QuestionDedupConfig().seed == 1


def test_question_dedup_finds_every_planted_near_duplicate_in_10k_rows():  # its time: bench/targets.py
    questions, planted = synthetic_questions(10_000)
    df = pd.DataFrame({"question": questions, "rare_status": "ok"})
    op = QuestionDedup()
    out = op.process(df)
    filtered = set(out.index[out["rare_question_dedup_status"] == "filtered"])
    assert filtered == planted
    assert op.last_summary.extra["near_duplicates"] == len(planted) == 1_000
    assert op.last_summary.extra["kept"] == 9_000


# --- LeakageFilter ---------------------------------------------------------------------------

SOURCE = ("Background: we studied the effect of long term aspirin therapy on cardiovascular mortality in a cohort "
          "of elderly patients with type two diabetes followed for ten years at three centres. Results: aspirin "
          "reduced cardiovascular mortality by thirty percent compared with placebo.")


def leak(rows: list[dict], **config) -> tuple[pd.DataFrame, LeakageFilter]:
    op = LeakageFilter(**config)
    base = {"text": SOURCE, "scenario": "A clinician weighs a therapy for an older patient."}
    return op.process(pd.DataFrame([{**base, **row} for row in rows])), op


def test_leakage_closed_answer_inside_a_question_is_not_leakage():
    out, op = leak([
        {"question": "Yes or no: does aspirin lower mortality in older diabetic patients?", "reference_answer": "yes"},
        {"question": "Is there no benefit of aspirin in older diabetic patients?", "reference_answer": "no"},
        {"question": "Does aspirin help?", "scenario": "The answer is no longer debated, some say.",
         "reference_answer": "No"},
    ])
    assert status(out, "leakage_filter") == ["ok", "ok", "ok"]
    assert op.last_summary.extra["answer_leak"] == 0 and op.last_summary.extra["reference_checked"] is True


def test_leakage_closed_answer_announced_is_leakage():
    out, op = leak([
        {"question": "Does aspirin help? (The answer is yes.)", "reference_answer": "Yes."},
        {"question": "Does aspirin help?", "scenario": "A doctor asks; answer: \u201cMaybe\u201d",
         "reference_answer": "maybe"},
        {"question": "Does aspirin help? The answer is yes.", "reference_answer": "no"},  # announces the wrong one
    ])
    assert status(out, "leakage_filter") == ["filtered", "filtered", "ok"]
    assert errors(out)[:2] == ["leakage_filter: question states the reference answer 'yes'",
                               "leakage_filter: scenario states the reference answer 'maybe'"]
    assert out["rare_error_kind"].tolist()[:2] == ["filtered", "filtered"]
    assert op.last_summary.extra["answer_leak"] == 2 and op.last_summary.failures_by_reason == {"answer_leak": 2}


def test_leakage_free_form_answer_long_enough_is_searched_short_is_not():
    answer = "Reduced cardiovascular mortality by thirty percent"
    out, op = leak([
        {"question": "Did it work, given that it reduced cardiovascular mortality by thirty percent?",
         "reference_answer": answer},
        {"question": "Which drug lowers cardiovascular mortality, e.g. aspirin?", "reference_answer": "aspirin"},
        {"question": "What reduced mortality by thirty?", "reference_answer": answer},
    ])
    assert status(out, "leakage_filter") == ["filtered", "ok", "ok"]
    assert errors(out)[0] == ("leakage_filter: question contains the reference answer "
                              "'reduced cardiovascular mortality by thirty percent'")
    # a lower min_answer_chars searches short answers too
    out, _ = leak([{"question": "Which drug, e.g. aspirin, helps?", "reference_answer": "aspirin"}], min_answer_chars=5)
    assert status(out, "leakage_filter") == ["filtered"]


def test_leakage_long_answer_copied_in_part():
    answer = ("In elderly patients with diabetes, daily low dose aspirin given over a decade lowered deaths from "
              "heart disease and stroke compared with placebo in all three centres")
    copied = "Consider that daily low dose aspirin given over a decade lowered deaths from heart disease and stroke."
    out, _ = leak([{"question": "Is aspirin worth it?", "scenario": copied, "reference_answer": answer}])
    assert errors(out) == ["leakage_filter: scenario copies 13 consecutive words of the reference answer: "
                           "'daily low dose aspirin given over a decade lowered deaths from heart disease'"]


def test_leakage_document_copy_13_words_both_ways():
    copied13 = "effect of long term aspirin therapy on cardiovascular mortality in a cohort of"  # 13 words of SOURCE
    copied12 = "Effect of long-term aspirin therapy on cardiovascular mortality in a cohort?"  # 12 words
    out, op = leak([{"question": f"What was an {copied13} patients?"}, {"question": f"What is an {copied12}"},
                    {"question": "Does aspirin help?", "scenario": f"Someone read about the {copied13} people."}])
    assert status(out, "leakage_filter") == ["filtered", "ok", "filtered"]
    assert errors(out)[0] == (f"leakage_filter: question copies 13 consecutive words of the document: '{copied13}'")
    assert errors(out)[2].startswith("leakage_filter: scenario copies 13 consecutive words of the document")
    assert op.last_summary.extra["document_copy"] == 2 and op.last_summary.extra["reference_checked"] is False
    # the window is configurable
    out, _ = leak([{"question": f"What is an {copied12}"}], ngram=8)
    assert status(out, "leakage_filter") == ["filtered"]
    out, _ = leak([{"question": f"What was an {copied13} patients?"}], check_document=False)
    assert status(out, "leakage_filter") == ["ok"]


def test_leakage_without_scenario_column_and_upstream_failed_rows():
    df = pd.DataFrame({"text": [SOURCE, SOURCE], "question": [SOURCE[:120], None],
                       "rare_status": ["ok", "failed"], "rare_error": ["", "doc2query: invalid JSON"],
                       "rare_error_kind": ["", "content"]})
    op = LeakageFilter()
    out = op.process(df)
    assert status(out, "leakage_filter") == ["filtered", "skipped"]
    assert errors(out)[1] == "doc2query: invalid JSON" and out["rare_error_kind"].tolist() == ["filtered", "content"]
    assert op.last_summary.extra["scenario_checked"] is False
    assert op.last_summary.skipped_upstream_failed == 1
    with pytest.raises(InputColumnError, match="'text'"):
        LeakageFilter().process(pd.DataFrame({"question": ["q"]}))


# --- LengthFilter ----------------------------------------------------------------------------

def test_length_filter_bounds_both_ways_inclusive():
    df = pd.DataFrame({
        "question": [doc(5), doc(4), doc(257), doc(256), doc(10), doc(10)],
        "reasoning": [doc(20), doc(50), doc(50), doc(50), doc(19), None],
    })
    op = LengthFilter()
    out = op.process(df)
    assert status(out, "length_filter") == ["ok", "filtered", "filtered", "ok", "filtered", "filtered"]
    assert errors(out) == ["", "length_filter: question too short (4 tokens < 5)",
                           "length_filter: question too long (257 tokens > 256)", "",
                           "length_filter: reasoning too short (19 tokens < 20)",
                           "length_filter: reasoning too short (0 tokens < 20)"]
    s = op.last_summary
    assert s.extra["question_too_short"] == 1 and s.extra["question_too_long"] == 1
    assert s.extra["reasoning_too_short"] == 2 and s.extra["reasoning_too_long"] == 0
    assert s.failures_by_reason == {"question_too_short": 1, "question_too_long": 1, "reasoning_too_short": 2}
    assert s.failures_by_kind == {"filtered": 4}


def test_length_filter_custom_counter_columns_and_keys():
    df = pd.DataFrame({"q": ["abcdefghij", "abc"], "scenario": ["x y", "x y z w"]})
    op = LengthFilter(LengthFilterConfig(question={"min_tokens": 5, "max_tokens": 10}, reasoning=None,
                                         columns={"scenario": {"max_tokens": 3}}), count_tokens=len)
    out = op.process(df, question_key="q")  # no reasoning column: not checked, not required
    assert errors(out) == ["", "length_filter: question too short (3 tokens < 5)"]
    out = op.process(pd.DataFrame({"q": ["abcdefghij"], "scenario": ["x y z w"]}), question_key="q")
    assert errors(out) == ["length_filter: scenario too long (7 tokens > 3)"]
    assert op.last_summary.extra["scenario_too_long"] == 1 and op.last_summary.extra["token_counter"] == "len"
    with pytest.raises(InputColumnError, match="'reasoning'"):
        LengthFilter().process(pd.DataFrame({"question": ["a b c d e"]}))
    with pytest.raises(ValidationError):
        LengthFilter(question={"min_tokens": 9, "max_tokens": 3})


def test_length_filter_skips_upstream_failed_rows():
    df = pd.DataFrame({"question": ["a", "a"], "reasoning": ["b", "b"], **{k: [v, ""] for k, v in UPSTREAM.items()}})
    df.loc[1, "rare_status"] = "ok"
    out = LengthFilter().process(df)
    assert status(out, "length_filter") == ["skipped", "filtered"]
    assert out.loc[0, list(UPSTREAM)].to_dict() == UPSTREAM
    assert errors(out)[1] == "length_filter: question too short (1 tokens < 5)"
