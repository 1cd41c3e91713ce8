"""checks.closed_book: the question without any document, its answer checked as verification
checks answers; the simulator answers the probe; the role falls back to the teacher's; `rare
estimate` prices it; a run writes rare_closed_book and the report counts it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from prefect_fixtures import SAMPLE

import rare_sim
from rare_core import APILLMServing_request
from rare_core.checks.closed_book import SPEC, ClosedBookCheck, describe
from rare_core.config import PipelineConfig
from rare_core.estimate import build_estimate
from rare_core.pipeline import STEPS, dataset_columns
from rare_core.prompts import closed_book as prompt
from rare_core.prompts.view import ClosedBookView, read_prompt
from rare_core.storage import read_frame
from rare_core.verify import closed_form
from rare_sim import FaultSpec

CLOSED = ["Does metformin lower fasting glucose in adults?", "Is aspirin linked to gastric bleeding?",
          "Do statins reduce cardiovascular events in women?", "Is vitamin D deficiency common in winter?",
          "Does exercise improve sleep quality?", "Can coffee raise blood pressure?",
          "Is smoking a risk factor for cataract?", "Does salt intake affect kidney stones?",
          "Is obesity associated with asthma severity?", "Does meditation reduce anxiety scores?",
          "Can zinc shorten the common cold?", "Is red meat linked to colon cancer?"]


@pytest.fixture
def llm(sim, tmp_path):
    return APILLMServing_request(api_url=sim.base_url, model_name="probe", max_workers=4, max_retries=0,
                                 cache_path=str(tmp_path / "responses.sqlite"), backoff_base=0.01)


def closed_frame() -> pd.DataFrame:
    return pd.DataFrame({"id": [str(i) for i in range(len(CLOSED))], "question": CLOSED,
                         "scenario": ["A clinician is weighing the evidence."] * len(CLOSED),
                         "gold_answer": [("yes", "no", "maybe")[i % 3] for i in range(len(CLOSED))]})


def completions(sim) -> int:
    return sim.stats().completions_served


# --- the operator against the simulator -------------------------------------------------------

def test_closed_references_are_checked_exactly_and_counts_add_up(sim, llm):
    df = closed_frame()
    op = ClosedBookCheck(llm_serving=llm)
    out = op.process(df, reference_key="gold_answer")
    extra = op.last_summary.extra
    assert completions(sim) == len(df) and extra["judge_requests"] == 0  # closed: no judge call
    assert out["rare_closed_book_method"].tolist() == ["exact"] * len(df)
    expected = ["correct" if closed_form(a) == g else "incorrect" for a, g in zip(out["rare_closed_book_answer"],
                                                                                   df["gold_answer"])]
    assert out["rare_closed_book"].tolist() == expected
    assert 0 < expected.count("correct") < len(df)  # yes/no/maybe drawn per question: some right, some wrong
    assert extra["rows_checked"] == len(df) == extra["rows_correct"] + extra["rows_incorrect"]
    assert extra["rows_correct"] == expected.count("correct") and extra["rows_dropped"] == 0
    assert (out["rare_status"] == "ok").all() and op.last_summary.failed == 0
    assert op.last_summary.llm.requests == len(df)
    assert (out["rare_closed_book_model"] == "probe").all() and (out["rare_closed_book_prompt_version"]
                                                                 == prompt.VERSION).all()
    assert describe(op.last_summary) == [f"{expected.count('correct')} of {len(df)} questions were answered "
                                         "correctly without documents (0 dropped)"]


def test_drop_removes_exactly_the_rows_answered_correctly(sim, llm):
    df = closed_frame()
    flagged = ClosedBookCheck(llm_serving=llm).process(df, reference_key="gold_answer")
    op = ClosedBookCheck(llm_serving=llm, drop=True)
    out = op.process(df, reference_key="gold_answer")
    correct = flagged["rare_closed_book"].eq("correct")
    assert out["rare_closed_book"].tolist() == flagged["rare_closed_book"].tolist()
    assert out["rare_status"].eq("failed").tolist() == correct.tolist()
    assert set(out.loc[correct, "rare_error"]) == {"closed_book: answered correctly without documents"}
    assert set(out.loc[correct, "rare_error_kind"]) == {"filtered"}
    assert set(out.loc[~correct, "rare_error"]) == {""}
    assert op.last_summary.failed == op.last_summary.extra["rows_dropped"] == int(correct.sum())
    assert op.last_summary.failures_by_kind == {"filtered": int(correct.sum())}
    assert f"({int(correct.sum())} dropped)" in describe(op.last_summary)[0]


def test_open_references_are_judged_and_the_judge_calls_counted(sim, llm):
    open_q = ["How does metformin alter insulin signalling?", "Why might statins affect muscle pain?",
              "What limits aspirin dosing in elderly patients?", "How does caffeine change sleep onset?"]
    # The simulator answers an open question with its salient words; its judge agrees when the
    # answer holds most of the reference's: two references that do, two that do not.
    references = ["metformin alters insulin signalling", "statins affect muscle pain",
                  "renal clearance and bleeding risk", "adenosine receptor antagonism delays it"]
    df = pd.DataFrame({"question": open_q + CLOSED[:2], "reference_answer": references + ["yes", "no"]})
    op = ClosedBookCheck(llm_serving=llm, method="auto")
    out = op.process(df)
    extra = op.last_summary.extra
    assert extra["judge_requests"] == 4 and completions(sim) == 6 + 4  # only the open references are judged
    assert out["rare_closed_book_method"].tolist() == ["judge"] * 4 + ["exact"] * 2
    assert out["rare_closed_book"].tolist()[:4] == ["correct", "correct", "incorrect", "incorrect"]
    assert extra["rows_correct"] + extra["rows_incorrect"] == extra["rows_checked"] == 6
    sim.reset()
    judged = ClosedBookCheck(llm_serving=llm, method="judge")
    assert judged.process(df)["rare_closed_book_method"].tolist() == ["judge"] * 6  # judge: every answer
    assert judged.last_summary.extra["judge_requests"] == completions(sim) == 2  # the rest from the cache
    assert ClosedBookCheck(llm_serving=llm, method="none").method == "auto"


def test_unusable_replies_are_unanswered_failed_requests_fail_the_row(sim, llm):
    df = closed_frame().head(4)
    sim.inject([FaultSpec(kind="malformed_json", count=5, match=CLOSED[0]),
                FaultSpec(kind="server_error", count=5, match=CLOSED[1])])
    op = ClosedBookCheck(llm_serving=llm, max_attempts=2)
    out = op.process(df, reference_key="gold_answer")
    assert out.loc[0, "rare_closed_book"] == "unanswered" and out.loc[0, "rare_status"] == "ok"
    assert out.loc[0, "rare_closed_book_attempts"] == 2 and out.loc[0, "rare_closed_book_raw"]
    assert out.loc[1, "rare_status"] == "failed" and out.loc[1, "rare_error_kind"] == "request"
    assert out.loc[1, "rare_error"].startswith("closed_book: request failed: ")  # a rerun asks it again
    assert pd.isna(out.loc[1, "rare_closed_book"]) and out.loc[1, "rare_closed_book_status"] == "failed"
    assert op.last_summary.extra["rows_unanswered"] == 1 and op.last_summary.failed == 1
    assert "1 unanswered (reply unusable)" in describe(op.last_summary)[1]


def test_rows_failed_upstream_or_without_reference_are_not_asked(sim, llm):
    df = closed_frame().head(3).assign(rare_status=["ok", "failed", "ok"], gold_answer=["yes", "no", None])
    op = ClosedBookCheck(llm_serving=llm)
    out = op.process(df, reference_key="gold_answer")
    assert completions(sim) == 1 and op.last_summary.extra["rows_checked"] == 1
    assert out["rare_closed_book_status"].tolist() == ["ok", "skipped", "ok"]
    assert out.loc[1:, "rare_closed_book"].isna().all()
    off = ClosedBookCheck(llm_serving=llm, enabled=False).process(df.drop(columns=["gold_answer"]))
    assert (off["rare_closed_book_status"] == "skipped").all() and completions(sim) == 1


# --- the registry, the role, the estimate -----------------------------------------------------

def test_registered_before_bm25_off_by_default_and_in_the_dataset():
    names = [s.name for s in STEPS]
    assert names.index("closed_book") == names.index("hardneg") - 1
    assert names.index("closed_book") > names.index("decontaminate") > names.index("doc2query")
    config = PipelineConfig(input_path="x.jsonl")
    assert not SPEC.enabled(config) and config.checks.closed_book.drop is False
    on = PipelineConfig(input_path="x.jsonl", checks={"closed_book": {"enabled": True}})
    assert SPEC.enabled(on) and dataset_columns(on)["rare_closed_book"] == "rare_closed_book"
    assert SPEC.roles(on) == ("closed_book", "judge")
    assert SPEC.roles(on.model_copy(update={"verify": on.verify.model_copy(update={"method": "exact"})})) == (
        "closed_book",)


def test_the_role_falls_back_to_the_teachers_model_unless_set():
    base = {"input_path": "x.jsonl", "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "shared"}}
    assert PipelineConfig(**base).llm_for("closed_book").model == "shared"
    teacher = PipelineConfig(**base, roles={"teacher": {"model": "big-teacher", "base_url": "http://t:1/v1"}})
    probe = teacher.llm_for("closed_book")
    assert (probe.model, probe.base_url) == ("big-teacher", "http://t:1/v1")
    assert SPEC.cache_settings(teacher)["llm:closed_book"]["model"] == "big-teacher"
    own = PipelineConfig(**base, roles={"teacher": {"model": "big-teacher"}, "closed_book": {"model": "probe"}})
    assert own.llm_for("closed_book").model == "probe" and own.llm_for("teacher").model == "big-teacher"
    assert own.llm_for("judge").model == "shared"  # other roles keep the shared section


def estimate_config(**kw) -> PipelineConfig:
    return PipelineConfig(input_path=str(SAMPLE), llm={"base_url": "http://127.0.0.1:9/v1", "model": "gpt-4o-mini"},
                          checks={"closed_book": {"enabled": True}}, **kw)


def test_estimate_has_one_closed_book_request_per_row():
    est = build_estimate(estimate_config(verify={"method": "exact"}))
    line = est.part("closed_book")
    assert line.requests == line.requests_max == 40 == est.part("distill").rows
    assert est.part("closed_book_judge") is None
    assert 0 < line.prompt_tokens_per_request < 400 and line.completion_tokens_expected_per_request < 100
    two = build_estimate(estimate_config(verify={"method": "auto"}, doc2query={"num_questions": 2}))
    assert two.part("closed_book").requests == 80 == two.part("closed_book_judge").requests
    assert two.part("closed_book_judge").actual_step == "closed_book"
    assert build_estimate(estimate_config().model_copy(update={"checks": PipelineConfig(
        input_path="x").checks})).part("closed_book") is None


def test_estimate_of_given_questions_matches_the_run(sim, llm, tmp_path):
    df = closed_frame().assign(text="A document.", gold_answer=["yes"] * 10 + ["an open answer"] * 2)
    path = tmp_path / "q.jsonl"
    path.write_text(df.to_json(orient="records", lines=True), encoding="utf-8")
    config = PipelineConfig(input_path=str(path), questions_given=True, checks={"closed_book": {"enabled": True}},
                            llm={"base_url": sim.base_url, "model": "probe"})
    est = build_estimate(config)
    op = ClosedBookCheck(llm_serving=llm, method=config.verify.method)
    op.process(df, reference_key="gold_answer")
    assert est.part("closed_book").requests == op.last_summary.llm.requests == 12
    assert est.part("closed_book_judge").requests == op.last_summary.extra["judge_requests"] == 2
    actual = op.last_summary.llm.prompt_tokens / 12
    assert 0.6 <= actual / est.part("closed_book").prompt_tokens_per_request <= 1.6


# --- the simulator ----------------------------------------------------------------------------

TEXT = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(scenario=TEXT, question=TEXT)
def test_the_probe_reads_back_as_built(scenario, question):
    assume((scenario + "\n</scenario>").find("\n</scenario>") == len(scenario))
    messages = prompt.build_messages(scenario, question)
    view = read_prompt(messages)
    assert isinstance(view, ClosedBookView) and view.kind == "closed_book"
    assert (view.scenario, view.question) == (scenario if scenario.strip() else "", question)


def test_the_simulator_answers_the_probe_and_not_a_reworded_one(sim):
    from openai import OpenAI

    client = OpenAI(base_url=sim.base_url, api_key="x")
    messages = prompt.build_messages("A case.", CLOSED[0])
    reply = client.chat.completions.create(model="m", messages=messages).choices[0].message.content
    assert prompt.parse_reply(reply) in {"Yes. [simulated] From memory.", "No. [simulated] From memory.",
                                         "Maybe. [simulated] From memory."}
    again = client.chat.completions.create(model="m", messages=messages).choices[0].message.content
    assert again == reply  # deterministic
    opened = prompt.build_messages("", "How does metformin alter insulin signalling?")
    assert "metformin" in prompt.parse_reply(client.chat.completions.create(model="m", messages=opened)
                                             .choices[0].message.content)
    reworded = [messages[0], {"role": "user", "content": messages[1]["content"].replace("Answer", "Reply to", 1)}]
    assert read_prompt(reworded) is None
    assert client.chat.completions.create(model="m", messages=reworded).choices[0].message.content.startswith(
        "[simulated] echo: ")


def test_the_simulator_never_holds_the_probes_wording():
    fixed = [part for layout in (prompt.USER, prompt.USER_WITH_SCENARIO) for part in layout.parts
             if isinstance(part, str)]
    phrases = {line.strip() for part in fixed for line in part.splitlines() if len(line.strip()) > 12}
    phrases |= {tag for part in fixed for tag in re.findall(r"</?[a-z_]+>", part)}
    assert "<scenario>" in phrases and any("from what you know" in p for p in phrases)
    for path in Path(rare_sim.__file__).parent.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert [p for p in phrases if p in source] == [], path.name


# --- the step in a run ------------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_harness")
def test_rare_run_writes_the_verdict_to_the_dataset_and_counts_in_the_report(tmp_path, sim, monkeypatch):
    from deployments.cli import main

    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    out = tmp_path / "out"
    code = main(["run", "--input", str(SAMPLE), "--limit", "4", "--base-url", sim.base_url, "--model", "teacher",
                 "--output", str(out), "--cache-path", str(tmp_path / "cache"),
                 "--set", "checks.closed_book.enabled=true"])
    assert code == 0
    dataset = read_frame(out / "dataset.jsonl")
    assert len(dataset) == 4 and set(dataset["rare_closed_book"]) <= {"correct", "incorrect"}
    report = (out / "report.md").read_text()
    assert "- closed_book: rows_checked = 4" in report
    correct = int((dataset["rare_closed_book"] == "correct").sum())
    assert f"- closed_book: rows_correct = {correct}" in report
    # Doc2Query's references are open: each answer was judged
    assert "- closed_book: judge_requests = 4" in report
    assert json.loads((out / "dataset.jsonl").read_text().splitlines()[0])["rare_closed_book"] in {"correct",
                                                                                                   "incorrect"}
