"""Pick hard negatives from one query's BM25 ranking: pure Python, no JVM.

In: the ranking (ids and scores, best first), the positive's ids and normalized text, its score,
and the guard settings. Out: :class:`Selection` with the chosen ids/scores (best first), up to
``spare`` more candidates that pass the same rules (the spares a check of the negatives draws
replacements from), the positive's rank and whether the ranking ran out before ``num_neg +
spare`` candidates were found below ``reserve_top``.

Rules, applied walking down the ranking (rank 1 = best):

1. ranks ``1..skip_top`` are skipped (counted over the raw ranking, positive included);
2. the positive is excluded by id, and so is every document whose normalized text equals the
   positive's (``normalize_text``: NFKC, casefold, zero-width and format characters removed,
   whitespace collapsed: a copy in another Unicode normalization, in full-width forms or with
   a zero-width space in it is the same text);
3. a candidate scoring ``<= 0`` is dropped (it shares no weighted term with the query);
4. with ``max_score_ratio`` set and the positive's score known, a candidate scoring
   ``>= max_score_ratio * positive_score`` is dropped: it matches the question about as well as
   the positive does, so it is likely a false negative. A positive that scores 0 drops every
   candidate (they all match the question better than the positive does);
5. no two negatives share an id or a normalized text;
6. a candidate that is the positive of another row with the same question (``excluded_ids``, or
   its text's fingerprint in ``excluded_keys``) is dropped, and counted in ``group_excluded``;
7. a candidate found to be a near-duplicate of the positive (``near_duplicates``: the caller
   decides, see :class:`~rare_core.retrieval.mining.NearDuplicates`) is dropped, and counted
   in ``near_duplicates``;
8. a candidate ranked ``1..reserve_top`` (raw ranks, as ``skip_top``) is held in reserve: the
   best documents for the question are the likeliest unjudged positives, so they are used
   only when the ranks below leave fewer than ``num_neg`` negatives, best first, to fill the
   row (a corpus smaller than ``reserve_top`` gets the negatives it got without a reserve);
9. stop at ``num_neg`` negatives below ``reserve_top``, or at ``num_neg + spare`` candidates
   with spares: the first ``num_neg`` are the negatives (the reserve filling them as in rule 8,
   so they are those that ``spare=0`` gives), the next ones below ``reserve_top`` then the reserve
   left unused, in rank order, are the spares.

Rules 6 and 7 are checked after 1-5, so their counts are of candidates that those rules let
through: what each exclusion changed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

# Invisible characters that copy-pasted or scraped text carries and NFKC keeps: zero-width
# space/non-joiner/joiner, word joiner, BOM (zero-width no-break space), soft hyphen, and the
# left-to-right/right-to-left marks. Removed, not turned into spaces: they sit inside words.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f]")  # re: 20x faster than str.translate


def normalize_text(text: object) -> str:
    """The text as compared for copies: invisible characters (:data:`_INVISIBLE`) removed, NFKC
    (composed accents, full-width and compatibility forms folded), casefolded, NFKC again (a
    casefold can leave decomposed sequences: "ΐ" and "Ϊ́" must meet), runs of whitespace
    collapsed to one space, stripped."""
    text = str(text)
    if not text.isascii():  # ASCII is NFKC already and holds no invisible character
        text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))
        text = unicodedata.normalize("NFKC", text.casefold())
    else:
        text = text.casefold()
    return " ".join(text.split())


def text_key(text: object) -> int:
    """A 64-bit fingerprint of ``normalize_text(text)`` (compact for large corpora)."""
    digest = hashlib.blake2b(normalize_text(text).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass
class Selection:
    """The negatives of one query and what the walk saw.

    ``positive_rank``: 1-based rank of the first ranking entry that is the positive or a copy of
    its text, -1 when neither is in the ranking. ``exhausted``: the walk reached
    the end of the ranking with fewer than ``num_neg + spare`` candidates below ``reserve_top``
    (a deeper ranking may give more; the reserve may have filled the row meanwhile).
    ``spare_ids``, ``spare_scores``: the spares (rule 9).
    ``group_excluded``, ``near_duplicates``: candidates dropped by rules 6 and 7 on the way.
    """

    ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    spare_ids: list[str] = field(default_factory=list)
    spare_scores: list[float] = field(default_factory=list)
    positive_rank: int = -1
    exhausted: bool = False
    group_excluded: int = 0  # candidates dropped by rule 6
    near_duplicates: int = 0  # candidates dropped by rule 7


def select_negatives(
    ranked_ids: Sequence[str],
    ranked_scores: Sequence[float],
    *,
    num_neg: int,
    positive_ids: Collection[str],
    positive_key: int,
    key_of: Callable[[str], int],
    positive_score: float | None = None,
    skip_top: int = 0,
    max_score_ratio: float | None = 0.95,
    reserve_top: int = 0,
    excluded_ids: Collection[str] = (),
    excluded_keys: Collection[int] = (),
    near_duplicates: Collection[str] = (),
    spare: int = 0,
) -> Selection:
    """Apply the rules of this module to one ranking; ``key_of(id)`` gives a document's ``text_key``."""
    selection = Selection()
    wanted = num_neg + spare
    ceiling = None
    if max_score_ratio is not None and positive_score is not None:
        ceiling = max_score_ratio * positive_score
    seen_keys = {positive_key}
    reserve: list[tuple[str, float, int]] = []  # (id, score, key) of the candidates ranked 1..reserve_top
    for rank, (doc_id, score) in enumerate(zip(ranked_ids, ranked_scores), start=1):
        key = key_of(doc_id)
        is_positive = doc_id in positive_ids or key == positive_key
        if is_positive and selection.positive_rank < 0:
            selection.positive_rank = rank
        if len(selection.ids) >= wanted:
            if selection.positive_rank > 0:
                break
            continue
        if rank <= skip_top or is_positive or score <= 0:
            continue
        if ceiling is not None and score >= ceiling:
            continue
        if key in seen_keys:  # same normalized text as the positive or a chosen negative (or same id)
            continue
        if doc_id in excluded_ids or key in excluded_keys:
            selection.group_excluded += 1
            continue
        if doc_id in near_duplicates:
            selection.near_duplicates += 1
            continue
        if rank <= reserve_top:
            reserve.append((doc_id, float(score), key))
            continue
        seen_keys.add(key)
        selection.ids.append(doc_id)
        selection.scores.append(float(score))
    selection.exhausted = len(selection.ids) < wanted
    spares = list(zip(selection.ids[num_neg:], selection.scores[num_neg:]))
    del selection.ids[num_neg:], selection.scores[num_neg:]
    fill: list[tuple[str, float]] = []
    for doc_id, score, key in reserve:
        if len(selection.ids) + len(fill) >= num_neg and len(spares) >= spare:
            break
        if key not in seen_keys:
            seen_keys.add(key)
            (fill if len(selection.ids) + len(fill) < num_neg else spares).append((doc_id, score))
    if fill:  # ranked above every other negative
        selection.ids[:0] = [doc_id for doc_id, _ in fill]
        selection.scores[:0] = [score for _, score in fill]
    selection.spare_ids = [doc_id for doc_id, _ in spares[:spare]]
    selection.spare_scores = [score for _, score in spares[:spare]]
    return selection
