"""Hard-negative mining over a BM25 index: search, the positive's score, selection, deepening.

In: a :class:`~rare_core.retrieval.index.BM25Index`, the documents' text fingerprints by index
row (``text_key``, one uint64 array), the selection settings (``spare``: candidates kept
beyond ``num_neg``, :attr:`~rare_core.retrieval.negatives.Selection.spare_ids`) and optionally a
:class:`NearDuplicates` test. Per batch of questions: their positives and optionally each one's
:class:`Group` (:func:`question_groups`). Out: a :class:`Mined` with one
:class:`~rare_core.retrieval.negatives.Selection` per question (negatives as index rows, best
first), the positive's score and the number of search passes.

Exclusions beyond the row's own positive: the positives of every row asking the same question
(its group: their ids and text fingerprints), and near-duplicates of the row's positive. The
near-duplicate test needs the candidates' texts, so it runs on the negatives chosen once the
whole batch is searched (one fetch of texts): the near-duplicates it finds are excluded and
those rows are selected (and searched deeper) again, the next candidates taking their place,
until every chosen negative and spare has passed it.

With ``n = num_neg + spare``, the first search goes ``max(skip_top, reserve_top) + 2 * n + 10``
deep; a question left short of ``n`` candidates (below ``reserve_top``) while its ranking was
cut at that depth is searched again ``DEEPEN`` times deeper, until it is complete, the depth
covers the corpus or reaches ``max_depth``. A question whose positive scores 0 under ``max_score_ratio`` is not searched
deeper: no candidate can pass that guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

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


@dataclass(frozen=True)
class Group:
    """The positives of the rows that ask one question: their ids (as text) and ``text_key``s."""

    ids: frozenset[str]
    keys: frozenset[int]


def question_groups(question_keys: Sequence[Hashable | None], positive_ids: Sequence[str],
                    positive_texts: Sequence[object]) -> list[Group | None]:
    """Per row, the :class:`Group` of the rows with its ``question_keys`` value (its own positive
    included), shared by them; None where no row with another positive asks the same question
    (or the key is None): the row's own positive is excluded anyway."""
    rows_of: dict[Hashable, list[int]] = {}
    for row, question in enumerate(question_keys):
        if question is not None:
            rows_of.setdefault(question, []).append(row)
    groups: list[Group | None] = [None] * len(question_keys)
    for rows in rows_of.values():
        if len(rows) < 2:
            continue
        group = Group(frozenset(positive_ids[r] for r in rows), frozenset(text_key(positive_texts[r]) for r in rows))
        if len(group.ids) > 1 or len(group.keys) > 1:
            for r in rows:
                groups[r] = group
    return groups


class NearDuplicates:
    """Which candidates are near-duplicates of a positive: the Jaccard similarity of their word
    shingles (the question dedup's ``words`` and ``shingles``) is at or above ``threshold``.

    The similarity is computed exactly on the two shingle sets: each pair is known, so there is
    no search for which the question dedup's MinHash sketches (estimates of this same
    similarity) would pay, and a set intersection costs less than one sketch.
    In: ``texts_of(index rows)`` -> those documents' texts in that order, called once per
    :meth:`flags` call.
    """

    def __init__(self, texts_of: Callable[[np.ndarray], list[str]], threshold: float, *, shingle_size: int = 3) -> None:
        # Imported here: rare_core.filters imports this package (normalize_text).
        from rare_core.filters.common import words
        from rare_core.filters.dedup import shingles

        self.texts_of, self.threshold = texts_of, threshold
        self._shingles = lambda text: shingles(words(text), shingle_size)

    def flags(self, positives: list[str], candidates: list[list[int]]) -> list[set[int]]:
        """Per positive text, the index rows among its ``candidates`` that are near-duplicates of it."""
        rows = sorted({r for cands in candidates for r in cands})
        if not rows:
            return [set() for _ in positives]
        shingles_of = dict(zip(rows, map(self._shingles, self.texts_of(np.array(rows, dtype=np.int64)))))
        positive_shingles = {text: self._shingles(text) for text in dict.fromkeys(positives)}
        return [{r for r in cands if jaccard(positive_shingles[text], shingles_of[r]) >= self.threshold}
                for text, cands in zip(positives, candidates)]


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; 0.0 when both are empty."""
    common = len(a & b)
    union = len(a) + len(b) - common
    return common / union if union else 0.0


class Miner:
    """Searches, scores the positives and selects on index rows; deepens the search for rows cut short by the depth.

    In: the index and ``keys``, the documents' text fingerprints by index row (one uint64
    array); ``near_duplicates``: the near-duplicate test, None for none. Documents are handled
    by index row throughout.
    """

    def __init__(self, index: BM25Index, keys: np.ndarray, *, num_neg: int, skip_top: int = 0,
                 max_score_ratio: float | None = 0.95, max_depth: int = 1000, reserve_top: int = 0,
                 near_duplicates: NearDuplicates | None = None, spare: int = 0) -> None:
        self.index, self.keys, self.num_neg, self.spare = index, keys, num_neg, spare
        self.skip_top, self.max_score_ratio, self.max_depth = skip_top, max_score_ratio, max_depth
        self.reserve_top = reserve_top
        self.near_duplicates = near_duplicates
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

    def _group_exclusions(self, groups: Sequence[Group | None]) -> list[tuple[frozenset[int], frozenset[int]]]:
        """Per question, (index rows, text keys) of its group's positives; empty sets without a group."""
        none: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())
        found: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        out = []
        for group in groups:
            if group is None:
                out.append(none)
                continue
            if id(group) not in found:
                rows = self.index.rows_of(sorted(group.ids))
                found[id(group)] = (frozenset(rows[rows >= 0].tolist()), group.keys)
            out.append(found[id(group)])
        return out

    def mine(self, questions: list[str], positive_ids: list[str], positive_texts: list[str],
             groups: Sequence[Group | None] | None = None) -> Mined:
        """Negatives for each question (``positive_ids``/``positive_texts``: its source document;
        ``groups``: each question's :class:`Group`, None for no group exclusion)."""
        top = max(self.skip_top, self.reserve_top)
        wanted = self.num_neg + self.spare
        limit = min(self.index.num_docs, max(self.max_depth, top + wanted))
        pos_keys = [text_key(t) for t in positive_texts]
        anchors = self._anchors(positive_ids, pos_keys).tolist()
        excluded = self._group_exclusions(groups if groups is not None else [None] * len(questions))
        depth = min(limit, top + 2 * wanted + 10)
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
        near: list[set[int]] = [set() for _ in questions]  # near-duplicates of the positive found so far
        tested: list[set[int]] = [set() for _ in questions]  # candidates the near-duplicate test has seen

        def select(j: int) -> Selection:
            return select_negatives(
                ranked_ids[j], ranked_scores[j], num_neg=self.num_neg, positive_ids={anchors[j]},
                positive_key=pos_keys[j], key_of=self._key_of, positive_score=scores[j],
                skip_top=self.skip_top, max_score_ratio=self.max_score_ratio, reserve_top=self.reserve_top,
                excluded_ids=excluded[j][0], excluded_keys=excluded[j][1], near_duplicates=near[j],
                spare=self.spare)

        selections: list[Selection] = [None] * len(questions)  # type: ignore[list-item]
        rounds = 1
        batch = list(range(len(questions)))
        while batch:  # select and deepen; then test the negatives chosen, and do it again where one failed
            pending = batch
            while pending:
                for j in pending:
                    selections[j] = select(j)
                deeper = []
                for j in pending:
                    hopeless = self.max_score_ratio is not None and scores[j] is not None and scores[j] <= 0
                    if (selections[j].exhausted and len(ranked_ids[j]) == depths[j] and depths[j] < limit
                            and not hopeless):
                        deeper.append(j)
                if deeper:
                    depth = min(limit, max(depths[j] for j in deeper) * DEEPEN)
                    more_ids, more_scores = self._rankings([questions[j] for j in deeper], depth)
                    for j, ids, sc in zip(deeper, more_ids, more_scores):
                        ranked_ids[j], ranked_scores[j], depths[j] = ids, sc, depth
                    rounds += 1
                pending = deeper
            batch = [] if self.near_duplicates is None else _test(
                self.near_duplicates, batch, selections, positive_texts, near, tested)
        return Mined(selections, scores, rounds)

    def _rankings(self, questions: list[str], depth: int) -> tuple[list[list[int]], list[list[float]]]:
        """Per question, its top-``depth`` index rows and scores as Python lists."""
        hits = self.index.search_rows(questions, depth)
        rows, scores, bounds = hits.row.tolist(), hits.score.tolist(), hits.bounds(len(questions)).tolist()
        return ([rows[a:z] for a, z in zip(bounds, bounds[1:])], [scores[a:z] for a, z in zip(bounds, bounds[1:])])


def _test(test: NearDuplicates, questions: list[int], selections: list[Selection], positive_texts: list[str],
          near: list[set[int]], tested: list[set[int]]) -> list[int]:
    """Run ``test`` on the chosen negatives and spares of ``questions`` it has not seen; record
    what it found in ``near`` and ``tested``. Out: the questions where it found a near-duplicate."""
    todo = [(j, [r for r in selections[j].ids + selections[j].spare_ids if r not in tested[j]]) for j in questions]
    todo = [(j, rows) for j, rows in todo if rows]
    found = test.flags([positive_texts[j] for j, _ in todo], [rows for _, rows in todo])
    again = []
    for (j, rows), dups in zip(todo, found):
        tested[j].update(rows)
        if dups:
            near[j] |= dups
            again.append(j)
    return again
