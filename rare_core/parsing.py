"""Parsing what real models emit into validated pydantic objects.

* :func:`parse_json_object` — the last JSON object in a reply that validates against a model,
  tolerating prose around it, code fences, braces in reasoning before it, smart quotes,
  unescaped LaTeX backslashes and trailing commas; valid JSON is read as JSON first ("\\nu"
  is a newline and "u"), unless strict reading leaves LaTeX damage (``\\frac`` as a form feed).
* :func:`parse_questions` — exactly ``n`` distinct Doc2Query questions from one reply.
* :func:`parse_reasoning` — ``<think>…</think><answer>…</answer>`` into reasoning + answer.
* :func:`source_reference` — the words by which a question points at its source document
  ("according to the passage", "the study found"), or None for a standalone question.

All parsers raise :class:`ParseError` with a short reason (which becomes the row's failure reason).
"""

from __future__ import annotations

import json
import re
from typing import Literal, TypeVar, Union

from pydantic import BaseModel, RootModel, ValidationError, field_validator

T = TypeVar("T", bound=BaseModel)


class ParseError(ValueError):
    """A reply could not be turned into the expected object; ``str(e)`` is the reason."""


# -- output models ------------------------------------------------------------------------------

# A question that points at its source ("according to the passage", "what does the text say")
# cannot stand alone. The nouns below are also ordinary words ("this article of the Convention",
# "the text message", "the passage of food", "the study of genetics", "a given text classifier"),
# so a noun counts as a pointer only by its context: what follows it, what precedes it.
_SOURCE_NOUN = re.compile(
    r"\b(?:documents?|passages?|texts?|excerpts?|abstracts?|articles?|papers?|stud(?:y|ies)|authors?)\b",
    re.IGNORECASE)
_REF_ADJECTIVES = r"above|given|provided|following|preceding|aforementioned"
# The words just before the noun (matched against the text before it): a determiner, maybe one
# of the adjectives that point at something outside the question, and maybe a preposition or
# participle that places the question's content in that thing.
_SOURCE_LEAD = re.compile(
    r"(?:\b(?P<pre>according\s+to|based\s+on|in|from|within|throughout"
    r"|(?:as\s+)?(?:described|stated|mentioned|discussed|shown|noted|reported|explained|outlined|presented"
    r"|suggested|indicated|given|provided|defined)\s+(?:in|by))\s+)?"
    rf"\b(?P<det>the|this|that|these|those)\s+(?:(?P<adj>{_REF_ADJECTIVES})\s+)?$",
    re.IGNORECASE)


def _verb_forms(*bases: str) -> set[str]:
    """The base form, -s/-es, -d/-ed and -ing forms of each verb (over-generating is harmless)."""
    out = set()
    for b in bases:
        stem = b[:-1] if b.endswith("e") else b
        out |= {b, b + "s", b + "es", b + "d", b + "ed", b + "ing", stem + "ing"}
        if b.endswith("y"):
            out |= {b[:-1] + "ies", b[:-1] + "ied"}
    return out


# Verbs that make the noun a speaker: "the passage says", "what does the study suggest".
_REPORTING = _verb_forms(
    "say", "state", "suggest", "describe", "mention", "discuss", "report", "show", "indicate", "note",
    "claim", "argue", "explain", "present", "provide", "imply", "conclude", "find", "reveal", "demonstrate",
    "propose", "outline", "highlight", "emphasize", "emphasise", "refer", "mean", "define", "list",
    "examine", "investigate", "evaluate", "assess", "explore", "review", "address", "focus", "aim",
    "recommend", "advise", "cite", "quote", "tell", "summarize", "summarise", "depict", "portray",
) | {"said", "found", "shown", "showed", "meant", "told", "above", "below", "here", "hereafter"}
# Words allowed between the noun and such a verb: "the passage does not say", "the text also notes".
_FILLERS = {"does", "do", "did", "doesn't", "don't", "didn't", "has", "have", "had", "hasn't", "haven't",
            "is", "are", "was", "were", "not", "also", "only", "clearly", "explicitly", "specifically",
            "actually", "really", "further", "never", "just", "briefly", "first", "then", "ultimately",
            "mainly", "primarily", "largely", "seem", "seems", "appear", "appears", "to"}
# Words that do not continue a noun phrase ("in the passage about X" vs "in the text messages").
_FUNCTION_WORDS = _FILLERS | {
    "be", "been", "being", "and", "or", "but", "nor", "that", "which", "who", "whom", "whose", "where",
    "when", "why", "how", "what", "while", "for", "on", "in", "at", "by", "with", "as", "from", "into",
    "about", "regarding", "concerning", "than", "so", "if", "because", "can", "could", "will", "would",
    "should", "may", "might", "must", "shall", "it", "its", "this", "these", "those", "they", "their",
    "there", "no", "we", "you", "he", "she", "i", "a", "an", "the", "over", "under", "after", "before",
    "during", "between", "among", "without", "through", "against", "toward", "towards", "upon",
}
_NEXT_TOKENS = re.compile(r"[\w'’]+|\S")


def _follower(after: str) -> str:
    """What follows a noun: "stop" (end, punctuation, possessive), "report" (a reporting verb,
    maybe after fillers), "of", "function" (a word that ends the noun phrase), or "content"
    (a word that continues it: "text message", "text-based"; not a word in -ed, taken for a verb)."""
    if re.match(r"[-/]\w", after):
        return "content"
    tokens = [t.lower().replace("’", "'") for t in _NEXT_TOKENS.findall(after[:200])[:5]]
    if not tokens or not tokens[0][0].isalnum():  # punctuation, a possessive ('s), the end
        return "stop"
    for i, token in enumerate(tokens[:4]):
        if token in _REPORTING:
            return "report"
        if token not in _FILLERS or i == 3:
            break
    if tokens[0] == "of":
        return "of"
    if tokens[0] in _FUNCTION_WORDS or (len(tokens[0]) > 4 and tokens[0].endswith("ed")):  # "this study stopped"
        return "function"
    return "content"


def source_reference(question: str) -> str | None:
    """The words by which ``question`` points at its source document, or None.

    A noun among document/passage/text/excerpt/abstract/article/paper/study/authors (or its
    plural), right after the/this/that/these/those (and maybe above/given/provided/following/
    preceding/aforementioned), points at the source when

    1. it is followed by the end, punctuation or a possessive ("according to the passage, why"),
       or by a reporting verb, maybe after does/not/also... ("what does the document suggest",
       "the text above", "the passage does not say");
    2. it is preceded by according to / based on / in / from / within / (as) described|stated|
       mentioned|shown... in, or by this/these/those/that instead of "the", and is not followed
       by another noun-like word or "of" ("as described in this abstract", "in the given
       passage", "why was this study stopped", but not "in the text messages", "in the study
       of genetics", "this article of the Convention");
    3. an adjective such as "given" or "above" precedes it and no noun-like word follows
       ("the following passage of", but not "the given text classifier").

    "that" before a plural is taken as a conjunction ("reviews show that studies suggest X").
    A word is noun-like unless it is punctuation, a reporting verb or in :data:`_FUNCTION_WORDS`.
    """
    for m in _SOURCE_NOUN.finditer(question):
        lead = _SOURCE_LEAD.search(question, max(0, m.start() - 100), m.start())  # the lead is < 100 chars
        if lead is None:
            continue
        if lead.group("det").lower() == "that" and m.group(0).lower().endswith("s"):
            continue
        follower = _follower(question[m.end():])
        pointing = lead.group("pre") or lead.group("det").lower() != "the"
        if (follower in ("stop", "report")
                or (pointing and follower not in ("content", "of"))
                or (lead.group("adj") and follower != "content")):
            return question[lead.start():m.end()]
    return None


class GeneratedQuestion(BaseModel):
    """One Doc2Query output: a standalone question and the scenario it needs."""

    question: str
    scenario: str
    reference_answer: str = ""  # doc2query/v3: a short answer the document supports (never shown to the teacher)

    @field_validator("question", "scenario")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("is empty")
        return value

    @field_validator("question")
    @classmethod
    def _standalone(cls, value: str) -> str:
        if len(value) < 10:
            raise ValueError("is too short to be a real question")
        if reference := source_reference(value):
            raise ValueError(f"refers to its source ('{reference}'); it must be standalone")
        return value


class GeneratedQuestions(BaseModel):
    """Several Doc2Query outputs from one document."""

    questions: list[GeneratedQuestion]

    @field_validator("questions")
    @classmethod
    def _some(cls, value: list[GeneratedQuestion]) -> list[GeneratedQuestion]:
        if not value:
            raise ValueError("is an empty list")
        return value


ReasoningForm = Literal["reasoning_content", "reasoning", "inline", "swallowed", "untagged"]


class Reasoning(BaseModel):
    """A ReasonDistill output: the reasoning and the final answer, separated, and where the
    reasoning came from (``form``): a message field of its own (``reasoning_content``,
    ``reasoning``), inline ``<think>…</think>``, inline with the opening ``<think>`` swallowed,
    or untagged text before ``<answer>``."""

    reasoning: str
    answer: str
    form: ReasoningForm = "inline"


# -- JSON ---------------------------------------------------------------------------------------

_SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
                               "\u2018": "'", "\u2019": "'"})
# A backslash that does not start a JSON escape (LaTeX: \alpha, \sum, \%...) ...
_BAD_ESCAPE = re.compile(r'(?<!\\)\\(?![\\"/bfnrtu])')
# ... and LaTeX commands whose first letter happens to be a JSON escape (\frac, \beta, \times,
# \rho, \nabla...): decoded strictly they would become control characters.
_LATEX_ESCAPE = re.compile(
    r"(?<!\\)\\(?=(?:frac|beta|bar|binom|bf|boldsymbol|big|text|times|theta|tau|tan|tilde|to|top|rho|"
    r"right|rm|nabla|neq|nu|not|newline|forall|flat)(?![A-Za-z]))"
)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _variants(text: str) -> list[str]:
    """The untouched reply first, then with known LaTeX commands protected, then with further
    repairs applied one after another (smart quotes, stray backslashes, trailing commas)."""
    out = [text, _LATEX_ESCAPE.sub(r"\\\\", text)]
    for fix in (
        lambda s: s.translate(_SMART_QUOTES),
        lambda s: _BAD_ESCAPE.sub(r"\\\\", s),
        lambda s: _TRAILING_COMMA.sub(r"\1", s),
    ):
        nxt = fix(out[-1])
        if nxt != out[-1]:
            out.append(nxt)
    return list(dict.fromkeys(out))


def _objects(text: str) -> list[dict]:
    """Every JSON object that decodes starting at some '{', the one ending last first.

    By end, not start: an object comes before the objects nested in it (``{"questions": [{...}]}``
    is tried before its items), and both before any object in the prose before it.
    """
    decoder = json.JSONDecoder()
    found = []
    for m in re.finditer(r"\{", text):
        try:
            obj, end = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            found.append((-end, m.start(), obj))
    return [obj for *_, obj in sorted(found, key=lambda f: f[:2])]


# Backspace, form feed and carriage return: what strict JSON makes of unescaped LaTeX (\beta,
# \frac, \rho, \right...). A model essentially never means them, unlike \n and \t ("line\nu = 3"
# is a newline and "u = 3"), so only an object holding one of them is read again with the
# LaTeX repairs (see parse_json_object).
_LATEX_DAMAGE = re.compile("[\x08\x0c\x0d]")


def _damaged(value: object) -> bool:
    """Whether any string in ``value`` (keys included, nested) holds one of :data:`_LATEX_DAMAGE`."""
    if isinstance(value, str):
        return _LATEX_DAMAGE.search(value) is not None
    if isinstance(value, dict):
        return any(_damaged(k) or _damaged(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_damaged(v) for v in value)
    return False


def parse_json_object(text: str | None, model: type[T]) -> T:
    """The last JSON object in ``text`` that validates as ``model``; ParseError otherwise.

    The reply is read strictly first; the repaired variants (:func:`_variants`) are tried when
    that finds no valid object, or when the valid one it finds holds a backspace, form feed or
    carriage return (unescaped LaTeX, :data:`_LATEX_DAMAGE`). If no variant gives an object
    free of those, the first valid object found is returned as it is.
    """
    if text is None or not text.strip():
        raise ParseError("empty response")
    last_error: str | None = None
    seen_any = False
    fallback: T | None = None
    for variant in _variants(text):
        for obj in _objects(variant):
            seen_any = True
            try:
                parsed = model.model_validate(obj)
            except ValidationError as exc:
                err = exc.errors()[0]
                last_error = f"{'.'.join(str(p) for p in err['loc']) or 'object'} {err['msg']}"
                continue
            if not _damaged(obj):
                return parsed
            fallback = fallback or parsed
    if fallback is not None:
        return fallback
    if not seen_any:
        raise ParseError("no JSON object found in the response")
    raise ParseError(f"JSON does not match the expected fields: {last_error}")


def _question_key(question: str) -> str:
    """A question as compared for duplicates: casefolded, whitespace collapsed, trailing punctuation off."""
    return re.sub(r"[\W_]+$", "", " ".join(question.casefold().split()))


class _OneOrMoreQuestions(RootModel[Union[GeneratedQuestions, GeneratedQuestion]]):
    """A reply to a one-question prompt: one object, or a ``questions`` list."""


def parse_questions(text: str | None, n: int) -> list[GeneratedQuestion]:
    """Exactly ``n`` distinct Doc2Query questions from one reply; ParseError otherwise.

    ``n == 1``: a ``{"question", "scenario"}`` object, or a ``{"questions": [...]}`` list.
    ``n > 1``: a ``{"questions": [...]}`` list. A list longer than ``n`` gives its first ``n``;
    a shorter one raises "expected N questions, got M", and two questions
    equal after :func:`_question_key` raise "questions I and J are the same" (1-based).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n == 1:
        try:  # one model for both shapes: the object ending last decides which one the reply has
            parsed = parse_json_object(text, _OneOrMoreQuestions).root
        except ParseError:
            parse_json_object(text, GeneratedQuestion)  # raises, with the single-object reason
            raise
        return [parsed] if isinstance(parsed, GeneratedQuestion) else parsed.questions[:1]
    questions = parse_json_object(text, GeneratedQuestions).questions
    if len(questions) < n:
        raise ParseError(f"expected {n} questions, got {len(questions)}")
    questions = questions[:n]
    first_at: dict[str, int] = {}
    for i, q in enumerate(questions, start=1):
        key = _question_key(q.question)
        if key in first_at:
            raise ParseError(f"questions {first_at[key]} and {i} are the same")
        first_at[key] = i
    return questions


# -- <think>/<answer> ---------------------------------------------------------------------------

_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def _thinking(head: str) -> str:
    """The reasoning in ``head``, the text before the last ``</think>``: each block's text after
    its ``<think>`` (a block without one is kept whole: an opening tag swallowed, or a
    ``</think>`` mentioned in the reasoning), blocks joined by newlines, stray ``<think>`` removed."""
    blocks = []
    for block in _THINK_CLOSE.split(head):
        block = _THINK_OPEN.split(block, maxsplit=1)[-1]
        if block := _THINK_OPEN.sub("", block).strip():
            blocks.append(block)
    return "\n".join(blocks)


def parse_reasoning(text: str | None, reasoning: str | None = None, reasoning_field: str | None = None) -> Reasoning:
    """Split a reply into reasoning and answer.

    ``reasoning``: thinking the server returned in a message field of its own
    (``reasoning_field``: ``reasoning_content`` or ``reasoning``); the content then holds only
    the answer, as ``<answer>…</answer>`` or as plain text, and both are accepted (a
    ``<think>`` block in the content as well is added to the reasoning).

    Otherwise, with a ``</think>``, only the text after the LAST ``</think>`` holds the answer
    block (an ``<answer>`` mentioned while thinking is part of the reasoning) and the reasoning
    is the text before it, from the first ``<think>`` on (the whole of it when the opening tag
    was swallowed, as some reasoning models do). Without ``</think>``, the reasoning is the text
    before the first ``<answer>`` and the answer the last ``<answer>…</answer>`` block.
    The answer block is required; both parts are stripped and must not be empty.
    """
    if reasoning is not None and reasoning.strip():
        return _with_separate_reasoning(text, reasoning.strip(), reasoning_field or "reasoning")
    if text is None or not text.strip():
        raise ParseError("empty response")
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        head, tail = text[:closes[-1].start()], text[closes[-1].end():]
        thinking = _thinking(head)
        form: ReasoningForm = "inline" if _THINK_OPEN.search(head) else "swallowed"
    else:
        tail = text
        thinking = _THINK_OPEN.sub("", re.split(r"<answer>", text, maxsplit=1, flags=re.IGNORECASE)[0]).strip()
        form = "untagged"
    answer = _answer_block(tail, " after </think>" if closes else "")
    if not thinking:
        raise ParseError("no reasoning before the answer")
    return Reasoning(reasoning=thinking, answer=answer, form=form)


def _answer_block(tail: str, where: str = "") -> str:
    """The last ``<answer>…</answer>`` of ``tail``, stripped; ParseError when there is none or it is empty."""
    answers = _ANSWER.findall(tail)
    if not answers:
        if re.search(r"<answer>", tail, re.IGNORECASE):
            raise ParseError("unterminated <answer> block")
        raise ParseError(f"no <answer> block{where} in the response")
    answer = answers[-1].strip()
    if not answer:
        raise ParseError("empty <answer> block")
    return answer


def _with_separate_reasoning(text: str | None, reasoning: str, field: str) -> Reasoning:
    content = (text or "").strip()
    closes = list(_THINK_CLOSE.finditer(content))
    if closes:  # some servers also leave a think block in the content
        reasoning = f"{reasoning}\n{_thinking(content[:closes[-1].start()])}".strip()
        content = content[closes[-1].end():].strip()
    if re.search(r"<answer>", content, re.IGNORECASE):
        answer = _answer_block(content)
    else:
        answer = content
    if not answer:
        raise ParseError(f"empty answer (the reasoning came in {field}, the content was empty)")
    form: ReasoningForm = "reasoning_content" if field == "reasoning_content" else "reasoning"
    return Reasoning(reasoning=reasoning, answer=answer, form=form)
