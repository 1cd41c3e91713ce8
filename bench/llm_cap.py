"""The LLM client against a server it was not written with: a capped one, a healthy one.

The server is ``tests/cap_server.py`` (a few dozen lines of aiohttp, not the project's
simulator), one process per configuration: a fixed chat completion after ``--latency``
seconds; the capped one answers 429 with ``Retry-After: 1`` while ``--cap`` requests are in
flight. Each configuration runs ``--repeats`` times, interleaved; the medians are printed.

1. capped: ``--rows`` rows through ``APILLMServing_request.converse`` with ``--workers``; rows/s over
   the cap's ideal (cap / latency). Target >= 0.9. Beside it, a minimal client told the cap (a
   semaphore of ``--cap``: what a client that knew the cap could do) and ours on the project's
   simulator with the same cap. Then where the rate goes (from the limiter's counters, sampled
   every 5 ms): time to the first send, the ramp, the limit after the first 429, the probes,
   the tail.
2. healthy: ours over a minimal async ``openai`` client (``AsyncOpenAI`` on the same aiohttp
   transport, ``asyncio.Semaphore(workers)``, no cache, no retries). Target >= 0.95.
3. 10% unusable answers (each re-asked once, pipelined): our requests/s over the minimal
   client's (which asks nothing again), and rows/s.

    .venv/bin/python bench/llm_cap.py [--rows 320 --workers 64 --latency 0.5 --cap 16 --repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402
from cap_server import CapServer  # noqa: E402

from rare_core.llm import APILLMServing_request, LLMRequest, LLMResponse  # noqa: E402
from rare_core.prompts import doc2query  # noqa: E402
from rare_sim import SimulatorProcess  # noqa: E402

SAMPLE = ROOT / "data" / "pubmedqa_sample.jsonl"
SAMPLE_EVERY = 0.005  # seconds between two samples of the limiter's counters


def requests_for(rows: int, unusable_every: int = 0) -> list[LLMRequest]:
    """Doc2Query prompts over the PubMedQA sample; every ``unusable_every``-th is answered unusably."""
    texts = [json.loads(line)["text"] for line in SAMPLE.open(encoding="utf-8")]
    return [LLMRequest(messages=doc2query.build_messages(f"Row {i}. {texts[i % len(texts)]}" + (
        " UNUSABLE" if unusable_every and i % unusable_every == 0 else "")), prompt_version=doc2query.VERSION)
        for i in range(rows)]


def reask(row: int, request: LLMRequest, response: LLMResponse) -> LLMRequest | None:
    """The follow-up of an unusable answer: the row asked again (answered usably this time)."""
    if response.ok and response.text == "unusable":
        return request.model_copy(update={"messages": [*request.messages[:-1], {
            "role": "user", "content": request.messages[-1]["content"].replace("UNUSABLE", "again")}]})
    return None


async def minimal(base_url: str, requests: list[LLMRequest], workers: int) -> float:
    """Seconds a plain AsyncOpenAI client with a semaphore takes for ``requests``."""
    t0 = time.perf_counter()
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=120,
                                http_client=openai.DefaultAioHttpClient(timeout=120))
    sem = asyncio.Semaphore(workers)

    async def one(request: LLMRequest) -> None:
        async with sem:
            await client.chat.completions.create(model="m", messages=request.messages)

    await asyncio.gather(*(one(r) for r in requests))
    await client.close()
    return time.perf_counter() - t0


def ours(base_url: str, requests: list[LLMRequest], workers: int, sample: bool = False):
    """(seconds, batch, client, samples): ``samples`` are (t, in_flight, limit, refused, waiting, successes)."""
    llm = APILLMServing_request(api_url=base_url, model_name="m", max_workers=workers, cache_mode="off", timeout=120)
    samples: list[tuple[float, int, int, int, int, int]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sampler() -> None:
        c = llm.concurrency
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, c.in_flight, int(c.limit), c.refused, c.waiting, c.successes))
            time.sleep(SAMPLE_EVERY)

    thread = threading.Thread(target=sampler, daemon=True)
    if sample:
        thread.start()
    batch = llm.converse(requests, reask)
    wall = time.perf_counter() - t0
    stop.set()
    if sample:
        thread.join()
    return wall, batch, llm, samples


def where_it_goes(samples, wall: float, cap: int, latency: float, llm: APILLMServing_request) -> dict[str, float]:
    """Where the seconds beyond the ideal went, from the limiter's samples: the cap's capacity
    left idle (slot-seconds / cap) until ``cap`` requests were first in flight (``ramp``), from
    the last moment a request waited for a slot (``tail``) and between (``middle``); and what
    each answer held its slot beyond ``latency`` (HTTP and both processes' CPU)."""
    full = next((t for t, n, *_ in samples if n >= cap), wall)
    queued = max((t for t, _, _, _, waiting, _ in samples if waiting), default=full)
    idle = {"ramp": 0.0, "middle": 0.0, "tail": 0.0}
    for (t, n, *_), (t_next, *_) in zip(samples, samples[1:] + [(wall,)]):
        phase = "ramp" if t < full else "tail" if t >= queued else "middle"
        idle[phase] += max(0, cap - n) * (t_next - t) / cap
    busy = sum(n * (t_next - t) for (t, n, *_), (t_next, *_) in zip(samples, samples[1:] + [(wall,)]))
    served = llm.concurrency.successes
    first_429 = next((i for i, s in enumerate(samples) if s[3]), None)
    answered = next((s for s in samples if s[5]), samples[-1])
    return {
        "first send (s)": next((t for t, n, *_ in samples if n), wall),
        "cap first full (s)": full,
        "limit after 1st 429": samples[min(first_429 + 1, len(samples) - 1)][2] if first_429 is not None else 0,
        "429s before the 1st answer": answered[3],
        "probes": llm.concurrency.probes,
        "final limit": int(llm.concurrency.limit),
        **{f"idle {k} (s)": v for k, v in idle.items()},
        "tail from last wait (s)": wall - queued,
        "slot held beyond latency (ms)": 1000 * (busy / served - latency) if served else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows, workers, cap, latency = args.rows, args.workers, args.cap, args.latency
    ideal = cap / latency
    print(f"rows={rows} workers={workers} latency={latency}s cap={cap} repeats={args.repeats}  (medians; "
          f"server: tests/cap_server.py in its own process)")
    runs: dict[str, list[float]] = {}
    phases: list[dict[str, float]] = []

    def note(name: str, value: float) -> None:
        runs.setdefault(name, []).append(value)

    with CapServer(cap=cap, latency=latency) as capped, CapServer(cap=0, latency=latency) as healthy, \
            SimulatorProcess(latency=latency, max_in_flight=cap) as sim:
        for url in (capped.base_url, healthy.base_url, sim.base_url):  # first-use costs (imports, TLS context)
            ours(url, requests_for(1), workers)
            asyncio.run(minimal(url, requests_for(1), 1))
        plain, unusable = requests_for(rows), requests_for(rows, unusable_every=10)
        for _ in range(args.repeats):
            before = capped.stats()
            wall, batch, llm, samples = ours(capped.base_url, plain, workers, sample=True)
            after = capped.stats()
            note("capped", rows / wall / ideal)
            note("capped 429 share", (after["refused"] - before["refused"]) / (
                after["refused"] - before["refused"] + after["served"] - before["served"]))
            note("capped lost", batch.totals.failures)
            phases.append(where_it_goes(samples, wall, cap, latency, llm))
            note("oracle", rows / asyncio.run(minimal(capped.base_url, plain, cap)) / ideal)
            wall, batch, _, _ = ours(sim.base_url, plain, workers)
            note("simulator", rows / wall / ideal)

            base = asyncio.run(minimal(healthy.base_url, plain, workers))
            wall, batch, _, _ = ours(healthy.base_url, plain, workers)
            note("healthy", base / wall)
            wall, batch, _, _ = ours(healthy.base_url, unusable, workers)
            note("unusable req", batch.totals.requests / wall / (rows / base))
            note("unusable rows", base / wall)
            note("unusable requests", batch.totals.requests)
        max_in_flight = capped.stats()["max_in_flight"]

    med = {name: statistics.median(values) for name, values in runs.items()}
    spread = {name: f"{min(values):.3f}-{max(values):.3f}" for name, values in runs.items()}
    print(f"1. capped at {cap}: ours {med['capped']:.3f} of the cap's ideal {ideal:g} req/s ({spread['capped']})"
          f"   target >= 0.9")
    print(f"   429s {med['capped 429 share']:.1%} of requests, rows lost {med['capped lost']:g}, server max in flight "
          f"{max_in_flight}; a minimal client told the cap: {med['oracle']:.3f}; ours on the project's simulator "
          f"(max_in_flight={cap}): {med['simulator']:.3f}")
    print("   where the rate goes (medians): " + ", ".join(
        f"{k} {statistics.median(p[k] for p in phases):.3g}" for k in phases[0]))
    print(f"2. healthy: ours / minimal client = {med['healthy']:.3f} ({spread['healthy']})   target >= 0.95")
    print(f"3. 10% unusable answers, each re-asked: {med['unusable requests']:g} requests, req/s "
          f"{med['unusable req']:.3f} of the minimal client's ({spread['unusable req']}), rows/s "
          f"{med['unusable rows']:.3f} (the extra requests alone cap rows/s at {rows / med['unusable requests']:.3f})")


if __name__ == "__main__":
    main()
