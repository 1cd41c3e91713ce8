"""What a chat request asks, read back from the pipeline's own prompts: the one thing a simulator
needs to answer in kind, without ever matching the prompts' wording itself.

In: OpenAI chat messages (``{"role", "content"}``, content a string or a list of text parts).
Out: :func:`read_prompt` -> the :data:`PromptView` of the newest user message that one of the
prompt modules recognises as its own (a re-ask appends a short correction after the original
prompt, and is read as the original), or None. Each module reads with the layout its builder
writes (:mod:`rare_core.prompts.doc2query`, :mod:`rare_core.prompts.reason_distill`, the judge
of :mod:`rare_core.verify`, the closed-book probe of :mod:`rare_core.prompts.closed_book`, the
negative check of :mod:`rare_core.prompts.negative_check`), so a change of wording changes both
together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rare_core.prompts import closed_book, doc2query, negative_check, reason_distill
from rare_core.prompts.closed_book import ClosedBookView
from rare_core.prompts.doc2query import Doc2QueryView
from rare_core.prompts.negative_check import NegativeCheckView
from rare_core.prompts.reason_distill import DistillView
from rare_core.verify import JudgeView, read_judge_prompt

PromptView = Doc2QueryView | DistillView | JudgeView | ClosedBookView | NegativeCheckView
"""A prompt read back; its ``kind`` says which: ``doc2query``, ``distill``, ``judge``, ``closed_book``
or ``negative_check``."""

_READERS = (doc2query.read, read_judge_prompt, reason_distill.read, closed_book.read, negative_check.read)

__all__ = ["ClosedBookView", "Doc2QueryView", "DistillView", "JudgeView", "NegativeCheckView", "PromptView",
           "message_text", "read_prompt"]


def message_text(message: Mapping[str, Any]) -> str:
    """A chat message's text: its content, or the texts of its content parts joined by newlines."""
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content)
    return content or ""


def read_prompt(messages: Iterable[Mapping[str, Any]]) -> PromptView | None:
    """The view of the newest user message a prompt module wrote, or None."""
    for message in reversed(list(messages)):
        if message.get("role") != "user":
            continue
        text = message_text(message)
        for read in _READERS:
            if (view := read(text)) is not None:
                return view
    return None
