"""Ctrl-C and SIGTERM as a terminal and a scheduler send them: to the whole process group of
``rare run``. The run ends in one line (exit 130), and the rerun pays at most what was in
flight. How soon it ends (the target: within 5 s of the signal) is measured by
``bench/operability.py``."""

from __future__ import annotations

import os
import signal

import pytest
from prefect_fixtures import disturbed, rare_run_process

from rare_core.storage import read_frame

CHAT = "/v1/chat/completions"
WORKERS = 4


def sent(sim) -> int:
    return sim.stats().requests_by_path.get(CHAT, 0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_just_after_doc2query_starts(tmp_path, sim, sig):
    sim.set_latency(0.3)
    proc = rare_run_process(tmp_path, sim.base_url, workers=WORKERS)
    err = disturbed(proc, lambda: sent(sim) >= 2, lambda: os.killpg(proc.pid, sig),  # the group, as a terminal does
                    "Doc2Query's first requests", timeout=60)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("│", "╭", "╰"))]
    assert proc.returncode == 130, err
    assert lines[-1].startswith("rare: interrupted: ") and lines[-1].endswith(
        "answers of this run are cached; run the same command again to resume"), err
    assert "Traceback" not in err and "Error logging to API" not in err and "EventsWorker" not in err, err
    cached = int(lines[-1].split()[2].replace(",", ""))
    paid = sent(sim)
    assert paid - cached <= WORKERS + 1, (paid, cached)  # paid and not stored: at most what was in flight
    if sig == signal.SIGTERM:
        return
    sim.set_latency(0.0)
    again = rare_run_process(tmp_path, sim.base_url, workers=WORKERS)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert len(read_frame(tmp_path / "out" / "dataset.jsonl")) > 0
