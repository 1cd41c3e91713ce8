"""Checked answers on PubMedQA's gold questions (questions_given), against the simulator, which
answers closed questions at random (a new draw per sample): rejection sampling keeps only rows
whose answer equals the gold label, lists the others, and a rerun sends nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_flow import make_config, run_flow, step_file

from rare_core.storage import read_frame

GOLD = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmedqa" / "qa_gold.jsonl"

pytestmark = [pytest.mark.usefixtures("prefect_harness"),
              pytest.mark.skipif(not GOLD.exists(), reason=f"shared data not found: {GOLD} (shared/ beside the repo)")]


def gold_config(tmp_path, sim, limit=40, **verify):
    config = make_config(tmp_path, sim, input_path=str(GOLD), limit=limit, questions_given=True)
    return config.model_copy(update={"verify": config.verify.model_copy(update={"method": "auto", **verify})})


def test_rejection_sampling_keeps_only_answers_that_match_the_gold_label(tmp_path, sim):
    config = gold_config(tmp_path, sim, max_samples=8)
    state, tasks = run_flow(config, expected_tasks={"load-input", "bm25-hardneg", "reason-distill", "export-dataset",
                                                    "publish-report"})
    assert state.is_completed() and "doc2query" not in tasks  # questions given: no Doc2Query
    out = Path(config.output_path)
    gold = read_frame(GOLD).head(40).set_index("id")["gold_answer"]
    dataset = read_frame(out / "dataset.jsonl")
    assert len(dataset) > 0
    for row in dataset.itertuples():
        assert row.answer.split(".")[0].strip().lower() == gold[str(row.id)]
        assert 1 <= row.rare_verify_samples <= 8 and row.rare_verify_verdict == "accepted"
    failed_path = out / "failed_rows.jsonl"
    failed = read_frame(failed_path) if failed_path.exists() else None
    kept, lost = len(dataset), 0 if failed is None else len(failed)
    assert kept + lost == 40
    if failed is not None:
        assert failed["rare_error"].str.startswith("verify: no accepted answer in 8 sample(s)").all()
        assert (failed["rare_error_kind"] == "rejected").all()
    # the simulator draws yes/no/maybe at random: after 8 samples about 1 - (2/3)^8 = 96% are kept
    assert kept >= 30, (kept, lost)
    requests = sim.stats().completions_served
    assert requests == int(read_frame(step_file(config, 3))  # questions given: BM25HardNeg 1, ReasonDistill 2, Verify 3
                           ["rare_verify_samples"].sum())  # one request per sample, no judge (closed answers)
    sim.reset()
    state, tasks = run_flow(config, expected_tasks={"load-input", "bm25-hardneg", "reason-distill"})
    assert tasks["reason-distill"] == "Cached" and sim.stats().completions_served == 0


def test_one_sample_keeps_about_a_third(tmp_path, sim):
    config = gold_config(tmp_path, sim, max_samples=1)
    run_flow(config, expected_tasks={"load-input", "bm25-hardneg", "reason-distill", "export-dataset"})
    kept = len(read_frame(Path(config.output_path) / "dataset.jsonl"))
    assert 4 <= kept <= 24  # one draw among yes/no/maybe
    assert sim.stats().completions_served == 40


def test_questions_given_needs_the_question_column(tmp_path, sim):
    from rare_core.inputs import InputError, load_documents

    config = make_config(tmp_path, sim, questions_given=True)  # the sample has no question column
    with pytest.raises(InputError, match="questions_given is set but the input has no 'question' column"):
        load_documents(config)
