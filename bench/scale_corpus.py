"""The corpus side of a sharded ``rare run`` at scale: what grows with the corpus and needs no LLM.

In: ``--input FILE`` (the documents, ``id`` + ``text``, any format ``rare run`` reads; default
``/tmp/c1m.jsonl``, 1,000,000 passages; only read), ``--shards N`` (default 100, as ``--shards
auto`` gives 1M documents), ``--questions FILE`` (a file with ``id`` and ``question`` per
document in the input's order, e.g. ``/tmp/c1m_full.jsonl``; only read, only the lines of the
searched shards are decoded; without it, or where its ids do not match, a row's question is 8
words of its own text), ``--search-shards K`` (default 3: the first, the middle and the last
shard), ``--scratch DIR`` (default ``/tmp/rare-scale-corpus``, emptied first; everything in it
but ``results.json`` is deleted at the end unless ``--keep``), ``--no-write`` (skip phase 4).

What it measures, in this one process (the JVM that pyjnius starts lives inside it), with
seconds per phase and this process's RSS (psutil, sampled every 0.2 s in a thread, plus the
kernel's high-water mark ``VmHWM``, reset at each phase start through ``/proc/self/clear_refs``
so it catches peaks shorter than a sample):

1. ``count``: ``count_documents(config)`` (what ``load_input`` does first), and ``load``: the
   streaming load of a sharded run, as ``tasks.io.load_input`` does it but without the Prefect
   task: ``write_shards`` (``iter_documents`` chunk by chunk into one step-0 file per shard,
   ``cache_type`` jsonl, each hashed by ``ArtifactRef.write``) with a ``CorpusWriter`` (the corpus
   parquet). Compared with ``read_frame(input)`` of the whole file, in a subprocess (its own peak).
2. ``bm25 prepare``: ``BM25HardNeg(config=BM25HardNegConfig(corpus_path=<corpus parquet>,
   index_dir=<scratch>)).prepare()``: the corpus read back, fingerprinted, written as Anserini's
   collection and indexed by Lucene, once (from an empty index folder: nothing reused).
3. ``search shard i``: ``BM25HardNeg(same config).process(shard + question column)`` for each
   searched shard (the shard's step-0 file read back as a step would): the per-process memo
   serves the index built in 2, so this is the search, the negatives' selection and the texts
   read back from the corpus parquet. RSS after each shard too.
4. ``write final (stream)`` / ``write final (concat)``: the final dataset written from every
   shard's file (the step-0 shards stand in for the last step's: ``id``, ``text`` only, so the
   bytes are fewer than a real dataset's) with ``FrameWriter`` one shard at a time vs
   ``write_frame(pd.concat(all shards))``, as jsonl; each in a subprocess (separate peaks).

Out: a table on stdout (phase, seconds, peak RSS MiB sampled and by VmHWM, RSS at the end of
the phase, anonymous/file-backed split at the peak sample) and the same as JSON in
``{scratch}/results.json`` with the environment, the sizes of the files written and the RSS
timeline of the main process.

What it does not measure: anything with an LLM (Doc2Query, ReasonDistill, verification), the
Prefect flow, task submission and caching, Dask, the report, several processes sharing the
index: the end-to-end figures are ``bench/scale.py``'s. Phase 4's rows lack the final
dataset's columns (questions, negatives, reasoning, answers).

    .venv/bin/python bench/scale_corpus.py --input /tmp/c1m.jsonl --questions /tmp/c1m_full.jsonl
    head -n 2000 /tmp/c1m_full.jsonl > /tmp/c2k.jsonl   # a quick check
    .venv/bin/python bench/scale_corpus.py --input /tmp/c2k.jsonl --questions /tmp/c2k.jsonl --scratch /tmp/sc2k
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE_SECONDS = 0.2
MIB = 1024 * 1024
QUESTION_WORDS = 8


# -- memory ------------------------------------------------------------------------------------

def _status() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile, RssShmem of this process, in bytes (Linux)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _reset_hwm() -> bool:
    """Reset the kernel's peak RSS (VmHWM) of this process to its current RSS; False when refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Sampler:
    """This process's RSS every ``SAMPLE_SECONDS`` in a thread: the timeline and the peak since :meth:`mark`."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.t0 = time.perf_counter()
        self.timeline: list[tuple[float, int, int, int]] = []  # (s, rss, anon, file) in bytes
        self.peak: tuple[int, int, int] = (0, 0, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        rss = self.proc.memory_info().rss
        st = _status()
        # the split: file-backed pages (mapped jars, libraries, index files) from /proc/self/status,
        # anonymous = the rest of psutil's figure (the status file is read a moment later: a thread
        # freeing a large frame meanwhile would make its RssAnon disagree with rss)
        file_backed = min(rss, st.get("RssFile", 0) + st.get("RssShmem", 0))
        point = (rss, rss - file_backed, file_backed)
        with self._lock:
            self.timeline.append((round(time.perf_counter() - self.t0, 2), *point))
            if rss > self.peak[0]:
                self.peak = point
        return rss

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def mark(self) -> None:
        """Start a new phase: the peak restarts from now."""
        with self._lock:
            self.peak = (0, 0, 0)
        self.sample()

    def start(self) -> "Sampler":
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


RESULTS: list[dict[str, Any]] = []


@contextmanager
def phase(sampler: Sampler, name: str, **info: Any) -> Iterator[dict[str, Any]]:
    """Time the block and record its peak RSS (sampled and VmHWM) as one row of the table."""
    gc.collect()
    hwm_ok = _reset_hwm()
    sampler.mark()
    start_rss = sampler.sample()
    row: dict[str, Any] = {"phase": name, **info}
    t0 = time.perf_counter()
    print(f"... {name}", flush=True)
    yield row
    row["seconds"] = round(time.perf_counter() - t0, 2)
    end_rss = sampler.sample()
    peak, anon, file_backed = sampler.peak
    hwm = _status().get("VmHWM") if hwm_ok else None
    row.update(start_rss_mib=round(start_rss / MIB), peak_rss_mib=round(peak / MIB),
               hwm_rss_mib=round(hwm / MIB) if hwm else None, end_rss_mib=round(end_rss / MIB),
               peak_anon_mib=round(anon / MIB), peak_file_mib=round(file_backed / MIB))
    RESULTS.append(row)
    print(f"    {row['seconds']:>8.1f} s  peak {row['peak_rss_mib']:,} MiB (VmHWM {row['hwm_rss_mib']}), "
          f"end {row['end_rss_mib']:,} MiB", flush=True)


# -- child processes (separate peaks) ------------------------------------------------------------

def child_main(mode: str, args: list[str]) -> None:
    """``--child MODE ARGS``: one operation in a fresh process; prints one JSON line with its figures."""
    import pandas as pd

    from rare_core.storage import FrameWriter, read_frame, write_frame

    sampler = Sampler().start()
    base = sampler.sample()
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if mode == "read_frame":
        df = read_frame(args[0])
        info["rows"] = len(df)
        info["frame_mib"] = round(int(df.memory_usage(deep=True).sum()) / MIB)
    elif mode == "write_stream":
        out, shards = args[0], args[1:]
        with FrameWriter(out) as writer:
            for path in shards:
                writer.write(read_frame(path))
        info["rows"] = writer.rows
    elif mode == "write_concat":
        out, shards = args[0], args[1:]
        df = pd.concat([read_frame(path) for path in shards], ignore_index=True)
        write_frame(df, out)
        info["rows"] = len(df)
    else:
        raise SystemExit(f"unknown child mode {mode}")
    seconds = time.perf_counter() - t0
    end = sampler.sample()
    sampler.stop()
    print(json.dumps({"seconds": round(seconds, 2), "base_rss_mib": round(base / MIB),
                      "peak_rss_mib": round(max(sampler.peak[0], end) / MIB),
                      "hwm_rss_mib": round(_status().get("VmHWM", 0) / MIB) or None,
                      "peak_anon_mib": round(sampler.peak[1] / MIB), "peak_file_mib": round(sampler.peak[2] / MIB),
                      **info}))


def run_child(name: str, mode: str, args: list[str], **extra: Any) -> dict[str, Any]:
    """Run ``child_main(mode, args)`` in a subprocess -> its row of the table (seconds as the child timed them)."""
    print(f"... {name} (subprocess)", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", mode, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    row = {"phase": name, "subprocess": True, "process_seconds": round(time.perf_counter() - t0, 2),
           **extra, **figures}
    RESULTS.append(row)
    print(f"    {row['seconds']:>8.1f} s  peak {row['peak_rss_mib']:,} MiB (VmHWM {row['hwm_rss_mib']}), "
          f"{row['base_rss_mib']} MiB after imports", flush=True)
    return row


# -- questions ---------------------------------------------------------------------------------

def own_words(text: str) -> str:
    """A stand-in question: ``QUESTION_WORDS`` words from the middle of the document's own text."""
    words = str(text).split()
    mid = max(0, len(words) // 2 - QUESTION_WORDS // 2)
    return " ".join(words[mid:mid + QUESTION_WORDS]) + "?"


def questions_for(path: Path | None, ranges: list[tuple[int, int]]) -> dict[int, tuple[str, str]]:
    """Row number -> (id, question) of the rows in ``ranges``, from the jsonl ``path`` (lines in input order)."""
    if path is None:
        return {}
    wanted = sorted(ranges)
    out: dict[int, tuple[str, str]] = {}
    last = max(stop for _, stop in wanted)
    with open(path, encoding="utf-8") as fh:
        row = 0
        for line in fh:
            if not line.strip():
                continue
            if row >= last:
                break
            if any(start <= row < stop for start, stop in wanted):
                record = json.loads(line)
                out[row] = (str(record.get("id")), record.get("question"))
            row += 1
    return out


# -- the measurement ---------------------------------------------------------------------------

def file_mib(path: Path) -> float:
    if path.is_dir():
        return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / MIB, 1)
    return round(path.stat().st_size / MIB, 1)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("phase", "seconds", "peak RSS MiB", "VmHWM MiB", "end RSS MiB", "anon / file MiB at peak")
    lines = [head]
    for r in rows:
        name = r["phase"] + (" [subprocess]" if r.get("subprocess") else "")
        lines.append((name, f"{r['seconds']:.1f}", f"{r['peak_rss_mib']:,}",
                      f"{r['hwm_rss_mib']:,}" if r.get("hwm_rss_mib") else "-",
                      f"{r['end_rss_mib']:,}" if "end_rss_mib" in r else "-",
                      f"{r['peak_anon_mib']:,} / {r['peak_file_mib']:,}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) + " |"
           for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("/tmp/c1m.jsonl"))
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--questions", type=Path, default=None)
    parser.add_argument("--search-shards", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/rare-scale-corpus"))
    parser.add_argument("--no-write", action="store_true", help="skip phase 4 (the final dataset's write)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch files (default: only results.json)")
    args = parser.parse_args()
    if args.shards < 2:
        raise SystemExit("--shards must be at least 2 (a sharded run)")

    sampler = Sampler().start()
    import numpy as np
    import pandas as pd

    from rare_core.config import PipelineConfig
    from rare_core.inputs import count_documents, iter_documents
    from rare_core.operators.bm25_hardneg import BM25HardNeg, BM25HardNegConfig
    from rare_core.shards import shard_bounds, shard_count
    from rare_core.artifacts.input_files import corpus_writer as make_corpus_writer, write_shards
    from rare_core.artifacts.keys import input_key
    from rare_core.artifacts.layout import input_paths

    scratch = args.scratch.resolve()
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = PipelineConfig(input_path=str(args.input.resolve()), cache_path=str(scratch / "cache"),
                            output_path=str(scratch / "out"), shards=args.shards)
    imports_rss = sampler.sample()

    # 1. the streaming load, and read_frame of the whole file for comparison
    with phase(sampler, "count") as row:
        total = count_documents(config)
        row["rows"] = total
    count = shard_count(total, config.shards, config.dask.workers)
    bounds = shard_bounds(total, count)
    with phase(sampler, "load (stream -> shards + corpus)", shards=count) as row:
        key = input_key(config, count)
        corpus_writer = make_corpus_writer(config, key)
        shards = write_shards(config, input_paths(config, key, count), bounds, iter_documents(config), corpus_writer)
        corpus = corpus_writer.close(lambda: (ref.load() for ref in shards))
        row["rows"] = sum(s.rows for s in shards)
    row["corpus_mib"] = file_mib(Path(corpus.path))
    row["shards_mib"] = file_mib(Path(shards[0].path).parent)
    del corpus_writer
    run_child("read_frame (whole input)", "read_frame", [str(args.input.resolve())])

    # 2. the BM25 index of the corpus, built once
    hardneg = BM25HardNegConfig(corpus_path=corpus.path, index_dir=str(scratch / "bm25_index"))
    with phase(sampler, "bm25 prepare (build index)") as row:
        index = BM25HardNeg(config=hardneg).prepare()
        row.update(index_docs=index.num_docs, reused=index.reused, build_seconds=round(index.build_seconds, 2))
    row["index_mib"] = file_mib(Path(index.path))

    # 3. searching shard by shard
    picks = sorted({round(i * (count - 1) / max(1, args.search_shards - 1)) for i in range(args.search_shards)})
    given = questions_for(args.questions, [bounds[i] for i in picks])
    for i in picks:
        df = shards[i].load()
        start, stop = bounds[i]
        from_file = [given.get(start + j) for j in range(len(df))]
        ok = [bool(q is not None and q[0] == str(pid) and isinstance(q[1], str) and q[1].strip())
              for q, pid in zip(from_file, df["id"].tolist())]
        df["question"] = [q[1] if good else own_words(text) for q, good, text in zip(from_file, ok, df["text"].tolist())]
        with phase(sampler, f"search shard {i}", rows=len(df), questions_from_file=int(sum(ok))) as row:
            op = BM25HardNeg(config=hardneg)
            out = op.process(df, input_question_key="question", input_text_key="text", input_id_key="id")
        extra = op.last_summary.extra
        row.update({k: extra.get(k) for k in ("index_reused", "search_seconds", "search_rounds", "short_rows",
                                              "truncated_queries")},
                   positive_rank_1=int((out["positive_rank"] == 1).sum()),
                   negatives=int(out["hard_negatives"].map(len).sum()))
        del df, out, op

    # 4. the final dataset from every shard: streaming vs concat
    if not args.no_write:
        files = [s.path for s in shards]
        run_child("write final (FrameWriter stream)", "write_stream", [str(scratch / "out" / "stream.jsonl"), *files])
        run_child("write final (write_frame(concat))", "write_concat", [str(scratch / "out" / "concat.jsonl"), *files])

    sampler.stop()
    results = {
        "started": started, "input": str(args.input), "input_mib": file_mib(args.input), "documents": total,
        "shards": count, "questions": str(args.questions) if args.questions else None,
        "python_rss_after_imports_mib": round(imports_rss / MIB),
        "jvm_xmx": os.environ.get("RARE_JVM_XMX", "640m (default)"),
        "cpus": os.cpu_count(), "python": platform.python_version(), "pandas": pd.__version__, "numpy": np.__version__,
        "phases": RESULTS,
        "rss_timeline": [{"s": t, "rss_mib": round(r / MIB), "anon_mib": round(a / MIB), "file_mib": round(f / MIB)}
                         for t, r, a, f in sampler.timeline],
    }
    print()
    print(f"{total:,} documents ({results['input_mib']} MiB) in {count} shards; "
          f"RSS after imports {results['python_rss_after_imports_mib']} MiB")
    print(table(RESULTS))
    if not args.keep:
        for entry in scratch.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (scratch / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"-> {scratch / 'results.json'}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3:])
    else:
        main()
