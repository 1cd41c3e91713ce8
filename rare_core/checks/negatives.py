"""NegativeCheck (after BM25HardNeg): hard negatives that in fact answer the question.

A "negative" that supports the answer teaches the student to dismiss a relevant document. The
issue calls this setting ``hardneg.check``; on the step registry a step's settings are a section
of their own, so it is ``checks.negatives`` (spares come from ``hardneg.spare``).

``process(df, question_key="question", reference_key="reference_answer",
negatives_key="hard_negatives")`` shows the ``negative_checker`` LLM role (left unset in
``roles``: the judge's settings) the question, the row's reference answer and ONE candidate
negative at a time (:mod:`rare_core.prompts.negative_check`), and asks whether that document
alone supports the answer. A candidate that does is dropped from ``{negatives_key}``,
``{negatives_key}_ids`` and ``{negatives_key}_scores``, and the next of the row's spares
(``rare_hardneg_spare``, ``_ids``, ``_scores``: BM25HardNeg's ``spare`` setting) takes its
place, checked in turn, until every place holds a candidate that does not support the answer
or the spares run out: the row then has fewer negatives than it came with and is marked
``short`` (``rare_hardneg_status``, as BM25HardNeg marks a row the corpus leaves short). A
candidate whose replies could not be used is kept (counted as unjudged). Unusable replies are
asked again, replies come from the response cache, and a role whose replies keep failing stops
the step (:mod:`rare_core.operators.llm_step`).

Columns (bookkeeping): ``rare_negatives_rejected`` (the rejected candidates in the order they
were judged, each ``{"id", "text", "reason"}``; None when none was), ``rare_negatives_status``
(``ok``; ``short``: it ran out of spares; ``skipped``: failed upstream, or no question, reference
or negative to check; ``failed``: a check request failed at the HTTP level, kind ``request``: a
rerun asks again, the row's negatives left as they came), ``rare_negatives_unjudged``, the spare
columns (the spares left unused) and the checks' provenance summed over the row
``rare_negatives_{model,prompt_version,prompt_tokens,completion_tokens,attempts,simulated}``.
``last_summary.extra`` counts the rows checked, the candidates judged, rejected (the share: a
per-run estimate of the false-negative rate), replaced and unjudged, and the rows left short.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from rare_core.estimate_model import (
    JUDGE_TOKENS, JUDGE_TOKENS_REASONING, TYPICAL_QUESTION_CHARS, TYPICAL_REFERENCE_CHARS, EstimateInputs,
    EstimatePart, count_all, expected_completion, llm_line, standin, standin_pool,
)
from rare_core.llm.types import LLMRequest, RunTotals
from rare_core.operators import bm25_hardneg as hardneg
from rare_core.operators.base import (
    ERROR, ERROR_KIND, FAILED, INPUT_ERROR, OK, REQUEST_ERROR, RESERVED_PREFIX, SHORT, SKIPPED, STATUS, active_mask,
    as_nullable_int, distinct_keys, init_status, is_blank, mark_failed, require_columns, step_column, summarize,
)
from rare_core.operators.llm_step import (
    PROVENANCE_INTS, LLMOperator, Outcome, RoleGuard, RoleGuardConfig, ask_and_parse, llm_counters, provenance,
)
from rare_core.operators.verification import JUDGE
from rare_core.prompts import negative_check as prompt
from rare_core.prompts.doc2query import truncate
from rare_core.step_spec import StepSpec

STEP = "negatives"
ROLE = "negative_checker"
REJECTED = step_column(STEP, "rejected")  # rare_negatives_rejected
STATUS_COLUMN = step_column(STEP, "status")
UNJUDGED = step_column(STEP, "unjudged")
HARDNEG_STATUS = step_column(hardneg.STEP, "status")
SPARES = (hardneg.SPARE, hardneg.SPARE_IDS, hardneg.SPARE_SCORES)
# The share of checked candidates `rare estimate` assumes are judged to support the answer: the
# order of the false-negative rate bench/negatives_quality.py measures for the default guards.
ASSUMED_REJECTED_SHARE = 0.2


class NegativeCheckConfig(BaseModel):
    """Settings of the negative check (``checks.negatives``; the issue's ``hardneg.check``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Ask, for each candidate negative, whether it alone supports the "
                                            "reference answer (a request per candidate checked; needs "
                                            "hardneg.spare > 0); False: the step does not run.")
    max_doc_chars: int = Field(4000, ge=200, description="Characters of the candidate shown (as distill.max_doc_chars "
                                                         "cuts the documents the teacher sees).")
    max_attempts: int = Field(3, ge=1, le=10, description="LLM calls per candidate in all, re-asking after an "
                                                          "unusable reply.")
    role_guard: RoleGuardConfig = Field(default_factory=RoleGuardConfig,
                                        description="When a negative_checker role whose replies keep failing to "
                                                    "parse is stopped, before the rest is paid.")


class Candidate(NamedTuple):
    """A candidate negative as BM25HardNeg wrote it."""

    text: str
    id: object
    score: float


@dataclass
class _Row:
    """One row being checked: the candidate in each place (None: rejected, no spare left), the
    spares left, the rejected candidates, and what its checks cost."""

    places: list[Candidate | None]
    spares: list[Candidate]
    rejected: list[dict] = field(default_factory=list)
    unjudged: int = 0
    failure: str | None = None
    usage: Outcome = field(default_factory=Outcome)

    def record(self, outcome: Outcome) -> None:
        u = self.usage
        u.attempts += outcome.attempts
        u.prompt_tokens += outcome.prompt_tokens
        u.completion_tokens += outcome.completion_tokens
        u.model = outcome.model or u.model
        u.simulated = u.simulated or outcome.simulated


def _items(value: object) -> list:
    """A list cell (a list, or an array read back from parquet); missing -> []."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, str):
        raise ValueError("a list of negatives was expected, got a string")
    return list(value)


def _candidates(texts: object, ids: object, scores: object) -> list[Candidate]:
    texts, ids, scores = _items(texts), _items(ids), _items(scores)
    if not len(texts) == len(ids) == len(scores):
        raise ValueError(f"{len(texts)} negatives, {len(ids)} ids and {len(scores)} scores")
    return [Candidate(str(t), i, float(s)) for t, i, s in zip(texts, ids, scores)]


class NegativeCheck(LLMOperator):
    """See the module docstring."""

    step_name = STEP
    role = ROLE
    prompt_version = prompt.VERSION
    config_class = NegativeCheckConfig
    config: NegativeCheckConfig

    def output_columns(self, **_: object) -> list[str]:
        return []

    def role_guard(self, role: str | None = None) -> RoleGuard:
        return RoleGuard(role or self.role, self.config.role_guard, f"checks.{STEP}.role_guard")

    def process(self, df: pd.DataFrame, question_key: str = "question", reference_key: str = "reference_answer",
                negatives_key: str = "hard_negatives") -> pd.DataFrame:
        started = time.perf_counter()
        distinct_keys(STEP, question_key=question_key, reference_key=reference_key, negatives_key=negatives_key)
        df_in = df
        df = init_status(df.drop(columns=[c for c in df.columns if c.startswith(f"{RESERVED_PREFIX}{STEP}_")]))
        active = active_mask(df)
        n = len(df)
        columns: dict[str, list] = {c: [None] * n for c in (REJECTED, UNJUDGED, *provenance(STEP, Outcome(),
                                                                                              prompt.VERSION))}
        columns[STATUS_COLUMN] = [SKIPPED] * n
        if not self.config.enabled:
            return self._finish(df_in, df, columns, active, started, {}, RunTotals())
        lists = (negatives_key, f"{negatives_key}_ids", f"{negatives_key}_scores")
        require_columns(df, [question_key, reference_key, *lists], STEP)
        has_spares = all(c in df.columns for c in SPARES)
        rows: dict[int, _Row] = {}
        for pos in range(n):
            question, reference = df.at[pos, question_key], df.at[pos, reference_key]
            if not active[pos] or not isinstance(question, str) or is_blank(question) or is_blank(reference):
                continue
            try:
                places = _candidates(*(df.at[pos, c] for c in lists))
                spares = _candidates(*(df.at[pos, c] for c in SPARES)) if has_spares else []
            except (TypeError, ValueError) as exc:
                mark_failed(df, pos, STEP, f"invalid input: {exc}", INPUT_ERROR)
                columns[STATUS_COLUMN][pos] = FAILED
                continue
            if places:
                rows[pos] = _Row(list(places), spares)
        totals = self._check(df, rows, question_key, reference_key)
        self._write(df, columns, rows, lists, has_spares)
        return self._finish(df_in, df, columns, active, started, rows, totals)

    def _check(self, df: pd.DataFrame, rows: dict[int, _Row], question_key: str, reference_key: str) -> RunTotals:
        """Ask about every place of ``rows``, one batch per round, each rejected candidate's
        replacement in the next round; the totals of all rounds."""
        totals, guard = RunTotals(), self.role_guard()
        todo = [(pos, place) for pos, row in rows.items() for place in range(len(row.places))]
        while todo:
            requests = [LLMRequest(messages=prompt.build_messages(
                df.at[pos, question_key], str(df.at[pos, reference_key]), rows[pos].places[place].text,
                self.config.max_doc_chars), prompt_version=prompt.VERSION) for pos, place in todo]
            outcomes, batch = ask_and_parse(self.llm, requests, lambda r: prompt.parse_reply(r.text),
                                            self.config.max_attempts, self.on_progress,
                                            retry_unusable_cached=self.retry_failed, guard=guard)
            totals = totals.add(batch)
            again = []
            for (pos, place), outcome in zip(todo, outcomes):
                row = rows[pos]
                row.record(outcome)
                if outcome.kind == REQUEST_ERROR:
                    row.failure = row.failure or outcome.error
                elif outcome.parsed is None:
                    row.unjudged += 1  # kept: no verdict says it answers
                elif outcome.parsed.supports:
                    candidate = row.places[place]
                    row.rejected.append({"id": candidate.id, "text": candidate.text, "reason": outcome.parsed.reason})
                    row.places[place] = row.spares.pop(0) if row.spares else None
                    if row.places[place] is not None:
                        again.append((pos, place))
            todo = [(pos, place) for pos, place in again if rows[pos].failure is None]
        return totals

    @staticmethod
    def _write(df: pd.DataFrame, columns: dict[str, list], rows: dict[int, _Row], lists: tuple[str, ...],
               has_spares: bool) -> None:
        """Each checked row's negatives, spares, status and columns (a failed row keeps its negatives)."""
        values = {c: df[c].tolist() for c in lists + (SPARES if has_spares else ())}
        for pos, row in rows.items():
            for name, value in provenance(STEP, row.usage, prompt.VERSION).items():
                columns[name][pos] = value
            columns[UNJUDGED][pos] = row.unjudged
            if row.failure is not None:
                df.loc[pos, [STATUS, ERROR, ERROR_KIND]] = [FAILED, f"{STEP}: {row.failure}", REQUEST_ERROR]
                columns[STATUS_COLUMN][pos] = FAILED
                continue
            kept = [c for c in row.places if c is not None]
            for name, got in zip(lists, zip(*kept) if kept else ([], [], [])):
                values[name][pos] = list(got)
            if has_spares:
                for name, got in zip(SPARES, zip(*row.spares) if row.spares else ([], [], [])):
                    values[name][pos] = list(got)
            short = len(kept) < len(row.places)
            columns[STATUS_COLUMN][pos] = SHORT if short else OK
            if short and HARDNEG_STATUS in df.columns:
                df.loc[pos, HARDNEG_STATUS] = SHORT
            columns[REJECTED][pos] = row.rejected or None
        for name, column in values.items():
            df[name] = pd.Series(column, index=df.index, dtype=object)

    def _finish(self, df_in: pd.DataFrame, df: pd.DataFrame, columns: dict[str, list], active: pd.Series,
                started: float, rows: dict[int, _Row], totals: RunTotals) -> pd.DataFrame:
        """Write the columns and set ``last_summary``."""
        for name, values in columns.items():
            df[name] = values
        as_nullable_int(df, [UNJUDGED, *(step_column(STEP, f) for f in PROVENANCE_INTS)])
        extra: dict = {"enabled": self.config.enabled}
        if self.config.enabled:
            done = [row for row in rows.values() if row.failure is None]
            rejected = sum(len(row.rejected) for row in done)
            unjudged = sum(row.unjudged for row in done)
            asked = sum(len(row.places) + len(row.rejected) - sum(c is None for c in row.places) for row in done)
            extra.update({"rows_checked": len(done), "candidates_judged": asked - unjudged,
                          "candidates_rejected": rejected,
                          "candidates_replaced": rejected - sum(c is None for row in done for c in row.places),
                          "candidates_unjudged": unjudged,
                          "rows_with_rejections": sum(bool(row.rejected) for row in done),
                          "rows_short": sum(c == SHORT for c in columns[STATUS_COLUMN]),
                          "deduplicated": totals.deduplicated})
        self.last_summary = summarize(STEP, df_in, df, active, started, totals.simulated, extra,
                                      llm_counters(totals) if self.config.enabled else None)
        return df


def describe(summary) -> list[str]:
    """The check's lines in the report and the dataset card: the share of candidates rejected."""
    extra = summary.extra
    if "candidates_judged" not in extra:
        return []
    judged, rejected = int(extra["candidates_judged"]), int(extra["candidates_rejected"])
    share = f"{rejected / judged:.1%}" if judged else "no candidate judged"
    lines = [f"{rejected:,} of {judged:,} candidate negatives were judged to support the answer and replaced "
             f"({share}): an estimate of the false-negative rate"]
    if short := int(extra["rows_short"]):
        lines.append(f"negative check: {short:,} row(s) ran out of spares (kept, marked `short`)")
    if unjudged := int(extra["candidates_unjudged"]):
        lines.append(f"negative check: {unjudged:,} candidate(s) kept without a usable verdict")
    return lines


def _needs_spares(config) -> None:
    """The check replaces what it rejects from hardneg's spares: refuse a run without any."""
    if config.hardneg.spare == 0:
        raise ValueError("checks.negatives needs hardneg.spare > 0 to replace rejected negatives; "
                         "set --set hardneg.spare=3")


def _checked(inputs: EstimateInputs) -> tuple[int, list[tuple[str, str]]]:
    """The rows checked, as the operator decides them: generated questions (every valid
    document's ``doc2query.num_questions``, each with a reference), or the given rows with a text,
    a question and a reference: their count, and (question, reference) of each given one."""
    config = inputs.config
    if not config.questions_given:
        return len(inputs.texts) * config.doc2query.num_questions, []
    k, documents = config.columns, inputs.documents
    references = documents[k.gold_answer].tolist() if k.gold_answer in documents.columns else [None] * len(documents)
    given = [(q, str(r)) for t, q, r in zip(documents[k.text].tolist(), documents[k.question].tolist(), references)
             if inputs.is_text(t) and inputs.is_text(q) and not is_blank(r)]
    return len(given), given


def estimate(inputs: EstimateInputs) -> EstimatePart:
    """One request per candidate checked: each row's ``hardneg.num_neg`` negatives, plus the
    replacements expected (:data:`ASSUMED_REJECTED_SHARE` of the checks, geometric, at most
    ``hardneg.spare``); at most every negative and spare. Each prompt shows the row's question and
    reference (given ones rendered as they are, generated ones stand-ins of the typical lengths)
    and a document as long as the corpus's mean document cut to ``max_doc_chars``; a
    judge-sized reply."""
    config = inputs.config
    rows, given = _checked(inputs)
    llm = config.llm_for(ROLE)
    counter = inputs.counter(llm.model)
    max_chars = config.checks.negatives.max_doc_chars
    pool = standin_pool(inputs.texts, max_chars)
    mean = sum(len(truncate(t, max_chars)) for t in inputs.texts) / len(inputs.texts) if inputs.texts else 0
    document = standin(pool, len(pool) // 2, round(mean))
    if config.questions_given:
        one_round = count_all(counter, (prompt.build_messages(q, r, document, max(max_chars, len(document)))
                                        for q, r in given))
    else:
        question = standin(pool, len(pool) // 3, TYPICAL_QUESTION_CHARS - 1) + "?"
        reference = standin(pool, 2 * len(pool) // 3, TYPICAL_REFERENCE_CHARS)
        one_round = rows * counter.count_messages(prompt.build_messages(question, reference, document,
                                                                        max(max_chars, len(document))))
    num_neg, spare, p = config.hardneg.num_neg, config.hardneg.spare, ASSUMED_REJECTED_SHARE
    per_row = num_neg + min(spare, num_neg * p / (1 - p))
    at_most = num_neg + spare
    per = expected_completion(llm.model, llm.generation.max_tokens, JUDGE_TOKENS, JUDGE_TOKENS_REASONING)
    line = llm_line(STEP, ROLE, llm, counter, per, requests=round(rows * per_row), requests_max=rows * at_most,
                    prompt_tokens=round(one_round * per_row), prompt_tokens_max=one_round * at_most,
                    prompt_tokens_per_request=one_round / rows if rows else 0.0,
                    completion_tokens_expected=round(rows * per_row * per),
                    completion_tokens_max=rows * at_most * llm.generation.max_tokens, rows=rows)
    notes = [f"{STEP}: {per_row:.2f} check(s) per row expected ({num_neg} negatives, and {p:.0%} of the checks "
             f"assumed to reject one and draw a spare), {at_most} at most (hardneg.num_neg + hardneg.spare)"]
    return EstimatePart([line], notes)


SPEC = StepSpec(
    name=STEP, label="NegativeCheck", task_name="negative-check", section="checks.negatives",
    settings_model=NegativeCheckConfig, operator=NegativeCheck, role=ROLE,
    introduces={ROLE: "Negative check: says whether one candidate negative alone supports the reference answer "
                      "(unset: the judge's settings)."},
    role_falls_back_to={ROLE: JUDGE},
    keys=lambda c: {"question_key": c.columns.question, "reference_key": c.reference_key,
                    "negatives_key": c.columns.hard_negatives},
    description="After BM25HardNeg (the issue's hardneg.check): asks whether each candidate negative alone supports "
                "the reference answer, and replaces those that do with hardneg's spares (a request per candidate "
                "checked; needs hardneg.spare > 0).",
    default=lambda: NegativeCheckConfig(enabled=False),
    enabled=lambda c: c.checks.negatives.enabled,
    check_config=_needs_spares,
    cache_exclude=frozenset({"role_guard"}),  # the guard stops a step; it never changes a finished step's rows
    estimate=estimate, describe=describe, dataset=lambda c: {REJECTED: REJECTED})
