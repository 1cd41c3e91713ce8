"""AdaptiveConcurrency against an in-process endpoint that caps requests in flight (429 above)."""

from __future__ import annotations

import asyncio

import pytest

from rare_core.llm.concurrency import AdaptiveConcurrency, parse_reset


async def drive(limiter: AdaptiveConcurrency, rows: int, cap: int | None, latency: float) -> dict:
    """``rows`` requests, each retried after a short pause on a 429, against a server taking ``cap`` at once."""
    server = {"in_flight": 0, "max": 0, "refused": 0, "served": 0, "full_before_first_answer": False}

    async def one() -> None:
        while True:
            ticket = await limiter.acquire()
            if cap is not None and server["in_flight"] >= cap:
                server["refused"] += 1
                await asyncio.sleep(0.001)  # a refusal comes back at once
                await limiter.release(ticket, "refused")
                await asyncio.sleep(0.02)
                continue
            server["in_flight"] += 1
            server["max"] = max(server["max"], server["in_flight"])
            server["full_before_first_answer"] |= server["max"] == limiter.max_workers and not server["served"]
            await asyncio.sleep(latency)
            server["in_flight"] -= 1
            server["served"] += 1
            await limiter.release(ticket, "ok")
            return

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.gather(*(one() for _ in range(rows)))
    return {**server, "wall": loop.time() - t0}


def test_a_capped_endpoint_is_found_with_few_refusals_and_used_fully():
    limiter = AdaptiveConcurrency(64)
    out = asyncio.run(drive(limiter, rows=320, cap=16, latency=0.05))
    share_refused = out["refused"] / (out["refused"] + out["served"])
    assert out["served"] == 320  # no row lost
    assert share_refused < 0.05, out
    assert out["max"] == 16 and 14 <= limiter.limit <= 18


def test_a_healthy_endpoint_gets_every_worker_from_the_first_wave():
    limiter = AdaptiveConcurrency(64)
    out = asyncio.run(drive(limiter, rows=320, cap=None, latency=0.5))
    assert out["max"] == 64 and out["refused"] == 0
    assert out["full_before_first_answer"]  # the paced ramp is over long before an answer comes


def test_timeouts_halve_the_limit_and_successes_probe_upward():
    limiter = AdaptiveConcurrency(32)

    async def scenario() -> None:
        ticket = await limiter.acquire()
        await limiter.release(ticket, "timeout")
        assert limiter.limit == 16
        for _ in range(4 * 16 + 1):
            ticket = await limiter.acquire()
            await limiter.release(ticket, "ok")
        assert limiter.limit == 17

    asyncio.run(scenario())


def test_one_congestion_episode_cuts_once():
    limiter = AdaptiveConcurrency(64)

    async def scenario() -> None:
        tickets = [await limiter.acquire() for _ in range(20)]
        for ticket in tickets[10:]:  # ten refusals of requests sent in the same epoch
            await limiter.release(ticket, "refused")
        assert limiter.limit == 10  # the first refused one had 11 in flight: 10 taken
        for ticket in tickets[:10]:
            await limiter.release(ticket, "ok")

    asyncio.run(scenario())


@pytest.mark.parametrize("text, seconds", [("1s", 1.0), ("6m0s", 360.0), ("120ms", 0.12), ("0.5", 0.5),
                                           ("1h2m3s", 3723.0), ("soon", None), ("", None)])
def test_parse_reset(text, seconds):
    assert parse_reset(text) == (pytest.approx(seconds) if seconds is not None else None)


async def found_cap(limiter: AdaptiveConcurrency, cap: int, wait: float) -> None:
    """The limiter after one refusal at ``cap + 1`` in flight, whose retry waits ``wait`` seconds."""
    tickets = [await limiter.acquire() for _ in range(cap + 1)]
    await limiter.release(tickets[-1], "refused", wait=wait)
    for ticket in tickets[:-1]:
        await limiter.release(ticket, "ok")
    assert limiter.limit == cap and limiter.refusal_wait == wait


# A cap of 4 found; a refused request waits 0.2 s (its Retry-After), an answer takes 0.05 s. A
# probe (the limit raised to 5) is due after 4 x 4 = 16 successes; if it is refused, its row is
# back after 0.2 s, i.e. 4 rounds of answers: only a backlog of 16 waiting rows hides that wait.

def test_no_probe_at_the_end_of_a_batch_where_its_refusal_would_hold_the_last_row():
    limiter = AdaptiveConcurrency(8)

    async def scenario() -> dict:
        await found_cap(limiter, cap=4, wait=0.2)
        return await drive(limiter, rows=20, cap=None, latency=0.05)  # the 16th answer leaves none waiting

    out = asyncio.run(scenario())
    assert out["served"] == 20 and limiter.limit == 4 and limiter.probes == 0


def test_a_probe_goes_while_the_backlog_outlasts_a_refusals_wait():
    limiter = AdaptiveConcurrency(8)

    async def scenario() -> dict:
        await found_cap(limiter, cap=4, wait=0.2)
        return await drive(limiter, rows=60, cap=None, latency=0.05)  # 40 still waiting at the 16th answer

    out = asyncio.run(scenario())
    assert out["served"] == 60 and limiter.probes >= 1 and limiter.limit > 4 and out["max"] > 4


def test_without_a_long_backlog_probes_come_after_more_successes():
    limiter = AdaptiveConcurrency(8)

    async def worker(requests: int) -> None:  # one of 4 rows in a row: nobody ever waits for a slot
        for _ in range(requests):
            ticket = await limiter.acquire()
            await asyncio.sleep(0.05)
            await limiter.release(ticket, "ok")

    async def scenario() -> None:
        await found_cap(limiter, cap=4, wait=0.2)
        await asyncio.gather(*(worker(8) for _ in range(4)))
        assert limiter.limit == 4  # 36 in a row: past the usual 16, short of 16 x (1 + 0.2 / 0.05) = 80
        await asyncio.gather(*(worker(15) for _ in range(4)))
        assert limiter.limit == 5 and limiter.probes == 1

    asyncio.run(scenario())
