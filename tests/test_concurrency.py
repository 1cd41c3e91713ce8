"""AdaptiveConcurrency against an in-process endpoint that caps requests in flight (429 above)."""

from __future__ import annotations

import asyncio

import pytest

from rare_core.llm.concurrency import AdaptiveConcurrency, parse_reset


async def drive(limiter: AdaptiveConcurrency, rows: int, cap: int | None, latency: float) -> dict:
    """``rows`` requests, each retried after a short pause on a 429, against a server taking ``cap`` at once."""
    server = {"in_flight": 0, "max": 0, "refused": 0, "served": 0}

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
    rate_vs_cap = (320 / out["wall"]) / (16 / 0.05)
    assert out["served"] == 320  # no row lost
    assert share_refused < 0.05, out
    assert rate_vs_cap > 0.8, out
    assert 14 <= limiter.limit <= 18


def test_a_healthy_endpoint_gets_every_worker():
    limiter = AdaptiveConcurrency(64)
    out = asyncio.run(drive(limiter, rows=640, cap=None, latency=0.2))
    assert out["max"] == 64 and out["refused"] == 0
    assert (640 / out["wall"]) / (64 / 0.2) > 0.85  # the paced ramp costs about 0.13 s once


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
