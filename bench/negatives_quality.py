"""Hard-negative quality against real relevance judgments: BM25HardNeg on a BEIR dataset.

    python bench/negatives_quality.py ../shared/data/nfcorpus/nfcorpus.zip
    python bench/negatives_quality.py path/to/beir/scifact --pairs 500 --variants defaults,r0.95
    python bench/negatives_quality.py ../shared/data/nfcorpus/nfcorpus.zip --seeds 13,1,2,3 --variants defaults

In: a BEIR-format folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) or the
zip BEIR ships it in. Out: on stdout, one table per row set with a line per setting
(:data:`VARIANTS`) and, per measure, the figures for k=3 / k=7 side by side.

Each (query, relevant document) pair of the qrels (score > 0) is a row: the query as the
question, the document as the positive (``id``, ``text``); ``--pairs`` of them are drawn with a
fixed seed (``--seeds``: several draws, each figure then the worst of them). The whole corpus
(title and text) is the ``corpus_path`` of the step, mined as a user runs it:
``BM25HardNeg(**settings).process(rows, num_neg=k, input_id_key="id")``. Per setting and k,
over the rows of a set:

* false negatives per negative: negatives the qrels mark relevant for the row's query (the qrels
  are incomplete: a lower bound), over all negatives; per row: rows with at least one;
* median rank of the negatives in the query's BM25 ranking (searched here on the same index);
* median score ratio: negative's score over the positive's;
* short rows: rows with fewer than k negatives;
* at or above the positive: negatives whose score is >= the positive's (the count).

Row sets: "matched" rows, whose positive shares a term with the question (its BM25 score is
above 0), and all rows.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rare_core.operators.bm25_hardneg import BM25HardNeg, BM25HardNegConfig  # noqa: E402
from rare_core.retrieval import BM25Index  # noqa: E402

KS = (3, 7)
NO_GROUPS = {"exclude_group_positives": False, "near_duplicate_threshold": None}
BEFORE = {"max_score_ratio": 0.95, "skip_top": 0, "reserve_top": 0, "max_depth": 1000, **NO_GROUPS}
# name -> settings of BM25HardNegConfig (over its defaults)
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "top-k": {**BEFORE, "max_score_ratio": None},  # BM25 top-k minus the positive, as a reimplementation ships
    "r0.95": BEFORE,  # the defaults before this bench: TopK-PercPos 0.95
    "r0.9": {**BEFORE, "max_score_ratio": 0.9},
    "r0.95+groups": {**BEFORE, "exclude_group_positives": True},
    "r0.9+groups": {**BEFORE, "max_score_ratio": 0.9, "exclude_group_positives": True},
    "r0.95+groups+depth2000": {**BEFORE, "exclude_group_positives": True, "max_depth": 2000},
    "r0.95+groups+skip10+depth1200": {**BEFORE, "exclude_group_positives": True, "skip_top": 10, "max_depth": 1200},
    "r0.95+groups+skip20": {**BEFORE, "exclude_group_positives": True, "skip_top": 20},
    "r0.95+groups+reserve30": {**BEFORE, "exclude_group_positives": True, "reserve_top": 30},
    "r0.95+groups+reserve40": {**BEFORE, "exclude_group_positives": True, "reserve_top": 40},
}


def beir_folder(path: Path, scratch: Path) -> Path:
    """The folder holding ``corpus.jsonl``: ``path`` itself, or where its zip is extracted in ``scratch``."""
    if path.is_dir():
        return path
    with zipfile.ZipFile(path) as archive:
        archive.extractall(scratch)
    return next(p.parent for p in scratch.rglob("corpus.jsonl"))


def load(folder: Path, split: str) -> tuple[pd.DataFrame, dict[str, str], pd.DataFrame]:
    """(corpus: id, title, text), {query id: text}, qrels (query, doc) with score > 0."""
    docs = pd.read_json(folder / "corpus.jsonl", lines=True, dtype={"_id": str})
    docs = docs.rename(columns={"_id": "id"})
    docs["title"] = docs["title"].fillna("") if "title" in docs else ""
    queries = pd.read_json(folder / "queries.jsonl", lines=True, dtype={"_id": str})
    qrels = pd.read_csv(folder / "qrels" / f"{split}.tsv", sep="\t", dtype={"query-id": str, "corpus-id": str})
    qrels = qrels[(qrels["score"] > 0) & qrels["corpus-id"].isin(docs["id"]) & qrels["query-id"].isin(queries["_id"])]
    return docs[["id", "title", "text"]], dict(zip(queries["_id"], queries["text"])), qrels


def draw_rows(docs: pd.DataFrame, queries: dict[str, str], qrels: pd.DataFrame, pairs: int, seed: int) -> pd.DataFrame:
    """``pairs`` (query, relevant document) rows drawn with ``seed``: qid, question, id, text."""
    chosen = qrels.iloc[np.sort(np.random.default_rng(seed).permutation(len(qrels))[:pairs])]
    text = dict(zip(docs["id"], docs["text"]))
    return pd.DataFrame({"qid": chosen["query-id"].to_numpy(), "question": chosen["query-id"].map(queries).to_numpy(),
                         "id": chosen["corpus-id"].to_numpy(), "text": chosen["corpus-id"].map(text).to_numpy()})


def ranks_of(docs: pd.DataFrame, questions: list[str], depth: int, index_dir: Path) -> dict[str, dict[str, int]]:
    """{question: {doc id: 1-based BM25 rank}} to ``depth``, on the index the step uses (same
    documents and settings)."""
    defaults = BM25HardNegConfig()
    index = BM25Index.build(docs, index_dir, title_col="title", k1=defaults.k1, b=defaults.b,
                            query_weighting=defaults.query_weighting)
    ids, _ = index.search(questions, min(depth, index.num_docs))
    return {q: {d: r for r, d in enumerate(ranked, start=1)} for q, ranked in zip(questions, ids)}


def measure(out: pd.DataFrame, k: int, relevant: dict[str, set[str]], ranks: dict[str, dict[str, int]]) -> dict:
    """The measures of the module docstring over the rows of ``out``."""
    negatives = fn = fn_rows = short = at_or_above = 0
    all_ranks: list[int] = []
    ratios: list[float] = []
    for qid, question, ids, scores, pos in zip(out["qid"], out["question"], out["hard_negatives_ids"],
                                               out["hard_negatives_scores"], out["positive_score"]):
        false = sum(d in relevant[qid] for d in ids)
        negatives, fn, fn_rows, short = negatives + len(ids), fn + false, fn_rows + (false > 0), short + (len(ids) < k)
        all_ranks += [ranks[question][d] for d in ids]
        if pos > 0:
            ratios += [s / pos for s in scores]
        at_or_above += sum(s >= pos for s in scores)
    rows = max(len(out), 1)
    return {"fn_neg": fn / max(negatives, 1), "fn_rows": fn_rows / rows,
            "rank": float(np.median(all_ranks)) if all_ranks else float("nan"),
            "ratio": float(np.median(ratios)) if ratios else float("nan"),
            "short": short / rows, "above": at_or_above}


def describe(config: BM25HardNegConfig) -> str:
    """The guard settings of ``config`` in one line."""
    near = config.near_duplicate_threshold
    return (f"max_score_ratio {config.max_score_ratio}, skip_top {config.skip_top}, reserve_top "
            f"{config.reserve_top}, max_depth {config.max_depth}, group exclusion "
            f"{'on' if config.exclude_group_positives else 'off'}, near-duplicates {near if near else 'off'}")


def worst(draws: list[dict]) -> dict:
    """Per measure, its worst value over the draws (the most false negatives, the deepest
    median rank, the lowest median ratio, the most short rows and negatives at or above)."""
    return {field: (min if field == "ratio" else max)(d[field] for d in draws) for field in draws[0]}


def table(results: dict[str, dict[int, dict]], title: str) -> str:
    def pair(name: str, field: str, fmt: str) -> str:
        return " / ".join(format(results[name][k][field], fmt) for k in KS)

    ks = " / ".join(f"k={k}" for k in KS)
    lines = [f"{title}", "",
             f"| setting | false negatives per negative, {ks} | rows with a false negative | median rank "
             f"| median score ratio | short rows | at or above the positive |",
             "|---|---|---|---|---|---|---|"]
    for name in results:
        lines.append(f"| {name} | {pair(name, 'fn_neg', '.1%')} | {pair(name, 'fn_rows', '.1%')} "
                     f"| {pair(name, 'rank', '.0f')} | {pair(name, 'ratio', '.3f')} | {pair(name, 'short', '.1%')} "
                     f"| {pair(name, 'above', 'd')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("beir", type=Path, help="BEIR-format folder, or its zip")
    parser.add_argument("--pairs", type=int, default=3000, help="(query, relevant document) rows drawn (default 3000)")
    parser.add_argument("--seeds", default="13", help="seeds of the draws, comma-separated (default 13); with "
                                                      "several, each figure is its worst over the draws")
    parser.add_argument("--split", default="test", help="qrels split (default test)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated names among: {', '.join(VARIANTS)} (default: all)")
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    seeds = [int(v) for v in args.seeds.split(",")]

    started = time.perf_counter()
    draws: dict[str, dict[str, dict[int, list[dict]]]] = {"matched": {}, "all": {}}
    counts = []
    with tempfile.TemporaryDirectory(prefix="negq-") as scratch:
        scratch = Path(scratch)
        docs, queries, qrels = load(beir_folder(args.beir, scratch / "beir"), args.split)
        relevant: dict[str, set[str]] = defaultdict(set)
        for qid, did in zip(qrels["query-id"], qrels["corpus-id"]):
            relevant[qid].add(did)
        corpus_path = scratch / "corpus.parquet"
        docs.to_parquet(corpus_path, index=False)
        depth = max(BM25HardNegConfig(**VARIANTS[n]).max_depth for n in names)
        ranks = ranks_of(docs, sorted(set(queries[q] for q in qrels["query-id"])), depth, scratch / "index")
        for seed in seeds:
            rows = draw_rows(docs, queries, qrels, args.pairs, seed)
            for name in names:
                op = BM25HardNeg(index_dir=str(scratch / "index"), corpus_path=str(corpus_path), **VARIANTS[name])
                t0 = time.perf_counter()
                for k in KS:
                    out = op.process(rows, num_neg=k, input_id_key="id")
                    matched = out[out["positive_score"] > 0]
                    draws["matched"].setdefault(name, {}).setdefault(k, []).append(measure(matched, k, relevant, ranks))
                    draws["all"].setdefault(name, {}).setdefault(k, []).append(measure(out, k, relevant, ranks))
                print(f"  seed {seed} {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            counts.append(f"seed {seed}: {len(rows)} rows, {rows['qid'].nunique()} queries, "
                          f"{int((out['positive_score'] > 0).sum())} matched")

    results = {part: {name: {k: worst(by_k[k]) for k in KS} for name, by_k in by_name.items()}
               for part, by_name in draws.items()}
    print(f"{args.beir.name}: qrels {args.split}, corpus {len(docs)} documents; {'; '.join(counts)}")
    print(f"{datetime.date.today()} on {platform.machine()} {os.cpu_count()} cores, "
          f"python {platform.python_version()}; {time.perf_counter() - started:.0f} s in all")
    for name in names:
        print(f"  {name}: {describe(BM25HardNegConfig(**VARIANTS[name]))}")
    of = f", worst of {len(seeds)} draws" if len(seeds) > 1 else ""
    print()
    print(table(results["matched"], f"Matched rows (the positive shares a term with the question){of}"))
    print()
    print(table(results["all"], f"All rows{of}"))


if __name__ == "__main__":
    main()
