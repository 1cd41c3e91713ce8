"""Runs of the flow on a Prefect server backed by PostgreSQL (as Prefect recommends for many
workers and long schedules): two `rare run` processes report to the same server at once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from postgres_fixtures import postgres_url, prefect_server_on_postgres  # noqa: F401 (fixtures)
from prefect_fixtures import PROJECT_ROOT, SAMPLE

from rare_core.storage import read_frame

pytestmark = pytest.mark.slow


def test_two_runs_report_to_a_prefect_server_on_postgresql(tmp_path, prefect_server_on_postgres):
    env = dict(os.environ, PREFECT_API_URL=prefect_server_on_postgres, PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL")
    runs = [subprocess.Popen([sys.executable, "-m", "deployments.cli", "run", "--input", str(SAMPLE), "--limit", "4",
                              "--cache-path", str(tmp_path / f"cache{i}"), "--output", str(tmp_path / f"out{i}")],
                             cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i in range(2)]
    results = [p.communicate(timeout=300) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], [err.decode()[-1500:] for _, err in results]
    for i in range(2):
        assert len(read_frame(tmp_path / f"out{i}" / "dataset.jsonl")) == 4

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server_on_postgres}):
        with get_client(sync_client=True) as client:
            flow_runs = client.read_flow_runs()
    assert sum(1 for r in flow_runs if r.state and r.state.is_completed()) >= 2


def test_sharded_run_on_two_dask_workers_reports_every_shard_to_the_postgresql_server(tmp_path, prefect_server_on_postgres):
    """``rare run --shards 4 --dask-workers 2`` with PREFECT_API_URL on the PostgreSQL-backed server:
    the run uses that server (it starts none of its own) and every shard's task run, executed in
    a worker process, is recorded there as Completed."""
    env = dict(os.environ, PREFECT_API_URL=prefect_server_on_postgres, PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL")
    done = subprocess.run([sys.executable, "-m", "deployments.cli", "run", "--input", str(SAMPLE), "--limit", "12",
                           "--shards", "4", "--dask-workers", "2", "--cache-path", str(tmp_path / "cache"),
                           "--output", str(tmp_path / "out")],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_frame(tmp_path / "out" / "dataset.jsonl")) == 12

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server_on_postgres}):
        with get_client(sync_client=True) as client:
            last = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[last.id])))
    assert last.state.is_completed()
    shards = {r.name: r.state.name for r in runs if "-of-00004" in r.name}
    from rare_core.config import PipelineConfig
    from rare_core.pipeline import enabled_steps

    per_shard = [s for s in enabled_steps(PipelineConfig(input_path=str(SAMPLE))) if s.scope == "row"]
    assert len(per_shard) == 5  # doc2query, hardneg, distill, verify, grounding: each run shard by shard
    assert len(shards) == 4 * len(per_shard) and set(shards.values()) == {"Completed"}, shards
