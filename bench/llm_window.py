"""The LLM client on a very large batch: requests/second and the memory the batch costs.

Sends ``--rows`` distinct tiny requests (one short user message each) through
:meth:`APILLMServing_request.chat` against the simulator (a separate process, real HTTP on
loopback) with ``--latency`` seconds of simulated model time, ``--workers`` in flight and the
response cache off, so every row is a request. Prints the rows answered, requests/second over
the whole ``chat`` call, the client's CPU time per request (this process only: less sensitive
than requests/second to other load on the machine) and the increase of the process's peak RSS
from just before the call (the requests are built before it: their memory is not counted) to
just after it.

    .venv/bin/python bench/llm_window.py [--rows 100000 --workers 64 --latency 0]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rare_core.llm import APILLMServing_request, LLMRequest  # noqa: E402
from rare_sim import SimulatorProcess  # noqa: E402


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()

    requests = [LLMRequest(messages=[{"role": "user", "content": f"q{i}"}], prompt_version="bench/1")
                for i in range(args.rows)]
    with SimulatorProcess(latency=args.latency) as sim:
        llm = APILLMServing_request(api_url=sim.base_url, model_name="bench", max_workers=args.workers,
                                    cache_mode="off", timeout=60)
        rss0 = peak_rss_mib()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        batch = llm.chat(requests)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        rss = peak_rss_mib() - rss0

    ok = sum(r.ok for r in batch.responses)
    print(f"rows={args.rows} workers={args.workers} latency={args.latency}s cache=off  (answers are simulated)")
    print(f"ok={ok} failures={batch.totals.failures} retries={batch.totals.retries}")
    print(f"wall={wall:.2f}s  {args.rows / wall:.0f} req/s  client CPU {1000 * cpu / args.rows:.2f} ms/request  "
          f"peak RSS +{rss:.0f} MiB")


if __name__ == "__main__":
    main()
