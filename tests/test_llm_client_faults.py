"""The LLM client's edges: the operator API, URL credentials, cache provenance, odd Retry-After,
unexpected errors, Ctrl-C inside a running loop, token budgets, the rate limiter across
batches, duplicate requests, and two processes on one cache file.

Against the simulator over real HTTP on loopback (fixture ``sim``), or unit-level where the
thing tested is pure."""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import json
import logging
import multiprocessing
import sqlite3
import threading
import time

import pytest
from pydantic import ValidationError
from waiting import wait_until

from rare_core.errors import LLMAuthError
from rare_core.llm import APILLMServing_request, GenerationParams, LLMConfig, LLMRequest, RunTotals
from rare_core.llm import loop as loop_module
from rare_core.llm.cache import ResponseCache
from rare_core.llm.responses import parse_retry_after
from rare_core.llm.ratelimit import TokenBucket
from rare_sim import FaultSpec
from test_llm_client import CHAT, chat_requests, client, requests_for  # noqa: F401 (shared helpers)

SECRET = "sk-test-SECRET-value-0123456789"


# ------------------------------------------------------------------ 1. the operator API


def test_operator_api_parameters_order_and_defaults():
    params = list(inspect.signature(APILLMServing_request).parameters.values())
    assert [(p.name, p.default) for p in params[:5]] == [
        ("api_url", "https://api.openai.com/v1/chat/completions"),
        ("key_name_of_api_key", "DF_API_KEY"),
        ("model_name", "gpt-4o"),
        ("max_workers", 10),
        ("max_retries", 5),
    ]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params[:5])
    cfg = APILLMServing_request().config  # no request is sent, no file is opened
    assert (cfg.base_url, cfg.api_key_env, cfg.model, cfg.max_workers, cfg.max_retries) == (
        "https://api.openai.com/v1", "DF_API_KEY", "gpt-4o", 10, 5)


def test_operator_api_positional_and_extra_keywords(sim, tmp_path):
    llm = APILLMServing_request(sim.base_url, "RARE_POSITIONAL_KEY", "positional-model", 3, 1,
                                timeout=5.0, temperature=0.2, cache_path=str(tmp_path / "c.sqlite"))
    cfg = llm.config
    assert (cfg.api_key_env, cfg.model, cfg.max_workers, cfg.max_retries) == ("RARE_POSITIONAL_KEY", "positional-model", 3, 1)
    assert cfg.timeout == 5.0 and cfg.generation.temperature == 0.2
    assert llm.chat(requests_for(1)).responses[0].ok
    assert sim.stats().models == ["positional-model"]
    from rare_core.llm import GenerationParams

    merged = APILLMServing_request(base_url=sim.base_url, model="own-name", generation=GenerationParams(seed=3),
                                   temperature=0.1).config  # LLMConfig's own names work too
    assert (merged.base_url, merged.model, merged.generation.seed, merged.generation.temperature) == (
        sim.base_url, "own-name", 3, 0.1)
    with pytest.raises(TypeError, match="model given twice"):
        APILLMServing_request(model_name="a", model="b")
    config = LLMConfig(base_url=sim.base_url, model="m")
    assert APILLMServing_request(config=config).config is config
    with pytest.raises(TypeError, match="not both"):
        APILLMServing_request(config=config, max_workers=3)
    with pytest.raises(TypeError, match="not both"):
        APILLMServing_request(config=config, timeout=3.0)


def test_generate_from_conversations(sim, tmp_path):
    sim.inject([FaultSpec(kind="server_error", match="BROKEN")])
    llm = client(sim, tmp_path, max_retries=0)
    texts = llm.generate_from_conversations([
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "alpha beta"}],
        [{"role": "user", "content": "BROKEN one"}],
        [{"role": "user", "content": "first turn"}, {"role": "assistant", "content": "ok"},
         {"role": "user", "content": "second turn"}],
    ])
    assert texts == ["[simulated] echo: alpha beta", None, "[simulated] echo: second turn"]
    assert llm.generate_from_input(["gamma"]) == ["[simulated] echo: gamma"]  # kept


def test_start_serving_and_cleanup(sim, tmp_path, caplog):
    llm = client(sim, tmp_path)
    with caplog.at_level(logging.INFO, logger="rare_core.llm"):
        assert llm.start_serving() is None
    assert "nothing to start" in caplog.text
    llm.chat(requests_for(1))
    assert llm._cache is not None
    assert llm.cleanup() is None
    assert llm._cache is None
    assert llm.chat(requests_for(1)).totals.cache_hits == 1  # usable again: the cache reopens


# ------------------------------------------------------------------ 2. the model is optional


def test_model_is_optional_and_defaults_to_gpt_4o(sim, tmp_path):
    config = LLMConfig(base_url=sim.base_url, cache_path=str(tmp_path / "c.sqlite"))
    assert config.model is None
    llm = APILLMServing_request(config=config)
    assert llm.model_name == "gpt-4o"
    resp = llm.chat(requests_for(1)).responses[0]
    assert resp.ok and resp.model == "gpt-4o"
    assert sim.stats().models == ["gpt-4o"]


# ------------------------------------------------------------------ 3. no credentials in base_url


@pytest.mark.parametrize("url", [
    "https://user:SECRETPW@api.example.com/v1",
    "https://SECRETPW@api.example.com/v1",
    "https://api.example.com/v1/chat/completions?key=SECRETPW",
    "https://api.example.com/v1?api-version=2024-02-01&API_KEY=SECRETPW",
    "https://api.example.com/v1?api-key=SECRETPW",
    "https://api.example.com/v1?ApiKey=SECRETPW",
    "https://api.example.com/v1?token=SECRETPW",
    "https://api.example.com/v1?Access_Token=SECRETPW",
    "https://api.example.com/v1?auth=SECRETPW",
    "https://api.example.com/v1?sig=SECRETPW",
    "https://api.example.com/v1?signature=SECRETPW",
    "https://api.example.com/v1?secret=SECRETPW",
    "https://api.example.com/v1?password=SECRETPW",
    "https://api.example.com/v1?subscription-key=SECRETPW",
])
def test_base_url_with_credentials_is_refused_without_echoing_them(url):
    from rare_core.llm.config import CREDENTIALS_IN_URL

    with pytest.raises(ValidationError) as info:
        LLMConfig(base_url=url)
    assert CREDENTIALS_IN_URL in str(info.value)
    assert "SECRETPW" not in str(info.value) and "SECRETPW" not in repr(info.value)
    assert [e["msg"] for e in info.value.errors()] == [f"Value error, {CREDENTIALS_IN_URL}"]
    assert "\n" not in CREDENTIALS_IN_URL
    with pytest.raises(ValidationError) as info:
        APILLMServing_request(api_url=url)
    assert "SECRETPW" not in str(info.value)


def test_other_query_parameters_stay_allowed():
    from rare_core.llm.config import endpoint_scope

    url = "https://res.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-02-01"
    config = LLMConfig(base_url=url)
    assert config.base_url == "https://res.openai.azure.com/openai/deployments/gpt?api-version=2024-02-01"
    assert endpoint_scope(config) == "https://res.openai.azure.com/openai/deployments/gpt"
    assert LLMConfig(base_url="http://localhost:8000/v1?keyboard=1&monkey=2").base_url.endswith("keyboard=1&monkey=2")


# ------------------------------------------------------------------ 4. response-cache provenance


def test_endpoint_scope():
    from rare_core.llm.config import endpoint_scope

    assert endpoint_scope(LLMConfig(base_url="https://API.openai.com:443/v1/")) == "https://api.openai.com/v1"
    assert endpoint_scope(LLMConfig(base_url="http://127.0.0.1:8000/v1/chat/completions")) == "http://127.0.0.1:8000/v1"
    assert endpoint_scope(LLMConfig(base_url="http://127.0.0.1:8000/v1", cache_scope="rare-simulator")) == "rare-simulator"


def test_simulator_answers_are_not_served_to_another_endpoint(sim, tmp_path):
    reqs = requests_for(5)
    client(sim, tmp_path, cache_scope="rare-simulator").chat(reqs)        # the built-in simulator
    assert chat_requests(sim) == 5
    real = client(sim, tmp_path).chat(reqs)                                 # "a real endpoint", same model
    assert real.totals.cache_hits == 0 and chat_requests(sim) == 10
    # the simulator on another port next run: same scope, served from the cache
    moved = client(sim, tmp_path, api_url=sim.base_url.replace("127.0.0.1", "localhost"),
                   cache_scope="rare-simulator").chat(reqs)
    assert moved.totals.cache_hits == 5 and chat_requests(sim) == 10
    with sqlite3.connect(tmp_path / "cache.sqlite") as conn:
        payloads = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM responses")]
    assert sorted(p["scope"] for p in payloads) == sorted(["rare-simulator"] * 5 + [sim.base_url] * 5)
    assert all(p["simulated"] is True for p in payloads)


def test_a_simulated_payload_is_refused_outside_its_scope(sim, tmp_path):
    from rare_core.llm.cache import cache_key

    llm = client(sim, tmp_path)
    req = requests_for(1)[0]
    key = cache_key(llm.model_name, req.messages, llm._params(req), req.prompt_version, scope=llm.scope)
    forged = {"text": "FORGED", "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1,
              "model": "test-model", "simulated": True, "scope": "rare-simulator"}
    cache = ResponseCache(tmp_path / "cache.sqlite")
    cache.put(key, forged)
    resp = llm.chat([req]).responses[0]
    assert not resp.cached and resp.text != "FORGED" and chat_requests(sim) == 1
    cache.put(key, {**forged, "simulated": False})  # only simulated answers are held to their scope
    assert llm.chat([req]).responses[0].text == "FORGED"
    cache.close()


# ------------------------------------------------------------------ 5. Retry-After


def test_parse_retry_after_returns_none_on_junk():
    import httpx

    for junk in ("soon", "", "  ", "Wed, 99 Foo 2024 00:00:00 GMT", "nan", "1.2.3"):
        assert parse_retry_after(httpx.Headers({"retry-after": junk})) is None, junk
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "junk", "retry-after": "2"})) == 2.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 100))
    assert 90 < parse_retry_after(httpx.Headers({"retry-after": future})) <= 100
    assert parse_retry_after(None) is None


def test_unparseable_retry_after_falls_back_to_backoff(sim, tmp_path):
    sim.inject([FaultSpec(kind="rate_limit", count=1, retry_after_header="soon")])
    batch = client(sim, tmp_path).chat(requests_for(5))
    assert all(r.ok for r in batch.responses)
    assert batch.totals.retries == 1 and chat_requests(sim) == 6


def test_retry_after_above_backoff_max_is_honoured_in_full(sim, tmp_path):
    sim.inject([FaultSpec(kind="rate_limit", count=1, retry_after=0.6)])
    started = time.perf_counter()
    resp = client(sim, tmp_path, backoff_max=0.05).chat(requests_for(1)).responses[0]
    assert resp.ok and resp.retries == 1
    assert time.perf_counter() - started >= 0.6


def test_retry_after_above_max_retry_after_fails_the_row_at_once(sim, tmp_path):
    sim.inject([FaultSpec(kind="rate_limit", count=1, retry_after=30, match="number 0 ")])
    started = time.perf_counter()
    batch = client(sim, tmp_path, max_retry_after=2.0).chat(requests_for(3))
    assert time.perf_counter() - started < 10  # a guard, not a target: waiting as asked takes 30 s
    first, *others = batch.responses
    assert not first.ok and first.error.startswith("HTTP 429")
    assert "asked to wait 30s" in first.error and "max_retry_after=2s" in first.error
    assert all(r.ok for r in others)
    assert batch.totals.failures == 1 and chat_requests(sim) == 3


# ------------------------------------------------------------------ 6. unexpected errors


def test_an_odd_response_object_is_that_rows_error(sim, tmp_path):
    sim.inject([FaultSpec(kind="odd_shape", match="number 2 ")])
    batch = client(sim, tmp_path).chat(requests_for(5))
    errors = [r.error for r in batch.responses]
    assert errors[2].startswith("unexpected error: AttributeError: ")
    assert errors[:2] + errors[3:] == [None] * 4
    assert batch.totals.failures == 1


def test_an_unexpected_exception_is_a_scrubbed_row_error(sim, tmp_path, monkeypatch):
    monkeypatch.setenv("DF_API_KEY", SECRET)
    llm = client(sim, tmp_path)
    send = llm._send

    async def buggy(client, req, params, key):
        if "number 1 " in req.messages[0]["content"]:
            raise RuntimeError(f"bug while holding {key}")
        return await send(client, req, params, key)

    monkeypatch.setattr(llm, "_send", buggy)
    batch = llm.chat(requests_for(3))
    assert [r.error for r in batch.responses] == [None, "unexpected error: RuntimeError: bug while holding ***", None]


def test_auth_error_still_stops_the_batch(sim, tmp_path):
    sim.inject([FaultSpec(kind="unauthorized", count=1)])
    with pytest.raises(LLMAuthError):
        client(sim, tmp_path).chat(requests_for(3))


def test_a_failing_progress_callback_is_logged_once_and_ignored(sim, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("DF_API_KEY", SECRET)
    calls = []

    def broken(done: int, total: int) -> None:
        calls.append((done, total))
        raise ValueError(f"progress bar broke ({SECRET})")

    with caplog.at_level(logging.WARNING, logger="rare_core.llm"):
        batch = client(sim, tmp_path).chat(requests_for(10), on_progress=broken)
    assert all(r.ok for r in batch.responses)
    assert len(calls) == 10 and calls[-1] == (10, 10)  # still called after it raised
    warnings = [r for r in caplog.records if r.name == "rare_core.llm" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "progress bar broke" in warnings[0].getMessage()
    assert SECRET not in caplog.text


# ------------------------------------------------------------------ 7. Ctrl-C inside a running loop


def test_ctrl_c_inside_a_running_loop_cancels_the_batch(sim, tmp_path):
    sim.set_latency(0.3)
    llm = client(sim, tmp_path, max_workers=4, cache_mode="off")
    outcome: dict = {}

    def notebook() -> None:  # a thread that already runs an event loop, like Jupyter's
        async def cell():
            return llm.chat(requests_for(40))  # 40 x 0.3 s / 4 workers: ~3 s if not stopped
        try:
            outcome["batch"] = asyncio.run(cell())
        except KeyboardInterrupt:
            outcome["interrupted"] = True

    thread = threading.Thread(target=notebook)
    thread.start()
    wait_until(lambda: sim.stats().in_flight, 10, "the batch's first requests")
    assert "rare-llm-batch" in [t.name for t in threading.enumerate()]  # run_on_private_loop's thread
    # Ctrl-C, delivered to the waiting thread (as SIGINT would be to the main thread)
    assert ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)) == 1
    thread.join(20)
    assert outcome == {"interrupted": True}
    # the batch over (its thread ended; not cancelled, it ends after all 40), what was in flight answered
    wait_until(lambda: "rare-llm-batch" not in [t.name for t in threading.enumerate()], 10, "the batch's thread to end")
    wait_until(lambda: not sim.stats().in_flight, 10, "the requests in flight at the Ctrl-C to end")
    assert chat_requests(sim) <= 8


def test_private_loop_cancels_and_waits_before_reraising(monkeypatch):
    events = []
    working = threading.Event()

    async def work():
        working.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            await asyncio.sleep(0.05)  # in-flight requests wind down
            events.append("cleaned up")

    def interrupted(thread):
        assert working.wait(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop_module, "_wait_for", interrupted)
    with pytest.raises(KeyboardInterrupt):
        loop_module.run_on_private_loop(work())
    assert events == ["cancelled", "cleaned up"]


def test_ctrl_c_in_the_real_wait_reraises_only_after_the_batch_wound_down():
    """A Ctrl-C that reaches the waiting (main) thread while it waits for the batch thread: the
    exception goes on only once the coroutine's clean-up has run (a Thread.join interrupted by
    it could mark the thread finished while it still ran)."""
    import _thread

    events = []
    working = threading.Event()

    async def work():
        working.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            await asyncio.sleep(0.3)  # in-flight requests wind down
            events.append("cleaned up")

    def press_ctrl_c():
        assert working.wait(10)
        _thread.interrupt_main()

    assert threading.current_thread() is threading.main_thread()
    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        loop_module.run_on_private_loop(work())
    assert events == ["cancelled", "cleaned up"]


def test_chat_inside_a_running_loop_returns_the_batch(sim, tmp_path):
    llm = client(sim, tmp_path)

    async def cell():
        return llm.chat(requests_for(3))

    assert all(r.ok for r in asyncio.run(cell()).responses)


def test_a_call_from_the_main_thread_never_formats_the_batch(sim, tmp_path, monkeypatch):
    """asyncio.run's SIGINT handover formats the main task's repr, which would include the
    Batch with every answer (client.run_here keeps the result off the task)."""
    import threading

    from rare_core.llm.types import Batch

    formatted = []

    def count(self):  # not raising: reprlib swallows a repr's exception
        formatted.append(len(self.responses))
        return "<Batch>"

    monkeypatch.setattr(Batch, "__repr__", count)
    assert threading.current_thread() is threading.main_thread()
    batch = client(sim, tmp_path).chat(requests_for(3))
    assert all(r.ok for r in batch.responses) and formatted == []


# ------------------------------------------------------------------ 8. token budgets


def test_request_max_tokens_is_sent_and_keyed(sim, tmp_path, monkeypatch):
    from openai.resources.chat.completions import AsyncCompletions

    sent_budgets = []
    create = AsyncCompletions.create

    async def spy(self, **kwargs):
        sent_budgets.append(kwargs["extra_body"].get("max_tokens"))  # the body travels as extra_body
        return await create(self, **kwargs)

    monkeypatch.setattr(AsyncCompletions, "create", spy)
    base = requests_for(1)[0]
    reqs = [base, base.model_copy(update={"max_tokens": 64})]
    batch = client(sim, tmp_path).chat(reqs)
    assert sorted(sent_budgets) == [64, GenerationParams().max_tokens] and batch.totals.deduplicated == 0
    again = client(sim, tmp_path).chat(reqs)
    assert again.totals.cache_hits == 2 and len(sent_budgets) == 2
    with pytest.raises(ValidationError):
        LLMRequest(messages=[], max_tokens=0)


def test_next_budget():
    from rare_core.llm.config import next_budget

    config = LLMConfig(base_url="http://localhost/v1")
    assert config.max_tokens_cap == 32768
    assert next_budget(config, 2048) == 4096
    assert next_budget(config, None) == 2 * config.generation.max_tokens  # from generation.max_tokens
    assert next_budget(config, 20000) == 32768
    assert next_budget(config, 32768) is None and next_budget(config, 40000) is None
    assert next_budget(config.model_copy(update={"max_tokens_cap": 100}), 64) == 100


# ------------------------------------------------------------------ 9. one rate limiter per client


def test_rate_limit_bucket_lasts_across_batches(sim, tmp_path):
    started = time.perf_counter()
    llm = client(sim, tmp_path, requests_per_minute=600, cache_mode="off")
    llm.chat(requests_for(10, "a"))  # the burst: the bucket holds 10
    llm.chat(requests_for(10, "b"))  # a re-ask round: no fresh burst, 10 at 10 per second
    assert time.perf_counter() - started >= 0.9  # one burst in all (a fresh one: ~0 s)


def test_token_bucket_serves_successive_event_loops():
    started = time.perf_counter()
    bucket = TokenBucket(600)  # 10 per second, holds 10

    async def take(n: int) -> None:
        await asyncio.gather(*(bucket.acquire() for _ in range(n)))

    asyncio.run(take(12))  # contended: waiters queue on this loop's lock
    asyncio.run(take(5))  # another loop: a lock of its own, the same tokens
    assert time.perf_counter() - started >= 0.65  # 17 tokens: 10 held, 7 at 10 per second


# ------------------------------------------------------------------ 10. duplicates in a batch


@pytest.mark.parametrize("cache_mode", ["use", "off"])
def test_identical_requests_are_sent_once(sim, tmp_path, cache_mode):
    unique = requests_for(3)
    reqs = [unique[i % 3] for i in range(10)]
    progress = []
    batch = client(sim, tmp_path, cache_mode=cache_mode).chat(reqs, on_progress=lambda d, t: progress.append((d, t)))
    assert chat_requests(sim) == 3
    assert [r.text for r in batch.responses] == [f"[simulated] echo: r number {i % 3} about topic{i % 3}" for i in range(10)]
    assert [r.shared for r in batch.responses] == [False] * 3 + [True] * 7
    totals = batch.totals
    assert (totals.requests, totals.deduplicated, totals.cache_hits, totals.failures) == (3, 7, 0, 0)
    assert totals.prompt_tokens == sum(r.prompt_tokens for r in batch.responses[:3])
    assert progress[-1] == (10, 10)
    assert RunTotals().add(totals).deduplicated == 7


def test_duplicates_of_a_failed_request_share_the_failure(sim, tmp_path):
    sim.inject([FaultSpec(kind="server_error", count=5)])
    batch = client(sim, tmp_path, max_retries=0).chat(requests_for(1) * 4)
    assert chat_requests(sim) == 1
    assert [r.ok for r in batch.responses] == [False] * 4 and batch.totals.failures == 4


# ------------------------------------------------------------------ 11. two processes, one cache file


def _write_entries(path: str, tag: str, barrier, new_files: int) -> None:  # runs in a child process
    barrier.wait(10)
    start = time.time() + 0.1
    for n in range(new_files):
        # Both processes open (create, switch to WAL) the same new file at nearly the same instant.
        # The race that made SQLite refuse at once needs the second within ~0.5 ms of the first,
        # so "b" starts 0, 20, 40 ... microseconds after "a" (spin-waits: sleep is too coarse).
        at = start + 0.02 * n + (20e-6 * n if tag == "b" else 0.0)
        while time.time() < at:
            pass
        ResponseCache(f"{path}.{n}").close()
    barrier.wait(10)
    cache = ResponseCache(path)
    for i in range(200):
        cache.put(f"{tag}-{i}", {"text": f"{tag} {i}", "simulated": False})
    cache.close()


def test_two_processes_write_one_cache_file_at_once(tmp_path):
    # fork: the children start at once, without importing the project again (spawn: ~3 s each);
    # they only touch sqlite3 and the barrier.
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    path = tmp_path / "cache.sqlite"
    procs = [context.Process(target=_write_entries, args=(str(path), tag, barrier, 25)) for tag in ("a", "b")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    cache = ResponseCache(path)
    assert len(cache) == 400
    assert all(cache.get(f"{tag}-{i}") == {"text": f"{tag} {i}", "simulated": False} for tag in "ab" for i in range(200))
    cache.close()


def test_wal_setup_waits_for_another_connections_lock(tmp_path):
    path = tmp_path / "cache.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")  # a file still in rollback-journal mode
    holder.execute("BEGIN IMMEDIATE")  # another process mid-write: SQLite refuses WAL at once
    holder.execute("INSERT INTO other VALUES (1)")
    releaser = threading.Timer(0.3, holder.execute, ("COMMIT",))
    releaser.start()
    try:
        cache = ResponseCache(path)
        cache.put("k", {"v": 1})
        assert cache.get("k") == {"v": 1}
        cache.close()
    finally:
        releaser.join()
        holder.close()
