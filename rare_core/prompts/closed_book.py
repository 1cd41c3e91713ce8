"""Closed-book probe prompt: scenario + question in, without any document; a short answer out.

``build_messages(scenario, question)`` -> OpenAI chat messages. The model answers with JSON:
``{"answer": "..."}`` (:class:`ClosedBookReply`, read by :func:`parse_reply`).
``read(text)`` -> a :class:`ClosedBookView` of a user message ``build_messages`` wrote (scenario,
question), or None: what a simulator needs, read with the builder's own layouts (:data:`USER`,
:data:`USER_WITH_SCENARIO`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, field_validator

from rare_core.parsing import parse_json_object
from rare_core.prompts.layout import Layout, Slot

VERSION = "closed_book/v1"

SYSTEM = ("You are an expert who answers questions from your own knowledge. No documents are available "
          "to you, and none will be.")

_INSTRUCTIONS = """Answer the question below from what you know. Give your best answer even when you are unsure.
Reply with JSON only, no commentary:
{"answer": "<the answer in one short sentence or phrase; to a yes/no question, begin with yes, no or maybe>"}"""

_QUESTION = ("<question>\n", Slot("question"), "\n</question>")
USER = Layout(f"{_INSTRUCTIONS}\n\n", *_QUESTION)
"""The user message of a question without a scenario (questions_given)."""
USER_WITH_SCENARIO = Layout(f"{_INSTRUCTIONS}\n\n<scenario>\n", Slot("scenario"), "\n</scenario>\n\n", *_QUESTION)
"""The user message of a question with its scenario."""


def build_messages(scenario: str, question: str) -> list[dict]:
    """Chat messages asking ``question`` (after ``scenario``, unless it is blank) with no document."""
    if scenario and scenario.strip():
        user = USER_WITH_SCENARIO.render(scenario=scenario, question=question)
    else:
        user = USER.render(question=question)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


class ClosedBookReply(BaseModel):
    """The model's reply: its answer, not blank."""

    answer: str

    @field_validator("answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the answer is blank")
        return value.strip()


def parse_reply(text: str | None) -> str:
    """The answer in a reply (ParseError when the reply holds none)."""
    return parse_json_object(text, ClosedBookReply).answer


@dataclass(frozen=True)
class ClosedBookView:
    """A closed-book prompt read back: ``scenario`` (empty when none was shown), ``question``,
    ``text`` the user message it was read from."""

    kind: ClassVar[Literal["closed_book"]] = "closed_book"
    scenario: str
    question: str
    text: str


def read(text: str) -> ClosedBookView | None:
    """The view of ``text`` when :func:`build_messages` wrote it as its user message, else None."""
    slots = USER_WITH_SCENARIO.read(text)
    if slots is None or not slots["scenario"].strip():  # a blank scenario is never shown
        slots = USER.read(text)
    if slots is None:
        return None
    return ClosedBookView(scenario=slots.get("scenario", ""), question=slots["question"], text=text)
