"""A role that never gives a usable answer must not multiply the bill.

* A judge that gives no verdict (its reply unparseable, or its request failed) fails the row
  as ``judge: ...``, keeping the teacher's answer: the teacher is not sampled again for it.
* A role whose replies keep failing to parse (question writer, teacher, judge) is stopped by
  its :class:`RoleGuard` in one line naming the role, the model and a reply; the requests
  counted at the simulator stop there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rare_core import APILLMServing_request, Doc2Query, ReasonDistill
from rare_core.operators.llm_step import RoleGuard, RoleGuardConfig, RoleUnusableError
from rare_core.operators.reason_distill import ReasonDistillConfig
from rare_core.verify import JUDGE_SYSTEM, VerifyConfig
from rare_sim import FaultSpec

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "pubmedqa_sample.jsonl"
CHAT = "/v1/chat/completions"
JUDGED = JUDGE_SYSTEM[:40]  # in every judge prompt, re-asks included, and in no other
NEVER = 10_000  # a fault count no test uses up: the role never answers usably


def client(sim, tmp_path, model: str, max_workers: int = 4, **settings) -> APILLMServing_request:
    return APILLMServing_request(api_url=sim.base_url, model_name=model, max_workers=max_workers,
                                 cache_path=str(tmp_path / "responses.sqlite"), backoff_base=0.01, **settings)


def documents(n: int) -> pd.DataFrame:
    with open(SAMPLE, encoding="utf-8") as fh:
        return pd.DataFrame([json.loads(line) for line in fh][:n])


def checked_rows(n: int) -> pd.DataFrame:
    """Open questions (what the judge checks under ``method: auto``) with references and negatives."""
    df = documents(n)
    texts = df["text"].tolist()
    return pd.DataFrame({
        "text": texts,
        "question": [f"What does the study {row['id']} report about {row['title'][:60]}?" for _, row in df.iterrows()],
        "reference_answer": [t.split(".")[0] for t in texts],
        "hard_negatives": [[texts[(i + 1) % n], texts[(i + 2) % n]] for i in range(n)],
    })


def distill(sim, tmp_path, guard: RoleGuardConfig, judge_workers: int = 4, max_samples: int = 8,
            **judge_settings) -> ReasonDistill:
    return ReasonDistill(llm_serving=client(sim, tmp_path, "teacher"),
                         judge_serving=client(sim, tmp_path, "judge", judge_workers, **judge_settings),
                         config=ReasonDistillConfig(role_guard=guard),
                         verify=VerifyConfig(method="auto", max_samples=max_samples))


OFF = RoleGuardConfig(first=0, window=0)


def test_a_judge_without_verdicts_fails_rows_as_judge_and_the_teacher_is_asked_once(sim, tmp_path):
    sim.inject([FaultSpec(kind="malformed_json", count=NEVER, match=JUDGED)])
    op = distill(sim, tmp_path, OFF)
    out = op.process(checked_rows(10))
    stats = sim.stats()
    # one teacher answer per row, two judge replies per row (the re-ask): 30, not 110
    assert stats.completions_served == 10 and stats.faults_served == {"malformed_json": 20}
    assert stats.requests_by_path[CHAT] == 30
    # the teacher's sample is fine (ReasonDistill ok); the check of it failed
    assert (out["rare_status"] == "failed").all() and (out["rare_distill_status"] == "ok").all()
    assert out["rare_error"].str.startswith("judge: no verdict in the judge's reply: unparseable").all(), \
        out["rare_error"].tolist()
    assert (out["rare_error_kind"] == "content").all()
    # the teacher's answer stays with the row, and the judge's reply beside it
    assert out["reasoning"].str.startswith("[simulated reasoning]").all() and out["answer"].notna().all()
    assert out["rare_verify_raw"].notna().all() and out["rare_verify_verdict"].isna().all()
    assert (out["rare_verify_samples"] == 1).all() and (out["rare_verify_status"] == "failed").all()
    summary = op.last_summary
    assert summary.failed == 10 and summary.failures_by_reason == {"judge": 10}
    assert summary.extra["verify_no_verdict"] == 10 and summary.extra["verify_rejected"] == 0


def test_a_rerun_with_retry_failed_asks_the_judge_again_and_not_the_teacher(sim, tmp_path):
    sim.inject([FaultSpec(kind="malformed_json", count=NEVER, match=JUDGED)])
    rows = checked_rows(4)
    assert (distill(sim, tmp_path, OFF, max_samples=1).process(rows)["rare_error"].str.startswith("judge:")).all()
    sim.reset()  # the judge answers now; its unusable replies are in the response cache
    op = distill(sim, tmp_path, OFF, max_samples=1)
    op.retry_failed = True
    out = op.process(rows)
    assert (out["rare_verify_verdict"].notna()).all() and not out["rare_error"].str.startswith("judge:").any()
    stats = sim.stats()
    assert stats.models == ["judge"] and stats.requests_by_path[CHAT] == 4  # the teacher's answers came from the cache


def test_a_judge_request_that_fails_fails_the_row_as_a_request_without_resampling(sim, tmp_path):
    sim.inject([FaultSpec(kind="server_error", count=NEVER, match=JUDGED)])
    out = distill(sim, tmp_path, OFF, max_retries=0).process(checked_rows(3))
    assert sim.stats().completions_served == 3  # the teacher, once per row
    assert out["rare_error"].str.startswith("judge: request failed: HTTP 500").all(), out["rare_error"].tolist()
    assert (out["rare_error_kind"] == "request").all() and out["answer"].notna().all()


def test_the_guard_stops_a_judge_that_never_gives_a_verdict(sim, tmp_path):
    sim.inject([FaultSpec(kind="malformed_json", count=NEVER, match=JUDGED)])
    op = distill(sim, tmp_path, RoleGuardConfig(first=6), judge_workers=1)
    with pytest.raises(RoleUnusableError) as caught:
        op.process(checked_rows(8))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("the judge role (model judge) is stopped: its first 6 replies "
                                                      "could not be used")
    assert "distill.role_guard" in message and "A reply: '" in message
    stats = sim.stats()
    # the teacher answered its 8 rows; the judge's 16 replies stopped at the 6th
    assert stats.completions_served == 8 and stats.faults_served == {"malformed_json": 6}


@pytest.mark.parametrize("workers", [1, 4])
def test_the_guard_stops_a_question_writer_after_its_first_20_unusable_replies(sim, tmp_path, workers):
    sim.inject([FaultSpec(kind="malformed_json", count=NEVER)])
    op = Doc2Query(llm_serving=client(sim, tmp_path, "writer", workers))
    with pytest.raises(RoleUnusableError, match=r"^the question_writer role \(model writer\) is stopped: its first "
                                                r"20 replies could not be used \(last: unparseable: .*\); nothing more "
                                                r"is sent for it \(thresholds: doc2query.role_guard\)\. A reply: '") \
            as caught:
        op.process(documents(12))  # 12 rows, 3 attempts each: 36 replies without the guard
    sample = str(caught.value).split("A reply: ", 1)[1]
    assert "\n" not in str(caught.value) and len(sample) <= 2 + 200 + 3
    sent = sim.stats().requests_by_path[CHAT]
    # what was in flight when the 20th reply came is answered, nothing is sent after it
    assert 20 <= sent <= 20 + workers - 1, sent


def test_the_guard_stops_a_teacher_whose_replies_never_parse(sim, tmp_path):
    sim.inject([FaultSpec(kind="malformed_json", count=NEVER)])
    op = ReasonDistill(llm_serving=client(sim, tmp_path, "teacher", 1), role_guard=RoleGuardConfig(first=5))
    with pytest.raises(RoleUnusableError, match=r"^the teacher role \(model teacher\) is stopped: its first 5"):
        op.process(checked_rows(4).drop(columns="reference_answer"))
    assert sim.stats().requests_by_path[CHAT] == 5  # of 12 (4 rows, 3 attempts each)


def test_a_usable_reply_among_the_first_keeps_the_role_going_until_the_window_says_otherwise():
    guard = RoleGuard("teacher", RoleGuardConfig(first=4, window=10, max_unusable_share=0.8))
    guard.record(True, "m", "ok")
    for _ in range(8):  # 9 replies: the window is not full yet
        guard.record(False, "m", "nope", "unparseable: no answer")
    with pytest.raises(RoleUnusableError, match=r"9 of its last 10 replies could not be used \(last: unparseable"):
        guard.record(False, "m", "nope", "unparseable: no answer")
    with pytest.raises(RoleUnusableError):  # once stopped, stopped
        guard.record(True, "m", "ok")


def test_a_role_that_answers_usably_often_enough_is_never_stopped():
    guard = RoleGuard("judge", RoleGuardConfig(first=3, window=10, max_unusable_share=0.8))
    for i in range(200):  # 7 of every 10 unusable
        guard.record(i % 10 < 3, "m", "reply")
    assert guard.replies == 200 and guard.tripped is None


def test_the_first_replies_rule_counts_only_the_first_ones():
    guard = RoleGuard("question_writer", RoleGuardConfig(first=3, window=0))
    guard.record(False, "m", "x" * 500, "unparseable: no JSON")
    guard.record(False, "m", "x" * 500, "unparseable: no JSON")
    with pytest.raises(RoleUnusableError) as caught:
        guard.record(False, "m", "line one\n\nline two " + "x" * 500, "unparseable: no JSON")
    assert "A reply: 'line one line two xxx" in str(caught.value) and str(caught.value).endswith("...'")
    late = RoleGuard("question_writer", RoleGuardConfig(first=3, window=0))
    late.record(True, "m", "ok")
    for _ in range(100):
        late.record(False, "m", "bad")  # the first 3 were not all unusable, and the window is off
    assert late.tripped is None
