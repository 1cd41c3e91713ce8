"""What a user sees where the pipeline lives: one ``rare`` command per case, as a user runs it.

For each case (an interrupt from the terminal's process group, a Prefect API that is down or
killed mid-run, an endpoint that is not there or not an API, a judge that never answers, a full
disk, a damaged cache, bad input...), prints one table row: the last ``rare:`` line the command
printed, its exit status, the seconds it took to exit (from the signal or the kill where there
is one, else from the start) next to the target where there is one, and the chat requests the
simulator counted (every answer is SIMULATED). The tests check what the user sees in these cases;
how soon the command exits is measured here only. The full-disk cases mount a small tmpfs and
need root; they are left out otherwise.

    .venv/bin/python bench/operability.py [--only NAME[,NAME...]]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from deployments.local_server import prefect_server  # noqa: E402
from rare_core.verify import JUDGE_SYSTEM  # noqa: E402
from rare_sim import FaultSpec, SimulatorProcess  # noqa: E402

SAMPLE = ROOT / "data" / "pubmedqa_sample.jsonl"
CHAT = "/v1/chat/completions"


class Case:
    """One command: its arguments, environment, and what happens while it runs."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None,
                 during: Callable[["Run"], float | None] | None = None, setup: Callable[[Path], None] | None = None,
                 faults: list[FaultSpec] | None = None, latency: float = 0.0, disk: str | None = None,
                 exit_within: float | None = None) -> None:
        self.name, self.args, self.env, self.during, self.setup = name, args, env or {}, during, setup
        self.faults, self.latency, self.disk = faults or [], latency, disk  # disk: a tmpfs size, e.g. "96k"
        self.exit_within = exit_within  # the target: seconds from the signal or the kill to the exit


class Run:
    def __init__(self, proc: subprocess.Popen, sim: SimulatorProcess, folder: Path) -> None:
        self.proc, self.sim, self.folder = proc, sim, folder

    def sent(self) -> int:
        return self.sim.stats().requests_by_path.get(CHAT, 0)

    def wait_for(self, requests: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.sent() < requests and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)


def interrupt(sig: int) -> Callable[[Run], float | None]:
    def act(run: Run) -> float | None:
        run.wait_for(2)
        os.killpg(run.proc.pid, sig)
        return time.monotonic()
    return act


def kill_api(run: Run) -> float | None:
    run.wait_for(15)
    port = run.folder.joinpath("api_port").read_text()
    pids = subprocess.run(["pgrep", "-f", f"prefect server start --host 127.0.0.1 --port {port}"],
                          capture_output=True, text=True).stdout.split()
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    return time.monotonic()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def damaged_cache(folder: Path) -> None:
    cache = folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "llm_responses.sqlite").write_bytes(b"this is not an SQLite file" * 100)


def mixed_ids(folder: Path) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()[:6]]
    rows[3]["id"] = 4
    (folder / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def cases() -> list[Case]:
    endpoint = ["--base-url", "{sim}", "--model", "sim-model"]
    return [
        Case("ctrl-c just after Doc2Query starts", ["--limit", "30", *endpoint, "--max-workers", "4"],
             during=interrupt(signal.SIGINT), latency=0.3, exit_within=5.0),
        Case("SIGTERM just after Doc2Query starts", ["--limit", "30", *endpoint, "--max-workers", "4"],
             during=interrupt(signal.SIGTERM), latency=0.3, exit_within=5.0),
        Case("Prefect API down at the start", ["--limit", "5", *endpoint],
             env={"PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api"}),
        Case("Prefect API killed at half of Doc2Query", ["--limit", "30", *endpoint, "--max-workers", "2"],
             env={"PREFECT_API_URL": "{api}"}, during=kill_api, latency=0.3, exit_within=120.0),
        Case("rare serve without PREFECT_API_URL", ["serve"]),
        Case("endpoint: nothing listens", ["--limit", "10", "--base-url", f"http://127.0.0.1:{closed_port()}/v1",
                                            "--model", "m"]),
        Case("endpoint: a proxy's HTML login page", ["--limit", "10", *endpoint],
             faults=[FaultSpec(kind="html_page", count=10_000)]),
        Case("judge never returns a verdict", ["--limit", "10", *endpoint, "--set", "verify.method=judge"],
             faults=[FaultSpec(kind="malformed_json", count=10_000, match=JUDGE_SYSTEM[:40])]),
        Case("response cache on a full disk", ["--limit", "40", *endpoint, "--set", "llm.cache_path={disk}/r.sqlite"],
             disk="96k"),
        Case("cache folder on a full disk", ["--limit", "40", *endpoint, "--cache-path", "{disk}"], disk="512k"),
        Case("output under a regular file", ["--limit", "5", *endpoint, "--output", f"{SAMPLE}/out"]),
        Case("damaged response cache (header)", ["--limit", "5", *endpoint], setup=damaged_cache),
        Case("ids of mixed types", ["--input", "{folder}/mixed.jsonl", *endpoint], setup=mixed_ids),
        Case("--set hardneg.numneg=5", ["--limit", "5", "--set", "hardneg.numneg=5"]),
        Case("rare run without --input", ["--no-input"]),
    ]


def command(case: Case, folder: Path, sim: SimulatorProcess, api: str | None, disk: Path | None) -> list[str]:
    args = [a.format(sim=sim.base_url, api=api, folder=folder, disk=disk) for a in case.args]
    if args and args[0] == "serve":
        return ["serve", "--input", str(SAMPLE)]
    if args == ["--no-input"]:
        return ["run", "--output", str(folder / "out")]
    base = ["run"] + ([] if "--input" in args else ["--input", str(SAMPLE)])
    base += ["--output", str(folder / "out")] if "--output" not in args else []
    base += ["--cache-path", str(folder / "cache")] if "--cache-path" not in args else []
    return base + args


def run_case(case: Case, sim: SimulatorProcess, scratch: Path) -> dict:
    folder = Path(tempfile.mkdtemp(dir=scratch))
    if case.setup:
        case.setup(folder)
    sim.reset()
    sim.set_latency(case.latency)
    if case.faults:
        sim.inject(case.faults)
    with (prefect_server(folder / "prefect-home") if "{api}" in json.dumps(case.env) else _nothing()) as api, \
            (small_disk(folder / "disk", case.disk) if case.disk else _nothing()) as disk:
        if api:
            (folder / "api_port").write_text(api.rsplit(":", 1)[1].split("/")[0])
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120",
               **{k: v.format(api=api) for k, v in case.env.items()}}
        if "PREFECT_API_URL" not in case.env:
            env.pop("PREFECT_API_URL", None)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "deployments.cli", *command(case, folder, sim, api, disk)],
                                cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        mark = case.during(Run(proc, sim, folder)) if case.during else None
        try:
            _, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        took = time.monotonic() - (mark or started)
    said = [line for line in err.splitlines() if line.startswith("rare: ")]
    return {"case": case.name, "says": said[-1] if said else (err.strip().splitlines() or ["(nothing)"])[-1],
            "exit": proc.returncode, "seconds": round(took, 1), "target": case.exit_within,
            "met": None if case.exit_within is None else took < case.exit_within,
            "requests": sim.stats().requests_by_path.get(CHAT, 0),
            "stderr_lines": len([line for line in err.splitlines() if line.strip()])}


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated case names (substrings)")
    args = parser.parse_args()
    chosen = [c for c in cases() if not args.only or any(o in c.name for o in args.only.split(","))]
    if os.geteuid() != 0:
        print("not root: the full-disk cases are left out", file=sys.stderr)
        chosen = [c for c in chosen if not c.disk]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rare-operability-") as scratch, SimulatorProcess(latency=0.0) as sim:
        for case in chosen:
            rows.append(run_case(case, sim, Path(scratch)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| case | what the user sees (last line) | exit | s to exit | target s | requests | stderr lines |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        says = r["says"].replace("|", "\\|")
        target = "" if r["target"] is None else f"< {r['target']:g}" + ("" if r["met"] else " MISSED")
        print(f"| {r['case']} | {says} | {r['exit']} | {r['seconds']} | {target} | {r['requests']} "
              f"| {r['stderr_lines']} |")


if __name__ == "__main__":
    main()
