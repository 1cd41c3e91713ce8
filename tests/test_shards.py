"""Shards: the split itself, and sharded runs equal to a single-process run row for row
(thread pool in this process, with the corpus-scoped filters too; a 2-worker Dask LocalCluster
through ``rare run``), cached per shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, strategies as st
from prefect_fixtures import PROJECT_ROOT, SAMPLE
from waiting import wait_until

from rare_core.config import PipelineConfig
from rare_core.llm.config import LLMConfig
from rare_core.operators.base import StepSummary, merge_summaries
from rare_core.shards import AUTO_SHARD_ROWS, Shard, shard_bounds, shard_count, shard_file
from rare_core.storage import read_frame

ROWS = 18


@given(rows=st.integers(1, 5000), count=st.integers(1, 64))
def test_shard_bounds_cover_every_row_once_in_order(rows, count):
    count = min(count, rows)
    bounds = shard_bounds(rows, count)
    assert len(bounds) == count and bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(stop == nxt for (_, stop), (nxt, _) in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_shard_count_auto_and_explicit():
    assert shard_count(40, "auto") == 1  # small inputs keep the single-file layout
    assert shard_count(AUTO_SHARD_ROWS + 1, "auto") == 2
    assert shard_count(1_000_000, "auto") == 100
    assert shard_count(40, "auto", workers=2) == 4  # two per Dask worker
    assert shard_count(3, "auto", workers=4) == 3  # never more shards than documents
    assert shard_count(40, 7) == 7 and shard_count(5, 7) == 5


def test_shard_file_sits_beside_the_step_file_and_sorts_in_order():
    step = Path("/c/dataflow_cache_step_step2.jsonl")
    files = [shard_file(step, Shard(index=i, count=12)) for i in range(12)]
    assert files[3] == Path("/c/dataflow_cache_step_step2.shards/00003-of-00012.jsonl")
    assert sorted(files) == files


def test_config_refuses_zero_shards_and_two_clusters():
    with pytest.raises(ValueError, match="shards must be"):
        PipelineConfig(input_path="x.jsonl", shards=0)
    with pytest.raises(ValueError, match="not both"):
        PipelineConfig(input_path="x.jsonl", dask={"workers": 2, "address": "tcp://127.0.0.1:8786"})


def test_merge_summaries_sums_counts_and_keeps_corpus_wide_counters():
    a = StepSummary(step="hardneg", rows_in=3, rows_out=3, processed=3, failed=1, failures_by_reason={"x": 1},
                    failures_by_kind={"input": 1}, extra={"queries": 2, "index_docs": 40, "search_rounds": 1,
                                                          "index_reused": True, "search_seconds": 0.25})
    b = StepSummary(step="hardneg", rows_in=2, rows_out=2, processed=2, failed=2, failures_by_reason={"x": 1, "y": 1},
                    failures_by_kind={"input": 2}, extra={"queries": 2, "index_docs": 40, "search_rounds": 3,
                                                          "index_reused": False, "search_seconds": 0.5})
    merged = merge_summaries([a, b])
    assert (merged.rows_in, merged.rows_out, merged.failed) == (5, 5, 3)
    assert merged.failures_by_reason == {"x": 2, "y": 1} and merged.failures_by_kind == {"input": 3}
    assert merged.extra == {"queries": 4, "index_docs": 40, "search_rounds": 3, "index_reused": False,
                            "search_seconds": 0.75}


def _config(tmp: Path, sim, **update) -> PipelineConfig:
    config = PipelineConfig(
        input_path=str(SAMPLE), limit=ROWS, cache_path=str(tmp / "cache"), output_path=str(tmp / "out"),
        llm=LLMConfig(base_url=sim.base_url, model="teacher", max_workers=4, backoff_base=0.01),
        verify={"method": "none"})
    return PipelineConfig.model_validate({**config.model_dump(), **update})


def _run(config: PipelineConfig):
    """Run the flow on the run's task runner; returns (state, dataset frame, {task run name: state name})."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.runners import run_pipeline

    state = run_pipeline(config, return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id

    def task_states():
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        if runs and all(r.state is not None and r.state.is_final() for r in runs):
            return {r.name: r.state.name for r in runs}
        return None

    return state, read_frame(state.result().exported.dataset.path), wait_until(task_states, 30, "the task runs")


def _shard_states(states: dict[str, str], task: str) -> list[str]:
    return [state for name, state in sorted(states.items()) if name.startswith(f"{task}-0")]


@pytest.mark.usefixtures("prefect_harness")
def test_sharded_run_equals_single_file_run_and_caches_each_shard(tmp_path, sim, monkeypatch):
    _, single, _ = _run(_config(tmp_path / "one", sim, shards=1))
    monkeypatch.setattr("rare_core.inputs.CHUNK_ROWS", 5)  # the input read in chunks that cut across the shards
    served = sim.stats().completions_served
    config = _config(tmp_path / "four", sim, shards=4, llm={**_config(tmp_path, sim).llm.model_dump(), "cache_path": None})
    state, sharded, states = _run(config)
    assert sim.stats().completions_served - served == 2 * ROWS  # response cache off: every row asked again
    pd.testing.assert_frame_equal(sharded, single)
    assert (sharded["hard_negatives_ids"].map(len) > 0).all()
    cache = Path(config.cache_path)
    for step in range(4):  # each shard's file named by its cache key (step 0: the input's, the same for all)
        files = sorted((cache / f"dataflow_cache_step_step{step}.shards").glob("*-of-00004-*.jsonl"))
        assert [f.name[:14] for f in files] == [f"0000{i}-of-00004" for i in range(4)]
        assert len({f.stem[15:] for f in files}) == (1 if step == 0 else 4)
        assert not list(cache.glob(f"dataflow_cache_step_step{step}-*.jsonl"))
    assert _shard_states(states, "doc2query") == ["Completed"] * 4
    assert states.get(next(n for n in states if n.startswith("bm25-hardneg-index"))) == "Completed"
    assert "in 4 shards" in state.result().report.markdown

    # a finished shard is served from the cache; a shard whose file is gone is computed again
    next((cache / "dataflow_cache_step_step3.shards").glob("00002-of-00004-*.jsonl")).unlink()
    served = sim.stats().completions_served
    _, again, states = _run(config)
    pd.testing.assert_frame_equal(again, single)
    assert _shard_states(states, "doc2query") == ["Cached"] * 4
    assert _shard_states(states, "reason-distill") == ["Cached", "Cached", "Completed", "Cached"]
    assert sim.stats().completions_served - served == ROWS // 4 + (2 < ROWS % 4)  # shard 2's rows only


@pytest.mark.usefixtures("prefect_harness")
def test_corpus_scoped_filters_see_every_shard_and_keep_the_single_run_rows(tmp_path, sim):
    filters = {"documents": {"enabled": True, "min_words": 120}, "question_dedup": {"enabled": True},
               "leakage": {"enabled": True}}
    _, single, _ = _run(_config(tmp_path / "one", sim, shards=1, filters=filters))
    config = _config(tmp_path / "three", sim, shards=3, filters=filters)
    _, sharded, states = _run(config)
    pd.testing.assert_frame_equal(sharded, single)
    failed = [read_frame(p) for p in sorted(Path(config.cache_path, "dataflow_cache_step_step1.shards").glob("*.jsonl"))]
    assert len(failed) == 3
    reasons = pd.concat(failed)["rare_error"].dropna()
    assert reasons.str.startswith("doc_filter: too short").any()  # the filter ran, over every shard
    assert single.shape[0] < ROWS


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_dask_local_cluster_run_equals_single_process_run(tmp_path, sim):
    """``rare run --dask-workers 2``: a LocalCluster of 2 worker processes and a Prefect server
    started for the run (no PREFECT_API_URL); the rows equal a single-file run's in this process."""
    _, single, _ = _run(_config(tmp_path / "one", sim, shards=1))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"  # the index task logs once
    tmp = tmp_path / "dask"
    args = [sys.executable, "-m", "deployments.cli", "run", "--input", str(SAMPLE), "--limit", str(ROWS),
            "--cache-path", str(tmp / "cache"), "--output", str(tmp / "out"), "--base-url", sim.base_url,
            "--model", "teacher", "--max-workers", "4", "--set", "verify.method=none", "--dask-workers", "2",
            "--set", "llm.cache_path=null"]
    served = sim.stats().completions_served
    done = subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Error logging to API" not in done.stderr
    assert sim.stats().completions_served - served == 2 * ROWS
    pd.testing.assert_frame_equal(read_frame(tmp / "out" / "dataset.jsonl"), single)
    assert len(list((tmp / "cache" / "dataflow_cache_step_step3.shards").glob("*.jsonl"))) == 4
    # Every search shard ran on the worker whose index task opened the index (tasks/placement.py):
    # no shard had to open it, so only one worker started a JVM.
    hardneg = next(s for s in json.loads((tmp / "out" / "summary.json").read_text())["steps"] if s["step"] == "hardneg")
    assert hardneg["extra"]["index_opens"] == 0 and hardneg["rows_in"] == ROWS
    # Then that worker was restarted, its JVM with it, and the index task was not run again.
    assert hardneg["extra"]["search_workers_restarted"] == 1
    everything = len(SAMPLE.read_text(encoding="utf-8").splitlines())  # --limit asks ROWS; BM25 mines them all
    assert done.stderr.count(f"index of {everything} documents") == 1


@pytest.mark.usefixtures("prefect_harness")
def test_search_tasks_run_on_the_chosen_dask_workers_and_the_others_anywhere():
    """tasks/placement.py on a 2-worker local cluster (its workers threads of this process, to
    start fast): a BM25 step's tasks all go to the first worker (``search_workers=1``) or
    alternate over both (2); a Doc2Query step's, or any with ``search_workers=0``, spread."""
    import time

    from prefect import flow, task
    from prefect.context import FlowRunContext

    from flows.runners import task_runner_for
    from rare_core.pipeline import STEP_BY_NAME
    from tasks.placement import placed

    @task
    def worker_address(i: int) -> str:
        from distributed import get_worker

        time.sleep(0.3)  # long enough for a free worker to take the next task if it may
        return get_worker().address

    def addresses(step: str, search_workers: int) -> tuple[list[str], list[str]]:
        """Where 6 tasks of ``step`` ran, and the cluster's workers by address."""
        config = PipelineConfig(input_path="x.jsonl", dask={"workers": 2, "search_workers": search_workers})
        runner = task_runner_for(config)
        runner.cluster_kwargs.update(processes=False, protocol="tcp://")  # threads, over loopback TCP

        @flow(task_runner=runner)
        def submit_six() -> tuple[list[str], list[str]]:
            futures = []
            for i in range(6):
                with placed(STEP_BY_NAME[step], config, i):
                    futures.append(worker_address.submit(i))
            workers = sorted(FlowRunContext.get().task_runner.client.scheduler_info()["workers"])
            return [f.result() for f in futures], workers

        return submit_six()

    ran, workers = addresses("hardneg", 1)
    assert len(workers) == 2 and ran == [workers[0]] * 6
    ran, workers = addresses("hardneg", 2)
    assert ran == workers * 3
    for step, search_workers in (("doc2query", 1), ("hardneg", 0)):
        ran, workers = addresses(step, search_workers)
        assert set(ran) == set(workers)  # spread over both


@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_that_stops_waiting_cancels_the_shard_running_on_its_thread(tmp_path, sim):
    """The flow fails while a shard's LLM batch runs on the thread pool (here: a progress
    listener raising when the first shard is done): that batch is cancelled, the run ends at
    once, and the shards after it send nothing."""
    from flows.runners import run_pipeline
    from tasks.progress import progress_listener

    def fail_on_first_shard(step, done, total, live):
        if "shards_done" in live:
            raise RuntimeError("listener failed")

    sim.set_latency(0.3)
    config = _config(tmp_path, sim, shards=3, llm={**_config(tmp_path, sim).llm.model_dump(), "max_workers": 2})
    with progress_listener(fail_on_first_shard):
        state = run_pipeline(config, return_state=True)
    assert state.is_failed() and "listener failed" in str(state.result(raise_on_failure=False))
    wait_until(lambda: sim.stats().in_flight == 0, 10, "requests in flight to end")
    assert sim.stats().completions_served < 2 * (ROWS // 3)  # shard 0, part of shard 1, nothing of shard 2
