"""The data filters of the RARE/ReasonIR recipe, as operators (frame in, frame out).

=================  ===================  ======================================================
class              step (``rare_<step>_status``)  where and what
=================  ===================  ======================================================
DocumentFilter     ``doc_filter``       before Doc2Query: documents under ``min_words`` words, exact copies
QuestionDedup      ``question_dedup``   after Doc2Query: exact and MinHash-LSH near-duplicate questions
LeakageFilter      ``leakage_filter``   after Doc2Query: the reference answer given away, the document copied
DecontaminateFilter ``decontaminate``   after Doc2Query: documents and questions overlapping a benchmark
LengthFilter       ``length_filter``    question / reasoning token counts out of bounds
=================  ===================  ======================================================

No filter drops a row: a rejected row gets ``rare_status="failed"``, ``rare_error="<step>:
<reason>"``, ``rare_error_kind="filtered"`` (:data:`FILTERED_ERROR`) and
``rare_<step>_status="filtered"``; see :mod:`rare_core.filters.common` for the rest of the
bookkeeping and the summary. Each filter's module holds its step spec (``SPEC``); the
registry (:data:`rare_core.pipeline.STEPS`) places them.
"""

from __future__ import annotations

from rare_core.filters.common import FILTERED, FILTERED_ERROR, FilterConfig, FilterOperator, whitespace_tokens, words
from rare_core.filters.dedup import QuestionDedup, QuestionDedupConfig
from rare_core.filters.document import DocumentFilter, DocumentFilterConfig
from rare_core.filters.leakage import LeakageFilter, LeakageFilterConfig
from rare_core.filters.length import LengthBounds, LengthFilter, LengthFilterConfig

__all__ = [
    "FILTERED", "FILTERED_ERROR", "DocumentFilter", "DocumentFilterConfig", "FilterConfig",
    "FilterOperator", "LeakageFilter", "LeakageFilterConfig", "LengthBounds", "LengthFilter",
    "LengthFilterConfig", "QuestionDedup", "QuestionDedupConfig", "whitespace_tokens", "words",
]
