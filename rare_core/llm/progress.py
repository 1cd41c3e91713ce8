"""A batch's progress callback, and keeping API keys out of what is reported.

In: ``on_progress(done, total)`` (or None), the batch's row count, its API key. Out:
:class:`Progress`, which calls the callback as rows finish (:meth:`Progress.advance` by a
number of rows, :meth:`Progress.update` to a count); an exception in the callback is logged
once per batch and ignored: a broken progress bar must neither fail a row nor stop the batch.
:func:`scrub`: a text with the key replaced, the one place keys are kept out of errors, logs
and state files.
"""

from __future__ import annotations

import logging

from rare_core.llm.types import ProgressCallback

log = logging.getLogger("rare_core.llm")


def scrub(text: str, key: str | None) -> str:
    """``text`` with the API key (if any) replaced by ``***``."""
    return text.replace(key, "***") if key and len(key) >= 4 else text


class Progress:
    """See the module docstring."""

    def __init__(self, callback: ProgressCallback | None, total: int, key: str | None) -> None:
        self.callback, self.total, self.key = callback, total, key
        self.done = 0
        self.warned = False
        self._reported = False

    def advance(self, rows: int) -> None:
        """``rows`` more rows are done."""
        self._report(self.done + rows)

    def update(self, done: int) -> None:
        """``done`` rows are done (called again with the same count, it reports nothing)."""
        done = min(done, self.total)
        if self.total and (done > self.done or not self._reported):
            self._report(done)

    def _report(self, done: int) -> None:
        self.done, self._reported = done, True
        if self.callback is None:
            return
        try:
            self.callback(self.done, self.total)
        except Exception as exc:  # noqa: BLE001
            if not self.warned:
                self.warned = True
                log.warning("the on_progress callback raised %s: %s (ignored for the rest of this batch)",
                            type(exc).__name__, scrub(str(exc), self.key)[:500])
