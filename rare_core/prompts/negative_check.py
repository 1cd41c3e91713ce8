"""Negative-check prompt: a question, its reference answer and ONE candidate negative in; whether
that document alone supports the answer out.

``build_messages(question, reference, document, max_doc_chars)`` -> OpenAI chat messages, the
document cut to ``max_doc_chars`` as the teacher's prompt cuts it
(:func:`rare_core.prompts.doc2query.truncate`). The model answers with JSON:
``{"supports": true|false, "reason": "..."}`` (:class:`NegativeCheckReply`, read by
:func:`parse_reply` into a :class:`Support`).
``read(text)`` -> a :class:`NegativeCheckView` of a user message ``build_messages`` wrote
(question, reference, document), or None: what a simulator needs, read with the builder's own
layout (:data:`USER`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel

from rare_core.parsing import parse_json_object
from rare_core.prompts.doc2query import truncate
from rare_core.prompts.layout import Layout, Slot

VERSION = "negative_check/v1"
MAX_REASON_CHARS = 500  # of the reason kept with a rejected candidate (as the judge's)

SYSTEM = ("You check retrieval training data. Given a question, its reference answer and one document, you "
          "decide whether that document on its own supports the answer.")

_INSTRUCTIONS = """Decide whether the document below, read on its own, supports the reference answer to the question:
a reader given only this document could reach that answer from what the document states. A document on the
same topic that does not state what the answer rests on does not support it.
Reply with JSON only, no commentary: {"supports": true or false, "reason": "<one sentence>"}"""

USER = Layout(
    f"{_INSTRUCTIONS}\n\n<question>\n", Slot("question"), "\n</question>\n\n<reference_answer>\n",
    Slot("reference"), "\n</reference_answer>\n\n<document>\n", Slot("document"), "\n</document>",
)
"""The user message: instructions first (a prefix shared by every request), then the row."""


def build_messages(question: str, reference: str, document: str, max_doc_chars: int) -> list[dict]:
    """Chat messages asking whether ``document`` (cut to ``max_doc_chars``) supports ``reference``."""
    user = USER.render(question=question, reference=reference, document=truncate(document, max_doc_chars))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


class NegativeCheckReply(BaseModel):
    """The model's reply: whether the document supports the answer, and why."""

    supports: bool
    reason: str = ""


@dataclass(frozen=True)
class Support:
    """A usable reply: ``supports`` and its ``reason`` (stripped, at most :data:`MAX_REASON_CHARS`)."""

    supports: bool
    reason: str


def parse_reply(text: str | None) -> Support:
    """The verdict in a reply (ParseError when the reply holds none)."""
    reply = parse_json_object(text, NegativeCheckReply)
    return Support(reply.supports, reply.reason.strip()[:MAX_REASON_CHARS])


@dataclass(frozen=True)
class NegativeCheckView:
    """A negative-check prompt read back: the ``question``, the ``reference`` answer, the candidate
    ``document`` (as shown: cut), ``text`` the user message it was read from."""

    kind: ClassVar[Literal["negative_check"]] = "negative_check"
    question: str
    reference: str
    document: str
    text: str


def read(text: str) -> NegativeCheckView | None:
    """The view of ``text`` when :func:`build_messages` wrote it as its user message, else None."""
    slots = USER.read(text)
    return None if slots is None else NegativeCheckView(**slots, text=text)
