"""End-to-end scale benchmark: N passages through ``rare run`` against the built-in simulator.

In: ``--docs N [N ...]`` (passages; default 100,000), one or more ``--config "NAME=EXTRA ARGS"``
(extra ``rare run`` arguments of that configuration, e.g. ``"2 dask workers=--shards 20
--dask-workers 2"``; default one configuration ``"one process="``), optionally ``--corpus FILE``
(a real corpus with ``id`` and ``text`` columns to sample N passages from; default the seeded
synthetic corpus of ``bench/corpus_gen.py``), ``--scratch DIR`` (default /tmp/rare-scale).

For each N the corpus is written once to ``{scratch}/corpus/`` as jsonl (``id``, ``text``) and
reused. Each (N, configuration) runs, from empty folders (nothing served from a cache),

    rare run --input CORPUS --output {scratch}/{slug}/out --cache-path {scratch}/{slug}/cache EXTRA

with no ``--base-url``, so every answer is SIMULATED (the simulator's default latency, 0 s).
While it runs, the RSS of the ``rare`` process and all its descendants (Dask workers, the
simulator, the temporary Prefect server; the JVM runs inside the Python process) is summed
every 0.25 s.

Out: one table on stdout (wall time, dataset rows/s, LLM requests/s, peak tree RSS, with ratios
against the first configuration of the same N), the seconds of each step (``summary.json``)
and of the phases seen from the files' times, which processes held the memory at the peak;
the same as JSON in ``{scratch}/scale_results.json``. Each run's stdout, stderr and RSS
samples stay in ``{scratch}/{slug}/``.

    .venv/bin/python bench/scale.py --docs 2000 --config "one process="
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RARE = ROOT / ".venv" / "bin" / "rare"
SAMPLE_SECONDS = 0.25
STEP_ENTRY = re.compile(r"^.*_(?P<step>step\d+)(\.shards|(-[0-9a-f]{16})?\.[a-z]+(\.meta\.json)?)$")  # step file or shard folder
MIB = 1024 * 1024
ROOT_LABEL = "rare (Python + JVM)"
LOG_LABELS = (ROOT_LABEL, "simulator", "prefect server", "dask")  # the columns of rss.csv beside the total
SIMULATED_NOTE = "All answers are SIMULATED (built-in simulator, latency 0 s): these figures measure the pipeline, not a model."


# -- corpus -----------------------------------------------------------------------------------

def corpus_file(scratch: Path, docs: int, seed: int, source: Path | None) -> Path:
    """The jsonl corpus of ``docs`` passages (``id``, ``text``), written once and then reused."""
    tag = f"sample-{source.stem}" if source else "synthetic"
    path = scratch / "corpus" / f"{tag}_{docs}_seed{seed}.jsonl"
    if path.is_file():
        return path
    import pandas as pd

    from rare_core.storage import read_frame, write_frame

    started = time.perf_counter()
    if source:
        frame = read_frame(source)
        if len(frame) < docs:
            raise SystemExit(f"{source} has {len(frame):,} rows, fewer than --docs {docs:,}")
        frame = frame.sample(n=docs, random_state=seed).sort_index()
    else:
        from bench.corpus_gen import generate

        frame = generate(docs, seed=seed)
    frame = pd.DataFrame({"id": frame["id"].astype(str), "text": frame["text"]})
    write_frame(frame, path)  # atomic: an interrupted generation leaves no file to reuse
    print(f"corpus: {docs:,} passages -> {path} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return path


# -- configurations ---------------------------------------------------------------------------

@dataclass
class Configuration:
    name: str
    args: list[str]


def parse_configuration(text: str) -> Configuration:
    """``NAME=EXTRA ARGS`` (the args split as a shell would)."""
    name, sep, extra = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--config expects NAME=EXTRA ARGS, got {text!r}")
    return Configuration(name.strip(), shlex.split(extra))


def slug(docs: int, name: str) -> str:
    return f"n{docs}-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "config")


# -- memory sampling --------------------------------------------------------------------------

def process_label(proc: psutil.Process, root_pid: int) -> str:
    """What a process of the tree is, from its command line."""
    if proc.pid == root_pid:
        return ROOT_LABEL
    try:
        cmdline = " ".join(proc.cmdline())
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "gone"
    if "rare_sim" in cmdline:
        return "simulator"
    if "prefect.server" in cmdline or "prefect server" in cmdline:
        return "prefect server"
    if "dask" in cmdline or "distributed" in cmdline or "spawn_main" in cmdline:
        return "dask"  # LocalCluster's workers are multiprocessing-spawned Pythons
    if "resource_tracker" in cmdline:
        return "multiprocessing tracker"
    if "java" in name:
        return "java"
    return name


@dataclass
class MemoryTrace:
    """The peak of the tree's summed RSS, what held it then, and each kind's own peak."""

    peak_bytes: int = 0
    peak_at_seconds: float = 0.0
    at_peak: dict[str, int] = field(default_factory=dict)
    peak_by_label: dict[str, int] = field(default_factory=dict)
    max_processes: int = 0
    peak_pss_bytes: int = 0


class TreeSampler(threading.Thread):
    """Sums the RSS of ``pid`` and all its descendants every ``interval`` seconds until stopped;
    each sample is appended to the csv ``log`` as it is taken (a long run can be watched)."""

    def __init__(self, pid: int, log: Path, interval: float = SAMPLE_SECONDS) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.trace = pid, interval, MemoryTrace()
        self.log_path = log
        self._stop_event = threading.Event()
        self._labels: dict[int, str] = {}
        self._t0 = time.perf_counter()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        with open(self.log_path, "w", encoding="utf-8", buffering=1) as self._log:
            self._log.write("seconds,rss_mib,processes," + ",".join(f"{k}_mib" for k in LOG_LABELS) + ",pss_mib\n")
            while not self._stop_event.is_set():
                self.sample(root)
                self._stop_event.wait(self.interval)

    def sample(self, root: psutil.Process) -> None:
        try:
            tree = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return
        by_label: dict[str, int] = {}
        pss = 0
        for proc in tree:
            try:
                memory = proc.memory_full_info()  # rss, and pss: shared pages divided among their users
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if proc.pid not in self._labels:
                self._labels[proc.pid] = process_label(proc, self.pid)
            label = self._labels[proc.pid]
            by_label[label] = by_label.get(label, 0) + memory.rss
            pss += memory.pss
        total, now, trace = sum(by_label.values()), time.perf_counter() - self._t0, self.trace
        self._log.write(f"{now:.2f},{mib(total)},{len(tree)}," + ",".join(str(mib(by_label.get(k, 0))) for k in LOG_LABELS)
                        + f",{mib(pss)}\n")
        trace.peak_pss_bytes = max(trace.peak_pss_bytes, pss)
        trace.max_processes = max(trace.max_processes, len(tree))
        for label, rss in by_label.items():
            trace.peak_by_label[label] = max(trace.peak_by_label.get(label, 0), rss)
        if total > trace.peak_bytes:
            trace.peak_bytes, trace.peak_at_seconds, trace.at_peak = total, round(now, 2), by_label

    def stop(self) -> MemoryTrace:
        self._stop_event.set()
        self.join()
        return self.trace


# -- one run ----------------------------------------------------------------------------------

@dataclass
class RunResult:
    docs: int
    config: str
    args: list[str]
    folder: str
    exit_code: int
    wall_seconds: float
    dataset_rows: int | None = None
    llm_requests: int | None = None
    judge_requests: int | None = None
    rows_per_second: float | None = None
    requests_per_second: float | None = None
    llm_step_requests_per_second: float | None = None
    peak_rss_mib: float = 0.0
    peak_pss_mib: float | None = None
    peak_rss_at_seconds: float | None = 0.0
    rss_at_peak_mib: dict[str, float] = field(default_factory=dict)
    peak_rss_by_process_mib: dict[str, float] = field(default_factory=dict)
    max_processes: int = 0
    step_seconds: dict[str, float] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    invocations: list[dict[str, Any]] = field(default_factory=list)  # with --resume: each `rare run` of this result
    error: str | None = None


def rare_command(corpus: Path, folder: Path, extra: list[str]) -> list[str]:
    return [str(RARE), "run", "--input", str(corpus), "--output", str(folder / "out"),
            "--cache-path", str(folder / "cache"), *extra]


def earlier_invocations(folder: Path) -> list[dict[str, Any]]:
    """The ``rare run`` invocations already made in ``folder`` (``--resume``), read back from their
    memory logs ``rss*.csv``: wall seconds (the last sample's time, within 0.25 s), peak tree RSS
    and the processes at that peak. Read from the logs, not from a record written at the end,
    because an invocation stopped with this bench (a session ending, a kill) writes no end."""
    found = []
    for log in sorted(folder.glob("rss*.csv"), key=lambda p: (len(p.name), p.name)):
        lines = log.read_text(encoding="utf-8").strip().splitlines()
        if len(lines) < 2:
            continue
        header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
        peak = max(rows, key=lambda row: float(row[1]))
        labels = [name for name in header[3:] if name.removesuffix("_mib") in LOG_LABELS]
        found.append({"log": log.name, "wall_seconds": float(rows[-1][0]), "peak_rss_mib": float(peak[1]),
                      "rss_at_peak_mib": {name.removesuffix("_mib"): float(value)
                                          for name, value in zip(labels, peak[3:]) if float(value)},
                      "max_processes": max(int(row[2]) for row in rows),
                      "peak_pss_mib": (max(float(row[header.index("pss_mib")]) for row in rows)
                                       if "pss_mib" in header else None)})
    return found


def run_once(docs: int, config: Configuration, corpus: Path, scratch: Path, common: list[str],
             resume: bool = False) -> RunResult:
    """Run one configuration from empty folders, sampling the tree's memory; read its summary.

    ``resume``: keep the folder of an earlier, stopped invocation of the same configuration and
    run ``rare run`` again in it (the step caches serve the finished shards); the result's wall
    time is the sum over the invocations and its peak the highest of theirs."""
    folder = scratch / slug(docs, config.name)
    earlier = earlier_invocations(folder) if resume and folder.is_dir() else []
    if not earlier:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    command = rare_command(corpus, folder, [*common, *config.args])
    (folder / "command.txt").write_text(shlex.join(command) + "\n", encoding="utf-8")
    print(f"[{config.name}] N={docs:,}{f' (invocation {len(earlier) + 1})' if earlier else ''}: "
          f"{shlex.join(command)}", file=sys.stderr, flush=True)
    log = folder / (f"rss.{len(earlier)}.csv" if earlier else "rss.csv")
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "ab" if earlier else "wb") as err:
        started_epoch, started = time.time(), time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        sampler = TreeSampler(proc.pid, log)
        sampler.start()
        try:
            exit_code = proc.wait()
        except BaseException:  # Ctrl-C: leave no run behind
            stop_tree(proc.pid)
            raise
        wall = time.perf_counter() - started
        ended_epoch = time.time()
        trace = sampler.stop()
    result = RunResult(docs=docs, config=config.name, args=config.args, folder=str(folder), exit_code=exit_code,
                       wall_seconds=round(wall, 2), peak_rss_mib=mib(trace.peak_bytes),
                       peak_pss_mib=mib(trace.peak_pss_bytes),
                       peak_rss_at_seconds=trace.peak_at_seconds,
                       rss_at_peak_mib={k: mib(v) for k, v in sorted(trace.at_peak.items(), key=lambda kv: -kv[1])},
                       peak_rss_by_process_mib={k: mib(v) for k, v in trace.peak_by_label.items()},
                       max_processes=trace.max_processes)
    if earlier:
        result.invocations = [*earlier, {"log": log.name, "wall_seconds": result.wall_seconds,
                                         "peak_rss_mib": result.peak_rss_mib, "peak_pss_mib": result.peak_pss_mib,
                                         "exit_code": exit_code}]
        known = [i["peak_pss_mib"] for i in result.invocations if i.get("peak_pss_mib") is not None]
        result.peak_pss_mib = max(known) if len(known) == len(result.invocations) else None
        result.wall_seconds = round(sum(i["wall_seconds"] for i in result.invocations), 2)
        result.max_processes = max(i.get("max_processes", result.max_processes) for i in result.invocations)
        highest = max(earlier, key=lambda i: i["peak_rss_mib"])
        if highest["peak_rss_mib"] > result.peak_rss_mib:
            result.peak_rss_mib, result.rss_at_peak_mib = highest["peak_rss_mib"], highest["rss_at_peak_mib"]
            result.peak_rss_at_seconds = None  # in an earlier invocation (its log says when)
    summary_path = folder / "out" / "summary.json"
    if exit_code != 0 or not summary_path.is_file():
        result.error = failure_reason(folder / "stderr.txt")
        return result
    add_summary(result, json.loads(summary_path.read_text(encoding="utf-8")))
    if not earlier:  # the files' times of a resumed run mix its invocations
        result.phase_seconds = file_phases(folder, started_epoch, ended_epoch)
    return result


def stop_tree(pid: int) -> None:
    """Terminate process ``pid`` and its descendants (kill those still there after 10 s)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in tree:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    for proc in psutil.wait_procs(tree, timeout=10)[1]:
        proc.kill()


def mib(n: int) -> float:
    return round(n / MIB, 1)


def failure_reason(path: Path, n: int = 5) -> str:
    """The ``rare: ...`` error line(s) of a failed run's stderr, else its last ``n`` lines."""
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return "\n".join([line for line in lines if line.startswith("rare: ")] or lines[-n:])


def add_summary(result: RunResult, summary: dict[str, Any]) -> None:
    """Rows, requests and step seconds from the run's ``summary.json``. The judge's requests
    (``extra.judge_requests`` of the distill step) are not in ``totals.requests``: added here."""
    steps = summary.get("steps", [])
    judge = sum(int(s.get("extra", {}).get("judge_requests", 0) or 0) for s in steps)
    requests = int(summary.get("totals", {}).get("requests", 0)) + judge
    llm_seconds = sum(s.get("wall_seconds") or 0.0 for s in steps if s.get("requests"))
    result.dataset_rows = int(summary.get("dataset_rows", 0))
    result.llm_requests, result.judge_requests = requests, judge
    result.rows_per_second = round(result.dataset_rows / result.wall_seconds, 2)
    result.requests_per_second = round(requests / result.wall_seconds, 2)
    result.llm_step_requests_per_second = round(requests / llm_seconds, 1) if llm_seconds else None
    result.step_seconds = {s["step"]: s.get("wall_seconds") for s in steps}
    result.steps = [{k: s.get(k) for k in ("step", "status", "rows_in", "rows_out", "failed", "requests",
                                          "wall_seconds", "extra")} for s in steps]


def file_phases(folder: Path, started: float, ended: float) -> dict[str, float]:
    """Where the wall time went, from the files' modification times. Each step's output is a
    file ``{prefix}_step{N}-{key}.{ext}`` or, in a sharded run, a folder ``{prefix}_step{N}.shards/``;
    a step ends when its last file is written. Phases: ``startup + load`` (process start to the
    end of step 0, the input's copy: imports, Prefect server, reading and splitting the input),
    each step from the end of the one before it to its own end (named by its ``.meta.json``
    cache key: the step's work plus task overhead and step-file I/O; with steps running
    side by side over shards, the time between their ends), ``export + report`` (to the last
    file of ``out/``) and ``exit`` (to the process's end)."""
    outputs = [p.stat().st_mtime for p in (folder / "out").rglob("*") if p.is_file()]
    ends = sorted((step_end(files), step_name(step, files)) for step, files in step_outputs(folder / "cache").items())
    if not ends or not outputs:
        return {}
    phases, previous = {}, started
    for index, (end, name) in enumerate(ends):
        name = "startup + load" if index == 0 else name
        phases[name] = round(phases.get(name, 0.0) + end - previous, 2)
        previous = end
    phases["export + report"] = round(max(outputs) - previous, 2)
    phases["exit"] = round(ended - max(outputs), 2)
    return phases


def step_outputs(cache: Path) -> dict[str, list[Path]]:
    """The files of each step (``..._step{N}``), data and ``.meta.json``, by step."""
    steps: dict[str, list[Path]] = {}
    for entry in cache.iterdir():
        match = STEP_ENTRY.match(entry.name)
        if match:
            steps.setdefault(match["step"], []).extend(sorted(entry.iterdir()) if entry.is_dir() else [entry])
    return steps


def step_end(files: list[Path]) -> float:
    return max(p.stat().st_mtime for p in files if not p.name.endswith(".meta.json"))


def step_name(step: str, files: list[Path]) -> str:
    """The step's name from the cache key of one of its ``.meta.json`` files (``doc2query-...``), else ``step``."""
    for meta in (p for p in files if p.name.endswith(".meta.json")):
        try:
            return json.loads(meta.read_text(encoding="utf-8"))["cache_key"].split("-", 1)[0]
        except (OSError, ValueError, KeyError, AttributeError):
            continue
    return step


# -- report -----------------------------------------------------------------------------------

def add_ratios(results: list[RunResult]) -> list[dict[str, Any]]:
    """Each result as a dict, with rate and RSS ratios against the first configuration of its N."""
    first: dict[int, RunResult] = {}
    rows = []
    for r in results:
        base = first.setdefault(r.docs, r)
        row = asdict(r)
        row["rate_ratio"] = ratio(r.rows_per_second, base.rows_per_second)
        row["rss_ratio"] = ratio(r.peak_rss_mib, base.peak_rss_mib)
        rows.append(row)
    return rows


def ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value is not None and base else None


def fmt(value: Any, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def render(rows: list[dict[str, Any]]) -> str:
    main = table(
        ["config", "N", "exit", "wall s", "rows", "rows/s", "LLM req", "req/s", "req/s in LLM steps",
         "peak RSS MiB", "peak PSS MiB", "procs", "rate ratio", "RSS ratio"],
        [[r["config"], f"{r['docs']:,}", str(r["exit_code"]), fmt(r["wall_seconds"]), fmt(r["dataset_rows"], ","),
          fmt(r["rows_per_second"]), fmt(r["llm_requests"], ","), fmt(r["requests_per_second"]),
          fmt(r["llm_step_requests_per_second"]), fmt(r["peak_rss_mib"], ",.0f"), fmt(r.get("peak_pss_mib"), ",.0f"),
          str(r["max_processes"]),
          fmt(r["rate_ratio"], ".3f"), fmt(r["rss_ratio"], ".3f")] for r in rows])
    steps = list(dict.fromkeys(k for r in rows for k in r["step_seconds"]))
    phases = list(dict.fromkeys(k for r in rows for k in r["phase_seconds"]))
    step_table = table(["config", "N", *[f"{s} s" for s in steps], "|", *[f"{p} s" for p in phases]],
                       [[r["config"], f"{r['docs']:,}", *[fmt(r["step_seconds"].get(s)) for s in steps], "|",
                         *[fmt(r["phase_seconds"].get(p)) for p in phases]] for r in rows])
    memory = "\n".join(
        f"{r['config']} (N={r['docs']:,}): peak {fmt(r['peak_rss_mib'], ',.0f')} MiB at {fmt(r['peak_rss_at_seconds'], '.0f')} s = "
        + ", ".join(f"{k} {v:,.0f}" for k, v in r["rss_at_peak_mib"].items()) for r in rows)
    errors = "\n".join(f"{r['config']} (N={r['docs']:,}) FAILED (exit {r['exit_code']}):\n{r['error']}"
                       for r in rows if r["error"])
    parts = [SIMULATED_NOTE, "", main, ""]
    if steps or phases:
        parts += ["Seconds per step (summary.json wall_seconds) | phases from file times (startup .. exit):", step_table, ""]
    parts += ["Peak tree RSS by process (MiB, at the peak sample):", memory]
    return "\n".join(parts + (["", errors] if errors else []))


def machine() -> dict[str, Any]:
    """Where and on what code the figures were taken (the commit, and whether the tree had changes)."""
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
            "python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain", "-uno"))}


# -- command line -----------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000], metavar="N", help="passages per run (one or more)")
    parser.add_argument("--config", type=parse_configuration, action="append", metavar="NAME=ARGS",
                        help='a configuration: name and extra rare-run args (repeatable; default "one process=")')
    parser.add_argument("--common-args", default="", metavar="ARGS",
                        help='rare-run args added to every configuration, e.g. "--max-workers 64"')
    parser.add_argument("--no-response-cache", action="store_true",
                        help="turn the SQLite response cache off (--set llm.cache_mode=off); by default it is on, "
                             "in an empty folder, so it is written but never read from")
    parser.add_argument("--corpus", type=Path, help="real corpus (id, text) to sample N passages from; default synthetic")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/rare-scale"))
    parser.add_argument("--resume", action="store_true",
                        help="continue a configuration's stopped run in its folder instead of starting over "
                             "(wall time summed over the invocations, peak RSS the highest)")
    args = parser.parse_args()
    configs = args.config or [parse_configuration("one process=")]
    common = shlex.split(args.common_args) + (["--set", "llm.cache_mode=off"] if args.no_response_cache else [])
    scratch = args.scratch.resolve()

    out = scratch / "scale_results.json"
    payload = {"note": SIMULATED_NOTE, "simulated": True, "machine": machine(),  # before the runs: the code they ran
               "common_args": common, "corpus": str(args.corpus) if args.corpus else "synthetic (bench/corpus_gen.py)",
               "seed": args.seed, "sample_seconds": SAMPLE_SECONDS, "results": []}
    results = []
    for docs in args.docs:
        corpus = corpus_file(scratch, docs, args.seed, args.corpus and args.corpus.resolve())
        for config in configs:
            results.append(run_once(docs, config, corpus, scratch, common, args.resume))
            payload["results"] = add_ratios(results)  # written after every run: a long series keeps what it has
            out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(render(payload["results"]))
    print(f"\n-> {out}")


if __name__ == "__main__":
    main()
