"""Rows a user can trust, through the flow: transient failures are retried on the next run,
``refresh`` refreshes, simulated answers never reach a real endpoint's run, the output folder
never holds a stale dataset, and a bad input is refused before anything is paid for."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from prefect_fixtures import SAMPLE
from test_flow import cli_env, completions, make_config, run_flow, step_file  # noqa: F401 (cli_env: a fixture)

from rare_core.storage import read_frame, write_frame
from rare_sim import FaultSpec

pytestmark = pytest.mark.usefixtures("prefect_harness")


def sample(n: int):
    with open(SAMPLE, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh][:n]
    import pandas as pd

    return pd.DataFrame(rows)


def test_user_status_column_does_not_drop_rows(tmp_path, sim):
    docs = sample(6).assign(status=["published", "failed", "draft", "published", "failed", "retracted"],
                            error="none")
    path = write_frame(docs, tmp_path / "docs.jsonl")
    config = make_config(tmp_path, sim, input_path=str(path), limit=None)
    state, _ = run_flow(config)
    assert state.is_completed()
    dataset = read_frame(Path(config.output_path) / "dataset.jsonl")
    assert len(dataset) == 6
    final = read_frame(step_file(config, 3))
    assert final["status"].tolist() == docs["status"].tolist() and (final["error"] == "none").all()


def test_rows_lost_to_an_outage_are_asked_again_on_the_next_run(tmp_path, sim):
    docs = sample(6)
    config = make_config(tmp_path, sim, limit=6)
    config = config.model_copy(update={"llm": config.llm.model_copy(update={"max_retries": 1})})
    sim.inject([FaultSpec(kind="server_error", count=2, match=docs["text"][i][:60]) for i in (1, 4)])
    state, _ = run_flow(config)
    assert state.is_completed()
    failed = read_frame(Path(config.output_path) / "failed_rows.jsonl")
    assert sorted(failed["id"].tolist()) == sorted(docs["id"][[1, 4]].tolist())
    assert (failed["rare_error_kind"] == "request").all()
    sim.reset()
    state, tasks = run_flow(config)
    assert state.is_completed() and tasks["doc2query"] != "Cached"
    # only the two lost rows reach the endpoint, twice each (their question, their reasoning)
    assert completions(sim) == 4
    assert len(read_frame(Path(config.output_path) / "dataset.jsonl")) == 6
    assert not (Path(config.output_path) / "failed_rows.jsonl").exists()
    sim.reset()
    state, tasks = run_flow(config)  # now complete: a rerun is Cached throughout
    assert {tasks[t] for t in ("doc2query", "bm25-hardneg", "reason-distill")} == {"Cached"}
    assert completions(sim) == 0


def test_unusable_answers_are_retried_only_when_asked(tmp_path, sim):
    docs = sample(4)
    config = make_config(tmp_path, sim, limit=4)
    sim.inject([FaultSpec(kind="malformed_json", count=3, match=docs["text"][2][:60])])
    run_flow(config)
    sim.reset()
    state, tasks = run_flow(config)
    assert tasks["doc2query"] == "Cached" and completions(sim) == 0
    state, tasks = run_flow(config.model_copy(update={"retry_failed": True}))
    assert tasks["doc2query"] != "Cached"
    assert completions(sim) == 2  # the row's fresh question, then its reasoning
    assert len(read_frame(Path(config.output_path) / "dataset.jsonl")) == 4


def test_cache_mode_refresh_asks_again(tmp_path, sim):
    config = make_config(tmp_path, sim, limit=3)
    run_flow(config)
    sim.reset()
    refresh = config.model_copy(update={"llm": config.llm.model_copy(update={"cache_mode": "refresh"})})
    state, tasks = run_flow(refresh)
    assert tasks["doc2query"] != "Cached" and tasks["reason-distill"] != "Cached"
    assert completions(sim) == 6


def test_simulated_answers_are_never_served_to_a_real_endpoint(tmp_path, sim):
    builtin = make_config(tmp_path, sim, limit=3)
    builtin = builtin.model_copy(update={"llm": builtin.llm.model_copy(update={"base_url": None})})
    state, _ = run_flow(builtin)
    assert state.result().simulated
    sim.reset()
    real = make_config(tmp_path, sim, limit=3)  # same model name, same cache folder, an endpoint
    state, tasks = run_flow(real)
    assert tasks["doc2query"] != "Cached" and completions(sim) == 6
    report = (Path(real.output_path) / "report.md").read_text(encoding="utf-8")
    assert "No LLM endpoint was configured" not in report


def test_a_failed_run_leaves_no_stale_dataset(tmp_path, sim):
    config = make_config(tmp_path, sim, limit=3)
    run_flow(config)
    out = Path(config.output_path)
    assert (out / "dataset.jsonl").exists()
    sim.inject([FaultSpec(kind="unauthorized", count=50)])
    state, _ = run_flow(config.model_copy(update={"llm": config.llm.model_copy(update={"cache_mode": "refresh"})}),
                        expected_tasks={"load-input", "doc2query"})
    assert state.is_failed()
    assert not (out / "dataset.jsonl").exists() and not (out / "report.md").exists()


def test_failed_rows_keep_question_index_and_kind(tmp_path, sim):
    config = make_config(tmp_path, sim, limit=3)
    config = config.model_copy(update={"doc2query": config.doc2query.model_copy(update={"num_questions": 2})})
    run_flow(config)
    questions = read_frame(step_file(config, 1))
    target = questions[questions["question_index"] == 1].iloc[0]
    sim.inject([FaultSpec(kind="malformed_json", count=10, match=f"<question>\n{target['question']}\n</question>")])
    state, _ = run_flow(config.model_copy(update={"llm": config.llm.model_copy(update={"cache_mode": "refresh"})}))
    assert state.is_completed()
    failed = read_frame(Path(config.output_path) / "failed_rows.jsonl")
    assert len(failed) == 1 and failed["id"].iloc[0] == target["id"] and failed["question_index"].iloc[0] == 1
    assert failed["rare_error_kind"].iloc[0] == "content" and failed["rare_error"].iloc[0].startswith("distill:")
    dataset = read_frame(Path(config.output_path) / "dataset.jsonl")
    assert len(dataset) == 5 and str(dataset["question_index"].dtype) == "int64"


def test_roles_have_their_own_endpoint_model_and_settings(tmp_path, sim, monkeypatch):
    from rare_sim import SimulatorProcess

    monkeypatch.setenv("TEACHER_KEY", "teacher-secret-1234")
    with SimulatorProcess(latency=0.0, api_key="teacher-secret-1234") as teacher:
        data = make_config(tmp_path, sim, limit=3).model_dump()
        data["roles"] = {"question_writer": {"model": "cheap-writer"},
                         "teacher": {"base_url": teacher.base_url, "model": "big-thinker", "api_key_env": "TEACHER_KEY",
                                     "generation": {"temperature": 0.95, "top_p": 0.7}}}
        config = type(make_config(tmp_path, sim)).model_validate(data)
        state, _ = run_flow(config)
        assert state.is_completed()
        assert completions(sim) == 3 and teacher.stats().completions_served == 3
        assert teacher.stats().models == ["big-thinker"]
    final = read_frame(step_file(config, 3))
    assert set(final["rare_doc2query_model"]) == {"cheap-writer"} and set(final["rare_distill_model"]) == {"big-thinker"}
    report = (Path(config.output_path) / "report.md").read_text(encoding="utf-8")
    assert "LLM (question_writer)" in report and "`big-thinker`" in report and "`cheap-writer`" in report
    assert config.llm_for("teacher").generation.max_tokens == config.llm.generation.max_tokens  # unset: shared


@pytest.mark.usefixtures("cli_env")
def test_rare_run_batch_pays_batch_prices_and_resumes_for_free(tmp_path, sim, capsys):
    from deployments.cli import EXIT_OK, main

    sim.configure(batch_delay=0.05)
    args = ["run", "--input", str(SAMPLE), "--limit", "4", "--output", str(tmp_path / "out"),
            "--cache-path", str(tmp_path / "cache"), "--base-url", sim.base_url, "--model", "gpt-4o-mini",
            "--batch", "--set", "llm.batch.poll_interval=0.05", "--set", "llm.batch.poll_max=0.2"]
    assert main(args) == EXIT_OK, capsys.readouterr().err
    stats = sim.stats()
    # a question, an answer and (verify.method auto, open references) a judge's verdict per row
    assert stats.completions_served == 0 and stats.batch_completions_served == 12 and stats.batches_created == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    steps = {s["step"]: s for s in summary["steps"]}
    assert steps["doc2query"]["batch_requests"] == 4 and steps["distill"]["batch_requests"] == 4
    list_price = sum(s["prompt_tokens"] * 0.15 + s["completion_tokens"] * 0.60 for s in steps.values()) / 1e6
    assert summary["totals"]["cost"] == pytest.approx(list_price / 2)  # gpt-4o-mini at batch prices
    assert steps["verify"]["extra"]["judge_requests"] == 4  # the check is a step of its own
    assert len(read_frame(tmp_path / "out" / "dataset.jsonl")) == 4


def test_filters_are_steps_that_record_every_row_they_remove(tmp_path, sim):
    docs = sample(5)
    docs = pd.concat([docs, docs.iloc[[1]].assign(id="copy-of-1"),
                      pd.DataFrame([{"id": "short", "text": "Too short to ask about."}])], ignore_index=True)
    path = write_frame(docs, tmp_path / "docs.jsonl")
    config = make_config(tmp_path, sim, input_path=str(path), limit=None)
    config = type(config).model_validate({**config.model_dump(), "filters": {
        "documents": {"enabled": True}, "question_dedup": {"enabled": True}, "leakage": {"enabled": True},
        "length": {"enabled": True}}})
    state, tasks = run_flow(config, expected_tasks={"load-input", "docfilter", "doc2query", "dedup", "leakage",
                                                    "bm25-hardneg", "reason-distill", "length", "export-dataset"})
    assert state.is_completed()
    failed = read_frame(Path(config.output_path) / "failed_rows.jsonl").set_index("id")
    assert failed.loc["copy-of-1", "rare_error"].startswith("doc_filter: exact duplicate of")
    assert failed.loc["short", "rare_error"].startswith("doc_filter: too short")
    assert (failed["rare_error_kind"] == "filtered").all()
    assert len(read_frame(Path(config.output_path) / "dataset.jsonl")) == 5
    assert step_file(config, 3).exists()  # docfilter 1, doc2query 2, dedup 3: the registry order of the steps run
    report = (Path(config.output_path) / "report.md").read_text(encoding="utf-8")
    assert "doc_filter" in report and "filtered: 2" in report
