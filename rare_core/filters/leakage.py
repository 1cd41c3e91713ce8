"""LeakageFilter (after Doc2Query): questions or scenarios that give the answer away, or copy the source.

``process(df, question_key="question", scenario_key="scenario", reference_key="reference_answer",
input_key="text")`` checks the question and the scenario of each row not failed upstream and
filters:

* ``answer_leak``: the text gives away the reference answer (``reference_key``; only when that
  column is present and the row's reference is not blank). What counts, on the words of the
  normalized texts (:func:`~rare_core.filters.common.words`: case, Unicode forms and
  punctuation do not count):

  - a **closed answer** (one of ``closed_answers``, default yes/no/maybe) leaks only when the
    text *announces* it: ``"the answer is yes"``, ``"answer: no."``, ``"verdict - maybe"``
    (answer/verdict/conclusion/decision, then is/was/would be/will be/should be or ``: = -``,
    then the answer ending the clause). A bare "yes" or "no" inside a question ("yes or no:
    does ...?", "no significant change") is not leakage, and neither is "the answer is no
    longer known";
  - a **free-form answer** of at least ``min_answer_chars`` characters (default 20, counted on
    its normalized words joined by spaces) leaks when it appears in the text as a whole
    phrase (word boundaries). Shorter free-form answers (a drug, a gene, a number) are not
    checked: a question naturally names them ("Does aspirin ...?");
  - a free-form answer of at least ``ngram`` words also leaks when the text shares an
    ``ngram``-word run with it (the answer paraphrased around a copied stretch);
* ``document_copy``: the text shares a run of ``ngram`` consecutive words (default 13, the
  usual contamination window) with the row's document (``input_key``): the question was copied
  from the source instead of written. A question shorter than ``ngram`` words cannot trip it.

The reason names the field and the evidence: ``"question states the reference answer 'yes'"``,
``"scenario contains the reference answer 'reduced mortality by 30 percent'"``, ``"question
copies 13 consecutive words of the document: 'the ... '"``. The answer is checked before the
document, the question before the scenario; the first hit is the reason.

The ``question_key`` column is required; the ``input_key`` column too unless
``check_document=False``. A missing scenario or reference column is not an error: those
checks are left out and ``extra`` says so (``scenario_checked`` / ``reference_checked``).
Blank fields are not checked. The work is linear in the text lengths: each window of the
question/scenario is looked up as a substring of the (cached) normalized document.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pandas as pd
from pydantic import Field, field_validator

from rare_core.filters.common import WORD_PATTERN, FilterConfig, FilterOperator, filter_spec, words
from rare_core.operators.base import is_blank
from rare_core.retrieval.negatives import normalize_text

ANSWER_LEAK = "answer_leak"
DOCUMENT_COPY = "document_copy"
EVIDENCE_CHARS = 80  # longest quote of the copied words in a reason

# "answer is", "verdict:", "conclusion would be" ... before a closed answer (on normalized text).
_ANNOUNCE = (r"\b(?:answer|verdict|conclusion|decision)\s*"
             r"(?:is|was|would\s+be|will\s+be|should\s+be|[:=\-\u2013\u2014])\s*[\"'\u201c\u2018\u00ab(\[*]*\s*")
# ... and the answer must end the clause: end of text, punctuation, or a connective.
_CLAUSE_END = r"(?=\s*(?:$|[^\w\s]|(?:because|since|as|and|but|so)\b))"


class LeakageFilterConfig(FilterConfig):
    """Settings of the leakage filter."""

    ngram: int = Field(13, ge=1, description="Words in a run shared with the document (or a long answer) "
                                             "that counts as copying.")
    min_answer_chars: int = Field(20, ge=1, description="Shortest free-form reference answer searched for in "
                                                        "the question and scenario.")
    closed_answers: list[str] = Field(["yes", "no", "maybe"], description="Closed answers: leak only when announced.")
    check_answer: bool = Field(True, description="Check the reference answer (when the column is present).")
    check_document: bool = Field(True, description="Check copying from the document.")

    @field_validator("closed_answers")
    @classmethod
    def _normalized(cls, value: list[str]) -> list[str]:
        return [" ".join(words(v)) for v in value if words(v)]


def _quote(text: str) -> str:
    return f"'{text}'" if len(text) <= EVIDENCE_CHARS else f"'{text[:EVIDENCE_CHARS - 3]}...'"


def shared_run(tokens: list[str], haystack: str, n: int) -> str | None:
    """The first run of ``n`` consecutive ``tokens`` found in ``haystack`` (normalized words
    joined by single spaces, with a space at both ends), or None."""
    for i in range(len(tokens) - n + 1):
        run = " ".join(tokens[i:i + n])
        if f" {run} " in haystack:
            return run
    return None


class LeakageFilter(FilterOperator):
    step_name = "leakage_filter"
    config_class = LeakageFilterConfig
    reasons = (ANSWER_LEAK, DOCUMENT_COPY)
    config: LeakageFilterConfig

    def process(self, df: pd.DataFrame, question_key: str = "question", scenario_key: str = "scenario",
                reference_key: str = "reference_answer", input_key: str = "text") -> pd.DataFrame:
        cfg = self.config
        required = [question_key] + ([input_key] if cfg.check_document else [])
        run = self._start(df, required, question_key=question_key, scenario_key=scenario_key,
                          reference_key=reference_key, input_key=input_key)
        if not cfg.enabled:
            return self._finish(run, {})
        df = run.df
        fields = [("question", df[question_key].to_numpy(dtype=object))]
        if scenario_key in df.columns:
            fields.append(("scenario", df[scenario_key].to_numpy(dtype=object)))
        check_reference = cfg.check_answer and reference_key in df.columns
        references = df[reference_key].to_numpy(dtype=object) if check_reference else None
        documents = df[input_key].to_numpy(dtype=object) if cfg.check_document else None
        closed = {answer: re.compile(_ANNOUNCE + re.escape(answer) + _CLAUSE_END) for answer in cfg.closed_answers}
        joined = lru_cache(maxsize=4096)(lambda text: f" {' '.join(words(text))} ")  # rows of one document repeat

        filtered: dict[int, tuple[str, str]] = {}
        for pos in range(len(df)):
            if not run.active[pos]:
                continue
            texts = [(name, normalize_text(values[pos])) for name, values in fields if not is_blank(values[pos])]
            texts = [(name, norm, WORD_PATTERN.findall(norm)) for name, norm in texts]
            if not texts:
                continue
            hit = None
            if references is not None and not is_blank(references[pos]):
                hit = self._answer_leak(texts, words(references[pos]), closed)
            if hit is None and documents is not None and not is_blank(documents[pos]):
                document = joined(str(documents[pos]))
                for name, _, tokens in texts:
                    copied = shared_run(tokens, document, cfg.ngram)
                    if copied is not None:
                        hit = (DOCUMENT_COPY, f"{name} copies {cfg.ngram} consecutive words of the document: "
                                              f"{_quote(copied)}")
                        break
            if hit is not None:
                filtered[pos] = hit
        return self._finish(run, filtered, {
            "ngram": cfg.ngram, "min_answer_chars": cfg.min_answer_chars,
            "scenario_checked": len(fields) > 1, "reference_checked": check_reference,
            "document_checked": cfg.check_document})

    def _answer_leak(self, texts: list[tuple[str, str, list[str]]], answer_tokens: list[str],
                     closed: dict[str, re.Pattern]) -> tuple[str, str] | None:
        """(code, reason) when one of the texts gives the answer away (rules in the module docstring)."""
        cfg = self.config
        answer = " ".join(answer_tokens)
        if not answer:
            return None
        if answer in closed:
            pattern = closed[answer]
            for name, norm, _ in texts:  # on the normalized text: the punctuation matters here
                if pattern.search(norm) is None:
                    continue
                return ANSWER_LEAK, f"{name} states the reference answer {_quote(answer)}"
            return None
        long_answer = len(answer_tokens) >= cfg.ngram
        haystack = f" {answer} "
        for name, _, tokens in texts:
            text = f" {' '.join(tokens)} "
            if len(answer) >= cfg.min_answer_chars and haystack in text:
                return ANSWER_LEAK, f"{name} contains the reference answer {_quote(answer)}"
            if long_answer:
                copied = shared_run(tokens, haystack, cfg.ngram)
                if copied is not None:
                    return ANSWER_LEAK, (f"{name} copies {cfg.ngram} consecutive words of the reference answer: "
                                         f"{_quote(copied)}")
        return None


SPEC = filter_spec("leakage", LeakageFilter, "leakage",
                   lambda c: {"question_key": c.columns.question, "scenario_key": c.columns.scenario,
                              "reference_key": c.reference_key, "input_key": c.columns.text},
                   "After Doc2Query: the answer or the document copied into the question.")
