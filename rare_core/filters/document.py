"""DocumentFilter (before Doc2Query): documents too short to ask about, and exact copies.

``process(df, input_key="text", id_key="id")`` filters, among the rows not failed upstream:

* ``too_short``: fewer than ``min_words`` (default 20, ReasonIR's cut) whitespace-separated
  words (a blank or missing text has 0); reason ``"too short (7 words < 20)"``;
* ``exact_duplicates``: the same text as an earlier kept row once normalized
  (:func:`~rare_core.retrieval.negatives.normalize_text`: NFKC, casefold, invisible characters
  removed, whitespace collapsed; punctuation counts). The first row is kept, every later copy is
  filtered with reason ``"exact duplicate of <id>"``, ``<id>`` the kept row's ``id_key`` value
  (:func:`~rare_core.operators.base.canonical_id`), or ``"exact duplicate of row <N>"`` (0-based
  input position) when there is no id column or the kept row's id is blank.

Length is checked first, so a short copy of a short document is counted as ``too_short``.
Copies are found in one pass through a dict of 64-bit fingerprints
(:func:`~rare_core.retrieval.negatives.text_key`), confirmed on the normalized texts, so a
fingerprint collision cannot drop a document.
"""

from __future__ import annotations

import pandas as pd
from pydantic import Field

from rare_core.filters.common import FilterConfig, FilterOperator, filter_spec
from rare_core.operators.base import canonical_id, is_blank
from rare_core.retrieval.negatives import normalize_text, text_key

TOO_SHORT = "too_short"
EXACT_DUPLICATES = "exact_duplicates"


class DocumentFilterConfig(FilterConfig):
    """Settings of the document filter."""

    min_words: int = Field(20, ge=0, description="Documents with fewer whitespace words are filtered (0: off).")
    exact_duplicates: bool = Field(True, description="Filter every later copy of a normalized text.")


class DocumentFilter(FilterOperator):
    step_name = "doc_filter"
    config_class = DocumentFilterConfig
    reasons = (TOO_SHORT, EXACT_DUPLICATES)
    config: DocumentFilterConfig

    def process(self, df: pd.DataFrame, input_key: str = "text", id_key: str = "id") -> pd.DataFrame:
        run = self._start(df, [input_key], input_key=input_key, id_key=id_key)
        if not self.config.enabled:
            return self._finish(run, {})
        df, cfg = run.df, self.config
        texts = df[input_key].to_numpy(dtype=object)
        ids = df[id_key].to_numpy(dtype=object) if id_key in df.columns else None
        filtered: dict[int, tuple[str, str]] = {}
        firsts: dict[int, list[int]] = {}  # text_key -> kept rows with that fingerprint
        for pos in range(len(df)):
            if not run.active[pos]:
                continue
            text = texts[pos]
            n_words = 0 if is_blank(text) else len(str(text).split())
            if n_words < cfg.min_words:
                filtered[pos] = (TOO_SHORT, f"too short ({n_words} words < {cfg.min_words})")
                continue
            if not cfg.exact_duplicates:
                continue
            key = text_key(text)
            kept = firsts.get(key)
            if kept is None:
                firsts[key] = [pos]
                continue
            norm = normalize_text(text)
            first = next((row for row in kept if normalize_text(texts[row]) == norm), None)
            if first is None:  # a fingerprint collision: another text
                kept.append(pos)
                continue
            if ids is not None and not is_blank(ids[first]):
                of = canonical_id(ids[first])
            else:
                of = f"row {first}"
            filtered[pos] = (EXACT_DUPLICATES, f"exact duplicate of {of}")
        return self._finish(run, filtered, {"min_words": cfg.min_words})


SPEC = filter_spec("docfilter", DocumentFilter, "documents", lambda c: {"input_key": c.columns.text, "id_key": c.columns.id},
                   "Before Doc2Query: exact duplicates, too few words.", scope="corpus")
