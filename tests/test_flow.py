"""The Prefect flow end to end on the LLM simulator, under a session-scoped Prefect test server:
every step's output, the artifacts, caching (Cached task runs, zero requests), partial reruns
after a settings or prompt change or a deleted step file, resume after a failed LLM step, the
CLI, and the report builder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prefect_fixtures import SAMPLE
from waiting import wait_until

from rare_core.config import PipelineConfig, Prices
from rare_core.llm.config import LLMConfig
from rare_core.operators.base import LLMCounters, StepSummary
from rare_core.report import StepRecord, build_report
from rare_core.storage import read_frame
from rare_sim import FaultSpec

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROWS = 12
STEP_TASKS = ("doc2query", "bm25-hardneg", "reason-distill")
CHECK_TASKS = ("grounding",)  # the checks a default run runs after them (they send nothing)
ALL_TASKS = {"load-input", *STEP_TASKS, *CHECK_TASKS, "export-dataset", "publish-report"}
SECRET = "sk-test-DO-NOT-LEAK-0123456789"


def make_config(tmp_path: Path, sim, **update) -> PipelineConfig:
    """``ROWS`` sample documents, step files and output in ``tmp_path``, the session simulator."""
    config = PipelineConfig(
        input_path=str(SAMPLE), limit=ROWS, cache_path=str(tmp_path / "cache"), output_path=str(tmp_path / "out"),
        llm=LLMConfig(base_url=sim.base_url, model="teacher", max_workers=4, backoff_base=0.01),
        # These tests count requests per step; verification (its judge calls) has tests of its own.
        verify={"method": "none"})
    return config.model_copy(update=update)


def step_file(config: PipelineConfig, step: int, exclude: set[Path] = frozenset()) -> Path:
    """The file a run wrote for step number ``step`` in the cache folder, named by its cache key
    (``{prefix}_step{N}-{key}.{type}``): the only one there besides ``exclude``."""
    files = set(Path(config.cache_path).glob(f"{config.file_name_prefix}_step{step}-*.{config.cache_type}")) - exclude
    assert len(files) == 1, sorted(files)
    return files.pop()


def run_flow(config: PipelineConfig, expected_tasks=ALL_TASKS):
    """Run the flow; returns its final state and ``{task name: state name}`` read back from the API."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.rare_pipeline import rare_pipeline

    state = rare_pipeline(config, return_state=True)
    flow_run_id = state.state_details.flow_run_id

    def task_states() -> dict[str, str] | None:
        # Task runs reach the API through events: poll until all are recorded in a final state.
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        states = {run.name.rsplit("-", 1)[0]: run.state for run in runs}
        if set(states) >= set(expected_tasks) and all(s is not None and s.is_final() for s in states.values()):
            return {name: s.name for name, s in states.items()}
        return None

    return state, wait_until(task_states, 30, "the task runs of the flow run")


def completions(sim) -> int:
    return sim.stats().completions_served


def test_pipeline_end_to_end_on_simulator(tmp_path, sim):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    config = make_config(tmp_path, sim)
    state, tasks = run_flow(config)
    assert state.is_completed(), state.message
    assert all(tasks[name] == "Completed" for name in ALL_TASKS), tasks
    assert completions(sim) == 2 * ROWS  # one Doc2Query and one ReasonDistill request per document

    # step 0: the loaded input
    docs = read_frame(step_file(config, 0))
    assert len(docs) == ROWS and docs["id"].is_unique
    # step 1: Doc2Query
    s1 = read_frame(step_file(config, 1))
    assert (s1["rare_doc2query_status"] == "ok").all()
    assert s1["question"].map(lambda q: isinstance(q, str) and q.strip().endswith("?")).all()
    assert s1["scenario"].map(lambda s: isinstance(s, str) and len(s) > 20).all()
    # step 2: BM25 hard negatives: other documents of the corpus, never the positive
    s2 = read_frame(step_file(config, 2))
    corpus = set(read_frame(SAMPLE)["text"])
    assert set(s2["rare_hardneg_status"]) <= {"ok", "short"}
    for _, row in s2.iterrows():
        assert row["text"] not in row["hard_negatives"]
        assert set(row["hard_negatives"]) <= corpus  # mined from the whole input, limit or not
        assert row["id"] not in row["hard_negatives_ids"]
        assert len(row["hard_negatives"]) == (3 if row["rare_hardneg_status"] == "ok" else len(row["hard_negatives"]))
        assert len(row["hard_negatives"]) <= 3
    assert (s2["rare_hardneg_status"] == "ok").sum() >= ROWS // 2
    # step 3: ReasonDistill
    s3 = read_frame(step_file(config, 3))
    assert (s3["rare_distill_status"] == "ok").all() and (s3["rare_status"] == "ok").all()
    for _, row in s3.iterrows():
        assert sorted(row["document_order"]) == list(range(1 + len(row["hard_negatives"])))
        assert row["positive_doc_number"] == row["document_order"].index(0) + 1
        assert row["reasoning"].strip() and row["answer"].strip()

    # the final dataset: what a trainer needs, one row per document
    result = state.result()
    dataset = read_frame(result.exported.dataset.path)
    assert list(dataset.columns) == [
        "id", "question", "scenario", "positive", "hard_negatives", "hard_negatives_ids", "document_order",
        "positive_doc_number", "reasoning", "answer", "reference_answer", "rare_grounding", "rare_simulated"]
    assert len(dataset) == ROWS and dataset["rare_simulated"].all()
    merged = dataset.merge(docs[["id", "text"]], on="id")
    assert (merged["positive"] == merged["text"]).all()
    assert result.exported.failed is None and result.simulated

    # the report, on disk and in the result
    out = Path(config.output_path)
    report = (out / "report.md").read_text()
    assert report == result.report.markdown and "SIMULATED" in report
    assert f"| doc2query | ran | {ROWS} | {ROWS} | 0 |" in report
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary["steps"]] == ["ran"] * len(STEP_TASKS + CHECK_TASKS)
    assert summary["totals"]["requests"] == 2 * ROWS and summary["dataset_rows"] == ROWS

    # the artifacts of the run in the Prefect API
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in artifacts}
    assert by_key["rare-dataset-sample"].type == "table"
    sample = json.loads(by_key["rare-dataset-sample"].data)
    assert sample and sample[0]["question"] == dataset["question"][0]
    assert by_key["rare-report"].type == "markdown" and "SIMULATED" in by_key["rare-report"].data
    for step in ("doc2query", "distill"):
        assert by_key[f"rare-{step}-progress"].type == "progress"
        assert float(by_key[f"rare-{step}-progress"].data) == 100.0


def test_rerun_is_cached_makes_no_requests_and_no_search(tmp_path, sim, monkeypatch):
    from rare_core.operators.bm25_hardneg import BM25HardNeg

    config = make_config(tmp_path, sim)
    first, _ = run_flow(config)
    assert first.is_completed()
    dataset_before = Path(first.result().exported.dataset.path).read_bytes()
    sim.reset()

    def no_search(*args, **kwargs):
        raise AssertionError("BM25 searched again although its input and settings are unchanged")

    monkeypatch.setattr(BM25HardNeg, "process", no_search)
    second, tasks = run_flow(config)
    assert second.is_completed(), second.message
    assert [tasks[t] for t in STEP_TASKS] == ["Cached"] * 3
    assert completions(sim) == 0
    assert Path(second.result().exported.dataset.path).read_bytes() == dataset_before
    summary = second.result().report.summary
    assert [s["status"] for s in summary["steps"]] == ["cached"] * len(STEP_TASKS + CHECK_TASKS) and summary["totals"]["requests"] == 0


def test_changed_num_neg_reruns_only_hardneg_and_distill(tmp_path, sim):
    config = make_config(tmp_path, sim)
    assert run_flow(config)[0].is_completed()
    step2 = step_file(config, 2)
    three = read_frame(step2)["hard_negatives"]
    sim.reset()

    fewer = config.model_copy(update={"hardneg": config.hardneg.model_copy(update={"num_neg": 2})})
    state, tasks = run_flow(fewer)
    assert state.is_completed(), state.message
    assert [tasks[t] for t in STEP_TASKS] == ["Cached", "Completed", "Completed"]
    two = read_frame(step_file(config, 2, exclude={step2}))["hard_negatives"]
    assert two.map(len).max() == 2
    # ReasonDistill only, and only for rows whose documents changed (a row that had at most two
    # negatives shows the same prompt, answered from the response cache).
    changed = int((three.map(tuple) != two.map(tuple)).sum())
    assert changed > 0 and completions(sim) == changed

    # Back to num_neg=3: the num_neg=2 run wrote files of its own (named by their cache keys), so
    # the first run's files and cached records are still there and served as they are.
    sim.reset()
    state, tasks = run_flow(config)
    assert [tasks[t] for t in STEP_TASKS] == ["Cached", "Cached", "Cached"]
    assert completions(sim) == 0
    dataset = read_frame(state.result().exported.dataset.path)
    assert dataset["hard_negatives"].map(len).max() == 3
    assert dataset["document_order"].map(len).max() == 4


def test_prompt_version_change_reruns_from_that_step(tmp_path, sim, monkeypatch):
    from rare_core.operators.reason_distill import ReasonDistill
    from rare_core.prompts import reason_distill as prompt

    config = make_config(tmp_path, sim)
    assert run_flow(config)[0].is_completed()
    v1 = step_file(config, 3)
    sim.reset()
    monkeypatch.setattr(prompt, "VERSION", "reason_distill/v2-test")
    monkeypatch.setattr(ReasonDistill, "prompt_version", "reason_distill/v2-test")
    state, tasks = run_flow(config)
    assert [tasks[t] for t in STEP_TASKS] == ["Cached", "Cached", "Completed"]
    assert completions(sim) == ROWS
    v2 = read_frame(step_file(config, 3, exclude={v1}))
    assert (v2["rare_distill_prompt_version"] == "reason_distill/v2-test").all()


def test_deleted_step_file_is_recomputed(tmp_path, sim):
    config = make_config(tmp_path, sim)
    assert run_flow(config)[0].is_completed()
    step2 = step_file(config, 2)
    content = step2.read_bytes()
    step2.unlink()
    sim.reset()
    state, tasks = run_flow(config)
    assert state.is_completed(), state.message
    # BM25 reruns; it writes the same bytes, so ReasonDistill's input hash is unchanged: Cached.
    assert [tasks[t] for t in STEP_TASKS] == ["Cached", "Completed", "Cached"]
    assert step2.read_bytes() == content
    assert completions(sim) == 0


def test_cache_record_that_disagrees_with_its_step_file_is_recomputed(tmp_path, sim):
    from rare_core.hashing import file_sha256

    config = make_config(tmp_path, sim)
    assert run_flow(config)[0].is_completed()
    step2 = step_file(config, 2)
    content = step2.read_bytes()
    # What a run stopped between writing the file and recording its result leaves behind: a
    # sidecar that vouches for the file, and a cache record that describes other bytes.
    step2.write_bytes(content + b"\n")
    meta = Path(f"{step2}.meta.json")
    record = json.loads(meta.read_text())
    record["artifact"]["sha256"] = file_sha256(step2)
    meta.write_text(json.dumps(record))
    sim.reset()
    state, _ = run_flow(config)
    assert state.is_completed(), state.message
    assert [s["status"] for s in state.result().report.summary["steps"]] == ["cached", "ran", "cached", "cached"]  # grounding: its input unchanged
    assert step2.read_bytes() == content and completions(sim) == 0


def test_storage_layout_in_other_formats(tmp_path, sim):
    config = make_config(tmp_path, sim, cache_type="parquet", output_format="csv", file_name_prefix="my_cache")
    state, _ = run_flow(config)
    assert state.is_completed(), state.message
    for n in range(4):
        assert step_file(config, n).name.startswith(f"my_cache_step{n}-")
    dataset = read_frame(tmp_path / "out" / "dataset.csv")
    assert len(dataset) == ROWS and isinstance(dataset["hard_negatives"][0], list)
    sim.reset()
    state, tasks = run_flow(config)
    assert [tasks[t] for t in STEP_TASKS] == ["Cached"] * 3 and completions(sim) == 0


def test_failed_llm_step_fails_the_run_and_rerun_pays_only_unanswered_rows(tmp_path, sim, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    monkeypatch.setenv("DF_API_KEY", SECRET)
    # The questions are deterministic: a first run in another folder tells row k's question,
    # which only ReasonDistill's prompt of row k contains.
    probe = make_config(tmp_path / "probe", sim)
    assert run_flow(probe)[0].is_completed()
    k = 5
    question_k = read_frame(step_file(probe, 1))["question"][k]

    # One request at a time, so rows 0..k-1 are answered (and cached) before row k is refused.
    config = make_config(tmp_path / "run", sim).model_copy(update={"llm": probe.llm.model_copy(update={"max_workers": 1})})
    sim.reset()
    sim.inject([FaultSpec(kind="unauthorized", match=question_k)])
    failed, tasks = run_flow(config, expected_tasks={"load-input", *STEP_TASKS})
    assert failed.is_failed()
    assert tasks["reason-distill"] == "Failed" and tasks["doc2query"] == "Completed"
    assert "DF_API_KEY" in failed.message and SECRET not in failed.message
    # Rows 0..k-1 were answered and cached; the next request may already have been on the wire
    # when the step aborted (served, but never received, so not cached).
    assert k <= completions(sim) - ROWS <= k + 1  # minus Doc2Query's requests

    sim.reset()
    state, tasks = run_flow(config)
    assert state.is_completed(), state.message
    assert [tasks[t] for t in STEP_TASKS] == ["Cached", "Cached", "Completed"]
    assert completions(sim) == ROWS - k
    distill = state.result().report.summary["steps"][2]
    assert distill["cache_hits"] == k and distill["requests"] == ROWS - k

    # The key never reaches a log, an artifact or a file of the run.
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[failed.state_details.flow_run_id, state.state_details.flow_run_id])))
    assert logs and not any(SECRET in log.message for log in logs)
    for path in [*Path(config.cache_path).glob("*.jsonl"), *Path(config.output_path).iterdir()]:
        assert SECRET not in path.read_text(encoding="utf-8")


def _simulator_children() -> set[int]:
    """Pids of this process's children that run the LLM simulator."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"rare_sim" in cmdline:
            pids.add(int(stat.parent.name))
    return pids


@pytest.fixture
def cli_env(monkeypatch):
    """The variables ``rare run`` sets by default, set here so that they do not outlive the test."""
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.mark.usefixtures("cli_env")
def test_cli_run_without_endpoint_uses_and_stops_the_simulator(tmp_path, capfd):
    from deployments.cli import main

    before = _simulator_children()
    code = main(["run", "--input", str(SAMPLE), "--output", str(tmp_path / "out"),
                 "--cache-path", str(tmp_path / "cache"), "--limit", "4"])
    captured = capfd.readouterr()  # the file descriptors: the JVM writes to fd 2 itself
    assert code == 0, captured.err
    assert "SIMULATOR" in captured.err and "SIMULATED" in captured.out
    assert "| distill | ran | 4 | 4 | 0 |" in captured.out
    # The end names every file a user looks at next, and what to do next; the internal
    # counters stay in report.md; Lucene's INFO line is silenced.
    assert f"Report: {tmp_path / 'out' / 'report.html'}" in captured.err and "Next: a real endpoint" in captured.err
    assert "index_opens" not in captured.out and "index_opens" in (tmp_path / "out" / "report.md").read_text()
    assert "MemorySegmentIndexInput" not in captured.err
    dataset = read_frame(tmp_path / "out" / "dataset.jsonl")
    assert len(dataset) == 4 and dataset["rare_simulated"].all()
    assert _simulator_children() <= before  # the run's own simulator was stopped


@pytest.mark.usefixtures("cli_env")
def test_cli_exit_status(tmp_path, capsys):
    from deployments.cli import EXIT_OK, EXIT_USAGE, main

    common = ["--output", str(tmp_path / "out"), "--cache-path", str(tmp_path / "cache")]
    assert main(["run", "--input", str(SAMPLE), "--set", "hardneg.num_neg=0", *common]) == EXIT_USAGE
    assert "hardneg.num_neg" in capsys.readouterr().err
    assert main(["run", "--input", str(SAMPLE), "--base-url", "http://127.0.0.1:9/v1", *common]) == EXIT_USAGE
    assert "llm.model" in capsys.readouterr().err
    # A user error is found before the flow starts: one line, exit 2, nothing ran.
    assert main(["run", "--input", str(tmp_path / "missing.jsonl"), *common]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "cache").exists()
    # Any llm.* option alone is fine on the simulator (its model name is the default one).
    assert main(["run", "--input", str(SAMPLE), "--max-workers", "4", "--limit", "2", *common]) == EXIT_OK


def test_report_counts_only_this_runs_requests_and_prices_them():
    ran = StepSummary(step="distill", rows_in=10, rows_out=10, processed=10, failed=2,
                      failures_by_reason={"unparseable": 2}, simulated=False,
                      llm=LLMCounters(requests=12, retries=2, cache_hits=1, prompt_tokens=1_000_000,
                                      completion_tokens=500_000))
    cached = StepSummary(step="doc2query", rows_in=10, rows_out=10, processed=10,
                         llm=LLMCounters(requests=10, prompt_tokens=10, completion_tokens=10))
    hardneg = StepSummary(step="hardneg", rows_in=10, rows_out=10, processed=10, extra={"short_rows": 3})
    report = build_report(
        [StepRecord(summary=cached, wall_seconds=0.01, cached=True), StepRecord(summary=hardneg, wall_seconds=1.0),
         StepRecord(summary=ran, wall_seconds=2.5)],
        Prices(input_per_million=1.0, output_per_million=4.0), dataset_rows=8, header={"Input": "docs.jsonl"})
    steps = report.summary["steps"]
    assert steps[0]["status"] == "cached" and steps[0]["requests"] == 0 and steps[0]["cost"] == 0
    assert steps[2]["cost"] == pytest.approx(1.0 + 2.0)
    assert report.summary["totals"]["requests"] == 12 and report.summary["totals"]["cost"] == pytest.approx(3.0)
    assert not report.summary["simulated"] and "SIMULATED" not in report.markdown
    assert "- distill: unparseable: 2" in report.markdown
    assert "- hardneg: 3 row(s) got fewer negatives" in report.markdown
    assert "| distill | ran | 10 | 10 | 2 |" in report.markdown and "- **Rows in the final dataset**: 8" in report.markdown
    assert build_report([StepRecord(summary=ran)]).summary["totals"]["cost"] is None  # no prices, no cost


@pytest.mark.usefixtures("cli_env")
def test_run_without_usable_rows_fails_after_writing_the_report(tmp_path, sim, capsys):
    from deployments.cli import EXIT_FAILED, main

    sim.inject([FaultSpec(kind="malformed_json", count=3)])  # every Doc2Query answer unusable
    code = main(["run", "--input", str(SAMPLE), "--limit", "3", "--base-url", sim.base_url, "--model", "teacher",
                 "--set", "doc2query.max_attempts=1", "--output", str(tmp_path / "out"),
                 "--cache-path", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == EXIT_FAILED
    assert "none of the 3 documents went through every step" in captured.err
    assert "- doc2query: unparseable: 3" in captured.out  # the report of this run, printed anyway
    failed = read_frame(tmp_path / "out" / "failed_rows.jsonl")
    assert len(failed) == 3 and failed["rare_error"].str.startswith("doc2query: unparseable").all()
    assert list(failed["rare_hardneg_status"]) == ["skipped"] * 3
    assert len(read_frame(tmp_path / "out" / "dataset.jsonl")) == 0


def test_progress_artifact_moves_during_an_llm_step(tmp_path, sim, monkeypatch):
    import tasks.progress

    published: list[tuple[str, float]] = []
    original = tasks.progress.update_progress_artifact

    def record(*, artifact_id, progress, description, _sync):
        published.append((description.split(":")[0], progress))
        return original(artifact_id=artifact_id, progress=progress, description=description, _sync=_sync)

    monkeypatch.setattr(tasks.progress, "update_progress_artifact", record)
    sim.set_latency(0.25)  # 12 rows, 2 in flight: each LLM step takes about 1.5 s
    config = make_config(tmp_path, sim)
    config = config.model_copy(update={"llm": config.llm.model_copy(update={"max_workers": 2})})
    state, _ = run_flow(config)
    assert state.is_completed()
    for label in ("Doc2Query", "ReasonDistill"):
        values = [p for name, p in published if name == label]
        assert values[-1] == 100.0
        assert any(0.0 < p < 100.0 for p in values), f"{label} progress never moved mid-step: {values}"


def test_a_limit_asks_fewer_rows_but_mines_the_whole_input(tmp_path, sim):
    """``limit`` previews the full run: the rows asked are cut, the BM25 corpus is not."""
    config = make_config(tmp_path, sim, limit=5)
    state, _ = run_flow(config)
    assert state.is_completed()
    dataset = read_frame(tmp_path / "out" / "dataset.jsonl")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    hardneg = next(step for step in summary["steps"] if step["step"] == "hardneg")
    assert len(dataset) == 5 and hardneg["extra"]["index_docs"] == 40  # every document of the sample
    first_five = set(read_frame(SAMPLE)["id"].astype(str).head(5))
    negatives = {str(i) for ids in dataset["hard_negatives_ids"] for i in ids}
    assert negatives - first_five  # negatives from beyond the rows asked
    assert (dataset["hard_negatives_ids"].map(len) == config.hardneg.num_neg).all()  # no short rows


@pytest.mark.usefixtures("cli_env")
def test_reports_dropped_by_an_earlier_run_in_the_process_are_not_this_runs(tmp_path, sim, capsys, monkeypatch):
    """The publisher counts what it dropped over the process's life (a notebook, a test session
    runs many flows): a run that drops nothing is not reported as having lost the Prefect API."""
    import tasks.progress
    from deployments.cli import EXIT_OK, main

    monkeypatch.setattr(tasks.progress._publisher, "dropped", 5)  # an earlier run's
    code = main(["run", "--input", str(SAMPLE), "--limit", "2", "--base-url", sim.base_url, "--model", "teacher",
                 "--output", str(tmp_path / "out"), "--cache-path", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == EXIT_OK, err
    assert "Prefect API" not in err
