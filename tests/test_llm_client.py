"""The LLM client against the simulator over real HTTP: retries, fast-fail, bounds, cache."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from waiting import wait_until

from rare_core.errors import LLMAuthError, LLMConfigError
from rare_core.llm import APILLMServing_request, LLMConfig, LLMRequest
from rare_core.llm.cache import ResponseCache
from rare_core.llm.failures import FailureKind
from rare_sim import FaultSpec

CHAT = "/v1/chat/completions"


def chat_requests(sim) -> int:
    return sim.stats().requests_by_path.get(CHAT, 0)


def requests_for(n: int, tag: str = "r") -> list[LLMRequest]:
    return [LLMRequest(messages=[{"role": "user", "content": f"{tag} number {i} about topic{i}"}], prompt_version="t/1")
            for i in range(n)]


def client(sim, tmp_path, **overrides) -> APILLMServing_request:
    settings = dict(api_url=sim.base_url, model_name="test-model", max_workers=8, timeout=5.0,
                    backoff_base=0.01, cache_path=str(tmp_path / "cache.sqlite"))
    settings.update(overrides)
    return APILLMServing_request(**settings)


def test_results_in_input_order_and_totals(sim, tmp_path):
    llm = client(sim, tmp_path)
    batch = llm.chat(requests_for(30))
    assert [r.text for r in batch.responses] == [
        f"[simulated] echo: r number {i} about topic{i}" for i in range(30)]
    assert all(r.ok and r.simulated and r.finish_reason == "stop" for r in batch.responses)
    assert batch.totals.requests == 30 and batch.totals.failures == 0
    assert batch.totals.prompt_tokens > 0 and batch.totals.completion_tokens > 0
    assert batch.totals.simulated
    assert chat_requests(sim) == 30


def test_full_chat_completions_url_is_accepted(sim, tmp_path):
    llm = client(sim, tmp_path, api_url=sim.base_url + "/chat/completions/")
    assert llm.chat(requests_for(1)).responses[0].ok


def test_429_retried_honouring_retry_after(sim, tmp_path):
    sim.inject([FaultSpec(kind="rate_limit", count=2, retry_after=0.05)])
    llm = client(sim, tmp_path, backoff_base=30.0)  # the backoff would wait 15 s or more
    batch = llm.chat(requests_for(1))
    assert llm.concurrency.refusal_wait == 0.05  # the wait before the last retry: the server's
    resp = batch.responses[0]
    assert resp.ok and resp.retries == 2
    assert batch.totals.retries == 2 and batch.totals.requests == 3
    assert chat_requests(sim) == 3


@pytest.mark.parametrize("kind", ["server_error", "hang"])
def test_transient_faults_are_retried(sim, tmp_path, kind):
    sim.inject([FaultSpec(kind=kind, count=1)])
    batch = client(sim, tmp_path, timeout=0.5).chat(requests_for(1))
    assert batch.responses[0].ok and batch.responses[0].retries == 1
    assert chat_requests(sim) == 2


def test_retries_give_up_with_the_reason(sim, tmp_path):
    sim.inject([FaultSpec(kind="server_error", count=10)])
    batch = client(sim, tmp_path, max_retries=2).chat(requests_for(1))
    resp = batch.responses[0]
    assert not resp.ok and "HTTP 500" in resp.error and "gave up after 2 retries" in resp.error
    assert batch.totals.failures == 1
    assert chat_requests(sim) == 3


def test_client_errors_are_not_retried(sim, tmp_path):
    llm = client(sim, tmp_path, api_url=sim.base_url + "/missing-prefix")
    batch = llm.chat(requests_for(1))
    resp = batch.responses[0]
    assert not resp.ok and resp.error.startswith("HTTP 404") and resp.retries == 0
    assert batch.totals.requests == 1 and batch.totals.failures == 1


def test_bad_body_is_a_row_error(sim, tmp_path):
    sim.inject([FaultSpec(kind="bad_body", count=1)])
    resp = client(sim, tmp_path).chat(requests_for(1)).responses[0]
    assert not resp.ok and resp.failure.kind == FailureKind.NOT_COMPLETION
    assert resp.error == "the endpoint answered application/json, not a chat completion: '<html><body>502 Bad Gateway (simulated)</body></html>'"


def test_auth_failure_stops_the_run_and_names_the_variable(sim, tmp_path, monkeypatch):
    secret = "sk-test-SECRET-value-0123456789"
    monkeypatch.setenv("RARE_TEST_KEY", secret)
    sim.set_latency(0.05)
    sim.inject([FaultSpec(kind="unauthorized", count=1)])
    llm = client(sim, tmp_path, max_workers=2, key_name_of_api_key="RARE_TEST_KEY")
    with pytest.raises(LLMAuthError) as info:
        llm.chat(requests_for(50))
    message = str(info.value)
    assert "RARE_TEST_KEY" in message and "is set" in message
    assert secret not in message and secret not in repr(info.value)
    assert chat_requests(sim) < 10  # stopped at once instead of failing all 50 rows


def test_missing_key_is_reported_as_unset(sim, tmp_path, monkeypatch):
    monkeypatch.delenv("RARE_UNSET_KEY", raising=False)
    sim.inject([FaultSpec(kind="unauthorized", count=1)])
    with pytest.raises(LLMAuthError, match="RARE_UNSET_KEY, which is NOT set"):
        client(sim, tmp_path, key_name_of_api_key="RARE_UNSET_KEY").chat(requests_for(1))


def test_no_endpoint_is_a_config_error():
    with pytest.raises(LLMConfigError, match="no LLM endpoint"):
        APILLMServing_request(api_url=None, model_name="m")
    with pytest.raises(LLMConfigError, match="no LLM endpoint"):
        APILLMServing_request(config=LLMConfig(model="m"))


def test_concurrency_bound_seen_at_the_server(sim, tmp_path):
    sim.set_latency(0.15)
    batch = client(sim, tmp_path, max_workers=5, cache_mode="off").chat(requests_for(40))
    assert all(r.ok for r in batch.responses)
    assert sim.stats().max_in_flight == 5


def test_requests_per_minute_limit(sim, tmp_path):
    started = time.perf_counter()
    client(sim, tmp_path, requests_per_minute=600, cache_mode="off").chat(requests_for(20))
    # the bucket holds one second's worth (10); the other 10 wait at 10 per second
    assert time.perf_counter() - started >= 0.9


def test_second_run_is_served_from_the_cache(sim, tmp_path, monkeypatch):
    monkeypatch.setenv("DF_API_KEY", "first-key")
    first = client(sim, tmp_path).chat(requests_for(12))
    assert chat_requests(sim) == 12
    # another key: not part of the cache key
    monkeypatch.setenv("DF_API_KEY", "second-key")
    again = client(sim, tmp_path).chat(requests_for(12))
    assert chat_requests(sim) == 12
    assert again.totals.cache_hits == 12 and again.totals.requests == 0
    assert [r.text for r in again.responses] == [r.text for r in first.responses]
    # the endpoint is (llm.cache_scope, by default the base URL): another URL is another scope...
    other_url = sim.base_url.replace("127.0.0.1", "localhost")
    client(sim, tmp_path, api_url=other_url).chat(requests_for(12))
    assert chat_requests(sim) == 24
    # ...unless both runs name the same scope
    client(sim, tmp_path, cache_scope="shared-scope").chat(requests_for(12))
    moved = client(sim, tmp_path, api_url=other_url, cache_scope="shared-scope").chat(requests_for(12))
    assert moved.totals.cache_hits == 12 and chat_requests(sim) == 36
    with open(tmp_path / "cache.sqlite", "rb") as fh:
        data = fh.read()
        assert b"first-key" not in data and b"second-key" not in data


def test_cache_modes(sim, tmp_path):
    client(sim, tmp_path).chat(requests_for(3))
    client(sim, tmp_path, cache_mode="refresh").chat(requests_for(3))
    assert chat_requests(sim) == 6
    client(sim, tmp_path, cache_mode="off").chat(requests_for(3, tag="other"))
    assert len(ResponseCache(tmp_path / "cache.sqlite")) == 3
    # changed generation parameters or prompt version are different cache entries
    client(sim, tmp_path, temperature=0.1).chat(requests_for(3))
    assert chat_requests(sim) == 12


def test_killed_run_resumes_paying_only_for_unanswered_rows(sim, tmp_path):
    cache_file = tmp_path / "cache.sqlite"
    sim.set_latency(0.1)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.getcwd()!r})
        from rare_core.llm import APILLMServing_request, LLMConfig, LLMRequest
        llm = APILLMServing_request(api_url={sim.base_url!r}, model_name="test-model", max_workers=2,
                                    cache_path={str(cache_file)!r})
        llm.chat([LLMRequest(messages=[{{"role": "user", "content": f"row {{i}}"}}]) for i in range(40)])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    wait_until(lambda: proc.poll() is not None or cache_file.exists() and len(ResponseCache(cache_file)) >= 8, 60,
               "8 answers in the cache")
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    answered = len(ResponseCache(cache_file))
    assert 8 <= answered < 40
    sim.reset()
    llm = client(sim, tmp_path, max_workers=8)
    batch = llm.chat([LLMRequest(messages=[{"role": "user", "content": f"row {i}"}]) for i in range(40)])
    assert all(r.ok for r in batch.responses)
    assert batch.totals.cache_hits == answered
    assert chat_requests(sim) == 40 - answered


def test_generate_from_input_compatibility(sim, tmp_path):
    llm = client(sim, tmp_path)
    assert llm.generate_from_input(["alpha beta", "gamma"]) == [
        "[simulated] echo: alpha beta", "[simulated] echo: gamma"]
