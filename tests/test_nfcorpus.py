"""Effectiveness of the Lucene BM25 path on the official BEIR NFCorpus test split.

Reproduces Pyserini's BM25 flat run (``beir-v1.0.0-nfcorpus.flat``: title and text indexed as
one field, default English analyzer, k1=0.9 b=0.4, 1000 hits, ``--remove-query``) and checks
its published figures: nDCG@10 0.3218 and Recall@100 0.2457, each within 0.002. The metrics
are computed here with trec_eval semantics.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from rare_core.retrieval import BM25Index

NFCORPUS_ZIP = Path(__file__).resolve().parents[2] / "shared/data/nfcorpus/nfcorpus.zip"
PUBLISHED = {"ndcg@10": 0.3218, "recall@100": 0.2457}
TOLERANCE = 0.002


def ndcg_at_k(ranked: list[str], qrels: dict[str, int], k: int) -> float:
    """trec_eval ``ndcg_cut.k``: gain = graded relevance, log2(rank+1) discount, ideal from all judged docs."""
    dcg = sum(qrels.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], start=1))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: list[str], qrels: dict[str, int], k: int) -> float:
    """trec_eval ``recall.k``: relevant (rel > 0) docs in the top k over all relevant docs."""
    relevant = {doc for doc, g in qrels.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def test_metrics_follow_trec_eval_semantics():
    qrels = {"d1": 2, "d2": 1, "d3": 0, "d4": 1}
    # ideal: gains 2,1,1 -> 2 + 1/log2(3) + 1/log2(4)
    idcg = 2 + 1 / math.log2(3) + 0.5
    assert ndcg_at_k(["d2", "x", "d1"], qrels, 10) == pytest.approx((1 + 2 / 2) / idcg)
    assert ndcg_at_k(["d3"], qrels, 10) == 0.0
    assert recall_at_k(["d3", "d4", "x", "d1"], qrels, 2) == pytest.approx(1 / 3)
    assert recall_at_k(["d3", "d4", "x", "d1"], qrels, 100) == pytest.approx(2 / 3)


def _load(zip_path: Path):
    with zipfile.ZipFile(zip_path) as zf:
        docs = pd.read_json(zf.open("nfcorpus/corpus.jsonl"), lines=True, dtype={"_id": str})
        queries = pd.read_json(zf.open("nfcorpus/queries.jsonl"), lines=True, dtype={"_id": str})
        qrels_df = pd.read_csv(zf.open("nfcorpus/qrels/test.tsv"), sep="\t", dtype={"query-id": str, "corpus-id": str})
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for qid, did, score in qrels_df[["query-id", "corpus-id", "score"]].itertuples(index=False):
        qrels[qid][did] = int(score)
    texts = dict(zip(queries["_id"], queries["text"]))
    return docs, {qid: texts[qid] for qid in sorted(qrels)}, qrels


@pytest.mark.slow
def test_nfcorpus_bm25_flat_matches_pyserini(tmp_path):
    if not NFCORPUS_ZIP.exists():
        pytest.skip(reason=f"shared data not found: {NFCORPUS_ZIP} (BEIR NFCorpus, shared/ beside the repo)")
    docs, queries, qrels = _load(NFCORPUS_ZIP)
    assert len(docs) == 3633 and len(queries) == 323
    index = BM25Index.build(docs, tmp_path, id_col="_id", text_col="text", title_col="title")
    assert index.num_docs == 3633
    qids = list(queries)
    ids, _ = index.search([queries[q] for q in qids], 1000)
    ndcg, recall = [], []
    for qid, ranked in zip(qids, ids):
        ranked = [d for d in ranked if d != qid]  # --remove-query
        ndcg.append(ndcg_at_k(ranked, qrels[qid], 10))
        recall.append(recall_at_k(ranked, qrels[qid], 100))
    measured = {"ndcg@10": sum(ndcg) / len(ndcg), "recall@100": sum(recall) / len(recall)}
    print(json.dumps({k: round(v, 4) for k, v in measured.items()}))
    for name, expected in PUBLISHED.items():
        assert measured[name] == pytest.approx(expected, abs=TOLERANCE), (name, measured)
