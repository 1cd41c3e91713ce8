"""Checking the teacher's answers against a reference: exact match of closed answers, an LLM judge
for the rest, as the RARE recipe checks every distilled answer before it trains on it.

In: the teacher's final answer and the row's reference (a gold label given with the question,
or the short ``reference_answer`` Doc2Query writes and the teacher never sees). Out: a
:class:`Verdict` (accepted or not, and why).

* :func:`normalize_answer` / :func:`closed_form` — the comparable form of an answer: case,
  whitespace and punctuation folded; ``yes``/``no``/``maybe`` found in a sentence ("Yes, the
  data show..."), an option letter (``(B)``, ``B.``, ``Answer: B``), a number (``1,000`` =
  ``1000.0``). A reference is *closed* when it has such a form.
* :func:`exact_verdict` — the teacher's answer matches a closed reference.
* The judge (``method: judge``): its own LLM role, shown the question, the reference and the
  teacher's final answer, never the reasoning; it answers JSON ``{"verdict": "correct" |
  "incorrect", "reason": "..."}`` (:func:`judge_messages`, :func:`parse_judgement`;
  :func:`read_judge_prompt` reads a judge prompt back into a :class:`JudgeView`, for a simulator).
* ``method: auto`` (the default): exact where the reference is closed, the judge otherwise —
  exact is free and cannot be talked round, the judge is what an open answer needs.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rare_core.parsing import parse_json_object
from rare_core.prompts.layout import Layout, Slot

VerifyMethod = Literal["exact", "judge", "auto", "none"]
PROMPT_VERSION = "judge/v1"
_CHOICE = re.compile(r"^\(?([a-e])\)?[.):]?$|^(?:answer|option|choice)\s*(?:is)?\s*[:\-]?\s*\(?([a-e])\)?\b", re.I)
_NUMBER = re.compile(r"^[-+]?\d[\d,]*(?:\.\d+)?%?$")
_YES_NO = ("yes", "no", "maybe")


class VerifyConfig(BaseModel):
    """How answers are checked, and how often a rejected row is sampled again."""

    model_config = ConfigDict(extra="forbid")

    method: VerifyMethod = Field(
        "auto", description="exact (closed answers), judge (an LLM in the judge role), auto (exact where the "
                            "reference is closed, judge otherwise) or none (no check).")
    max_samples: int = Field(8, ge=1, le=64, description="Teacher samples per row before it is given up (RARE: 8).")
    resample_temperature: float = Field(0.95, gt=0, le=2, description="Temperature of the samples after the first.")


class Verdict(BaseModel):
    """The check of one answer."""

    accepted: bool
    method: Literal["exact", "judge", "none"]
    reason: str = ""


def normalize_answer(text: object) -> str:
    """Case, accents' width forms, whitespace and surrounding punctuation folded."""
    value = unicodedata.normalize("NFKC", str(text or "")).casefold()
    value = re.sub(r"\s+", " ", value).strip()
    return value.strip(" .,;:!?\"'`*()[]")


def closed_form(text: object) -> str | None:
    """The closed answer in ``text`` (``yes``/``no``/``maybe``, an option letter ``a``-``e``, a
    number), or None when it has none."""
    value = normalize_answer(text)
    if not value:
        return None
    first = re.split(r"[\s,.;:!?]+", value, maxsplit=1)[0]
    if first in _YES_NO:
        return first
    if m := _CHOICE.match(value):
        return f"option {(m.group(1) or m.group(2)).lower()}"
    number = value.replace(" ", "")
    if _NUMBER.match(number):
        return str(float(number.rstrip("%").replace(",", "")))
    return None


def is_closed(reference: object) -> bool:
    return closed_form(reference) is not None


def exact_verdict(answer: object, reference: object) -> Verdict:
    """Accepted when the answer's closed form (or its normalized text) equals the reference's."""
    want, got = closed_form(reference), closed_form(answer)
    if want is not None:
        ok = got == want
        return Verdict(accepted=ok, method="exact",
                       reason=f"expected {want}, got {got or repr(normalize_answer(answer)[:60])}")
    ok = normalize_answer(answer) == normalize_answer(reference)
    return Verdict(accepted=ok, method="exact", reason="same text" if ok else "the texts differ")


def needs_judge(method: VerifyMethod, reference: object) -> bool:
    return method == "judge" or (method == "auto" and not is_closed(reference))


# -- the judge ------------------------------------------------------------------------------------

JUDGE_SYSTEM = ("You grade answers. You compare a candidate's final answer with a reference answer "
                "and decide whether they agree in substance. You never see the candidate's reasoning.")

_JUDGE_INSTRUCTIONS = """Decide whether the candidate answer agrees with the reference answer to the question below.
Agreeing means the same conclusion: wording, length and detail may differ; a candidate that hedges between
several conclusions, or contradicts the reference, does not agree.
Reply with JSON only: {"verdict": "correct" or "incorrect", "reason": "<one sentence>"}"""


class Judgement(BaseModel):
    """The judge's reply."""

    verdict: Literal["correct", "incorrect"]
    reason: str = ""

    @field_validator("verdict", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


JUDGE_USER = Layout(
    f"{_JUDGE_INSTRUCTIONS}\n\n<question>\n", Slot("question"), "\n</question>\n\n<reference_answer>\n",
    Slot("reference"), "\n</reference_answer>\n\n<candidate_answer>\n", Slot("candidate"), "\n</candidate_answer>",
)
"""The judge's user message: instructions first (shared prefix), then the row."""


def judge_messages(question: str, reference: str, answer: str) -> list[dict]:
    """The judge's prompt: instructions first (shared prefix), then the row."""
    user = JUDGE_USER.render(question=question, reference=reference, candidate=answer)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class JudgeView:
    """A judge prompt read back: the ``question``, the ``reference`` answer, the ``candidate``
    (the teacher's final answer), ``text`` the user message it was read from."""

    kind: ClassVar[Literal["judge"]] = "judge"
    question: str
    reference: str
    candidate: str
    text: str


def read_judge_prompt(text: str) -> JudgeView | None:
    """The view of ``text`` when :func:`judge_messages` wrote it as its user message, else None."""
    slots = JUDGE_USER.read(text)
    return None if slots is None else JudgeView(**slots, text=text)


def parse_judgement(text: str | None) -> Verdict:
    """The judge's JSON -> a Verdict (ParseError when it is not a verdict)."""
    judged = parse_json_object(text, Judgement)
    return Verdict(accepted=judged.verdict == "correct", method="judge", reason=judged.reason.strip()[:500])
