"""LengthFilter: questions and reasonings whose length is out of bounds.

``process(df, question_key="question", reasoning_key="reasoning")`` filters a row not failed
upstream when a checked column's token count is outside its bounds (inclusive: ``min_tokens
<= n <= max_tokens``; ``None`` is no bound; a blank or missing value has 0 tokens):

* ``question`` (default 5..256 tokens) in the ``question_key`` column;
* ``reasoning`` (default at least 20 tokens, no maximum) in the ``reasoning_key`` column;
* any other column by name, ``columns={"scenario": {"min_tokens": 10}}``.

Which columns are checked is the config's: ``question=None`` or ``reasoning=None`` leaves one
out (run before ReasonDistill with ``reasoning=None``). Every checked column must exist.
Tokens are whitespace-separated words unless ``LengthFilter(count_tokens=...)`` gets a
``Callable[[str], int]`` (a tokenizer's ``lambda s: len(enc.encode(s))``). Reason codes
``<name>_too_short`` / ``<name>_too_long``, reasons ``"question too short (3 tokens < 5)"``;
the columns are checked in the order question, reasoning, then ``columns``, and the first
that is out of bounds is the reason.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rare_core.errors import InputColumnError
from rare_core.filters.common import FilterConfig, FilterOperator, filter_spec, whitespace_tokens
from rare_core.operators.base import is_blank


class LengthBounds(BaseModel):
    """Inclusive token bounds of one column (``None``: unbounded on that side)."""

    model_config = ConfigDict(extra="forbid")

    min_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "LengthBounds":
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens {self.min_tokens} > max_tokens {self.max_tokens}")
        return self


class LengthFilterConfig(FilterConfig):
    """Settings of the length filter."""

    question: LengthBounds | None = Field(
        default_factory=lambda: LengthBounds(min_tokens=5, max_tokens=256),
        description="Bounds of the question column; None: not checked.")
    reasoning: LengthBounds | None = Field(
        default_factory=lambda: LengthBounds(min_tokens=20),
        description="Bounds of the reasoning column; None: not checked.")
    columns: dict[str, LengthBounds] = Field(default_factory=dict, description="Further columns, by name.")


class LengthFilter(FilterOperator):
    step_name = "length_filter"
    config_class = LengthFilterConfig
    config: LengthFilterConfig

    def __init__(self, config: LengthFilterConfig | None = None, count_tokens: Callable[[str], int] | None = None,
                 **settings) -> None:
        super().__init__(config, **settings)
        self.count_tokens = count_tokens or whitespace_tokens

    def _checks(self, question_key: str, reasoning_key: str) -> list[tuple[str, str, LengthBounds]]:
        """(name, column, bounds) of each checked column, in order."""
        cfg = self.config
        checks = [(name, column, bounds) for name, column, bounds in
                  (("question", question_key, cfg.question), ("reasoning", reasoning_key, cfg.reasoning))
                  if bounds is not None]
        checks += [(column, column, bounds) for column, bounds in cfg.columns.items()]
        seen: dict[str, str] = {}
        for name, column, _ in checks:
            if column in seen:
                raise InputColumnError(f"{self.step_name}: the column {column!r} is checked twice "
                                       f"(as {seen[column]} and as {name})")
            seen[column] = name
        return checks

    def reason_codes(self) -> tuple[str, ...]:
        return tuple(f"{name}_{side}" for name, _, _ in self._checks("question", "reasoning")
                     for side in ("too_short", "too_long"))

    def process(self, df: pd.DataFrame, question_key: str = "question",
                reasoning_key: str = "reasoning") -> pd.DataFrame:
        checks = self._checks(question_key, reasoning_key)
        run = self._start(df, [column for _, column, _ in checks],
                          question_key=question_key, reasoning_key=reasoning_key)
        if not self.config.enabled:
            return self._finish(run, {})
        count = self.count_tokens
        values = [(name, run.df[column].to_numpy(dtype=object), bounds) for name, column, bounds in checks]
        filtered: dict[int, tuple[str, str]] = {}
        for pos in range(len(run.df)):
            if not run.active[pos]:
                continue
            for name, column, bounds in values:
                value = column[pos]
                n = 0 if is_blank(value) else int(count(str(value)))
                if bounds.min_tokens is not None and n < bounds.min_tokens:
                    filtered[pos] = (f"{name}_too_short", f"{name} too short ({n} tokens < {bounds.min_tokens})")
                    break
                if bounds.max_tokens is not None and n > bounds.max_tokens:
                    filtered[pos] = (f"{name}_too_long", f"{name} too long ({n} tokens > {bounds.max_tokens})")
                    break
        return self._finish(run, filtered, {
            "checked_columns": ",".join(column for _, column, _ in checks),
            "token_counter": getattr(count, "__name__", type(count).__name__)})


SPEC = filter_spec("length", LengthFilter, "length",
                   lambda c: {"question_key": c.columns.question, "reasoning_key": c.columns.reasoning},
                   "After ReasonDistill: question and reasoning lengths.")
