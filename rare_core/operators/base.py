"""What every operator shares: column checks, the pipeline's bookkeeping columns, and ``run(storage)``.

Bookkeeping lives in its own namespace: every column the pipeline writes about a row (rather
than data for the trainer) starts with :data:`RESERVED_PREFIX` (``rare_``), so a user column
named ``status``, ``error`` or ``doc2query_model`` is plain data and never read as ours:

* ``rare_status``: ``"ok"`` or ``"failed"``. A step never touches a row whose ``rare_status`` is
  ``"failed"`` (it keeps its failed status and error); it marks rows it fails itself.
* ``rare_error``: for a failed row, ``"<step>: <reason>"``; otherwise empty.
* ``rare_error_kind``: why it failed, which decides whether a rerun retries it: ``input``
  (the row itself is unusable: never retried), ``request`` (the endpoint did not answer: an
  outage, 429s, timeouts; a rerun retries these rows), ``content`` (the answers could not be
  used after the re-asks; retried only when asked, ``rare run --retry-failed``), ``rejected``
  (verification rejected every sample), ``filtered`` (a data filter removed it).
* ``rare_<step>_status``: what that step did to the row: ``ok``, ``failed``, ``skipped`` (failed
  upstream) or, for BM25HardNeg, ``short`` (fewer negatives than asked; not a failure); and
  ``rare_<step>_<field>`` for the step's provenance (model, prompt version, tokens, raw reply).

The data columns a step adds (``question``, ``hard_negatives_ids``, ``document_order``...) are
refused when the input already has them (``guard_outputs``), unless ``overwrite=True``.

Every operator has ``process(df, **keys) -> DataFrame`` (frame in, frame out; what the Prefect
tasks call) and ``run(storage, **keys)`` (the storage API of the system we implement, returning
the list of the output keys it wrote), with the same keys and defaults. After each call,
``last_summary`` holds a :class:`StepSummary`. Frames may come with any index (duplicated
labels included): operators work on positions and return a frame with a fresh RangeIndex.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from typing import Iterable, Literal

import pandas as pd
from pydantic import BaseModel, Field

from rare_core.errors import InputColumnError

RESERVED_PREFIX = "rare_"
STATUS = "rare_status"
ERROR = "rare_error"
ERROR_KIND = "rare_error_kind"
OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
SHORT = "short"
ErrorKind = Literal["input", "request", "content", "rejected", "filtered"]
INPUT_ERROR: ErrorKind = "input"
REQUEST_ERROR: ErrorKind = "request"
CONTENT_ERROR: ErrorKind = "content"
REJECTED_ERROR: ErrorKind = "rejected"  # verification rejected every sample
FILTERED_ERROR: ErrorKind = "filtered"  # a data filter removed the row (rare_core.filters)


def step_column(step: str, field: str) -> str:
    """The bookkeeping column ``rare_<step>_<field>`` (e.g. ``rare_doc2query_status``)."""
    return f"{RESERVED_PREFIX}{step}_{field}"


class LLMCounters(BaseModel):
    """What an LLM step's requests took in one run (from the client's totals of its batches)."""

    requests: int = 0
    retries: int = 0
    cache_hits: int = 0  # rows served from the response cache
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch_requests: int = 0  # of ``requests``, those answered through the Batch API (batch prices)
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    refused_429: int = 0  # 429s the endpoint answered (each retried)

    def __add__(self, other: "LLMCounters") -> "LLMCounters":
        return LLMCounters(**{k: getattr(self, k) + getattr(other, k) for k in LLMCounters.model_fields})


class StepSummary(BaseModel):
    """What one step did: rows in and out, failures by reason and by kind, an LLM step's request
    counters (``llm``; None for a step that sends none) and its step-specific counters (``extra``)."""

    step: str
    rows_in: int = 0
    rows_out: int = 0
    processed: int = 0
    skipped_upstream_failed: int = 0
    failed: int = 0
    failures_by_reason: dict[str, int] = Field(default_factory=dict)
    failures_by_kind: dict[str, int] = Field(default_factory=dict)
    wall_seconds: float = 0.0
    simulated: bool = False
    llm: LLMCounters | None = None
    extra: dict[str, float | int | str | bool] = Field(default_factory=dict)


def document_id(text: object) -> str:
    """The id of a document that has none: ``"h"`` + 16 hex digits of its text's hash. Stable
    across runs and machines; the same text always gets the same id."""
    return "h" + hashlib.blake2b(str(text).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def is_blank(value: object) -> bool:
    """True for None, NaN/NA and strings that are empty or only whitespace."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and not value.strip()


def canonical_id(value: object) -> str:
    """A document id as text: integral floats (``101.0``, as pandas stores ints next to a
    missing value) as ``"101"``, anything else ``str(value)``. The form ids are indexed and
    compared in; the values written out keep their own type."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def require_columns(df: pd.DataFrame, columns: Iterable[str], step: str) -> None:
    """``InputColumnError`` naming each missing column and listing the columns present."""
    missing = [c for c in columns if c not in df.columns]
    if not missing:
        return
    if df.empty and not len(df.columns):
        raise InputColumnError(f"{step}: the input has no documents (no rows, no columns)")
    raise InputColumnError(
        f"{step}: input column(s) {', '.join(repr(c) for c in missing)} not found; "
        f"columns present: {', '.join(repr(str(c)) for c in df.columns)}"
    )


def guard_outputs(df: pd.DataFrame, columns: Iterable[str], step: str, overwrite: bool) -> None:
    """``InputColumnError`` when an output column already exists and ``overwrite`` is False."""
    clash = [c for c in columns if c in df.columns]
    if clash and not overwrite:
        raise InputColumnError(
            f"{step}: output column(s) {', '.join(repr(c) for c in clash)} already exist in the input; "
            "pass overwrite=True to replace them or choose other output keys"
        )


def distinct_keys(step: str, **keys: str) -> None:
    """``InputColumnError`` when two of a step's column keys name the same column."""
    seen: dict[str, str] = {}
    for name, column in keys.items():
        if column in seen:
            raise InputColumnError(f"{step}: {seen[column]} and {name} both name the column {column!r}")
        seen[column] = name


def active_mask(df: pd.DataFrame) -> pd.Series:
    """Rows this step should work on: those not already failed upstream."""
    if STATUS not in df.columns:
        return pd.Series(True, index=df.index)
    return df[STATUS].fillna(OK) != FAILED


def init_status(df: pd.DataFrame) -> pd.DataFrame:
    """A positional copy of ``df`` (fresh RangeIndex) with the status columns added if absent."""
    df = df.reset_index(drop=True)
    if STATUS not in df.columns:
        df[STATUS] = OK
    for col in (ERROR, ERROR_KIND):
        df[col] = df[col].fillna("").astype(str) if col in df.columns else ""
    return df


def mark_failed(df: pd.DataFrame, index, step: str, reason: str, kind: ErrorKind = INPUT_ERROR) -> None:
    """Mark one row failed by ``step`` with ``reason`` of ``kind``."""
    df.loc[index, [STATUS, ERROR, ERROR_KIND, step_column(step, "status")]] = [FAILED, f"{step}: {reason}", kind, FAILED]


def failed_fields(step: str, reason: str, kind: ErrorKind) -> dict[str, str]:
    """The status columns of a row that ``step`` failed, as a dict to merge into the row."""
    return {STATUS: FAILED, ERROR: f"{step}: {reason}", ERROR_KIND: kind, step_column(step, "status"): FAILED}


def failure_counts(reasons: Iterable[str]) -> dict[str, int]:
    """Failure reasons grouped by their category (text before the first ':')."""
    return dict(Counter(r.split(":", 1)[0].strip() for r in reasons))


def as_nullable_int(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``columns`` (those present) as pandas ``Int64``: integers stay integers next to missing values."""
    for col in columns:
        if col in df.columns:
            df[col] = pd.array([None if is_blank(v) else int(v) for v in df[col]], dtype="Int64")
    return df


class Operator:
    """Base class: subclasses implement ``process`` and ``output_columns``; ``run`` adapts them to ``FileStorage``."""

    step_name: str = "operator"

    def __init__(self) -> None:
        self.last_summary: StepSummary | None = None

    def process(self, df: pd.DataFrame, **keys) -> pd.DataFrame:  # pragma: no cover - abstract
        raise NotImplementedError

    def output_columns(self, **keys) -> list[str]:  # pragma: no cover - abstract
        """Every data column ``process`` writes for these keys (bookkeeping ``rare_*`` aside)."""
        raise NotImplementedError

    def output_keys(self, **keys) -> list[str]:
        """What ``run`` returns: the output keys, as the system we implement reports them."""
        return self.output_columns(**keys)

    def run(self, storage, **keys) -> list[str]:
        """Read the step's input from ``storage``, process it, write the step's output; returns
        the output keys written (as the system we implement does, e.g. ``['hard_negatives']``)."""
        df = storage.read("dataframe")
        out = self.process(df, **keys)
        storage.write(out)
        return self.output_keys(**keys)


def summarize(step: str, df_in: pd.DataFrame, out: pd.DataFrame, active: pd.Series, started: float,
              simulated: bool = False, extra: dict | None = None, llm: LLMCounters | None = None) -> StepSummary:
    """The :class:`StepSummary` of a step from its input and output frames."""
    col = step_column(step, "status")
    failed = out[col] == FAILED if col in out.columns else pd.Series(False, index=out.index)
    return StepSummary(
        step=step, rows_in=len(df_in), rows_out=len(out), processed=int(active.sum()),
        skipped_upstream_failed=int((~active).sum()), failed=int(failed.sum()),
        failures_by_reason=failure_counts(out.loc[failed, ERROR].str.removeprefix(f"{step}: ")),
        failures_by_kind=dict(Counter(out.loc[failed, ERROR_KIND])),
        wall_seconds=time.perf_counter() - started, simulated=simulated, llm=llm, extra=extra or {},
    )


# Counters of ``StepSummary.extra`` that describe the whole corpus or the deepest search, not
# each row: merged by maximum instead of sum.
_MAX_EXTRA = frozenset({"index_docs", "search_rounds"})


def merge_summaries(summaries: list[StepSummary]) -> StepSummary:
    """The summary of a step run shard by shard: counts and seconds summed (``wall_seconds``
    is then the work done, not the time it took), failures merged, ``llm`` counters and ``extra``
    numbers summed (by maximum for :data:`_MAX_EXTRA`), flags true when true for every shard;
    ``simulated`` when any shard was."""
    if len(summaries) == 1:
        return summaries[0]
    first = summaries[0]
    counts = ("rows_in", "rows_out", "processed", "skipped_upstream_failed", "failed", "wall_seconds")
    merged = {name: sum(getattr(s, name) for s in summaries) for name in counts}
    reasons: Counter = Counter()
    kinds: Counter = Counter()
    extra: dict[str, float | int | str | bool] = {}
    for s in summaries:
        reasons.update(s.failures_by_reason)
        kinds.update(s.failures_by_kind)
        for key, value in s.extra.items():
            if key not in extra:
                extra[key] = value
            elif isinstance(value, bool):
                extra[key] = bool(extra[key]) and value
            elif isinstance(value, (int, float)) and not isinstance(extra[key], (str, bool)):
                extra[key] = max(extra[key], value) if key in _MAX_EXTRA else round(extra[key] + value, 6)
    counters = [s.llm for s in summaries if s.llm is not None]
    llm = sum(counters, LLMCounters()) if counters else None
    return StepSummary(step=first.step, **merged, failures_by_reason=dict(reasons), failures_by_kind=dict(kinds),
                       simulated=any(s.simulated for s in summaries), llm=llm, extra=extra)


def frame_from_rows(df: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """The output frame of ``rows`` (input rows extended with a step's columns): input columns
    first, in their order and with their dtypes (an ``Int64`` column with a missing value would
    otherwise come back as floats), then new ones in the order they first appear."""
    cols = list(df.columns)
    seen = set(cols)
    for row in rows:
        for c in row:
            if c not in seen:
                cols.append(c)
                seen.add(c)
    out = pd.DataFrame(rows, columns=cols)
    for col in df.columns:
        if out[col].dtype != df[col].dtype and isinstance(df[col].dtype, pd.api.extensions.ExtensionDtype):
            out[col] = out[col].astype(df[col].dtype)
    return out
