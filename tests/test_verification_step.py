"""Verification as a step of its own (rare_core/operators/verification.py), on the operator API
against the simulator, which answers closed questions yes, no or maybe at random (a new draw per
sample): each row records what rejection sampling paid for (samples drawn and accepted, the pass
rate, the rejected samples), and the step's report lines give the difficulty distribution."""

from __future__ import annotations

import pandas as pd

from rare_core import APILLMServing_request, ReasonDistill
from rare_core.operators.verification import describe
from rare_core.verify import VerifyConfig
from test_estimate import given_questions


def test_each_row_keeps_its_rejected_samples_and_pass_rate(sim, tmp_path):
    frame = given_questions(tmp_path / "q.jsonl")
    texts = frame["text"].tolist()
    df = frame.assign(hard_negatives=[[texts[(i + k) % len(texts)] for k in (1, 2, 3)] for i in range(len(texts))])
    llm = APILLMServing_request(api_url=sim.base_url, model_name="teacher", max_workers=4,
                                cache_path=str(tmp_path / "responses.sqlite"), backoff_base=0.01)
    op = ReasonDistill(llm_serving=llm, verify=VerifyConfig(method="exact", max_samples=8))
    out = op.process(df, input_reference_key="gold_answer")
    kept = out[out["rare_status"] == "ok"]
    assert len(kept) >= 8  # 1 - (2/3)^8: almost every row finds the gold label in 8 draws
    drawn = 0
    for _, row in out.iterrows():
        samples = int(row["rare_verify_samples"])
        rejected = row["rare_verify_rejected"] if isinstance(row["rare_verify_rejected"], list) else []
        drawn += samples
        # every sample is either the accepted one or a rejected one, each with the answer it gave
        assert int(row["rare_verify_accepted"]) + len(rejected) == samples
        assert all(r["answer"].strip(" .").lower() != row["gold_answer"] for r in rejected)
        assert [r["sample"] for r in rejected] == sorted(r["sample"] for r in rejected)
        if row["rare_status"] == "ok":
            assert row["answer"].strip(" .").lower().startswith(row["gold_answer"])
            assert pd.isna(row["rare_pass_rate"]) if samples == 1 else row["rare_pass_rate"] == round(1 / samples, 4)
        else:
            assert row["rare_error"].startswith("verify: no accepted answer in 8 sample(s)") and samples == 8
    extra = op.last_summary.extra
    assert extra["samples_drawn"] == drawn and extra["samples_accepted"] == len(kept)
    histogram = {int(k.rsplit("_", 1)[1]): n for k, n in extra.items() if k.startswith("questions_drawing_")}
    assert sum(histogram.values()) == len(df) and sum(k * n for k, n in histogram.items()) == drawn
    assert sim.stats().completions_served == drawn  # the first sample is ReasonDistill's, never asked twice
    lines = describe(op.last_summary)
    assert lines[1] == "samples drawn per question (difficulty): " + ", ".join(
        f"{k}: {n}" for k, n in sorted(histogram.items()))


def test_rows_failed_before_are_skipped_not_checked(sim, tmp_path):
    frame = given_questions(tmp_path / "q.jsonl").head(3)
    df = frame.assign(hard_negatives=[[t] for t in frame["text"].iloc[::-1]],
                      rare_status=["ok", "failed", "ok"], rare_error=[None, "doc2query: unparseable", None],
                      rare_error_kind=[None, "content", None])
    llm = APILLMServing_request(api_url=sim.base_url, model_name="teacher", max_workers=2,
                                cache_path=str(tmp_path / "responses.sqlite"), backoff_base=0.01)
    out = ReasonDistill(llm_serving=llm, verify=VerifyConfig(method="exact", max_samples=8)).process(
        df, input_reference_key="gold_answer")
    failed_before = out[out["id"] == df["id"].iloc[1]].iloc[0]
    assert failed_before["rare_verify_status"] == "skipped" and failed_before["rare_distill_status"] == "skipped"
    assert failed_before["rare_error"] == "doc2query: unparseable"  # its own failure, untouched
    assert set(out.loc[out["id"] != df["id"].iloc[1], "rare_verify_status"]) <= {"ok", "failed"}
