"""Speed targets that the tests check only for correctness: each case measured, next to its target.

In: nothing (the inputs are the tests' own generators, imported from tests/). Out: one table
row per case: what it does, the measured seconds, the target and whether it was met. The exit
status is 1 when a target was missed. The seconds to exit after a signal or a lost Prefect API
are bench/operability.py's.

    .venv/bin/python bench/targets.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pandas as pd  # noqa: E402
from test_filters import synthetic_questions  # noqa: E402
from test_report_html import make_summary, realistic_frame  # noqa: E402

from rare_core.filters import QuestionDedup  # noqa: E402
from rare_core.llm import APILLMServing_request, LLMRequest, LLMResponse  # noqa: E402
from rare_core.report_html import render_html  # noqa: E402


def cached_batch(rows: int = 20_000) -> Callable[[], None]:
    """A batch of ``rows`` answers all in the response cache: no row waits on the client's window."""
    folder = tempfile.mkdtemp(prefix="rare-targets-")
    llm = APILLMServing_request(api_url="http://127.0.0.1:9/v1", model_name="m", max_workers=8,  # never called
                                cache_path=f"{folder}/cache.sqlite")
    reqs = [LLMRequest(messages=[{"role": "user", "content": f"cached number {i}"}], prompt_version="t/1")
            for i in range(rows)]
    for i, req in enumerate(reqs):
        llm.store_response(req, LLMResponse(text=f"stored {i}"))

    def run() -> None:
        batch = llm.chat(reqs)
        assert batch.totals.cache_hits == rows and batch.totals.requests == 0
    return run


def html_report(copies: int = 100) -> Callable[[], None]:
    """report.html of a 100,000-row dataset (the length chart samples 20,000)."""
    big = pd.concat([realistic_frame(1000, seed=1)] * copies, ignore_index=True)
    summary = make_summary()
    return lambda: render_html(summary, big)


def question_dedup(rows: int = 10_000) -> Callable[[], None]:
    """QuestionDedup over ``rows`` questions, a tenth of them planted near-duplicates."""
    questions, _ = synthetic_questions(rows)
    frame = pd.DataFrame({"question": questions, "rare_status": "ok"})
    return lambda: QuestionDedup().process(frame)


# (case, what it builds, {clock: target seconds}); CPU time is the robust one on a busy machine
CASES = [
    ("20,000 cached rows through the LLM client", cached_batch, {"wall": 15.0}),
    ("report.html of 100,000 rows", html_report, {"wall": 10.0}),
    ("QuestionDedup of 10,000 questions", question_dedup, {"cpu": 5.0, "wall": 15.0}),
]


def main() -> int:
    missed = 0
    print("| case | clock | measured s | target s | met |")
    print("|---|---|---:|---:|---|")
    for name, build, targets in CASES:
        run = build()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        took = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
        for clock, target in targets.items():
            met = took[clock] < target
            missed += not met
            print(f"| {name} | {clock} | {took[clock]:.2f} | < {target:g} | {'yes' if met else 'NO'} |", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
