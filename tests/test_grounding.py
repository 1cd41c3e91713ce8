"""The grounding check (rare_core.checks.grounding): quotes attributed to a [Document i] looked up
in that document (through document_order), the ways models quote, what is not checked, the
bookkeeping and drop=True, a property over noisy quotes, and the step in a `rare run`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect_fixtures import SAMPLE

from rare_core.checks.grounding import SPEC, GroundingCheck, attributed_quotes, describe
from rare_core.config import PipelineConfig
from rare_core.pipeline import STEPS, dataset_columns
from rare_core.storage import read_frame

POSITIVE = "Aspirin lowers the risk of a second heart attack in adults, the trial found."
IBUPROFEN = "Ibuprofen relieves pain and fever but raises blood pressure in some patients."
STATINS = "Statins reduce LDL cholesterol; muscle pain is the most common side effect."
ORDER = [1, 0, 2]  # shown as Document 1 = IBUPROFEN, Document 2 = POSITIVE, Document 3 = STATINS


def frame(*reasonings: str, order=ORDER, **columns) -> pd.DataFrame:
    n = len(reasonings)
    return pd.DataFrame({"question": ["Does aspirin prevent a second heart attack?"] * n, "text": [POSITIVE] * n,
                         "hard_negatives": [[IBUPROFEN, STATINS]] * n, "document_order": [list(order)] * n,
                         "reasoning": list(reasonings), "answer": ["yes"] * n, **columns})


def check(*reasonings: str, **settings) -> tuple[pd.DataFrame, GroundingCheck]:
    op = GroundingCheck(**settings)
    return op.process(frame(*reasonings)), op


def test_quote_in_its_document_is_grounded():
    out, op = check('[Document 2] states "lowers the risk of a second heart attack".')
    assert out.loc[0, "rare_grounding"] == "grounded" and out.loc[0, "rare_grounding_quotes"] == 1
    assert pd.isna(out.loc[0, "rare_grounding_fabricated"]) and out.loc[0, "rare_grounding_status"] == "ok"
    extra = op.last_summary.extra
    assert (extra["rows_checked"], extra["rows_grounded"], extra["rows_fabricated"]) == (1, 1, 0)
    assert (extra["quotes_checked"], extra["quotes_fabricated"]) == (1, 0)


def test_quote_attributed_to_a_document_that_does_not_hold_it_is_fabricated():
    # Only Document 1 (the first negative, through document_order) holds the quote.
    out, op = check('Document 2: "ibuprofen relieves pain and fever".', 'Document 1: "ibuprofen relieves pain and fever".')
    assert out["rare_grounding"].tolist() == ["fabricated", "grounded"]
    assert out.loc[0, "rare_grounding_fabricated"] == 'Document 2: "ibuprofen relieves pain and fever"'
    assert out["rare_status"].tolist() == ["ok", "ok"]  # flagged, kept (drop=False)
    extra = op.last_summary.extra
    assert (extra["rows_fabricated"], extra["quotes_checked"], extra["quotes_fabricated"]) == (1, 2, 1)
    assert op.last_summary.failed == 0
    # A document the row never showed holds nothing.
    out, _ = check('Document 7 says "ibuprofen relieves pain and fever".')
    assert out.loc[0, "rare_grounding"] == "fabricated"


@pytest.mark.parametrize("template", [
    '[Document {i}] states "{q}".', 'Document {i}: "{q}"', 'The text says "{q}" ([Document {i}]).',
    'According to Document {i}, \u201c{q}\u201d.', 'We read "{q}" (see Doc {i}).', '"{q}", says Document {i}.',
    'Documents {i} and 3 both say "{q}".',
])
def test_each_way_of_quoting_is_attributed(template):
    quote = "raises blood pressure in some patients"
    out, _ = check(template.format(i=1, q=quote), template.format(i=2, q=quote))
    assert out["rare_grounding"].tolist() == ["grounded", "fabricated"]


def test_case_whitespace_punctuation_and_elisions_do_not_count_word_boundaries_do():
    out, _ = check('[Document 2] states \u201cLOWERS  the\triskof a second heart-attack!\u201d',  # a word lost
                   '[Document 2] states \u201cLOWERS  the\trisk, of a SECOND heart-attack!\u201d',
                   'Document 2: "Aspirin lowers the risk \u2026 in adults; the trial found"',
                   'Document 2: "spirin lowers the risk of a second"')  # half a word is not the word
    assert out["rare_grounding"].tolist() == ["fabricated", "grounded", "grounded", "fabricated"]


def test_no_quote_checked_is_no_quotes_and_min_quote_words_is_a_setting():
    reasonings = ("Document 2 answers it; the others only look relevant.",
                  'Document 3 calls it "cardiac arrest".',  # under min_quote_words
                  'The trial is clear: "aspirin prevents every heart attack in adults".',  # no label
                  'Document 3 reads the question "does aspirin prevent a second heart attack" wrongly.')
    out, op = check(*reasonings)
    assert out["rare_grounding"].tolist() == ["no_quotes"] * 4
    assert out["rare_grounding_quotes"].tolist() == [0] * 4 and op.last_summary.extra["rows_no_quotes"] == 4
    out, _ = check(*reasonings, min_quote_words=2)
    assert out["rare_grounding"].tolist() == ["no_quotes", "fabricated", "no_quotes", "no_quotes"]


def test_drop_sends_a_fabricated_row_to_failed_with_its_reason():
    out, op = check('Document 2: "ibuprofen relieves pain and fever".', 'Document 2: "lowers the risk of a second"',
                    drop=True)
    assert out["rare_status"].tolist() == ["failed", "ok"]
    assert out.loc[0, "rare_error"] == 'grounding: fabricated quote: Document 2 does not hold "ibuprofen relieves pain and fever"'
    assert out.loc[0, "rare_error_kind"] == "filtered" and out["rare_grounding_status"].tolist() == ["filtered", "ok"]
    assert op.last_summary.failed == 1 and op.last_summary.failures_by_reason == {"fabricated_quote": 1}
    assert describe(op.last_summary) == [
        "1 of 2 rows quote text their document does not hold (removed)",
        "1 of 2 quotes attributed to a [Document i] are not in it; 0 rows quote no document"]


def test_rows_failed_upstream_are_skipped_and_arrays_are_read_as_lists():
    df = frame('Document 2: "ibuprofen relieves pain and fever".', 'Document 1: "ibuprofen relieves pain and fever".')
    df["rare_status"], df["rare_error"] = ["failed", "ok"], ["distill: unparseable", ""]
    df["hard_negatives"] = [np.array([IBUPROFEN, STATINS])] * 2  # as parquet gives them back
    df["document_order"] = [np.array(ORDER)] * 2
    op = GroundingCheck(drop=True)
    out = op.process(df)
    assert out["rare_grounding_status"].tolist() == ["skipped", "ok"]
    assert out.loc[0, "rare_error"] == "distill: unparseable" and pd.isna(out.loc[0, "rare_grounding"])
    assert out.loc[1, "rare_grounding"] == "grounded" and op.last_summary.extra["rows_checked"] == 1
    assert describe(op.last_summary)[0] == "0 of 1 rows quote text their document does not hold (removed)"


def test_registered_after_the_verification_on_by_default_and_in_the_dataset():
    names = [spec.name for spec in STEPS]
    assert names.index("grounding") == names.index("verify") + 1 == names.index("distill") + 2 and names.index("length_filter") > names.index("grounding")
    config = PipelineConfig(input_path="docs.jsonl")
    assert SPEC.enabled(config) and not config.checks.grounding.drop
    assert not SPEC.enabled(SPEC.with_settings(config, enabled=False))
    assert dataset_columns(config)["rare_grounding"] == "rare_grounding"


# --- property: quotes cut from the document itself, with noise, are grounded -----------------

_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz\u00e9\u00df", min_size=1, max_size=8)
_SEPARATOR = st.sampled_from([" ", "  ", "\t", ", ", "; ", " - ", ": ", "! ", "? ", " (", ") "])
_FORMS = ('[Document {i}] states "{q}".', 'Document {i}: "{q}"', '"{q}" ([Document {i}])',
          'According to Document {i}, \u201c{q}\u201d')


@st.composite
def noisy_quote(draw):
    docs = [draw(st.lists(_WORD, min_size=8, max_size=30)) for _ in range(3)]
    order = draw(st.permutations([0, 1, 2]))
    label = draw(st.integers(1, 3))
    source = docs[order[label - 1]]
    start = draw(st.integers(0, len(source) - 5))
    stop = draw(st.integers(start + 5, len(source)))
    noisy = [draw(st.sampled_from([w, w.upper(), w.title()])) for w in source[start:stop]]
    quote = "".join(w + draw(_SEPARATOR) for w in noisy[:-1]) + noisy[-1]
    reasoning = draw(st.sampled_from(_FORMS)).format(i=label, q=quote)
    return [" ".join(d) for d in docs], order, label, reasoning


@settings(max_examples=200, deadline=None)
@given(noisy_quote())
def test_noisy_quotes_cut_from_their_document_are_always_grounded(case):
    docs, order, label, reasoning = case
    assert [quote.labels for quote in attributed_quotes(reasoning)] == [(label,)]
    df = pd.DataFrame({"question": ["q"], "text": [docs[0]], "hard_negatives": [docs[1:]],
                       "document_order": [order], "reasoning": [reasoning]})
    out = GroundingCheck().process(df)
    assert out.loc[0, "rare_grounding"] == "grounded" and out.loc[0, "rare_grounding_quotes"] == 1


# --- the step in a run -----------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_harness")
def test_rare_run_writes_the_verdict_to_the_dataset_and_counts_in_the_report(tmp_path, sim, monkeypatch):
    from deployments.cli import main

    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    out = tmp_path / "out"
    code = main(["run", "--input", str(SAMPLE), "--limit", "3", "--base-url", sim.base_url, "--model", "teacher",
                 "--output", str(out), "--cache-path", str(tmp_path / "cache")])
    assert code == 0
    dataset = read_frame(out / "dataset.jsonl")
    # The simulator's answer quotes its best document: 'According to Document i: "..."'.
    assert len(dataset) == 3 and dataset["rare_grounding"].tolist() == ["grounded"] * 3
    report = (out / "report.md").read_text()
    assert "- grounding: rows_checked = 3" in report and "- grounding: quotes_fabricated = 0" in report
