"""Hard-negative mining over a BM25 index: search, the positive's score, selection, deepening.

In: a :class:`~rare_core.retrieval.index.BM25Index`, the documents' text fingerprints by index
row (``text_key``, one uint64 array) and the selection settings. Out, per batch of questions:
a :class:`Mined` with one :class:`~rare_core.retrieval.negatives.Selection` per question
(negatives as index rows, best first), the positive's score and the number of search passes.

The first search goes ``skip_top + 2 * num_neg + 10`` deep; a question left short while its
ranking was cut at that depth is searched again ``DEEPEN`` times deeper, until it is complete,
the depth covers the corpus or reaches ``max_depth``. A question whose positive scores 0 under
``max_score_ratio`` is not searched deeper: no candidate can pass that guard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rare_core.retrieval.index import BM25Index
from rare_core.retrieval.negatives import Selection, select_negatives, text_key

DEEPEN = 4


@dataclass
class Mined:
    """What :meth:`Miner.mine` found for a batch of questions, in question order."""

    selections: list[Selection]  # ids: index rows
    positive_scores: list[float | None]  # None: the positive is not in the index
    rounds: int  # search passes (1 + deepenings)


class Miner:
    """Searches, scores the positives and selects on index rows; deepens the search for rows cut short by the depth.

    In: the index and ``keys``, the documents' text fingerprints by index row (one uint64
    array). Documents are handled by index row throughout.
    """

    def __init__(self, index: BM25Index, keys: np.ndarray, *, num_neg: int, skip_top: int = 0,
                 max_score_ratio: float | None = 0.95, max_depth: int = 1000) -> None:
        self.index, self.keys, self.num_neg = index, keys, num_neg
        self.skip_top, self.max_score_ratio, self.max_depth = skip_top, max_score_ratio, max_depth
        self._first_with_key: tuple[np.ndarray, np.ndarray] | None = None

    def _key_of(self, row: int) -> int:
        return int(self.keys[row])

    def _anchors(self, positive_ids: list[str], positive_keys: list[int]) -> np.ndarray:
        """Index row standing for each positive: itself, else the first (by id) copy of its text, else -1."""
        rows = self.index.rows_of(positive_ids)
        lost = np.flatnonzero(rows < 0)
        if len(lost):
            if self._first_with_key is None:  # rows are in id order: np.unique's first index is the first id
                self._first_with_key = np.unique(self.keys, return_index=True)
            keys, first = self._first_with_key
            wanted = np.array([positive_keys[j] for j in lost], dtype=np.uint64)
            at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
            rows[lost] = np.where(keys[at] == wanted, first[at], -1)
        return rows

    def mine(self, questions: list[str], positive_ids: list[str], positive_texts: list[str]) -> Mined:
        """Negatives for each question (``positive_ids``/``positive_texts``: its source document)."""
        limit = min(self.index.num_docs, max(self.max_depth, self.skip_top + self.num_neg))
        pos_keys = [text_key(t) for t in positive_texts]
        anchors = self._anchors(positive_ids, pos_keys).tolist()
        depth = min(limit, self.skip_top + 2 * self.num_neg + 10)
        ranked_ids, ranked_scores = self._rankings(questions, depth)
        depths = [depth] * len(questions)
        scores: list[float | None] = [None] * len(questions)
        missing = []
        for j, anchor in enumerate(anchors):
            if anchor < 0:
                continue
            if anchor in ranked_ids[j]:
                scores[j] = ranked_scores[j][ranked_ids[j].index(anchor)]
            else:
                missing.append(j)
        for j, s in zip(missing, self.index.score_rows([questions[j] for j in missing], [anchors[j] for j in missing])):
            scores[j] = s
        selections: list[Selection] = [None] * len(questions)  # type: ignore[list-item]
        pending, rounds = list(range(len(questions))), 1
        while pending:
            deeper = []
            for j in pending:
                sel = select_negatives(
                    ranked_ids[j], ranked_scores[j], num_neg=self.num_neg, positive_ids={anchors[j]},
                    positive_key=pos_keys[j], key_of=self._key_of, positive_score=scores[j],
                    skip_top=self.skip_top, max_score_ratio=self.max_score_ratio)
                selections[j] = sel
                hopeless = self.max_score_ratio is not None and scores[j] is not None and scores[j] <= 0
                if sel.exhausted and len(ranked_ids[j]) == depths[j] and depths[j] < limit and not hopeless:
                    deeper.append(j)
            if not deeper:
                break
            depth = min(limit, max(depths[j] for j in deeper) * DEEPEN)
            more_ids, more_scores = self._rankings([questions[j] for j in deeper], depth)
            for j, ids, sc in zip(deeper, more_ids, more_scores):
                ranked_ids[j], ranked_scores[j], depths[j] = ids, sc, depth
            pending, rounds = deeper, rounds + 1
        return Mined(selections, scores, rounds)

    def _rankings(self, questions: list[str], depth: int) -> tuple[list[list[int]], list[list[float]]]:
        """Per question, its top-``depth`` index rows and scores as Python lists."""
        hits = self.index.search_rows(questions, depth)
        rows, scores, bounds = hits.row.tolist(), hits.score.tolist(), hits.bounds(len(questions)).tolist()
        return ([rows[a:z] for a, z in zip(bounds, bounds[1:])], [scores[a:z] for a, z in zip(bounds, bounds[1:])])
