"""ReasonDistill prompt: scenario + question + numbered documents in, reasoning + answer out.

``build_messages(scenario, question, documents, max_doc_chars)`` -> OpenAI chat messages.
The model answers ``<think>step-by-step reasoning</think><answer>final answer</answer>``.
``shuffled_order(row_key, n)`` gives the order in which the documents are shown: a
permutation seeded by the row itself, so the same row always gets the same prompt.
``read(text)`` -> a :class:`DistillView` of a user message ``build_messages`` wrote (scenario,
question, the documents as shown), or None: what a simulator needs, read with the builder's own
layouts (:data:`USER`, :data:`USER_WITH_SCENARIO`, :data:`DOCUMENT_HEADER`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import ClassVar, Literal

from rare_core.prompts.doc2query import truncate
from rare_core.prompts.layout import Layout, Slot

VERSION = "reason_distill/v2"

SYSTEM = (
    "You are an expert who solves hard questions by reasoning over retrieved documents. Some "
    "documents are relevant and some only look relevant. You think carefully and show your work."
)

_INSTRUCTIONS = """Read the scenario, the question and the documents below, then work through it in this order:
1. Identify the essential problem: what exactly is being asked, and what would a good answer need?
2. Judge each document: say which ones actually help and why, and which ones only look relevant.
3. Reason step by step from the helpful documents (and sound domain knowledge) to a conclusion.
4. Give the final answer.

Write your reasoning inside <think></think> and then the final answer inside <answer></answer>, like this:
<think>
...your reasoning...
</think>
<answer>
...your final answer...
</answer>"""


def shuffled_order(row_key: str, n: int) -> list[int]:
    """A permutation of ``range(n)`` seeded by ``row_key`` (stable across runs and machines)."""
    seed = int.from_bytes(hashlib.sha256(row_key.encode("utf-8")).digest()[:8], "big")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


_ROW = ("<question>\n", Slot("question"), "\n</question>\n\n<documents>\n", Slot("documents"), "\n</documents>")
USER = Layout(f"{_INSTRUCTIONS}\n\n", *_ROW)
"""The user message of a question given without a scenario (questions_given)."""
USER_WITH_SCENARIO = Layout(f"{_INSTRUCTIONS}\n\n<scenario>\n", Slot("scenario"), "\n</scenario>\n\n", *_ROW)
"""The user message of a question with its scenario."""
DOCUMENT_HEADER = "[Document {number}]\n"
"""The line before each document; the documents block joins them with :data:`DOCUMENT_SEPARATOR`."""
DOCUMENT_SEPARATOR = "\n\n"


def build_messages(scenario: str, question: str, documents: list[str], max_doc_chars: int = 4000) -> list[dict]:
    """Chat messages showing ``documents`` numbered from 1, in the order given."""
    docs = DOCUMENT_SEPARATOR.join(
        DOCUMENT_HEADER.format(number=i) + truncate(doc, max_doc_chars) for i, doc in enumerate(documents, start=1)
    )
    # Fixed instructions first, the row's own content last: the prompts of a run share a
    # prefix that prefix caching (vLLM, SGLang) and prompt caching (OpenAI) compute once.
    # A question given without a scenario (questions_given) is shown without the block.
    if scenario and scenario.strip():
        user = USER_WITH_SCENARIO.render(scenario=scenario, question=question, documents=docs)
    else:
        user = USER.render(question=question, documents=docs)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class DistillView:
    """A ReasonDistill prompt read back: ``scenario`` (empty when none was shown), ``question``,
    ``documents`` as shown (cut to ``max_doc_chars``, in the order shown), ``text`` the user
    message it was read from."""

    kind: ClassVar[Literal["distill"]] = "distill"
    scenario: str
    question: str
    documents: tuple[str, ...]
    text: str


def read(text: str) -> DistillView | None:
    """The view of ``text`` when :func:`build_messages` wrote it as its user message, else None."""
    slots = USER_WITH_SCENARIO.read(text)
    if slots is None or not slots["scenario"].strip():  # a blank scenario is never shown
        slots = USER.read(text)
    documents = None if slots is None else _read_documents(slots["documents"])
    if documents is None:
        return None
    return DistillView(scenario=slots.get("scenario", ""), question=slots["question"], documents=documents, text=text)


def _read_documents(block: str) -> tuple[str, ...] | None:
    """The documents of a documents block, numbered from 1 in order (None when it is not one)."""
    if not block:
        return ()
    first = DOCUMENT_HEADER.format(number=1)
    if not block.startswith(first):
        return None
    documents: list[str] = []
    rest = block[len(first):]
    while True:
        following = DOCUMENT_SEPARATOR + DOCUMENT_HEADER.format(number=len(documents) + 2)
        text, found, rest = rest.partition(following)
        documents.append(text)
        if not found:
            return tuple(documents)
