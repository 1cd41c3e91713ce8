"""The reliability suite: kill -9 mid-step and resume, two runs on one cache folder at once,
and every byte a run writes scanned for the API key. Runs ``rare run`` as a real subprocess
against the project's simulator over loopback HTTP."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from prefect_fixtures import PROJECT_ROOT, SAMPLE
from waiting import wait_until

from rare_core.storage import read_frame
from rare_sim import SimulatorProcess

DOCS = 24
WORKERS = 4
COMPARED = ["id", "question", "scenario", "hard_negatives_ids", "document_order", "reasoning", "answer"]


def rare_run(tmp: Path, base_url: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """``rare run`` on the first DOCS sample documents with step files and output under ``tmp``."""
    args = [sys.executable, "-m", "deployments.cli", "run", "--input", str(SAMPLE), "--limit", str(DOCS),
            "--cache-path", str(tmp / "cache"), "--output", str(tmp / "out"), "--base-url", base_url,
            "--model", "teacher", "--max-workers", str(WORKERS), "--set", "verify.method=none", *extra]
    return subprocess.Popen(args, cwd=PROJECT_ROOT, env=env or dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode("utf-8", "replace")


def settled(sim: SimulatorProcess) -> int:
    """The completions ``sim`` served, once the requests in flight (still answered at the server
    after their client died) have ended."""
    wait_until(lambda: not sim.stats().in_flight, 30, "the requests in flight to end at the server")
    return sim.stats().completions_served


def dataset(tmp: Path):
    frame = read_frame(tmp / "out" / "dataset.jsonl")
    return frame[COMPARED].sort_values("id").reset_index(drop=True)


@pytest.fixture
def api_env(prefect_harness):
    """The environment for ``rare run`` subprocesses: the test session's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    return dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(),
                PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL")


@pytest.fixture(scope="module")
def slow_sim():
    """A simulator of its own whose answers take 200 ms, so that a step can be caught halfway."""
    with SimulatorProcess(latency=0.2) as process:
        yield process


@pytest.fixture(scope="module")
def reference(tmp_path_factory, slow_sim, prefect_harness):
    """An uninterrupted run: its rows, and the completions it took."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
    tmp = tmp_path_factory.mktemp("reference")
    slow_sim.reset()
    code, err = finish(rare_run(tmp, slow_sim.base_url, env=env))
    assert code == 0, err
    return dataset(tmp), slow_sim.stats().completions_served


# make test kills at half of Doc2Query and early in ReasonDistill; the two other points (a
# step's first rows, its last ones) are in make test-slow, keeping make test within its budget.
@pytest.mark.parametrize("kill_at", [pytest.param(3, marks=pytest.mark.slow), DOCS // 2, DOCS + 2,
                                     pytest.param(DOCS + DOCS - 8, marks=pytest.mark.slow)],
                         ids=["doc2query-early", "doc2query-half", "distill-early", "distill-late"])
def test_kill_9_mid_step_resumes_with_the_same_rows_paying_only_what_was_in_flight(
        tmp_path, slow_sim, reference, api_env, kill_at):
    ref_rows, ref_completions = reference
    assert ref_completions == 2 * DOCS
    slow_sim.reset()
    proc = rare_run(tmp_path, slow_sim.base_url, env=api_env)
    wait_until(lambda: slow_sim.stats().completions_served >= kill_at or proc.poll() is not None, 120,
               f"{kill_at} completions", interval=0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = settled(slow_sim)
    slow_sim.reset()
    code, err = finish(rare_run(tmp_path, slow_sim.base_url, env=api_env))
    assert code == 0, err
    resumed = slow_sim.stats().completions_served
    repaid = first + resumed - ref_completions
    print(f"kill at {kill_at}: {first} completions before the kill, {resumed} after, re-paid {repaid}")
    assert 0 <= repaid <= WORKERS  # at most the requests in flight when the process died
    rows = dataset(tmp_path)
    assert len(rows) == DOCS
    assert rows.to_dict("records") == ref_rows.to_dict("records")


def test_two_runs_on_one_cache_folder_at_once(tmp_path, slow_sim, reference, api_env):
    ref_rows, _ = reference
    slow_sim.reset()
    procs = [rare_run(tmp_path, slow_sim.base_url, env=api_env) for _ in range(2)]
    results = [finish(p) for p in procs]
    assert [code for code, _ in results] == [0, 0], [err[-2000:] for _, err in results]
    rows = dataset(tmp_path)
    assert len(rows) == DOCS and rows["id"].is_unique
    assert rows.to_dict("records") == ref_rows.to_dict("records")
    with sqlite3.connect(tmp_path / "cache" / "llm_responses.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 2 * DOCS


@pytest.mark.slow
def test_no_byte_a_run_writes_holds_the_api_key(tmp_path):
    secret = "sk-live-SCAN-ME-5f0c2b7e9a1d4c3b8e6f"
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), PREFECT_PROFILES_PATH=str(home / "profiles.toml"), DF_API_KEY=secret,
               PREFECT_LOCAL_STORAGE_PATH=str(home / "storage"))
    with SimulatorProcess(latency=0.0, api_key=secret) as sim:
        code, err = finish(rare_run(tmp_path, sim.base_url, "--limit", "4", "-v", env=env), timeout=300)
        assert code == 0, err[-3000:]
        assert sim.stats().completions_served == 8
        # and a refused key: the error names the variable, never the key
        code, bad = finish(rare_run(tmp_path / "bad", sim.base_url, "--limit", "2", "-v",
                                    env={**env, "DF_API_KEY": secret[:-4] + "XXXX"}), timeout=300)
        assert code == 1 and "DF_API_KEY" in bad
    assert secret not in err and secret[:-4] not in bad
    scanned = 0
    for root in (tmp_path, home):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                scanned += 1
                assert secret.encode() not in data and secret[:-4].encode() not in data, path
    assert scanned > 10 and any(p.suffix == ".db" for p in home.rglob("*"))  # Prefect's database was scanned


def _latest_task_states() -> dict[str, str]:
    """``{task run name: state name}`` of the flow run that started last (from the test session's API)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        last = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]

        def final():
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[last.id])))
            if runs and all(r.state is not None and r.state.is_final() for r in runs):
                return {r.name: r.state.name for r in runs}
            return None

        return wait_until(final, 30, "the task runs of the last flow run")


@pytest.mark.slow
def test_kill_9_mid_sharded_run_serves_finished_shards_and_completes_the_rest(tmp_path, slow_sim, reference, api_env):
    """4 shards of 6 documents, killed in ReasonDistill's third shard (the thread pool runs the
    shards of a step one after another): the rerun serves every finished shard from the cache
    (state Cached) and computes the others; the rows equal the unsharded reference's."""
    ref_rows, ref_completions = reference
    slow_sim.reset()
    kill_at = DOCS + 2 * (DOCS // 4) + 2
    proc = rare_run(tmp_path, slow_sim.base_url, "--shards", "4", env=api_env)
    wait_until(lambda: slow_sim.stats().completions_served >= kill_at or proc.poll() is not None, 120,
               f"{kill_at} completions", interval=0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = settled(slow_sim)
    slow_sim.reset()
    code, err = finish(rare_run(tmp_path, slow_sim.base_url, "--shards", "4", env=api_env))
    assert code == 0, err
    states = _latest_task_states()

    def shards(task: str) -> list[str]:
        return [s for name, s in sorted(states.items()) if name.startswith(f"{task}-0")]

    assert shards("doc2query") == ["Cached"] * 4 and shards("bm25-hardneg") == ["Cached"] * 4
    assert shards("reason-distill")[:2] == ["Cached"] * 2 and shards("reason-distill")[2:] == ["Completed"] * 2
    resumed = slow_sim.stats().completions_served
    print(f"sharded kill at {kill_at}: {first} completions before the kill, {resumed} after, "
          f"re-paid {first + resumed - ref_completions}")
    assert 0 <= first + resumed - ref_completions <= WORKERS
    assert dataset(tmp_path).to_dict("records") == ref_rows.to_dict("records")


def test_sigterm_ends_the_run_as_ctrl_c_and_stops_the_processes_it_started(tmp_path, slow_sim):
    """``kill`` (SIGTERM) mid-step: ``rare run`` exits at once, sends nothing more, and the Prefect
    server it started for itself (no PREFECT_API_URL) stops with it instead of being left behind."""
    import psutil

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL")
    before = slow_sim.stats().completions_served
    proc = rare_run(tmp_path, slow_sim.base_url, env=env)
    wait_until(lambda: slow_sim.stats().completions_served - before >= 3 or proc.poll() is not None, 120,
               "the run to be answering Doc2Query")
    started = psutil.Process(proc.pid).children(recursive=True)
    assert proc.poll() is None and started, "the run should be going, with its Prefect server"
    proc.send_signal(signal.SIGTERM)
    code, _ = finish(proc, 60)
    assert code != 0
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, [p.cmdline()[:4] for p in alive]  # the run's processes are gone: nothing sends more
    assert settled(slow_sim) < before + DOCS
