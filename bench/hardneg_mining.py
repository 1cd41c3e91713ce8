"""Hard-negative mining benchmark: BM25HardNeg (Lucene) vs the reference algorithm vs bm25s.

    python bench/hardneg_mining.py                      # 100k documents, 100k questions
    python bench/hardneg_mining.py --docs 1000000 --engines lucene

In: sizes and engines as flags. Out: one table on stdout (and ``--json``) with, per engine,
index time, mining throughput (questions/second), the time for all questions, peak RSS of
the engine's process and the Lucene speed-up over it.

Each engine runs in its own child process (``--child``), so its peak RSS (``ru_maxrss``, which
includes the in-process JVM) is its own. Every engine does the same work per question: rank
the corpus, get the positive's score, and apply the same guards with
``rare_core.retrieval.select_negatives`` (num_neg negatives, max_score_ratio 0.95):

* ``lucene``: ``BM25HardNeg.process`` itself on a fresh index (Anserini, all cores);
* ``reference``: the algorithm this project replaces: Lucene-analyzed tokens, gensim
  ``LuceneBM25Model`` + ``SparseMatrixSimilarity`` scoring every document, a dict of all scores
  and a full sort per question (run on ``--ref-queries`` questions and scaled up);
* ``bm25s``: ``bm25s`` (numpy backend, its English stopwords, no stemmer) top-k retrieval,
  positive scored from the full score vector when not in the top k (on ``--bm25s-queries``
  questions and scaled up).

The corpus comes from ``bench/corpus_gen.py`` (seeded) and is cached in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NUM_NEG = 3
RATIO = 0.95
DEPTH = 2 * NUM_NEG + 10  # the operator's first search depth


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trace_rss(path: Path, every: float = 0.25) -> None:
    """Append ``seconds rss_mb file_backed_mb`` to ``path`` every ``every`` s from a daemon thread.

    ``file_backed_mb`` is RssFile + RssShmem (psutil's ``shared``): on Linux mostly the
    memory-mapped Lucene index files and shared libraries, the rest of RSS is anonymous memory.
    """
    import threading

    import psutil

    process, start = psutil.Process(), time.perf_counter()

    def sample() -> None:
        with open(path, "w") as out:
            while True:
                info = process.memory_info()
                out.write(f"{time.perf_counter() - start:.2f} {info.rss / 2**20:.0f} {info.shared / 2**20:.0f}\n")
                out.flush()
                time.sleep(every)

    threading.Thread(target=sample, daemon=True).start()


def dataset(workdir: Path, docs: int, questions: int, seed: int) -> tuple[Path, Path]:
    """(corpus parquet, questions parquet), generated once per size and seed."""
    corpus_path = workdir / f"corpus-{docs}-{seed}.parquet"
    questions_path = workdir / f"questions-{docs}-{questions}-{seed}.parquet"
    if not (corpus_path.exists() and questions_path.exists()):
        import corpus_gen

        workdir.mkdir(parents=True, exist_ok=True)
        frame = corpus_gen.generate(docs, seed, questions=max(questions, docs))
        frame.iloc[:docs][["id", "text"]].to_parquet(corpus_path, index=False)
        frame.iloc[:questions].to_parquet(questions_path, index=False)
    return corpus_path, questions_path


# ----------------------------------------------------------------------------- engines (children)

def run_lucene(corpus_path: Path, questions_path: Path, limit: int | None) -> dict:
    from rare_core.operators.bm25_hardneg import BM25HardNeg

    rows = pd.read_parquet(questions_path)
    rows = rows.iloc[:limit] if limit else rows
    n_docs = len(pd.read_parquet(corpus_path, columns=["id"]))
    # with as many questions as documents, the rows carry the corpus (the operator's default)
    separate = n_docs != len(rows)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        op = BM25HardNeg(index_dir=tmp, max_score_ratio=RATIO, corpus_path=str(corpus_path) if separate else None)
        start = time.perf_counter()
        out = op.process(rows, num_neg=NUM_NEG)
        wall = time.perf_counter() - start
    extra = op.last_summary.extra
    mining = wall - extra["index_seconds"]
    ranks = out["positive_rank"]
    return {"queries": len(rows), "index_seconds": extra["index_seconds"], "mining_seconds": mining,
            "qps": len(rows) / mining, "short_rows": extra["short_rows"], "search_rounds": extra["search_rounds"],
            "positive_top10": float(((ranks >= 1) & (ranks <= 10)).mean())}


def select_all(ranked, positives, pos_texts, score_of_positive, key_of) -> int:
    """Apply the operator's guards to every ranking; returns the number of short rows."""
    from rare_core.retrieval import select_negatives, text_key

    short = 0
    for j, (ids, scores) in enumerate(ranked):
        sel = select_negatives(ids, scores, num_neg=NUM_NEG, positive_ids={positives[j]},
                               positive_key=text_key(pos_texts[j]), key_of=key_of,
                               positive_score=score_of_positive(j), max_score_ratio=RATIO)
        short += len(sel.ids) < NUM_NEG
    return short


def run_reference(corpus_path: Path, questions_path: Path, limit: int) -> dict:
    from gensim.corpora import Dictionary
    from gensim.models import LuceneBM25Model
    from gensim.similarities import SparseMatrixSimilarity

    from rare_core.retrieval import text_key
    from rare_core.retrieval.jvm import jclass

    corpus = pd.read_parquet(corpus_path)
    rows = pd.read_parquet(questions_path).iloc[:limit]
    analyze = jclass("io.anserini.analysis.AnalyzerUtils").analyze
    analyzer = jclass("io.anserini.index.IndexCollection").DEFAULT_ANALYZER
    start = time.perf_counter()
    tokens = [list(analyze(analyzer, t)) for t in corpus["text"]]
    dictionary = Dictionary(tokens)
    model = LuceneBM25Model(dictionary=dictionary, k1=0.9, b=0.4)
    bm25_corpus = model[list(map(dictionary.doc2bow, tokens))]
    index = SparseMatrixSimilarity(bm25_corpus, num_docs=len(tokens), num_terms=len(dictionary),
                                   normalize_queries=False, normalize_documents=False)
    del tokens
    index_seconds = time.perf_counter() - start
    doc_ids = corpus["id"].tolist()
    keys = dict(zip(doc_ids, (text_key(t) for t in corpus["text"])))
    start = time.perf_counter()
    ranked, all_scores = [], []
    for question in rows["question"]:
        similarities = index[model[dictionary.doc2bow(list(analyze(analyzer, question)))]].tolist()
        scores = dict(zip(doc_ids, similarities))
        top = sorted(scores.items(), key=lambda x: x[1], reverse=True)[:1000]
        ranked.append(([d for d, _ in top], [s for _, s in top]))
        all_scores.append(scores)
    positives = rows["id"].tolist()
    short = select_all(ranked, positives, rows["text"].tolist(), lambda j: all_scores[j][positives[j]], keys.get)
    mining = time.perf_counter() - start
    return {"queries": len(rows), "index_seconds": index_seconds, "mining_seconds": mining,
            "qps": len(rows) / mining, "short_rows": short}


def run_bm25s(corpus_path: Path, questions_path: Path, limit: int) -> dict:
    import bm25s

    from rare_core.retrieval import text_key

    corpus = pd.read_parquet(corpus_path)
    rows = pd.read_parquet(questions_path).iloc[:limit]
    start = time.perf_counter()
    retriever = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    retriever.index(bm25s.tokenize(corpus["text"].tolist(), stopwords="en", show_progress=False), show_progress=False)
    index_seconds = time.perf_counter() - start
    doc_ids = corpus["id"].tolist()
    position = {d: i for i, d in enumerate(doc_ids)}
    keys = dict(zip(doc_ids, (text_key(t) for t in corpus["text"])))
    start = time.perf_counter()
    query_tokens = bm25s.tokenize(rows["question"].tolist(), stopwords="en", show_progress=False, return_ids=False)
    docs, scores = retriever.retrieve(query_tokens, k=DEPTH, show_progress=False, n_threads=os.cpu_count() or 1)
    ranked = [([doc_ids[i] for i in d], s.tolist()) for d, s in zip(docs, scores)]
    positives = rows["id"].tolist()

    def positive_score(j: int) -> float:
        ids, sc = ranked[j]
        if positives[j] in ids:
            return sc[ids.index(positives[j])]
        return float(retriever.get_scores(query_tokens[j])[position[positives[j]]])

    short = select_all(ranked, positives, rows["text"].tolist(), positive_score, keys.get)
    mining = time.perf_counter() - start
    return {"queries": len(rows), "index_seconds": index_seconds, "mining_seconds": mining,
            "qps": len(rows) / mining, "short_rows": short}


ENGINES = {"lucene": run_lucene, "reference": run_reference, "bm25s": run_bm25s}


# ----------------------------------------------------------------------------- parent

def run_child(engine: str, corpus_path: Path, questions_path: Path, limit: int | None,
              rss_trace: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", engine, "--corpus", str(corpus_path),
           "--questions-file", str(questions_path)] + (["--limit", str(limit)] if limit else [])
    cmd += ["--rss-trace", f"{rss_trace}.{engine}"] if rss_trace else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="BM25 hard-negative mining benchmark")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--questions", type=int, default=100_000)
    parser.add_argument("--ref-queries", type=int, default=200, help="questions run by the reference")
    parser.add_argument("--bm25s-queries", type=int, default=10_000, help="questions run by bm25s")
    parser.add_argument("--engines", default="lucene,bm25s,reference")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--rss-trace", type=Path, default=None,
                        help="sample each engine's RSS every 0.25 s into this path + '.<engine>'")
    parser.add_argument("--child", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--questions-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.rss_trace:
            trace_rss(args.rss_trace)
        result = ENGINES[args.child](args.corpus, args.questions_file, args.limit)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    t0 = time.perf_counter()
    corpus_path, questions_path = dataset(args.workdir, args.docs, args.questions, args.seed)
    print(f"corpus: {args.docs:,} documents, {args.questions:,} questions "
          f"(generated/cached in {time.perf_counter() - t0:.1f} s); {os.cpu_count()} cores", flush=True)
    limits = {"lucene": None, "reference": args.ref_queries, "bm25s": args.bm25s_queries}
    results = {}
    for engine in args.engines.split(","):
        results[engine] = run_child(engine, corpus_path, questions_path, limits[engine], args.rss_trace)
        r = results[engine]
        r["all_questions_seconds"] = args.questions / r["qps"]
        print(f"  {engine}: done ({r['queries']:,} questions)", flush=True)

    lucene = results.get("lucene")
    header = (f"{'engine':<10}{'questions run':>14}{'index s':>10}{'questions/s':>13}"
              f"{'all ' + format(args.questions, ',') + ' q, s':>18}{'peak RSS MB':>13}{'lucene speed-up':>17}")
    print(header)
    for engine, r in results.items():
        speedup = f"{lucene['qps'] / r['qps']:.1f}x" if lucene else "-"
        print(f"{engine:<10}{r['queries']:>14,}{r['index_seconds']:>10.1f}{r['qps']:>13,.0f}"
              f"{r['all_questions_seconds']:>18,.1f}{r['peak_rss_mb']:>13,.0f}{speedup:>17}")
    if lucene:
        print(f"lucene: {lucene['short_rows']:,} short rows, {lucene['search_rounds']} search rounds, "
              f"positive in top 10 for {lucene['positive_top10']:.1%} of questions")
    if args.json:
        args.json.write_text(json.dumps({"docs": args.docs, "questions": args.questions, "results": results}, indent=1))


if __name__ == "__main__":
    main()
