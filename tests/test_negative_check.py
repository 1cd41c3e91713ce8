"""checks.negatives: each candidate negative shown alone with the question and the reference
answer; one that supports the answer is rejected and replaced by BM25HardNeg's next spare
(hardneg.spare), the row marked short when the spares run out; the config is refused without
spares; `rare estimate` prices the checks; a run writes rare_negatives_rejected and the report the
share; the simulator answers the check from the prompt's view."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from prefect_fixtures import SAMPLE

import rare_sim
from rare_core import APILLMServing_request
from rare_core.checks.negatives import SPEC, NegativeCheck, describe
from rare_core.config import PipelineConfig
from rare_core.estimate import build_estimate
from rare_core.operators.bm25_hardneg import BM25HardNeg
from rare_core.pipeline import STEPS, dataset_columns
from rare_core.prompts import negative_check as prompt
from rare_core.prompts.view import NegativeCheckView, read_prompt
from rare_core.retrieval.negatives import select_negatives, text_key
from rare_core.storage import read_frame
from rare_sim import FaultSpec
from rare_sim.answers import doc2query_answer

QUESTION = "Does metformin lower fasting glucose in adults with type 2 diabetes?"
REFERENCE = "Metformin lowers fasting glucose and glycated haemoglobin in adults with type 2 diabetes."
# Candidates that hold the reference's content words (false negatives), and some that do not.
PLANTED = "In a randomised trial, metformin lowers fasting glucose and glycated haemoglobin in adults with diabetes."
PLANTED_TOO = "Adults with type 2 diabetes given metformin showed lower fasting glucose and glycated haemoglobin."
CLEAN = ["Tomatoes grow best in warm soil with full sun.", "Bank interest rates rose again this quarter.",
         "Roses prefer rich soil and morning sun.", "Basil grows well beside tomatoes in sunny beds.",
         "Cucumbers need daily watering in dry weeks.", "Interest on savings accounts is paid monthly."]


@pytest.fixture
def llm(sim, tmp_path):
    return APILLMServing_request(api_url=sim.base_url, model_name="checker", max_workers=4, max_retries=0,
                                 cache_path=str(tmp_path / "responses.sqlite"), backoff_base=0.01)


def row(negatives: list[tuple[str, str]], spares: list[tuple[str, str]] | None, **more) -> dict:
    """A row as BM25HardNeg writes it: (id, text) negatives and spares, scores falling."""
    out = {"question": QUESTION, "reference_answer": REFERENCE, "text": "the positive",
           "hard_negatives": [t for _, t in negatives], "hard_negatives_ids": [i for i, _ in negatives],
           "hard_negatives_scores": [10.0 - k for k in range(len(negatives))], "rare_hardneg_status": "ok", **more}
    if spares is not None:
        out.update({"rare_hardneg_spare": [t for _, t in spares], "rare_hardneg_spare_ids": [i for i, _ in spares],
                    "rare_hardneg_spare_scores": [5.0 - k for k in range(len(spares))]})
    return out


def completions(sim) -> int:
    return sim.stats().completions_served


# --- the operator against the simulator -------------------------------------------------------

def test_a_planted_negative_is_rejected_and_replaced_by_the_next_spare_clean_ones_kept(sim, llm):
    df = pd.DataFrame([
        # the first spare holds the answer too: it is checked in turn and the next one replaces it
        row([("p1", PLANTED), ("c1", CLEAN[0]), ("c2", CLEAN[1])], [("p2", PLANTED_TOO), ("s1", CLEAN[2]),
                                                                    ("s2", CLEAN[3])]),
        row([("c3", CLEAN[3]), ("c4", CLEAN[4]), ("c5", CLEAN[5])], [("s3", CLEAN[1])]),
    ])
    op = NegativeCheck(llm_serving=llm)
    out = op.process(df)
    first, second = out.iloc[0], out.iloc[1]
    assert first["hard_negatives_ids"] == ["s1", "c1", "c2"]  # the spare takes the rejected one's place
    assert first["hard_negatives"] == [CLEAN[2], CLEAN[0], CLEAN[1]]
    assert first["hard_negatives_scores"] == [5.0 - 1, 9.0, 8.0]
    assert [(r["id"], r["text"]) for r in first["rare_negatives_rejected"]] == [("p1", PLANTED), ("p2", PLANTED_TOO)]
    assert all(r["reason"].startswith("[simulated]") for r in first["rare_negatives_rejected"])
    assert first["rare_hardneg_spare_ids"] == ["s2"] and first["rare_hardneg_spare"] == [CLEAN[3]]
    assert first["rare_hardneg_spare_scores"] == [3.0]  # the spares left unused
    assert second["hard_negatives_ids"] == ["c3", "c4", "c5"] and second["rare_hardneg_spare_ids"] == ["s3"]
    assert pd.isna(second["rare_negatives_rejected"])
    assert out["rare_negatives_status"].tolist() == ["ok", "ok"]
    assert out["rare_hardneg_status"].tolist() == ["ok", "ok"] and (out["rare_status"] == "ok").all()
    extra = op.last_summary.extra
    assert completions(sim) == 3 + 2 + 3 == op.last_summary.llm.requests  # each candidate checked once
    assert extra["candidates_judged"] == 8 and extra["candidates_rejected"] == 2
    assert extra["candidates_replaced"] == 2 and extra["rows_short"] == 0 and extra["rows_checked"] == 2
    assert extra["rows_with_rejections"] == 1 and extra["candidates_unjudged"] == 0
    assert out["rare_negatives_attempts"].tolist() == [5, 3]
    assert (out["rare_negatives_model"] == "checker").all()
    assert describe(op.last_summary) == ["2 of 8 candidate negatives were judged to support the answer and replaced "
                                         "(25.0%): an estimate of the false-negative rate"]


def test_when_the_spares_run_out_the_row_is_short(sim, llm):
    df = pd.DataFrame([row([("p1", PLANTED), ("c1", CLEAN[0]), ("p2", PLANTED_TOO)], [("p3", PLANTED + " Again.")]),
                       row([("c2", CLEAN[1]), ("p4", PLANTED + " Also in older adults.")], None)])  # no spares
    op = NegativeCheck(llm_serving=llm)
    out = op.process(df)
    assert out.iloc[0]["hard_negatives_ids"] == ["c1"] and out.iloc[1]["hard_negatives_ids"] == ["c2"]
    assert out.iloc[0]["hard_negatives_scores"] == [9.0]
    assert out["rare_hardneg_status"].tolist() == ["short", "short"]
    assert out["rare_negatives_status"].tolist() == ["short", "short"]
    assert [r["id"] for r in out.iloc[0]["rare_negatives_rejected"]] == ["p1", "p2", "p3"]
    extra = op.last_summary.extra
    assert extra["candidates_rejected"] == 4 and extra["candidates_replaced"] == 1 and extra["rows_short"] == 2
    assert extra["candidates_judged"] == 4 + 2 and completions(sim) == 6
    assert op.last_summary.failed == 0 and (out["rare_status"] == "ok").all()  # short is no failure
    assert describe(op.last_summary)[1] == "negative check: 2 row(s) ran out of spares (kept, marked `short`)"


def test_failed_requests_fail_the_row_unusable_replies_keep_the_candidate(sim, llm):
    df = pd.DataFrame([row([("c1", CLEAN[0]), ("p1", PLANTED)], [("s1", CLEAN[2])]),
                       row([("c2", CLEAN[1])], [("s2", CLEAN[3])], question="Is basil a good companion plant?"),
                       row([("c3", CLEAN[4])], [], reference_answer=None)])
    sim.inject([FaultSpec(kind="server_error", count=5, match=CLEAN[0]),
                FaultSpec(kind="malformed_json", count=5, match=CLEAN[1])])
    op = NegativeCheck(llm_serving=llm, max_attempts=2)
    out = op.process(df)
    assert out.loc[0, "rare_status"] == "failed" and out.loc[0, "rare_error_kind"] == "request"
    assert out.loc[0, "rare_error"].startswith("negatives: request failed: ")  # a rerun asks again
    assert out.loc[0, "hard_negatives_ids"] == ["c1", "p1"] and pd.isna(out.loc[0, "rare_negatives_rejected"])
    assert out.loc[1, "hard_negatives_ids"] == ["c2"] and out.loc[1, "rare_negatives_unjudged"] == 1
    assert out.loc[1, "rare_negatives_attempts"] == 2
    assert out["rare_negatives_status"].tolist() == ["failed", "ok", "skipped"]  # no reference: not checked
    assert op.last_summary.failed == 1 and op.last_summary.failures_by_kind == {"request": 1}
    assert op.last_summary.extra["candidates_unjudged"] == 1 and op.last_summary.extra["rows_checked"] == 1
    assert "negative check: 1 candidate(s) kept without a usable verdict" in describe(op.last_summary)


def test_rows_failed_upstream_are_not_asked_and_off_asks_nothing(sim, llm):
    df = pd.DataFrame([row([("p1", PLANTED)], [("s1", CLEAN[0])], rare_status="failed"),
                       row([("c1", CLEAN[1])], [])])
    out = NegativeCheck(llm_serving=llm).process(df)
    assert completions(sim) == 1 and out["rare_negatives_status"].tolist() == ["skipped", "ok"]
    assert out.loc[0, "hard_negatives_ids"] == ["p1"]
    off = NegativeCheck(llm_serving=llm, enabled=False)
    assert off.process(df)["hard_negatives_ids"].tolist() == [["p1"], ["c1"]] and completions(sim) == 1
    assert describe(off.last_summary) == []


# --- the spares of BM25HardNeg ----------------------------------------------------------------

def ranking(*docs: tuple[str, float]):
    return [d for d, _ in docs], [s for _, s in docs]


def select(ids, scores, **kw):
    return select_negatives(ids, scores, positive_ids={"pos"}, positive_key=text_key("positive"),
                            key_of=lambda d: text_key(f"text of {d}"), max_score_ratio=None, **kw)


def test_spares_follow_the_negatives_in_the_same_selection():
    ids, scores = ranking(("r1", 9), ("r2", 8), ("pos", 7.5), ("a", 7), ("b", 6), ("g", 5.5), ("c", 5), ("d", 4))
    plain = select(ids, scores, num_neg=2, reserve_top=2, excluded_ids={"g"})
    spared = select(ids, scores, num_neg=2, reserve_top=2, excluded_ids={"g"}, spare=3)
    assert plain.ids == spared.ids == ["a", "b"] and plain.spare_ids == []
    assert spared.spare_ids == ["c", "d", "r1"]  # below the reserve first, then the reserve, never the group's
    assert spared.spare_scores == [5.0, 4.0, 9.0]
    short = select(ids[:5], scores[:5], num_neg=3, reserve_top=2, spare=2)
    assert short.ids == ["r1", "a", "b"] and short.spare_ids == ["r2"]  # the reserve fills, then spares
    assert select(ids, scores, num_neg=2, spare=2).exhausted is False
    assert select(ids[:4], scores[:4], num_neg=2).exhausted is False
    assert select(ids[:4], scores[:4], num_neg=2, spare=2).exhausted is True  # searched deeper for spares too


def test_bm25hardneg_writes_spares_only_when_asked_and_its_negatives_do_not_change(tmp_path):
    docs = [(f"g{i}", f"Tomatoes and {w} grow in warm soil with water.") for i, w in
            enumerate(["basil", "peppers", "beans", "onions", "garlic", "leeks", "kale", "chard"])]
    df = pd.DataFrame({"id": [i for i, _ in docs], "text": [t for _, t in docs],
                       "question": ["how do tomatoes grow in warm soil?"] * len(docs)})
    settings = {"index_dir": str(tmp_path / "idx"), "max_score_ratio": None, "exclude_group_positives": False,
                "reserve_top": 0, "near_duplicate_threshold": None}
    plain = BM25HardNeg(**settings).process(df, num_neg=2)
    spared = BM25HardNeg(**settings, spare=3).process(df, num_neg=2)
    assert "rare_hardneg_spare" not in plain.columns
    assert spared["hard_negatives_ids"].tolist() == plain["hard_negatives_ids"].tolist()
    for _, r in spared.iterrows():
        assert len(r["rare_hardneg_spare_ids"]) == 3
        assert not set(r["rare_hardneg_spare_ids"]) & {*r["hard_negatives_ids"], r["id"]}
        assert r["rare_hardneg_spare"] == [dict(docs)[i] for i in r["rare_hardneg_spare_ids"]]
        assert min(r["hard_negatives_scores"]) >= max(r["rare_hardneg_spare_scores"])  # best first, after them
    again = BM25HardNeg(**settings).process(spared, num_neg=2, overwrite=True)
    assert "rare_hardneg_spare" not in again.columns  # a rerun without spares leaves none behind


# --- the config, the registry, the estimate ---------------------------------------------------

def test_the_check_without_spares_is_refused_in_one_line(capsys):
    from deployments.cli import main

    code = main(["estimate", "--input", str(SAMPLE), "--set", "checks.negatives.enabled=true"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err
    assert err.endswith("checks.negatives needs hardneg.spare > 0 to replace rejected negatives; "
                        "set --set hardneg.spare=3")
    PipelineConfig(input_path="x.jsonl", checks={"negatives": {"enabled": True}}, hardneg={"spare": 3})
    PipelineConfig(input_path="x.jsonl")  # off: spare 0 is fine


def test_registered_after_bm25_off_by_default_role_falls_back_to_the_judge():
    names = [s.name for s in STEPS]
    assert names.index("negatives") == names.index("hardneg") + 1 == names.index("distill") - 1
    config = PipelineConfig(input_path="x.jsonl")
    assert not SPEC.enabled(config) and config.hardneg.spare == 0
    base = {"input_path": "x.jsonl", "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "shared"},
            "checks": {"negatives": {"enabled": True}}, "hardneg": {"spare": 3}}
    on = PipelineConfig(**base, roles={"judge": {"model": "grader"}})
    assert SPEC.enabled(on) and on.llm_for("negative_checker").model == "grader"
    assert dataset_columns(on)["rare_negatives_rejected"] == "rare_negatives_rejected"
    own = PipelineConfig(**base, roles={"judge": {"model": "grader"}, "negative_checker": {"model": "mine"}})
    assert own.llm_for("negative_checker").model == "mine"
    assert SPEC.cache_settings(own)["llm:negative_checker"]["model"] == "mine"


def estimate_config(**kw) -> PipelineConfig:
    return PipelineConfig(input_path=str(SAMPLE), llm={"base_url": "http://127.0.0.1:9/v1", "model": "gpt-4o-mini"},
                          checks={"negatives": {"enabled": True}}, **kw)


def test_estimate_has_a_request_per_negative_checked_and_the_expected_replacements(capsys):
    from deployments.cli import main

    est = build_estimate(estimate_config(hardneg={"spare": 3}))
    line = est.part("negatives")
    rows = est.part("distill").rows
    assert rows == 40 and line.requests == round(rows * (3 + 3 * 0.25)) and line.requests_max == rows * 6
    assert line.role == "negative_checker" and line.actual_step == "negatives"
    assert 50 < line.prompt_tokens_per_request < 2000 and line.completion_tokens_expected_per_request == 40
    few = build_estimate(estimate_config(hardneg={"spare": 1, "num_neg": 5})).part("negatives")
    assert few.requests == rows * 6 == few.requests_max  # the replacements expected, at most the spares
    assert build_estimate(estimate_config(hardneg={"spare": 3}).model_copy(update={"checks": PipelineConfig(
        input_path="x").checks})).part("negatives") is None
    assert main(["estimate", "--input", str(SAMPLE), "--set", "checks.negatives.enabled=true",
                 "--set", "hardneg.spare=3"]) == 0
    assert "\n| negatives | rare-sim-1 | online | 150 / 240 | " in capsys.readouterr().out


def test_estimate_prompt_tokens_match_the_run(sim, llm, tmp_path):
    questions = [f"{QUESTION[:-1]} in cohort {i}?" for i in range(4)]
    df = pd.DataFrame([row([("c1", CLEAN[0]), ("c2", CLEAN[1]), ("c3", CLEAN[2])], [("s1", CLEAN[3])], question=q)
                       for q in questions])
    path = tmp_path / "q.jsonl"
    pd.DataFrame({"question": questions, "text": CLEAN[4], "gold_answer": REFERENCE}).to_json(
        path, orient="records", lines=True)
    config = PipelineConfig(input_path=str(path), questions_given=True, llm={"base_url": sim.base_url, "model": "x"},
                            checks={"negatives": {"enabled": True}}, hardneg={"spare": 1})
    line = build_estimate(config).part("negatives")
    op = NegativeCheck(llm_serving=llm)
    op.process(df)
    assert line.rows == 4 and line.requests_max == 16 and op.last_summary.llm.requests == 12 <= line.requests
    actual = op.last_summary.llm.prompt_tokens / 12
    assert 0.6 <= actual / line.prompt_tokens_per_request <= 1.6


# --- the simulator ----------------------------------------------------------------------------

def test_the_simulator_answers_the_check_and_not_a_reworded_one(sim):
    from openai import OpenAI

    client = OpenAI(base_url=sim.base_url, api_key="x")

    def ask(messages):
        return client.chat.completions.create(model="m", messages=messages).choices[0].message.content

    planted = prompt.build_messages(QUESTION, REFERENCE, PLANTED, 4000)
    view = read_prompt(planted)
    assert isinstance(view, NegativeCheckView) and view.kind == "negative_check"
    assert (view.question, view.reference, view.document) == (QUESTION, REFERENCE, PLANTED)
    assert prompt.parse_reply(ask(planted)).supports is True
    assert prompt.parse_reply(ask(prompt.build_messages(QUESTION, REFERENCE, CLEAN[0], 4000))).supports is False
    reworded = [planted[0], {"role": "user", "content": planted[1]["content"].replace("Decide", "Say", 1)}]
    assert read_prompt(reworded) is None
    assert ask(reworded).startswith("[simulated] echo: ")


def test_the_simulator_never_holds_the_checks_wording():
    fixed = [part for part in prompt.USER.parts if isinstance(part, str)]
    phrases = {line.strip() for part in fixed for line in part.splitlines() if len(line.strip()) > 12}
    phrases |= {tag for part in fixed for tag in re.findall(r"</?[a-z_]+>", part)}
    assert "<document>" in phrases and any("supports the reference answer" in p for p in phrases)
    for path in Path(rare_sim.__file__).parent.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert [p for p in phrases if p in source] == [], path.name


# --- the step in a run ------------------------------------------------------------------------

@pytest.mark.usefixtures("prefect_harness")
def test_rare_run_rejects_a_planted_negative_and_reports_the_share(tmp_path, sim, monkeypatch):
    from deployments.cli import main

    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    docs = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    # A false negative for the first row: another document stating the sentence the simulated
    # Doc2Query takes as that row's reference answer (it scores below the positive).
    reference = json.loads(doc2query_answer(docs[0]["text"], 1))["reference_answer"]
    planted = {"id": "planted", "title": "", "text": f"{reference.removeprefix('[simulated] ')} {docs[5]['text']}"}
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(json.dumps(d) for d in docs + [planted]) + "\n", encoding="utf-8")
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["run", "--input", str(source), "--limit", "4", "--base-url", sim.base_url, "--model", "teacher",
                 "--output", str(out), "--cache-path", str(cache),
                 "--set", "checks.negatives.enabled=true", "--set", "hardneg.spare=3"])
    assert code == 0
    steps = {int(re.search(r"_step(\d+)-", p.name).group(1)): p for p in cache.glob("*_step*-*.jsonl")}
    frame = read_frame(steps[max(steps)])
    assert "rare_negatives_rejected" in frame.columns
    rejected = [r for cell in frame["rare_negatives_rejected"] if isinstance(cell, list) for r in cell]
    assert "planted" in {r["id"] for r in rejected}
    assert not any("planted" in ids for ids in frame["hard_negatives_ids"])
    report = (out / "report.md").read_text()
    checked = re.search(r"- negatives: candidates_judged = (\d+)", report)
    assert checked and int(checked.group(1)) >= 12
    share = f"{len(rejected) / int(checked.group(1)):.1%}"
    assert (f"{len(rejected)} of {checked.group(1)} candidate negatives were judged to support the answer and "
            f"replaced ({share}): an estimate of the false-negative rate") in report
