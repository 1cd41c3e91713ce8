"""GroundingCheck (after ReasonDistill): quotes the teacher attributes to a ``[Document i]`` that
the document does not hold.

``process(df, text_key="text", hardneg_key="hard_negatives", reasoning_key="reasoning",
answer_key="answer", question_key="question", scenario_key="scenario")`` reads, for each row not
failed upstream, the reasoning and the answer (when that column is present), finds the quotes
attributed to a document and looks each up in the document it names. ``[Document i]`` is the
i-th document shown (:mod:`rare_core.prompts.reason_distill`): ``[positive, *hard_negatives]``
(``text_key``, ``hardneg_key``) at position ``document_order[i - 1]`` (ReasonDistill's column).

* **A quote** is text between double quotes, straight or curly, on one line.
* **Attributed** to the labels (``[Document 2]``, ``Document 2``, ``Doc 2``, ``Documents 1 and
  3``) right before it in the same sentence, with no other quote between (``[Document 2] states
  "..."``, ``Document 2: "..."``, ``according to Document 3, "..."``, ``Documents 1 and 3 both
  say "..."``), and to a label right after it in brackets or after a connective (``"..."
  ([Document 2])``, ``"..." (see Document 2)``, ``"...", says Document 2``). A quote with no
  such label is not checked, and neither is one the question or the scenario holds (the
  teacher quoting the prompt).
* **Held**: each stretch of the quote between elisions (``...``, ``…``, ``[...]``) occurs in
  one of the documents it is attributed to, compared on :func:`~rare_core.filters.common.words`
  (case, Unicode forms, whitespace and punctuation do not count; word boundaries do). Stretches
  under ``min_quote_words`` words are not checked; a quote with none is not checked. A label
  with no shown document (``Document 7`` of four) holds nothing.

Columns (bookkeeping, so ``output_columns() == []``): ``rare_grounding`` (``grounded``: every
checked quote held; ``fabricated``: one is not; ``no_quotes``: none was checked),
``rare_grounding_quotes`` (quotes checked) and ``rare_grounding_fabricated`` (the first quote
not held, with its label); None for rows failed upstream. With ``drop=True`` a fabricated row is
filtered (:mod:`rare_core.filters.common`: to failed_rows, kind ``filtered``, reason ``fabricated
quote: Document 2 does not hold "..."``). ``last_summary.extra`` counts rows checked, grounded,
fabricated and without quotes, and the quotes checked and fabricated.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
from pydantic import Field

from rare_core.filters.common import FilterConfig, FilterOperator, words
from rare_core.operators.base import RESERVED_PREFIX, as_nullable_int, is_blank, step_column
from rare_core.operators.reason_distill import DOCUMENT_ORDER
from rare_core.step_spec import StepSpec

STEP = "grounding"
GROUNDING = f"{RESERVED_PREFIX}{STEP}"  # rare_grounding: the row's verdict
QUOTES = step_column(STEP, "quotes")
FABRICATED_QUOTE = step_column(STEP, "fabricated")
COLUMNS = (GROUNDING, QUOTES, FABRICATED_QUOTE)
GROUNDED, FABRICATED, NO_QUOTES = "grounded", "fabricated", "no_quotes"
REASON = "fabricated_quote"
EVIDENCE_CHARS = 80  # longest quote in a failure reason
MAX_GAP_CHARS = 150  # longest text between a label and the quote it introduces

_LABEL = re.compile(r"\[?\b(?:documents?|docs?\.?)\s*#?(\d+(?:\s*(?:,|/|&|\band\b|\bor\b)\s*\d+)*)\]?", re.I)
_QUOTE = re.compile(r"[\"\u201c]([^\"\u201c\u201d\n]+)[\"\u201d]")
_SENTENCE_END = re.compile(r"[.!?][\"\u201d)\]]*(?:\s|$)|\n")
_QUOTE_MARK = re.compile(r"[\"\u201c\u201d]")
_LABEL_JOIN = re.compile(r"(?:\s|,|/|&|\band\b|\bor\b)*", re.I)  # "Document 1 and Document 3"
_CONNECTIVE = (r"(?:see|cf\.?|in|from|per|says|states|notes|according\s+to|"
               r"as\s+(?:stated|noted|reported|described|shown|mentioned|said|written)\s+(?:in|by))")
# After a quote: brackets or a dash, or a connective, then the label.
_TRAILING = re.compile(rf"[\s,;:]*(?:(?:[(\[\u2014\u2013]|--?)\s*(?:{_CONNECTIVE}\s+)*|(?:{_CONNECTIVE}\s+)+)"
                       rf"(?={_LABEL.pattern})", re.I)
_ELISION = re.compile(r"\[\s*(?:\.\s*){3}\]|\[\s*\u2026\s*\]|(?:\.\s*){3}|\u2026")


class GroundingConfig(FilterConfig):
    """Settings of the grounding check (``checks.grounding``)."""

    enabled: bool = Field(True, description="Check the quotes (it sends no request); False: the step does not run.")
    drop: bool = Field(False, description="Send a row with a fabricated quote to failed_rows (kind 'filtered') "
                                          "instead of only flagging it in rare_grounding.")
    min_quote_words: int = Field(5, ge=1, description="Shorter quoted stretches (terms, scare quotes) are not checked.")


@dataclass(frozen=True)
class Quote:
    """A quote and the ``[Document i]`` labels it is attributed to."""

    text: str
    labels: tuple[int, ...]

    def label(self) -> str:
        """``Document 2``, ``Documents 1, 3``."""
        numbers = ", ".join(map(str, self.labels))
        return f"Document{'s' if len(self.labels) > 1 else ''} {numbers}"


def _numbers(label: re.Match) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", label.group(1))]


def _labels_before(text: str, labels: list[re.Match], start: int) -> list[int]:
    """The labels introducing the quote that opens at ``start``: the nearest label before it in
    the same sentence, with no quote between, and those joined to it ("Document 1 and Document 3")."""
    before = [m for m in labels if m.end() <= start]
    if not before:
        return []
    gap = text[before[-1].end():start]
    if len(gap) > MAX_GAP_CHARS or _SENTENCE_END.search(gap) or _QUOTE_MARK.search(gap):
        return []
    numbers = _numbers(before[-1])
    for prev, nxt in zip(reversed(before[:-1]), reversed(before[1:])):
        if not _LABEL_JOIN.fullmatch(text, prev.end(), nxt.start()):
            break
        numbers += _numbers(prev)
    return numbers


def attributed_quotes(text: str) -> list[Quote]:
    """The quotes of ``text`` attributed to a document, in order (see the module docstring)."""
    labels = list(_LABEL.finditer(text))
    out = []
    for quote in _QUOTE.finditer(text):
        numbers = _labels_before(text, labels, quote.start())
        if trailing := _TRAILING.match(text, quote.end()):
            numbers += _numbers(_LABEL.match(text, trailing.end()))
        if numbers:
            out.append(Quote(quote.group(1), tuple(sorted(set(numbers)))))
    return out


def _phrase(text: object) -> str:
    """``text``'s words joined by spaces, between spaces: a phrase is ``in`` it on word boundaries."""
    return f" {' '.join(words(text))} "


@dataclass
class RowGrounding:
    """What the check found in one row."""

    verdict: str
    checked: int
    fabricated: list[Quote]


def ground(texts: Sequence[str], documents: Sequence[str], min_quote_words: int,
           prompt: Sequence[str] = ()) -> RowGrounding:
    """The verdict on the quotes of ``texts`` (reasoning, answer) attributed to ``documents`` (as
    shown: ``[Document 1]`` first); quotes that ``prompt`` (question, scenario) holds are not checked."""
    quotes = [q for text in texts for q in attributed_quotes(text)]
    if not quotes:  # its documents are never normalized
        return RowGrounding(NO_QUOTES, 0, [])
    shown = {i: _phrase(doc) for i, doc in enumerate(documents, start=1)}
    asked = [_phrase(t) for t in prompt]
    checked, fabricated = 0, []
    for quote in quotes:
        stretches = [f" {' '.join(w)} " for w in map(words, _ELISION.split(quote.text)) if len(w) >= min_quote_words]
        if not stretches or all(any(s in p for p in asked) for s in stretches):
            continue
        checked += 1
        if not any(all(s in shown.get(n, "") for s in stretches) for n in quote.labels):
            fabricated.append(quote)
    verdict = FABRICATED if fabricated else GROUNDED if checked else NO_QUOTES
    return RowGrounding(verdict, checked, fabricated)


def _items(value: Any) -> list:
    """A list cell as a list (a parquet cell comes back as an array); blank -> []."""
    return [] if is_blank(value) else list(value)


class GroundingCheck(FilterOperator):
    """See the module docstring."""

    step_name = STEP
    config_class = GroundingConfig
    config: GroundingConfig

    def reason_codes(self) -> tuple[str, ...]:
        return (REASON,) if self.config.drop else ()

    def process(self, df: pd.DataFrame, text_key: str = "text", hardneg_key: str = "hard_negatives",
                reasoning_key: str = "reasoning", answer_key: str = "answer", question_key: str = "question",
                scenario_key: str = "scenario") -> pd.DataFrame:
        df = df.drop(columns=[c for c in COLUMNS if c in df.columns])  # an earlier run's verdicts
        run = self._start(df, [text_key, hardneg_key, DOCUMENT_ORDER, reasoning_key], text_key=text_key,
                          hardneg_key=hardneg_key, reasoning_key=reasoning_key, answer_key=answer_key,
                          question_key=question_key, scenario_key=scenario_key)
        if not self.config.enabled:
            return self._finish(run, {})
        work, n = run.df, len(run.df)
        said = [c for c in (reasoning_key, answer_key) if c in work.columns]
        asked = [c for c in (question_key, scenario_key) if c in work.columns]
        verdicts: list[str | None] = [None] * n
        counts: list[int | None] = [None] * n
        first: list[str | None] = [None] * n
        filtered: dict[int, tuple[str, str]] = {}
        quotes_checked = quotes_fabricated = 0
        for pos in range(n):
            if not run.active[pos]:
                continue
            row = work.iloc[pos]
            pool = [row[text_key], *_items(row[hardneg_key])]
            documents = [str(pool[int(j)]) if 0 <= int(j) < len(pool) else "" for j in _items(row[DOCUMENT_ORDER])]
            result = ground([str(row[c]) for c in said if not is_blank(row[c])], documents,
                            self.config.min_quote_words, [str(row[c]) for c in asked if not is_blank(row[c])])
            verdicts[pos], counts[pos] = result.verdict, result.checked
            quotes_checked += result.checked
            quotes_fabricated += len(result.fabricated)
            if result.fabricated:
                quote = result.fabricated[0]
                first[pos] = f'{quote.label()}: "{quote.text}"'
                if self.config.drop:
                    evidence = quote.text if len(quote.text) <= EVIDENCE_CHARS else quote.text[:EVIDENCE_CHARS] + "..."
                    filtered[pos] = (REASON, f'fabricated quote: {quote.label()} does not hold "{evidence}"')
        work[GROUNDING], work[QUOTES], work[FABRICATED_QUOTE] = verdicts, counts, first
        as_nullable_int(work, [QUOTES])
        tally = Counter(verdicts)
        return self._finish(run, filtered, {
            "drop": self.config.drop, "rows_checked": int(run.active.sum()),
            "rows_grounded": tally[GROUNDED], "rows_fabricated": tally[FABRICATED],
            "rows_no_quotes": tally[NO_QUOTES],
            "quotes_checked": quotes_checked, "quotes_fabricated": quotes_fabricated})


def describe(summary: Any) -> list[str]:
    """The check's lines in the report and the dataset card."""
    extra = summary.extra
    if "rows_checked" not in extra:
        return []
    fate = "removed" if extra.get("drop") else "flagged in rare_grounding, kept"
    return [f"{extra['rows_fabricated']:,} of {extra['rows_checked']:,} rows quote text their document does not hold "
            f"({fate})",
            f"{extra['quotes_fabricated']:,} of {extra['quotes_checked']:,} quotes attributed to a [Document i] are "
            f"not in it; {extra['rows_no_quotes']:,} rows quote no document"]


SPEC = StepSpec(
    name=STEP, label="Grounding", task_name="grounding", section="checks.grounding",
    settings_model=GroundingConfig, operator=GroundingCheck,
    keys=lambda c: {"text_key": c.columns.text, "hardneg_key": c.columns.hard_negatives,
                    "reasoning_key": c.columns.reasoning, "answer_key": c.columns.answer,
                    "question_key": c.columns.question, "scenario_key": c.columns.scenario},
    description="After ReasonDistill: quotes attributed to a [Document i] that it does not hold (no request sent).",
    enabled=lambda c: c.checks.grounding.enabled, dataset=lambda c: {GROUNDING: GROUNDING}, describe=describe)
