"""What every operator shares: column checks, the row-status convention, and ``run(storage)``.

Row status convention (one set of columns for the whole pipeline):

* ``status``: ``"ok"`` or ``"failed"``. A step never touches a row whose ``status`` is
  ``"failed"`` (it keeps its failed status and error); it marks rows it fails itself.
* ``error``: for a failed row, ``"<step>: <reason>"``; otherwise empty.
* ``<step>_status``: what that step did to the row: ``ok``, ``failed``, ``skipped`` (failed
  upstream) or, for BM25HardNeg, ``short`` (fewer negatives than asked; not a failure).

Every operator has ``process(df, **keys) -> DataFrame`` (frame in, frame out; what the Prefect
tasks call) and ``run(storage, **keys)`` (the storage API of the system we implement), with the
same keys and defaults. After each call, ``last_summary`` holds a :class:`StepSummary`.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Iterable

import pandas as pd
from pydantic import BaseModel, Field

from rare_core.errors import InputColumnError

STATUS = "status"
ERROR = "error"
OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
SHORT = "short"


class StepSummary(BaseModel):
    """What one step did: rows in and out, failures by reason, and its step-specific counters."""

    step: str
    rows_in: int = 0
    rows_out: int = 0
    processed: int = 0
    skipped_upstream_failed: int = 0
    failed: int = 0
    failures_by_reason: dict[str, int] = Field(default_factory=dict)
    wall_seconds: float = 0.0
    simulated: bool = False
    extra: dict[str, float | int | str | bool] = Field(default_factory=dict)


def document_id(text: object) -> str:
    """The id of a document that has none: ``"h"`` + 16 hex digits of its text's hash. Stable
    across runs and machines; the same text always gets the same id."""
    return "h" + hashlib.blake2b(str(text).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def require_columns(df: pd.DataFrame, columns: Iterable[str], step: str) -> None:
    """``InputColumnError`` naming each missing column and listing the columns present."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputColumnError(
            f"{step}: input column(s) {', '.join(repr(c) for c in missing)} not found; "
            f"columns present: {', '.join(repr(c) for c in df.columns) or '(none)'}"
        )


def guard_outputs(df: pd.DataFrame, columns: Iterable[str], step: str, overwrite: bool) -> None:
    """``InputColumnError`` when an output column already exists and ``overwrite`` is False."""
    clash = [c for c in columns if c in df.columns]
    if clash and not overwrite:
        raise InputColumnError(
            f"{step}: output column(s) {', '.join(repr(c) for c in clash)} already exist; "
            "pass overwrite=True to replace them or choose other output keys"
        )


def active_mask(df: pd.DataFrame) -> pd.Series:
    """Rows this step should work on: those not already failed upstream."""
    if STATUS not in df.columns:
        return pd.Series(True, index=df.index)
    return df[STATUS].fillna(OK) != FAILED


def init_status(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``status``/``error`` columns if absent (the first step of a pipeline)."""
    if STATUS not in df.columns:
        df[STATUS] = OK
    if ERROR not in df.columns:
        df[ERROR] = ""
    df[ERROR] = df[ERROR].fillna("").astype(str)
    return df


def mark_failed(df: pd.DataFrame, index, step: str, reason: str) -> None:
    """Mark one row failed by ``step`` with ``reason``."""
    df.loc[index, [STATUS, ERROR, f"{step}_status"]] = [FAILED, f"{step}: {reason}", FAILED]


def failure_counts(reasons: Iterable[str]) -> dict[str, int]:
    """Failure reasons grouped by their category (text before the first ':')."""
    return dict(Counter(r.split(":", 1)[0].strip() for r in reasons))


class Operator:
    """Base class: subclasses implement ``process``; ``run`` adapts it to ``FileStorage``."""

    step_name: str = "operator"

    def __init__(self) -> None:
        self.last_summary: StepSummary | None = None

    def process(self, df: pd.DataFrame, **keys) -> pd.DataFrame:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, storage, **keys) -> str:
        """Read the step's input from ``storage``, process it, write the step's output; returns the path."""
        df = storage.read("dataframe")
        out = self.process(df, **keys)
        return str(storage.write(out))


def summarize(step: str, df_in: pd.DataFrame, out: pd.DataFrame, active: pd.Series, started: float,
              simulated: bool = False, extra: dict | None = None) -> StepSummary:
    """The :class:`StepSummary` of a step from its input and output frames."""
    failed = out[f"{step}_status"] == FAILED if f"{step}_status" in out.columns else pd.Series(False, index=out.index)
    return StepSummary(
        step=step, rows_in=len(df_in), rows_out=len(out), processed=int(active.sum()),
        skipped_upstream_failed=int((~active).sum()), failed=int(failed.sum()),
        failures_by_reason=failure_counts(out.loc[failed, ERROR].str.removeprefix(f"{step}: ")),
        wall_seconds=time.perf_counter() - started, simulated=simulated, extra=extra or {},
    )


def ordered_columns(df: pd.DataFrame, rows: list[dict]) -> list[str]:
    """Input columns first, then new ones in the order they first appear in ``rows``."""
    cols = list(df.columns)
    seen = set(cols)
    for row in rows:
        for c in row:
            if c not in seen:
                cols.append(c)
                seen.add(c)
    return cols
