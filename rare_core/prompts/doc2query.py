"""Doc2Query prompt: one document in, standalone reasoning-intensive question(s) + scenario out.

``build_messages(document, num_questions, max_doc_chars)`` -> OpenAI chat messages.
The model answers with JSON: ``{"question": ..., "scenario": ...}`` for one question, or
``{"questions": [{"question": ..., "scenario": ...}, ...]}`` for several.
"""

from __future__ import annotations

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


def build_messages(document: str, num_questions: int = 1, max_doc_chars: int = 6000) -> list[dict]:
    """Chat messages asking for ``num_questions`` question(s) about ``document``.

    The fixed instructions come first and the document last, so that every prompt of a run
    shares its longest possible prefix (prefix caching in vLLM and SGLang, prompt caching at
    OpenAI bill and compute that part once).
    """
    shape = _ONE if num_questions == 1 else _MANY.replace("N", str(num_questions))
    count = "one question" if num_questions == 1 else f"exactly {num_questions} different questions"
    user = (
        _RULES.format(json_shape=shape)
        + f"\n\nNumber of questions: {num_questions}\n"
        f"Write {count} from the document between the delimiters below.\n\n"
        f"{DOC_OPEN}\n{truncate(document, max_doc_chars)}\n{DOC_CLOSE}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
