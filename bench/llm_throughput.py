"""LLM-stage throughput against the simulator (a separate process, real HTTP on loopback).

Sends ``--rows`` Doc2Query-shaped requests with ``--workers`` in flight and ``--latency`` seconds
of simulated model time each, and prints achieved requests/second divided by the ideal
(workers / latency), plus the client's CPU time per request. Target: ratio >= 0.9 at
2,000 rows, 64 workers, 0.5 s.

    .venv/bin/python bench/llm_throughput.py [--rows 2000 --workers 64 --latency 0.5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rare_core.llm import APILLMServing_request, LLMRequest  # noqa: E402
from rare_core.prompts import doc2query  # noqa: E402
from rare_sim import SimulatorProcess  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "pubmedqa_sample.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()

    texts = [json.loads(line)["text"] for line in SAMPLE.open(encoding="utf-8")]
    requests = [LLMRequest(messages=doc2query.build_messages(f"Row {i}. {texts[i % len(texts)]}"),
                           prompt_version=doc2query.VERSION) for i in range(args.rows)]
    with SimulatorProcess(latency=args.latency) as sim:
        llm = APILLMServing_request(api_url=sim.base_url, model_name="bench", max_workers=args.workers,
                                    cache_mode="off", timeout=60)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        batch = llm.chat(requests)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        stats = sim.stats()

    ok = sum(r.ok for r in batch.responses)
    achieved = args.rows / wall
    ideal = args.workers / args.latency
    print(f"rows={args.rows} workers={args.workers} latency={args.latency}s  (answers are simulated)")
    print(f"ok={ok} failures={batch.totals.failures} retries={batch.totals.retries} "
          f"server_max_in_flight={stats.max_in_flight}")
    print(f"wall={wall:.2f}s achieved={achieved:.1f} req/s ideal={ideal:.1f} req/s")
    print(f"throughput ratio (achieved/ideal) = {achieved / ideal:.3f}   target >= 0.9")
    print(f"client CPU per request = {1000 * cpu / args.rows:.2f} ms")


if __name__ == "__main__":
    main()
