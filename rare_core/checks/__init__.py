"""Checks of what the rows teach, each a step of its own (section ``checks.<name>``).

A check reads the rows at its place in the run and flags each in ``rare_`` columns; it
removes a row (to failed_rows, error kind ``filtered``) only where its settings say so.
:mod:`rare_core.checks.grounding` (after ReasonDistill): quotes attributed to a ``[Document i]``
that it does not hold. :mod:`rare_core.checks.closed_book` (before BM25HardNeg): questions a
model answers correctly without any document. :mod:`rare_core.checks.negatives` (after
BM25HardNeg): negatives that alone support the answer, replaced by BM25HardNeg's spares.
"""
