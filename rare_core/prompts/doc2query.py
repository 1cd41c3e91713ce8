"""Doc2Query prompt: one document in, standalone reasoning-intensive question(s) + scenario out.

``build_messages(document, num_questions, max_doc_chars)`` -> OpenAI chat messages.
The model answers with JSON: ``{"question": ..., "scenario": ...}`` for one question, or
``{"questions": [{"question": ..., "scenario": ...}, ...]}`` for several.
``read(text)`` -> a :class:`Doc2QueryView` of a user message ``build_messages`` wrote (the
document as shown, the number of questions), or None: what a simulator needs, read with the
builder's own :data:`USER` layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rare_core.prompts.layout import Layout, Slot

VERSION = "doc2query/v3"

DOC_OPEN = "<document>"
DOC_CLOSE = "</document>"

SYSTEM = (
    "You write exam questions that test reasoning, not recall. You are given one document from a "
    "domain corpus. A student will later answer your question with a search engine over the whole "
    "corpus, without ever being shown this document."
)

_RULES = """Requirements for every question:
1. Standalone: it must be fully understandable without the document. Never refer to "the document", "the passage", "the text", "the study above", "the authors" or similar.
2. Reasoning-intensive: answering must require analysis, inference, comparison or applying a principle to a case, not looking up a single fact or copying a sentence.
3. Grounded: the knowledge needed to answer must be contained in the document.
4. The scenario gives the concrete situation the question is about (who, what, under which conditions) in 2-4 sentences, without giving away the answer. The question is one sentence ending with a question mark.
5. The reference answer is the correct answer in one short sentence or phrase, supported by the document. It is used to check answers later and is never shown with the question.

Reply with JSON only, no commentary:
{json_shape}"""

_ONE = '{"scenario": "<the situation>", "question": "<the question>", "reference_answer": "<the short answer>"}'
_MANY = ('{"questions": [{"scenario": "<the situation>", "question": "<the question>", '
         '"reference_answer": "<the short answer>"}, ...]}  (exactly N items)')


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to ``max_chars`` at a word boundary, marking the cut."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    if space > max_chars * 0.8:
        cut = cut[:space]
    return cut + " [...]"


USER = Layout(
    Slot("rules"), "\n\nNumber of questions: ", Slot("num_questions"), "\nWrite ", Slot("count"),
    f" from the document between the delimiters below.\n\n{DOC_OPEN}\n", Slot("document"), f"\n{DOC_CLOSE}",
)
"""The user message: the rules, the count, then the document between its delimiters."""


def _fixed(num_questions: int) -> dict[str, str]:
    """The slots of :data:`USER` that follow from the number of questions."""
    shape = _ONE if num_questions == 1 else _MANY.replace("N", str(num_questions))
    count = "one question" if num_questions == 1 else f"exactly {num_questions} different questions"
    return {"rules": _RULES.format(json_shape=shape), "num_questions": str(num_questions), "count": count}


def build_messages(document: str, num_questions: int = 1, max_doc_chars: int = 6000) -> list[dict]:
    """Chat messages asking for ``num_questions`` question(s) about ``document``.

    The fixed instructions come first and the document last, so that every prompt of a run
    shares its longest possible prefix (prefix caching in vLLM and SGLang, prompt caching at
    OpenAI bill and compute that part once).
    """
    user = USER.render(**_fixed(num_questions), document=truncate(document, max_doc_chars))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Doc2QueryView:
    """A Doc2Query prompt read back: ``document`` as shown (cut to ``max_doc_chars``),
    ``num_questions`` asked for, ``text`` the user message it was read from."""

    kind: ClassVar[Literal["doc2query"]] = "doc2query"
    document: str
    num_questions: int
    text: str


def read(text: str) -> Doc2QueryView | None:
    """The view of ``text`` when :func:`build_messages` wrote it as its user message, else None."""
    slots = USER.read(text)
    count = slots["num_questions"] if slots else ""
    if not (count.isascii() and count.isdigit()):
        return None
    fixed = _fixed(int(count))
    if any(slots[name] != value for name, value in fixed.items()):
        return None
    return Doc2QueryView(document=slots["document"], num_questions=int(count), text=text)
