"""Runs sharing one cache folder at once (the documented default ``./cache`` is shared by every
run started in the same folder): two ``rare run`` processes started together, with different
inputs or with the same input and different settings, each get their own rows, and the
response cache is one for all of them (an answer is paid once). Runs ``rare run`` as real
subprocesses against the project's simulator and the test session's Prefect API."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from prefect_fixtures import PROJECT_ROOT, SAMPLE

from rare_core.storage import read_frame
from rare_core.artifacts.layout import keyed
from rare_core.artifacts.locks import StepLocks
from rare_sim import SimulatorProcess

DOCS = 10
WORKERS = 4


@pytest.fixture(scope="module")
def slow_sim():
    """A simulator of its own whose answers take 100 ms, so that two runs overlap step by step."""
    with SimulatorProcess(latency=0.1) as process:
        yield process


@pytest.fixture
def api_env(prefect_harness):
    """The environment for ``rare run`` subprocesses: the test session's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    return dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL")


def documents(tmp: Path, name: str, first: int) -> tuple[Path, list[str]]:
    """``DOCS`` sample documents from row ``first`` on, as an input file -> (its path, its ids)."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[first:first + DOCS]
    path = tmp / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, [json.loads(line)["id"] for line in lines]


def start(input_path: Path, cache: Path, out: Path, sim, env: dict, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "deployments.cli", "run", "--input", str(input_path), "--cache-path", str(cache),
            "--output", str(out), "--base-url", sim.base_url, "--model", "teacher", "--max-workers", str(WORKERS),
            "--set", "verify.method=none", *extra]
    return subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def together(*procs: subprocess.Popen) -> None:
    """Wait for every process; each must succeed."""
    errors = [err.decode("utf-8", "replace")[-3000:] for _, err in (p.communicate(timeout=300) for p in procs)]
    assert [p.returncode for p in procs] == [0] * len(procs), errors


def rows(out: Path):
    return read_frame(out / "dataset.jsonl").sort_values("id").reset_index(drop=True)


def paid(sim) -> int:
    return sim.stats().completions_served


def responses(cache: Path) -> int:
    with sqlite3.connect(cache / "llm_responses.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def test_a_flow_names_its_files_by_their_cache_key():
    key = "doc2query-3fa9c1d2e4b5a6f7" + "0" * 48
    assert keyed(Path("/c/p_step1.jsonl"), key) == Path("/c/p_step1-3fa9c1d2e4b5a6f7.jsonl")
    assert keyed(Path("/c/p_step1.shards/00003-of-00010.jsonl"), key).name == "00003-of-00010-3fa9c1d2e4b5a6f7.jsonl"


def _hold_exclusively(cache: str, key: str, ready) -> None:
    StepLocks(cache).hold({key: True})
    ready.set()
    signal.pause()


def test_a_key_another_process_computes_is_waited_for_and_freed_when_it_dies(tmp_path):
    """A run that reaches a key another run holds exclusively waits (and says so); the OS frees
    the key when that run's process dies (kill -9)."""
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    other = context.Process(target=_hold_exclusively, args=(str(tmp_path), "doc2query-abc", ready))
    other.start()
    try:
        assert ready.wait(60)
        waited = []

        def on_wait(key: str, exclusive: bool) -> None:
            waited.append((key, exclusive))
            os.kill(other.pid, signal.SIGKILL)

        with StepLocks(tmp_path) as locks:
            locks.hold({"doc2query-abc": False, "hardneg-abc": True}, on_wait)
        assert waited == [("doc2query-abc", False)]
    finally:
        other.kill()
        other.join()


# The first round in `make test`, the others with the long tests (make test-slow).
ROUNDS = [0, *(pytest.param(i, marks=pytest.mark.slow) for i in (1, 2))]


@pytest.mark.parametrize("round_", ROUNDS)
def test_two_runs_with_different_inputs_on_one_cache_folder(tmp_path, slow_sim, api_env, round_):
    """Each round: two inputs with no document in common, run at once on one cache folder. Both
    succeed, each dataset holds its own documents (and negatives from its own corpus), the one
    response cache holds both runs' answers, and a rerun of either pays nothing."""
    cache = tmp_path / "cache"
    inputs = {"a": documents(tmp_path, "a", 3 * round_), "b": documents(tmp_path, "b", 20 + 3 * round_)}
    slow_sim.reset()
    together(*(start(path, cache, tmp_path / f"out-{name}", slow_sim, api_env) for name, (path, _) in inputs.items()))
    assert paid(slow_sim) == responses(cache) == 4 * DOCS  # a question and an answer per document of each
    for name, (_, ids) in inputs.items():
        data = rows(tmp_path / f"out-{name}")
        assert sorted(data["id"]) == sorted(ids)
        assert all(set(negatives) <= set(ids) - {doc} for doc, negatives in zip(data["id"], data["hard_negatives_ids"]))
    again = "ab"[round_ % 2]
    slow_sim.reset()
    together(start(inputs[again][0], cache, tmp_path / "rerun", slow_sim, api_env))
    assert paid(slow_sim) == 0
    assert rows(tmp_path / "rerun").to_dict("records") == rows(tmp_path / f"out-{again}").to_dict("records")


@pytest.mark.parametrize("round_", ROUNDS[:2])
def test_two_runs_with_different_settings_on_one_cache_folder(tmp_path, slow_sim, api_env, round_):
    """The same input with ``hardneg.num_neg`` 3 and 5, run at once on one cache folder: both
    succeed with their own number of negatives, and the questions, the same for both, are paid once."""
    cache = tmp_path / "cache"
    doc, ids = documents(tmp_path, "docs", 5 * round_)
    slow_sim.reset()
    together(*(start(doc, cache, tmp_path / f"out-{n}", slow_sim, api_env, "--set", f"hardneg.num_neg={n}")
               for n in (3, 5)))
    # Every answer paid once: the questions (the same for both runs) once, no answer twice.
    assert paid(slow_sim) == responses(cache) >= 2 * DOCS
    for n in (3, 5):
        data = rows(tmp_path / f"out-{n}")
        assert sorted(data["id"]) == sorted(ids)
        counts = data["hard_negatives_ids"].map(len)
        assert counts.max() == n and counts.min() >= 1, (n, counts.tolist())
    slow_sim.reset()
    together(start(doc, cache, tmp_path / "rerun", slow_sim, api_env, "--set", "hardneg.num_neg=5"))
    assert paid(slow_sim) == 0
    assert rows(tmp_path / "rerun").to_dict("records") == rows(tmp_path / "out-5").to_dict("records")
