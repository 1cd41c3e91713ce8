"""The LLM client's window of conversations: a batch far larger than the window, against the
simulator over real HTTP on loopback (fixture ``sim``).

In: batches of thousands of rows with a few workers. Out: every answer in input order, at most
:func:`conversation_window` conversations alive at once, and the client's other behaviours
(duplicates, re-asks, LLMAuthError, cancellation, cached rows) unchanged by the window."""

from __future__ import annotations

import asyncio

import pytest
from waiting import wait_until

from rare_core.errors import LLMAuthError
from rare_core.llm import LLMRequest, LLMResponse
from rare_core.llm.engine import conversation_window
from rare_sim import FaultSpec
from test_llm_client import chat_requests, client, requests_for


def echo(i: int, tag: str = "r") -> str:
    return f"[simulated] echo: {tag} number {i} about topic{i}"


def test_a_batch_far_larger_than_the_window_keeps_the_window_and_the_order(sim, tmp_path):
    sim.set_latency(0.005)  # long enough for the server to see every slot in use
    rows, workers = 2000, 8
    window = conversation_window(workers)
    assert window < rows / 10
    live: list[int] = []

    def count_tasks(done: int, total: int) -> None:  # runs on the batch's event loop
        live.append(len(asyncio.all_tasks()))

    batch = client(sim, tmp_path, max_workers=workers, cache_mode="off").chat(requests_for(rows), count_tasks)
    assert [r.text for r in batch.responses] == [echo(i) for i in range(rows)]
    assert [len(chain) for chain in batch.chains] == [1] * rows
    assert batch.leaders == list(range(rows))
    assert batch.totals.requests == rows and batch.totals.failures == 0 and chat_requests(sim) == rows
    assert len(live) == rows
    # The workers, the batch's own task and aiohttp's one writer task per request in flight;
    # one task per row (the old way) would be ~2,000 at the first answer.
    assert max(live) <= window + 1 + workers, max(live)
    assert sim.stats().max_in_flight == workers  # the window still fills every slot


def test_duplicates_beyond_the_window_share_one_request(sim, tmp_path):
    distinct, copies = 300, 4
    unique = requests_for(distinct)
    reqs = [unique[i % distinct] for i in range(distinct * copies)]  # copies 300 rows apart
    progress = []
    batch = client(sim, tmp_path, max_workers=4, cache_mode="off").chat(
        reqs, on_progress=lambda done, total: progress.append((done, total)))
    assert chat_requests(sim) == distinct
    assert [r.text for r in batch.responses] == [echo(i % distinct) for i in range(len(reqs))]
    assert [r.shared for r in batch.responses] == [False] * distinct + [True] * (len(reqs) - distinct)
    assert batch.leaders == [i % distinct for i in range(len(reqs))]
    assert (batch.totals.requests, batch.totals.deduplicated) == (distinct, len(reqs) - distinct)
    assert progress[-1] == (len(reqs), len(reqs)) and len(progress) == distinct  # one call per conversation


def test_re_asks_continue_their_conversation_inside_the_window(sim, tmp_path):
    rows = 400
    originals = requests_for(rows)

    def follow(row: int, req: LLMRequest, resp: LLMResponse) -> LLMRequest | None:
        if len(req.messages) > 1:
            return None
        again = [*req.messages, {"role": "assistant", "content": resp.text},
                 {"role": "user", "content": f"again {row}"}]
        return req.model_copy(update={"messages": again})

    batch = client(sim, tmp_path, max_workers=4, cache_mode="off").converse(originals, follow)
    assert chat_requests(sim) == 2 * rows
    assert [[r.text for r in chain] for chain in batch.chains] == [
        [echo(i), f"[simulated] echo: again {i}"] for i in range(rows)]
    assert [r.text for r in batch.responses] == [f"[simulated] echo: again {i}" for i in range(rows)]


def test_an_auth_error_stops_a_large_batch_and_leaves_no_task(sim, tmp_path):
    sim.set_latency(0.02)
    sim.inject([FaultSpec(kind="unauthorized", count=1)])
    llm = client(sim, tmp_path, max_workers=8, cache_mode="off")

    async def run() -> set:
        with pytest.raises(LLMAuthError, match="refused the credentials"):
            await llm.achat(requests_for(2000))
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(run()) == set()  # the workers cancelled, not left sending
    assert chat_requests(sim) < 100


def test_cancelling_the_batch_cancels_the_workers(sim, tmp_path):
    sim.set_latency(0.1)
    llm = client(sim, tmp_path, max_workers=4, cache_mode="off")

    async def run() -> set:
        task = asyncio.create_task(llm.achat(requests_for(2000)))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(run()) == set()  # no worker left, and their loop closed: nothing can send more
    wait_until(lambda: not sim.stats().in_flight, 10, "the requests in flight at the cancel to end")
    assert chat_requests(sim) < 100


def test_a_cached_batch_far_larger_than_the_window_is_answered_at_once(sim, tmp_path):
    rows = 20_000
    reqs = requests_for(rows, "cached")
    llm = client(sim, tmp_path, max_workers=8)
    for i, req in enumerate(reqs):
        llm.store_response(req, LLMResponse(text=f"stored {i}"))
    batch = llm.chat(reqs)  # its time: bench/targets.py
    assert [r.text for r in batch.responses] == [f"stored {i}" for i in range(rows)]
    assert batch.totals.cache_hits == rows and batch.totals.requests == 0 and chat_requests(sim) == 0
