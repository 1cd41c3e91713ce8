"""The client against a capped server it was not written with (``tests/cap_server.py``: 429 and
``Retry-After: 1`` above the cap), and the simulator's cap answering as such servers do.

In: batches through :class:`APILLMServing_request`; bursts of raw requests. Out: every row
answered, few 429s, the limit at the cap; the simulator's 429 shaped as the other server's."""

from __future__ import annotations

import asyncio

import openai
import pytest

from cap_server import CapServer
from rare_core.llm import APILLMServing_request, LLMRequest
from rare_sim import SimulatorProcess

CAP = 16


@pytest.fixture(scope="module")
def capped():
    with CapServer(cap=CAP, latency=0.25) as server:
        yield server


def rows(n: int) -> list[LLMRequest]:
    return [LLMRequest(messages=[{"role": "user", "content": f"row {i}"}]) for i in range(n)]


def test_a_capped_server_we_did_not_write_answers_every_row_with_few_429s(capped):
    before = capped.stats()
    llm = APILLMServing_request(api_url=capped.base_url, model_name="m", max_workers=64, cache_mode="off", timeout=30)
    batch = llm.chat(rows(320))
    stats = capped.stats()
    refused, served = stats["refused"] - before["refused"], stats["served"] - before["served"]
    assert [r.text for r in batch.responses] == ["a fixed answer"] * 320 and batch.totals.failures == 0
    assert served == 320 and refused / (refused + served) < 0.10, stats
    assert batch.totals.refused_429 == llm.concurrency.refused == refused
    assert CAP - 2 <= llm.concurrency.limit <= CAP + 1  # settled at the cap (+1: a probe not yet refused)
    assert llm.concurrency.refusal_wait == 1.0  # the server's Retry-After reached the limit: it paces the probes


async def burst(base_url: str, n: int) -> list:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="t", max_retries=0) as client:
        return await asyncio.gather(*(client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"burst {i}"}]) for i in range(n)), return_exceptions=True)


def test_the_simulator_refuses_over_its_cap_as_the_other_server_does(capped):
    with SimulatorProcess(latency=0.25, max_in_flight=CAP) as sim:
        answers = {name: asyncio.run(burst(url, CAP + 4)) for name, url in
                   (("simulator", sim.base_url), ("other", capped.base_url))}
    for name, results in answers.items():
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(refused) == 4 and len(results) - len(refused) == CAP, (name, results)
        for err in refused:
            assert err.status_code == 429 and err.response.headers["retry-after"] == "1", name  # whole seconds
            assert set(err.body) >= {"message", "type", "param", "code"} and err.message, (name, err.body)
