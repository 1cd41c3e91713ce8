"""``BatchRunner`` (the Batch API client) against the simulator's Batch API over real HTTP."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import socket
from pathlib import Path

import openai
import pytest
from waiting import wait_until

from rare_core.errors import LLMAuthError, LLMEndpointError
from rare_core.llm import APILLMServing_request, LLMRequest
from rare_core.llm.batch import BatchRunner
from rare_core.llm.config import BatchConfig
from rare_core.prompts import doc2query, reason_distill
from rare_sim import FaultSpec, SimulatorProcess

SECRET = "sk-batch-test-secret-0123456789"
FAST = BatchConfig(poll_interval=0.05, poll_max=0.2)
PROJECT = Path(__file__).resolve().parents[1]
DOCS = [
    f"Topic{i} study: compound{i} lowers marker{i} in patients with condition{i}. Higher doses of compound{i} "
    f"raise the risk of side effect{i} when organ{i} clearance fails."
    for i in range(8)
]


@pytest.fixture(scope="module")
def bsim():
    """A simulator of its own, with a key, whose batches take 0.1 s."""
    with SimulatorProcess(api_key=SECRET, batch_delay=0.1) as process:
        yield process


@pytest.fixture
def sim(bsim, monkeypatch):
    monkeypatch.setenv("DF_API_KEY", SECRET)
    bsim.configure()
    bsim.reset()
    return bsim


def make_llm(sim, tmp_path, name="cache", **overrides):
    settings = dict(api_url=sim.base_url, model_name="teacher", max_workers=8, timeout=10.0, backoff_base=0.01,
                    cache_path=str(tmp_path / f"{name}.sqlite"), batch=FAST)
    settings.update(overrides)
    return APILLMServing_request(**settings)


def doc_requests(n=len(DOCS)):
    return [LLMRequest(messages=doc2query.build_messages(doc, 1), prompt_version=doc2query.VERSION) for doc in DOCS[:n]]


def distill_requests():
    return [LLMRequest(messages=reason_distill.build_messages(f"A case about compound{i}.",
                                                              f"Why does compound{i} risk side effect{i}?",
                                                              [DOCS[i], DOCS[(i + 1) % len(DOCS)]]),
                       prompt_version=reason_distill.VERSION) for i in range(2)]


def echo_requests(n, tag="q"):
    return [LLMRequest(messages=[{"role": "user", "content": f"{tag} {i}"}], prompt_version="t/1") for i in range(n)]


def api(sim):
    return openai.OpenAI(base_url=sim.base_url, api_key=SECRET, max_retries=0)


def state_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.exists() else []


def polls(sim) -> int:
    """The batch retrievals (``GET /v1/batches/{id}``) the simulator has counted."""
    return sum(n for path, n in sim.stats().requests_by_path.items()
               if path.startswith("/v1/batches/") and not path.endswith("/cancel"))


ANSWER_FIELDS = ("text", "reasoning", "reasoning_field", "finish_reason", "prompt_tokens", "completion_tokens",
                 "model", "simulated")


def test_batch_answers_equal_online_answers(sim, tmp_path):
    requests = doc_requests() + distill_requests()
    requests.append(requests[0])  # a duplicate: sent once
    online = make_llm(sim, tmp_path, "online").chat(requests).responses
    online_completions = sim.stats().completions_served
    progress = []
    out = BatchRunner(make_llm(sim, tmp_path), tmp_path / "batches").run(
        requests, on_progress=lambda done, total: progress.append((done, total)))

    assert len(out) == len(requests)
    for got, want in zip(out, online):
        assert got.ok and got.model_dump(include=set(ANSWER_FIELDS)) == want.model_dump(include=set(ANSWER_FIELDS))
    assert all(r.batch and not r.cached for r in out[:-1])
    assert out[-1].shared and out[-1].text == out[0].text
    stats = sim.stats()
    assert (stats.batches_created, stats.files_uploaded) == (1, 1)
    assert stats.batch_completions_served == len(requests) - 1
    assert stats.completions_served == online_completions == len(requests) - 1  # nothing more paid online
    assert progress[-1] == (len(requests), len(requests)) and progress == sorted(progress)
    assert state_files(tmp_path / "batches") == []  # the answers are in the cache: nothing to resume


def test_a_rerun_sends_nothing(sim, tmp_path):
    requests = doc_requests(4)
    first = BatchRunner(make_llm(sim, tmp_path), tmp_path / "batches").run(requests)
    sim.reset()
    again = BatchRunner(make_llm(sim, tmp_path), tmp_path / "batches").run(requests)
    assert [r.text for r in again] == [r.text for r in first]
    assert all(r.cached and not r.batch for r in again)
    stats = sim.stats()
    assert (stats.batches_created, stats.files_uploaded, stats.batch_completions_served) == (0, 0, 0)
    assert set(stats.requests_by_path) == {"/_sim/stats"}


def test_a_failed_line_is_resubmitted_once(sim, tmp_path, caplog):
    requests = doc_requests(5)
    sim.inject([FaultSpec(kind="server_error", count=1, match=DOCS[1][:40]),
                FaultSpec(kind="odd_shape", count=1, match=DOCS[3][:40])])
    with caplog.at_level(logging.INFO, logger="rare_core.llm.batch"):
        out = BatchRunner(make_llm(sim, tmp_path), tmp_path / "batches").run(requests)
    assert all(r.ok and r.batch for r in out)
    assert [r.retries for r in out] == [0, 1, 0, 1, 0]
    assert "submitting them once more" in caplog.text
    stats = sim.stats()
    assert stats.batches_created == 2 and stats.batch_requests_failed == 1
    assert stats.batch_completions_served == 5  # 3 + 2 resubmitted (the odd body was a 200 fault)


def test_a_line_that_fails_twice_is_an_error_and_is_asked_again_next_run(sim, tmp_path):
    requests = doc_requests(3)
    sim.inject([FaultSpec(kind="server_error", count=2, match=DOCS[2][:40])])
    llm = make_llm(sim, tmp_path)
    out = BatchRunner(llm, tmp_path / "batches").run(requests)
    assert [r.ok for r in out] == [True, True, False]
    assert out[2].error.startswith("batch: HTTP 500: The server had an error") and out[2].retries == 1
    assert sim.stats().batches_created == 2
    assert llm.cached_response(requests[2]) is None  # failures are not cached
    sim.reset()
    rerun = BatchRunner(make_llm(sim, tmp_path), tmp_path / "batches").run(requests)
    assert all(r.ok for r in rerun) and sim.stats().batch_completions_served == 1


def test_refused_lines_carry_the_servers_reason(sim, tmp_path):
    sim.configure(structured_output="unsupported")
    schema = {"type": "json_schema", "json_schema": {"name": "q", "schema": {"type": "object"}}}
    out = BatchRunner(make_llm(sim, tmp_path, response_format=schema), tmp_path / "batches").run(doc_requests(2))
    assert all(not r.ok for r in out)
    assert all("HTTP 400: response_format json_schema is not supported by this model" in r.error for r in out)
    assert sim.stats().batches_created == 2


@pytest.mark.parametrize("n", [7, 9])
def test_split_by_max_requests_per_file(sim, tmp_path, n):
    batch = BatchConfig(poll_interval=0.05, poll_max=0.2, max_requests_per_file=3)
    out = BatchRunner(make_llm(sim, tmp_path, batch=batch), tmp_path / "batches").run(echo_requests(n))
    assert [r.text for r in out] == [f"[simulated] echo: q {i}" for i in range(n)]
    assert sim.stats().batches_created == math.ceil(n / 3)
    assert sorted(b.request_counts.total for b in api(sim).batches.list().data) == sorted(
        [3] * (n // 3) + ([n % 3] if n % 3 else []))


def test_split_by_max_bytes_per_file_and_a_request_too_big_for_any(sim, tmp_path):
    batch = BatchConfig(poll_interval=0.05, poll_max=0.2, max_bytes_per_file=1024)
    requests = echo_requests(20) + [LLMRequest(messages=[{"role": "user", "content": "x" * 2000}])]
    out = BatchRunner(make_llm(sim, tmp_path, batch=batch), tmp_path / "batches").run(requests)
    assert all(r.ok for r in out[:-1])
    assert out[-1].error.startswith("batch: the request takes") and "max_bytes_per_file=1024" in out[-1].error
    client = api(sim)
    batches = client.batches.list(limit=100).data
    assert len(batches) == sim.stats().batches_created > 1
    assert sum(b.request_counts.total for b in batches) == 20
    assert all(client.files.retrieve(b.input_file_id).bytes <= 1024 for b in batches)


def test_resume_picks_up_the_batch_of_an_earlier_run(sim, tmp_path):
    sim.configure(batch_delay=30)  # still running when the first runner walks away
    requests = doc_requests(4)
    folder = tmp_path / "batches"
    (batch_id,) = BatchRunner(make_llm(sim, tmp_path), folder).submit(requests)
    (state,) = state_files(folder)
    assert json.loads(state.read_text())["batch_id"] == batch_id
    assert SECRET not in state.read_text()
    sim.configure(batch_delay=0.1)  # now it completes
    progress = []
    out = BatchRunner(make_llm(sim, tmp_path), folder).run(requests, on_progress=lambda d, t: progress.append(d))
    assert all(r.ok and r.batch for r in out)
    stats = sim.stats()
    assert stats.batches_created == 1 and stats.files_uploaded == 1 and stats.batch_completions_served == 4
    assert api(sim).batches.list().data[0].id == batch_id
    assert state_files(folder) == [] and progress[-1] == 4


def test_a_cancelled_batch_of_an_earlier_run_is_replaced(sim, tmp_path, caplog):
    sim.configure(batch_delay=30)
    requests = doc_requests(3)
    folder = tmp_path / "batches"
    (batch_id,) = BatchRunner(make_llm(sim, tmp_path), folder).submit(requests)
    api(sim).batches.cancel(batch_id)
    sim.configure(batch_delay=0.1)
    with caplog.at_level(logging.INFO, logger="rare_core.llm.batch"):
        out = BatchRunner(make_llm(sim, tmp_path), folder).run(requests)
    assert all(r.ok for r in out)
    assert f"batch {batch_id} of an earlier run is cancelled: creating a new one" in caplog.text
    assert sim.stats().batches_created == 2 and state_files(folder) == []


def test_kill_9_after_the_batch_exists_then_resume(sim, tmp_path):
    sim.configure(batch_delay=60)
    requests = doc_requests(6) + distill_requests()
    folder = tmp_path / "batches"
    spec = tmp_path / "requests.json"
    spec.write_text(json.dumps([r.model_dump() for r in requests]))
    script = textwrap.dedent(f"""
        import json
        from rare_core.llm import APILLMServing_request, LLMRequest
        from rare_core.llm.batch import BatchRunner
        from rare_core.llm.config import BatchConfig
        llm = APILLMServing_request(api_url={sim.base_url!r}, model_name="teacher", max_workers=8, timeout=10.0,
                                    backoff_base=0.01, cache_path={str(tmp_path / "cache.sqlite")!r},
                                    batch=BatchConfig(poll_interval=0.05, poll_max=0.2))
        requests = [LLMRequest(**r) for r in json.load(open({str(spec)!r}))]
        BatchRunner(llm, {str(folder)!r}).run(requests)
        print("FINISHED")
    """)
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: proc.poll() is not None or polls(sim), 60, "the runner to poll its batch")
        assert proc.poll() is None, proc.communicate()
        assert state_files(folder)  # written before the first poll
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "FINISHED" not in out
    assert sim.stats().batches_created == 1
    (state,) = state_files(folder)
    assert SECRET not in state.read_text()

    sim.configure(batch_delay=0.1)
    resumed = BatchRunner(make_llm(sim, tmp_path), folder).run(requests)
    assert all(r.ok and r.batch for r in resumed)
    stats = sim.stats()
    assert stats.batches_created == 1 and stats.files_uploaded == 1  # the same batch, not paid twice
    assert stats.batch_completions_served == len(requests) and stats.completions_served == 0
    online = make_llm(sim, tmp_path, "online").chat(requests).responses
    assert [r.text for r in resumed] == [r.text for r in online]
    assert state_files(folder) == []


def test_the_key_is_in_no_file_and_no_message(sim, tmp_path, caplog, monkeypatch):
    sim.configure(batch_delay=30)
    folder = tmp_path / "batches"
    with caplog.at_level(logging.DEBUG, logger="rare_core.llm.batch"):
        BatchRunner(make_llm(sim, tmp_path), folder).submit(doc_requests(2))
        for path in folder.iterdir():
            assert SECRET not in path.read_text(errors="replace")
        monkeypatch.setenv("DF_API_KEY", "sk-wrong-key-9876543210")
        with pytest.raises(LLMAuthError) as err:
            BatchRunner(make_llm(sim, tmp_path), folder).run(doc_requests(2))
    assert "DF_API_KEY" in str(err.value) and "sk-wrong-key-9876543210" not in str(err.value)
    assert SECRET not in caplog.text and "sk-wrong-key-9876543210" not in caplog.text
    assert len(state_files(folder)) == 1  # still there: a run with the right key resumes it


def test_a_broken_progress_callback_does_not_stop_the_run(sim, tmp_path, caplog):
    def broken(done, total):
        raise RuntimeError("bar is broken")

    with caplog.at_level(logging.WARNING, logger="rare_core.llm.batch"):
        out = BatchRunner(make_llm(sim, tmp_path), tmp_path / "batches").run(echo_requests(3), on_progress=broken)
    assert all(r.ok for r in out)
    assert caplog.text.count("bar is broken") == 1


def test_an_endpoint_that_is_not_there_stops_a_batch_run_naming_it(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the block ends
    llm = APILLMServing_request(api_url=f"http://127.0.0.1:{port}/v1", model_name="m", mode="batch", max_retries=0,
                                cache_path=str(tmp_path / "cache.sqlite"), batch=FAST)
    with pytest.raises(LLMEndpointError, match=rf"127\.0\.0\.1:{port}/v1 cannot be used: connection refused"):
        llm.chat(doc_requests(3))
