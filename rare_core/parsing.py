"""Parsing what real models emit into validated pydantic objects.

* :func:`parse_json_object` — the JSON object in a reply that validates against a model,
  tolerating prose around it, code fences, braces in reasoning before it, smart quotes,
  unescaped LaTeX backslashes and trailing commas; valid JSON is read as JSON first ("\\nu"
  is a newline and "u"), unless strict reading leaves LaTeX damage (``\\frac`` as a form feed).
* :func:`parse_questions` — exactly ``n`` distinct Doc2Query questions from one reply.
* :func:`parse_reasoning` — ``<think>…</think><answer>…</answer>`` into reasoning + answer.
* :func:`source_reference` — the words by which a question points at its source document
  ("according to the passage", "the study found"), or None for a standalone question.

A reply may quote a document that holds markup of the reply's own shape (``</think><answer>X
</answer>``, a JSON object with a ``question``). Which text is quoted cannot be told from its place
(a quote may come before the model's own answer or after it), so where a reply holds two
candidates that differ (top-level JSON objects that validate, ``<answer>`` blocks outside the
thinking), the parsers raise "conflicting ..." and the caller asks again, as for any unusable
reply. Equal candidates are one.

All parsers raise :class:`ParseError` with a short reason (which becomes the row's failure reason).
"""

from __future__ import annotations

import bisect
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
_LEADING_THINK = re.compile(r"\s*<think>.*?</think>", re.DOTALL | re.IGNORECASE)


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


def _decoded(text: str) -> list[list[tuple[int, int, dict]]]:
    """For each of :func:`_variants` (in order), every JSON object that decodes starting at some
    '{', as ``(start, end, object)``, ``start``/``end`` being its span in ``text`` itself.

    The repairs add and remove only backslashes, commas and whitespace and swap quotes, so the
    k-th '{' (and '}') of a variant is the k-th of ``text``: a span maps back by brace ordinals.
    """
    opens = [m.start() for m in re.finditer(r"\{", text)]
    closes = [m.start() for m in re.finditer(r"\}", text)]
    decoder = json.JSONDecoder()
    out = []
    for variant in _variants(text):
        variant_closes = [m.start() for m in re.finditer(r"\}", variant)]
        found = []
        for k, m in enumerate(re.finditer(r"\{", variant)):
            try:
                obj, end = decoder.raw_decode(variant, m.start())
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                found.append((opens[k], closes[bisect.bisect_left(variant_closes, end - 1)] + 1, obj))
        out.append(found)
    return out


def _regions(spans: list[tuple[int, int]]) -> list[int]:
    """The start of each top-level region: overlapping spans merged, an object with the objects
    nested in it (and any reading that overlaps them) being one region."""
    starts: list[int] = []
    reach = -1
    for start, end in sorted(spans):
        if start >= reach:
            starts.append(start)
        reach = max(reach, end)
    return starts


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
    """The reply's JSON object that validates as ``model``; ParseError otherwise.

    Each top-level object of the reply (with the objects nested in it) is read on its own:
    strictly first, the repaired variants (:func:`_variants`) when that finds no valid object in
    it or only one holding a backspace, form feed or carriage return (unescaped LaTeX,
    :data:`_LATEX_DAMAGE`), the damaged one as it is when no variant gives better; the object
    itself before the objects nested in it, of those the one ending last first.
    Two top-level objects that validate and differ are a conflict (ParseError): the reply then
    also holds an object it quotes (a document's, a draft's), and which one is its own cannot
    be told. Equal ones are one. Objects in a ``<think>…</think>`` block that opens the reply
    (a reasoning model's thinking, drafts included) are no candidates; without the opening tag
    the thinking cannot be told from quoted text, and its drafts conflict like any object.
    """
    if text is None or not text.strip():
        raise ParseError("empty response")
    if leading := _LEADING_THINK.match(text):  # the model's own thinking: its drafts are no candidates
        text = text[leading.end():]
    readings = _decoded(text)
    region_starts = _regions([(start, end) for found in readings for start, end, _ in found])
    chosen: dict[int, T] = {}
    damaged: dict[int, T] = {}
    last_error: str | None = None
    for found in readings:
        for start, _end, obj in sorted(found, key=lambda f: (-f[1], f[0])):
            region = bisect.bisect_right(region_starts, start) - 1
            if region in chosen:
                continue
            try:
                parsed = model.model_validate(obj)
            except ValidationError as exc:
                err = exc.errors()[0]
                last_error = f"{'.'.join(str(p) for p in err['loc']) or 'object'} {err['msg']}"
                continue
            if _damaged(obj):
                damaged.setdefault(region, parsed)
            else:
                chosen[region] = parsed
    valid = [parsed for _, parsed in sorted({**damaged, **chosen}.items())]
    if not valid:
        if not region_starts:
            raise ParseError("no JSON object found in the response")
        raise ParseError(f"JSON does not match the expected fields: {last_error}")
    different = []
    for parsed in valid:
        if (dump := parsed.model_dump()) not in different:
            different.append(dump)
    if len(different) > 1:
        raise ParseError(f"conflicting objects: the reply holds {len(different)} different JSON objects "
                         f"with the expected fields")
    return valid[0]


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
# A whole answer block holds none of the four tags: in "<answer> …quoted… <answer>A</answer>" the
# block is the second one, and an "<answer>" before a "</think>" opens no block.
_ANSWER = re.compile(r"<answer>((?:(?!</?(?:think|answer)>).)*)</answer>", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)  # the last one runs on to the end


def _thinking(head: str) -> str:
    """The reasoning in ``head``, the text before the ``</think>`` that ends the thinking: each
    block's text after its ``<think>`` (a block without one is kept whole: an opening tag
    swallowed, or a ``</think>`` mentioned in the reasoning), blocks joined by newlines, stray
    ``<think>`` removed."""
    blocks = []
    for block in _THINK_CLOSE.split(head):
        block = _THINK_OPEN.split(block, maxsplit=1)[-1]
        if block := _THINK_OPEN.sub("", block).strip():
            blocks.append(block)
    return "\n".join(blocks)


def _end_of_thinking(text: str) -> re.Match[str] | None:
    """The ``</think>`` that ends the model's own thinking: the first one that an answer follows
    (text without think/answer tags, then a whole ``<answer>…</answer>``), else the last one;
    None without a ``</think>``.

    The first, not the last: a document quoted after the answer may hold ``</think><answer>…``
    of its own. One quoted inside the thinking ends it early instead, and its answer then
    conflicts with the model's own (:func:`_answer_block`)."""
    closes = list(_THINK_CLOSE.finditer(text))
    for close in closes:
        tag = _TAG.search(text, close.end())
        if tag and _ANSWER.match(text, tag.start()):
            return close
    return closes[-1] if closes else None


def parse_reasoning(text: str | None, reasoning: str | None = None, reasoning_field: str | None = None) -> Reasoning:
    """Split a reply into reasoning and answer.

    ``reasoning``: thinking the server returned in a message field of its own
    (``reasoning_field``: ``reasoning_content`` or ``reasoning``); the content then holds only
    the answer, as ``<answer>…</answer>`` or as plain text, and both are accepted (a
    ``<think>`` block in the content as well is added to the reasoning).

    Otherwise, with a ``</think>``, the thinking ends at the first ``</think>`` that an answer
    follows (:func:`_end_of_thinking`): an ``<answer>`` mentioned while thinking is part of the
    reasoning, which is the text before that ``</think>``, from the first ``<think>`` on (the
    whole of it when the opening tag was swallowed, as some reasoning models do). Without
    ``</think>``, the reasoning is the text before the first ``<answer>``.
    The answer is the reply's ``<answer>…</answer>`` block after the thinking; several that differ
    (a quoted document's among them) are a conflict (:func:`_answer_block`). The answer block
    is required; both parts are stripped and must not be empty.
    """
    if reasoning is not None and reasoning.strip():
        return _with_separate_reasoning(text, reasoning.strip(), reasoning_field or "reasoning")
    if text is None or not text.strip():
        raise ParseError("empty response")
    end = _end_of_thinking(text)
    if end is not None:
        head, tail = text[:end.start()], text[end.end():]
        thinking = _thinking(head)
        form: ReasoningForm = "inline" if _THINK_OPEN.search(head) else "swallowed"
        answer = _answer_block(tail, head, " after </think>")
    else:
        thinking = _THINK_OPEN.sub("", re.split(r"<answer>", text, maxsplit=1, flags=re.IGNORECASE)[0]).strip()
        form = "untagged"
        answer = _answer_block(text)
    if not thinking:
        raise ParseError("no reasoning before the answer")
    return Reasoning(reasoning=thinking, answer=answer, form=form)


def _answer_block(tail: str, head: str = "", where: str = "") -> str:
    """The ``<answer>…</answer>`` of ``tail`` (the text after the thinking), stripped; ParseError
    when there is none, it is empty, or the reply holds several that differ.

    Beside the whole blocks of ``tail``, those of ``head`` (the text before the ``</think>``
    that ended the thinking) outside its ``<think>…</think>`` blocks are candidates too (all of
    them when it has no ``<think>``): such a block may be the model's untagged answer, and the
    ``</think>`` after it a quoted document's. Blocks equal once their whitespace is collapsed
    are one.
    """
    blocks = _ANSWER.findall(tail)
    if not blocks:
        if re.search(r"<answer>", tail, re.IGNORECASE):
            raise ParseError("unterminated <answer> block")
        raise ParseError(f"no <answer> block{where} in the response")
    different = {" ".join(b.split()) for b in blocks + _blocks_outside_thinking(head)}
    if len(different) > 1:
        raise ParseError(f"conflicting answers: the reply holds {len(different)} different <answer> blocks")
    answer = blocks[0].strip()
    if not answer:
        raise ParseError("empty <answer> block")
    return answer


def _blocks_outside_thinking(head: str) -> list[str]:
    """The whole answer blocks of ``head`` outside its ``<think>…</think>`` blocks."""
    return _ANSWER.findall(_THINK_BLOCK.sub("", head))


def _with_separate_reasoning(text: str | None, reasoning: str, field: str) -> Reasoning:
    content = (text or "").strip()
    end = _end_of_thinking(content)
    head = ""
    if end is not None:
        head, tail = content[:end.start()], content[end.end():].strip()
        if _ANSWER.search(tail) or not _blocks_outside_thinking(head):
            # some servers also leave a think block in the content
            reasoning = f"{reasoning}\n{_thinking(head)}".strip()
            content = tail
        else:  # the answer block comes before it: that </think> is quoted text
            head = ""
    if re.search(r"<answer>", content, re.IGNORECASE):
        answer = _answer_block(content, head)
    else:
        answer = content
    if not answer:
        raise ParseError(f"empty answer (the reasoning came in {field}, the content was empty)")
    form: ReasoningForm = "reasoning_content" if field == "reasoning_content" else "reasoning"
    return Reasoning(reasoning=reasoning, answer=answer, form=form)
