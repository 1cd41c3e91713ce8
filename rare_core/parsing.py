"""Parsing what real models emit into validated pydantic objects.

* :func:`parse_json_object` — the last JSON object in a reply that validates against a model,
  tolerating prose around it, code fences, braces in reasoning before it, smart quotes,
  unescaped LaTeX backslashes and trailing commas.
* :func:`parse_reasoning` — ``<think>…</think><answer>…</answer>`` into reasoning + answer.

Both raise :class:`ParseError` with a short reason (which becomes the row's failure reason).
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError, field_validator

T = TypeVar("T", bound=BaseModel)


class ParseError(ValueError):
    """A reply could not be turned into the expected object; ``str(e)`` is the reason."""


# -- output models ------------------------------------------------------------------------------

_SOURCE_REFERENCE = re.compile(
    r"\b(the|this|that|above|given|provided|following)\s+(document|passage|text|excerpt|abstract|article)\b",
    re.IGNORECASE,
)


class GeneratedQuestion(BaseModel):
    """One Doc2Query output: a standalone question and the scenario it needs."""

    question: str
    scenario: str

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
        if m := _SOURCE_REFERENCE.search(value):
            raise ValueError(f"refers to its source ('{m.group(0)}'); it must be standalone")
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


class Reasoning(BaseModel):
    """A ReasonDistill output: the reasoning and the final answer, separated."""

    reasoning: str
    answer: str


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
    """The reply with known LaTeX commands protected (read strictly, ``\\frac`` would decode to a
    form feed), then with further repairs applied one after another; the untouched reply last."""
    out = [_LATEX_ESCAPE.sub(r"\\\\", text)]
    for fix in (
        lambda s: s.translate(_SMART_QUOTES),
        lambda s: _BAD_ESCAPE.sub(r"\\\\", s),
        lambda s: _TRAILING_COMMA.sub(r"\1", s),
    ):
        nxt = fix(out[-1])
        if nxt != out[-1]:
            out.append(nxt)
    if out[0] != text:
        out.append(text)
    return out


def _objects(text: str) -> list[dict]:
    """Every JSON object that decodes starting at some '{', last in the text first."""
    decoder = json.JSONDecoder()
    found = []
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found[::-1]


def parse_json_object(text: str | None, model: type[T]) -> T:
    """The last JSON object in ``text`` that validates as ``model``; ParseError otherwise."""
    if text is None or not text.strip():
        raise ParseError("empty response")
    last_error: str | None = None
    seen_any = False
    for variant in _variants(text):
        for obj in _objects(variant):
            seen_any = True
            try:
                return model.model_validate(obj)
            except ValidationError as exc:
                err = exc.errors()[0]
                last_error = f"{'.'.join(str(p) for p in err['loc']) or 'object'} {err['msg']}"
    if not seen_any:
        raise ParseError("no JSON object found in the response")
    raise ParseError(f"JSON does not match the expected fields: {last_error}")


# -- <think>/<answer> ---------------------------------------------------------------------------

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def parse_reasoning(text: str | None) -> Reasoning:
    """Split a reply into reasoning and answer.

    Accepts ``<think>R</think> <answer>A</answer>``; a reply whose opening ``<think>`` was
    swallowed (as some reasoning models do) when ``</think>`` is present; and, without think
    tags, the text before ``<answer>`` as the reasoning. The answer block is required.
    """
    if text is None or not text.strip():
        raise ParseError("empty response")
    answers = _ANSWER.findall(text)
    if not answers:
        if re.search(r"<answer>", text, re.IGNORECASE):
            raise ParseError("unterminated <answer> block")
        raise ParseError("no <answer> block in the response")
    answer = answers[-1].strip()
    thinks = _THINK.findall(text)
    if thinks:
        reasoning = "\n".join(t.strip() for t in thinks)
    elif "</think>" in text.lower():
        reasoning = re.split(r"</think>", text, flags=re.IGNORECASE)[0]
    else:
        reasoning = re.split(r"<answer>", text, flags=re.IGNORECASE)[0]
    reasoning = reasoning.replace("<think>", "").strip()
    if not answer:
        raise ParseError("empty <answer> block")
    if not reasoning:
        raise ParseError("no reasoning before the answer")
    return Reasoning(reasoning=reasoning, answer=answer)
