"""What the data filters share: the ``filtered`` error kind, the word tokenizer, and the
bookkeeping every filter does the same way.

A filter never drops a row. A row it rejects keeps its data and gets ``rare_status="failed"``,
``rare_error="<filter>: <reason>"``, ``rare_error_kind="filtered"`` (:data:`FILTERED_ERROR`:
the row is well formed but not wanted; a rerun never retries it) and
``rare_<filter>_status="filtered"``. The other rows get ``rare_<filter>_status``:

* ``ok``: checked and kept;
* ``skipped``: failed upstream (its status and error are left as they are), or every row
  when the filter's config has ``enabled=False`` (the frame then passes through unchanged,
  and no column is required).

A filter writes no data column (``output_columns() == []``). ``last_summary`` is a
:class:`~rare_core.operators.base.StepSummary` whose ``failed`` counts the filtered rows,
``failures_by_reason`` and ``extra`` count them by reason code (every code of the filter
present, zeros included: ``{"exact_duplicates": 3, "too_short": 5, ...}``) and ``extra``
adds ``kept`` and the filter's own counters.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from rare_core.operators.base import (
    ERROR, ERROR_KIND, FAILED, OK, SKIPPED, STATUS, Operator, StepSummary, active_mask, distinct_keys,
    init_status, is_blank, require_columns, step_column,
)
from rare_core.retrieval.negatives import normalize_text
from rare_core.step_spec import StepSpec

FILTERED_ERROR = "filtered"  # rare_error_kind of a row a filter rejected (to join base.ErrorKind)
FILTERED = "filtered"  # rare_<filter>_status of a rejected row

WORD_PATTERN = re.compile(r"\w+")


def words(text: object) -> list[str]:
    """The words of ``normalize_text(text)`` (NFKC, casefolded, invisible characters removed):
    runs of letters, digits and underscores; punctuation and whitespace separate them. The
    unit of the dedup shingles and of the leakage matches; blank -> ``[]``."""
    if is_blank(text):
        return []
    return WORD_PATTERN.findall(normalize_text(text))


def whitespace_tokens(text: str) -> int:
    """The default token count: whitespace-separated words (``len(text.split())``)."""
    return len(text.split())


class FilterConfig(BaseModel):
    """Settings every filter has."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="False: every row passes through, marked 'skipped'.")


@dataclass
class FilterRun:
    """One ``process`` call in progress: the input, the working copy and the rows to check."""

    df_in: pd.DataFrame
    df: pd.DataFrame
    active: np.ndarray  # bool by position: not failed upstream
    started: float


class FilterOperator(Operator):
    """Base of the filters: config handling, bookkeeping and the summary (see the module docstring).

    Subclasses set ``step_name``, ``config_class`` and ``reasons`` (the reason codes they count)
    and implement ``process`` with :meth:`_start` and :meth:`_finish`.
    """

    step_name = "filter"
    config_class: type[FilterConfig] = FilterConfig
    reasons: tuple[str, ...] = ()

    def __init__(self, config: FilterConfig | None = None, **settings) -> None:
        super().__init__()
        base = config.model_dump() if config else {}
        self.config = self.config_class.model_validate({**base, **settings})

    @property
    def status_column(self) -> str:
        """``rare_<filter>_status``."""
        return step_column(self.step_name, "status")

    def output_columns(self, **_: object) -> list[str]:
        """None: a filter writes only bookkeeping (``rare_*``) columns."""
        return []

    def reason_codes(self) -> tuple[str, ...]:
        """The reason codes this filter counts with its current config."""
        return self.reasons

    def _start(self, df: pd.DataFrame, required: list[str], **keys: str) -> FilterRun:
        """Check the keys and columns, and make the positional working copy (an earlier status
        column of this filter is replaced)."""
        started = time.perf_counter()
        distinct_keys(self.step_name, **keys)
        if self.config.enabled:
            require_columns(df, required, self.step_name)
        work = df.drop(columns=[self.status_column]) if self.status_column in df.columns else df
        work = init_status(work)
        return FilterRun(df, work, active_mask(work).to_numpy(dtype=bool), started)

    def _finish(self, run: FilterRun, filtered: dict[int, tuple[str, str]],
                extra: dict[str, float | int | str | bool] | None = None) -> pd.DataFrame:
        """Mark the ``filtered`` rows (position -> (reason code, reason text)), write the status
        column and ``last_summary``; returns the frame."""
        df, active, step = run.df, run.active, self.step_name
        enabled = self.config.enabled
        status = np.where(active & enabled, OK, SKIPPED).astype(object)
        if filtered:
            rows = np.fromiter(filtered, dtype=np.int64, count=len(filtered))
            if not active[rows].all():  # pragma: no cover - a filter bug, never the data's
                raise AssertionError(f"{step}: a row failed upstream was filtered")
            status[rows] = FILTERED
            df.loc[rows, STATUS] = FAILED
            df.loc[rows, ERROR] = [f"{step}: {reason}" for _, reason in filtered.values()]
            df.loc[rows, ERROR_KIND] = FILTERED_ERROR
        df[self.status_column] = status
        counts = Counter(code for code, _ in filtered.values())
        processed = int(active.sum()) if enabled else 0
        summary_extra: dict[str, float | int | str | bool] = {"enabled": enabled}
        if enabled:
            summary_extra.update({code: counts.get(code, 0) for code in self.reason_codes()})
            summary_extra.update({code: n for code, n in counts.items() if code not in summary_extra})
            summary_extra["kept"] = processed - len(filtered)
        summary_extra.update(extra or {})
        self.last_summary = StepSummary(
            step=step, rows_in=len(run.df_in), rows_out=len(df), processed=processed,
            skipped_upstream_failed=int((~active).sum()), failed=len(filtered),
            failures_by_reason=dict(counts), failures_by_kind={FILTERED_ERROR: len(filtered)} if filtered else {},
            wall_seconds=time.perf_counter() - run.started, extra=summary_extra,
        )
        return df


def filter_spec(task: str, operator: type[FilterOperator], section: str, keys, description: str,
                scope: str = "row") -> StepSpec:
    """A data filter as a step: its settings in ``filters.{section}``, off by default, run when enabled."""
    return StepSpec(name=operator.step_name, label=task, task_name=task, section=f"filters.{section}",
                    settings_model=operator.config_class, operator=operator, keys=keys, scope=scope,
                    description=description, default=lambda: operator.config_class(enabled=False),
                    enabled=lambda c: getattr(c.filters, section).enabled)
