"""The Prefect API going away mid-run (a server restart that does not come back, a network
blip that lasts): the requests go on, nothing the run reports holds them, and the command ends
in one line, its files complete and nothing paid twice. How soon it ends (the target: within
120 s of the loss) is measured by ``bench/operability.py``."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from prefect_fixtures import disturbed, rare_run_process, running_prefect_server

from rare_core.storage import read_frame

CHAT = "/v1/chat/completions"
DOCS = 30


def sent(sim) -> int:
    return sim.stats().requests_by_path.get(CHAT, 0)


def server_pids(api_url: str) -> list[int]:
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    found = subprocess.run(["pgrep", "-f", f"prefect server start --host 127.0.0.1 --port {port}"],
                           capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


@pytest.mark.slow
def test_the_api_killed_at_half_of_doc2query(tmp_path, sim):
    sim.set_latency(0.3)
    with running_prefect_server(tmp_path / "prefect-home") as api_url:
        proc = rare_run_process(tmp_path, sim.base_url, env={"PREFECT_API_URL": api_url}, docs=DOCS, workers=2)
        err = disturbed(proc, lambda: sent(sim) >= DOCS // 2,
                        lambda: [os.kill(pid, signal.SIGKILL) for pid in server_pids(api_url)],
                        "half of Doc2Query", timeout=180)
    (tmp_path / "stderr.txt").write_text(err)
    lines = [line for line in err.splitlines() if line.startswith("rare: ")]
    assert "Traceback" not in err and "Error logging to API" not in err and "EventsWorker" not in err, err
    assert proc.returncode == 1, err
    assert f"the Prefect API at {api_url} stopped answering" in lines[-1] and "files are complete" in lines[-1], err
    rows = len(read_frame(tmp_path / "out" / "dataset.jsonl"))
    assert rows > 0
    paid = sent(sim)
    sim.set_latency(0.0)
    again = rare_run_process(tmp_path, sim.base_url, docs=DOCS, workers=2)  # the API gone: a local one for the rerun
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert sent(sim) == paid  # every answer of the first run was kept: nothing is paid twice
    assert len(read_frame(tmp_path / "out" / "dataset.jsonl")) == rows
