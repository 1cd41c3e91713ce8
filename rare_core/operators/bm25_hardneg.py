"""BM25HardNeg: question + positive document in, BM25 hard negatives from a Lucene index out.

``process(df, input_question_key="question", input_text_key="text",
output_negatives_key="hard_negatives", num_neg=3, overwrite=False)`` adds, with ``key`` =
``output_negatives_key``:

* ``key``: the negatives' texts (list of str, best BM25 first), ``key_ids`` and ``key_scores``;
* ``positive_score``: the positive's BM25 score for the question (NaN when the positive is not
  in the index: a separate ``corpus_path`` without its id or text; the ``max_score_ratio`` guard
  is then not applied to that row);
* ``positive_rank``: 1-based rank of the positive (or a copy of its text) in the BM25 ranking,
  -1 when it is not within the depth that row was searched to (and for rows not searched);
* ``hardneg_status``: ``ok``; ``short`` (fewer than ``num_neg`` negatives: the corpus has no
  more that pass the guards; not a failure); ``skipped`` (failed upstream: keeps its status and
  error, gets empty lists); ``failed`` (empty or missing question).

The positive's id is the ``id_key`` column when present (else, or where empty, a stable hash of
the row's text). The corpus is the input frame's documents (deduplicated by id, first wins) or
the ``corpus_path`` file (columns ``id``, ``text`` and optionally ``title``). The selection
rules are those of :mod:`rare_core.retrieval.negatives`. The first search goes
``skip_top + 2 * num_neg + 10`` deep; a row that ends short while its ranking was cut at that
depth is searched again 4x deeper, until it is complete, the depth covers the corpus or reaches
``max_depth`` (default 1000, like the reference miner's top 1000). A row whose positive
scores 0 under ``max_score_ratio`` is not searched deeper: no candidate can pass that guard.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from rare_core.operators.base import (
    FAILED, OK, SHORT, SKIPPED, Operator, active_mask, guard_outputs, init_status, mark_failed, require_columns, summarize,
)
from rare_core.retrieval.index import BM25Index
from rare_core.retrieval.negatives import Selection, select_negatives, text_key
from rare_core.storage import read_frame

STEP = "hardneg"
DEEPEN = 4


class BM25HardNegConfig(BaseModel):
    """Settings of the hard-negative step."""

    model_config = ConfigDict(extra="forbid")

    k1: float = Field(0.9, gt=0, description="BM25 term-frequency saturation.")
    b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation.")
    skip_top: int = Field(0, ge=0, description="Ranks at the top of the BM25 ranking never used as negatives.")
    max_score_ratio: float | None = Field(
        0.95, gt=0, description="Drop candidates scoring >= this ratio of the positive's score; None disables.")
    query_weighting: Literal["bow", "bm25"] = Field("bow", description="Bag of words, or query-side BM25 weights.")
    corpus_path: str | None = Field(None, description="Separate corpus file (id, text[, title]); default: the input rows.")
    index_dir: str = Field("./cache/bm25_index", description="Cache root of the Lucene indexes.")
    max_depth: int = Field(1000, ge=1, description="Deepest ranking searched for a row before it is left short.")
    threads: int | None = Field(None, ge=1, description="Indexing threads; default: all cores (search uses all).")
    id_key: str = Field("id", description="Input column with the positive document's id.")
    title_key: str | None = Field(
        "title", description="Input column indexed before the text when present (a corpus_path file: its 'title' "
                             "column); None: no titles.")


def _text_id(text: object) -> str:
    return "h" + hashlib.blake2b(str(text).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()


class BM25HardNeg(Operator):
    step_name = STEP

    def __init__(self, config: BM25HardNegConfig | None = None, **settings) -> None:
        super().__init__()
        base = config.model_dump() if config else {}
        self.config = BM25HardNegConfig.model_validate({**base, **settings})

    def _positive_ids(self, df: pd.DataFrame, text_col: str) -> pd.Series:
        texts = df[text_col].fillna("").astype(str)
        hashed = texts.map(_text_id)
        if self.config.id_key not in df.columns:
            return hashed
        ids = df[self.config.id_key]
        return ids.astype(str).where(~ids.map(_blank), hashed)

    def _corpus(self, df: pd.DataFrame, text_col: str, positive_ids: pd.Series) -> pd.DataFrame:
        """id/text[/title] frame of the documents to mine from, deduplicated by id, empty texts dropped."""
        title_col = self.config.title_key
        if self.config.corpus_path:
            src = read_frame(self.config.corpus_path)
            require_columns(src, ["id", "text"], f"{STEP} corpus {self.config.corpus_path}")
            cols = {"id": src["id"].astype(str), "text": src["text"]}
            if title_col and "title" in src.columns:
                cols["title"] = src["title"]
        else:
            cols = {"id": positive_ids, "text": df[text_col]}
            if title_col and title_col in df.columns:
                cols["title"] = df[title_col]
        corpus = pd.DataFrame(cols).drop_duplicates("id", keep="first")
        corpus["text"] = corpus["text"].fillna("").astype(str)
        return corpus[corpus["text"].str.strip().str.len() > 0].reset_index(drop=True)

    def process(self, df: pd.DataFrame, input_question_key: str = "question", input_text_key: str = "text",
                output_negatives_key: str = "hard_negatives", num_neg: int = 3,
                overwrite: bool = False) -> pd.DataFrame:
        started = time.perf_counter()
        if num_neg < 1:
            raise ValueError(f"{STEP}: num_neg must be >= 1, got {num_neg}")
        key = output_negatives_key
        outputs = [key, f"{key}_ids", f"{key}_scores", "positive_score", "positive_rank", f"{STEP}_status"]
        require_columns(df, [input_question_key, input_text_key], STEP)
        guard_outputs(df, outputs, STEP, overwrite)
        df_in = df
        df = init_status(df.drop(columns=[c for c in outputs if c in df.columns]))
        active = active_mask(df)
        no_question = df[input_question_key].map(_blank)
        for idx in df.index[active & no_question]:
            mark_failed(df, idx, STEP, "invalid input: the question is empty or missing")
        todo = np.flatnonzero((active & ~no_question).to_numpy())

        n = len(df)
        negatives: list[list[str]] = [[] for _ in range(n)]
        neg_ids: list[list[str]] = [[] for _ in range(n)]
        neg_scores: list[list[float]] = [[] for _ in range(n)]
        pos_score = np.full(n, np.nan)
        pos_rank = np.full(n, -1, dtype=np.int64)
        status = np.where(active.to_numpy(), OK, SKIPPED).astype(object)
        status[(active & no_question).to_numpy()] = FAILED
        extra = {"short_rows": 0, "queries": int(len(todo)), "index_seconds": 0.0, "search_seconds": 0.0,
                 "index_reused": False, "index_docs": 0, "search_rounds": 0}
        if len(todo):
            positive_ids = self._positive_ids(df, input_text_key)
            corpus = self._corpus(df, input_text_key, positive_ids)
            index = BM25Index.build(
                corpus, self.config.index_dir, title_col="title" if "title" in corpus.columns else None,
                k1=self.config.k1, b=self.config.b, query_weighting=self.config.query_weighting,
                threads=self.config.threads)
            extra.update(index_seconds=round(index.build_seconds, 3), index_reused=index.reused,
                         index_docs=index.num_docs)
            t0 = time.perf_counter()
            miner = _Miner(index, corpus, self.config, num_neg)
            mined = miner.mine([str(q) for q in df[input_question_key].to_numpy()[todo]],
                               positive_ids.to_numpy()[todo].tolist(),
                               df[input_text_key].to_numpy()[todo].tolist())
            extra["search_seconds"] = round(time.perf_counter() - t0, 3)
            extra["search_rounds"] = mined.rounds
            flat = [miner.position[i] for sel in mined.selections for i in sel.ids]
            flat_texts = iter(corpus["text"].iloc[flat].astype(str).tolist())
            for row, sel, score in zip(todo, mined.selections, mined.positive_scores):
                negatives[row] = [next(flat_texts) for _ in sel.ids]
                neg_ids[row], neg_scores[row], pos_rank[row] = sel.ids, sel.scores, sel.positive_rank
                if score is not None:
                    pos_score[row] = score
                if len(sel.ids) < num_neg:
                    status[row] = SHORT
            extra["short_rows"] = int((status == SHORT).sum())

        df[key] = pd.Series(negatives, index=df.index, dtype=object)
        df[f"{key}_ids"] = pd.Series(neg_ids, index=df.index, dtype=object)
        df[f"{key}_scores"] = pd.Series(neg_scores, index=df.index, dtype=object)
        df["positive_score"] = pos_score
        df["positive_rank"] = pos_rank
        df[f"{STEP}_status"] = status
        self.last_summary = summarize(STEP, df_in, df, active, started, extra=extra)
        return df


@dataclass
class _Mined:
    selections: list[Selection]
    positive_scores: list[float | None]  # None: the positive is not in the index
    rounds: int  # search passes (1 + deepenings)


class _Miner:
    """Searches, scores the positives and selects; deepens the search for rows cut short by the depth."""

    def __init__(self, index: BM25Index, corpus: pd.DataFrame, config: BM25HardNegConfig, num_neg: int) -> None:
        self.index, self.config, self.num_neg = index, config, num_neg
        # iterate the columns (no .tolist()): a 1M-document corpus never exists twice as Python strings
        self.position = dict(zip(corpus["id"], range(len(corpus))))
        self.keys = [text_key(t) for t in corpus["text"]]
        self._first_with_key: dict[int, str] | None = None

    def _key_of(self, doc_id: str) -> int:
        return self.keys[self.position[doc_id]]

    def _anchor(self, positive_id: str, positive_key: int) -> str | None:
        """The indexed document standing for the positive: itself, else the first copy of its text."""
        if positive_id in self.position:
            return positive_id
        if self._first_with_key is None:
            self._first_with_key = {}
            for doc_id, k in sorted(zip(self.position, self.keys)):
                self._first_with_key.setdefault(k, doc_id)
        return self._first_with_key.get(positive_key)

    def mine(self, questions: list[str], positive_ids: list[str], positive_texts: list[str]) -> _Mined:
        cfg = self.config
        limit = min(self.index.num_docs, max(cfg.max_depth, cfg.skip_top + self.num_neg))
        pos_keys = [text_key(t) for t in positive_texts]
        anchors = [self._anchor(p, k) for p, k in zip(positive_ids, pos_keys)]
        depth = min(limit, cfg.skip_top + 2 * self.num_neg + 10)
        hits = self.index.search(questions, depth)
        depths = [depth] * len(questions)
        scores: list[float | None] = [None] * len(questions)
        missing = []
        for j, anchor in enumerate(anchors):
            if anchor is None:
                continue
            if anchor in hits.ids[j]:
                scores[j] = hits.scores[j][hits.ids[j].index(anchor)]
            else:
                missing.append(j)
        for j, s in zip(missing, self.index.score([questions[j] for j in missing], [anchors[j] for j in missing])):
            scores[j] = s
        ranked_ids, ranked_scores = list(hits.ids), list(hits.scores)
        selections: list[Selection] = [None] * len(questions)  # type: ignore[list-item]
        pending, rounds = list(range(len(questions))), 1
        while pending:
            deeper = []
            for j in pending:
                sel = select_negatives(
                    ranked_ids[j], ranked_scores[j], num_neg=self.num_neg, positive_ids={positive_ids[j]},
                    positive_key=pos_keys[j], key_of=self._key_of, positive_score=scores[j],
                    skip_top=cfg.skip_top, max_score_ratio=cfg.max_score_ratio)
                selections[j] = sel
                hopeless = cfg.max_score_ratio is not None and scores[j] is not None and scores[j] <= 0
                if sel.exhausted and len(ranked_ids[j]) == depths[j] and depths[j] < limit and not hopeless:
                    deeper.append(j)
            if not deeper:
                break
            depth = min(limit, max(depths[j] for j in deeper) * DEEPEN)
            more = self.index.search([questions[j] for j in deeper], depth)
            for j, ids, sc in zip(deeper, more.ids, more.scores):
                ranked_ids[j], ranked_scores[j], depths[j] = ids, sc, depth
            pending, rounds = deeper, rounds + 1
        return _Mined(selections, scores, rounds)
