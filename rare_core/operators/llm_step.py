"""Ask, parse, re-ask: the loop both LLM operators share.

In: one :class:`LLMRequest` per row and a parse function. Out: one :class:`Outcome` per row
(the parsed object, or the failure reason, its kind and the raw reply) and the batch totals.

* A reply that cannot be parsed is asked again with the reason appended to the conversation,
  up to ``max_attempts`` calls in all; the last reply is parsed too. The re-ask is a different
  conversation, so it has its own cache key and reaches the model instead of getting the same
  bad answer back from the response cache. Such a row fails as ``content``.
* A reply cut off at its token budget (``finish_reason == "length"``) is not re-asked with the
  same budget (it would be cut again and paid again): it is asked once more, the same
  conversation, with the budget doubled up to ``llm.max_tokens_cap``
  (:func:`rare_core.llm.config.next_budget`); at the cap it fails at once, naming the setting.
* A request that failed at the HTTP level is not re-asked here (the client already retried
  whatever a retry can fix): the row fails as ``request``, and a rerun asks again.
* With ``retry_unusable_cached``, an unusable answer that came from the response cache (a
  rerun of rows that failed for content) is first asked again bypassing the cache.
* A :class:`RoleGuard` watches one role's replies (usable, or arrived but unparseable): when
  they keep failing (:class:`RoleGuardConfig`), it raises :class:`RoleUnusableError` from
  the batch's follow-up, which cancels the batch: nothing more is sent for that role, and the
  step raises in one line naming the role, its model and one of its replies.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from rare_core.errors import LLMError
from rare_core.llm.config import next_budget
from rare_core.llm.serving import APILLMServing_request
from rare_core.llm.types import LLMRequest, LLMResponse, ProgressCallback, RunTotals
from rare_core.operators.base import CONTENT_ERROR, REQUEST_ERROR, ErrorKind, LLMCounters, Operator, step_column
from rare_core.parsing import ParseError

T = TypeVar("T")

_REASK = (
    "Your reply could not be used ({reason}). Answer the original request again, following the "
    "required output format exactly and completely."
)
_MAX_ECHO_CHARS = 4000
_SAMPLE_CHARS = 200  # of a reply quoted in a RoleUnusableError


class RoleUnusableError(LLMError):
    """A role's replies keep failing to parse (:class:`RoleGuard`): the step stops, sending no more."""


class RoleGuardConfig(BaseModel):
    """When a role whose replies keep failing to parse is stopped (:class:`RoleGuard`). Counted
    per step run and role: every reply that arrived, re-asks included; a request that failed
    at the HTTP level or a reply cut at its token budget counts neither way."""

    model_config = ConfigDict(extra="forbid")

    first: int = Field(20, ge=0, description="Stop the role when its first this many replies are all unusable "
                                             "(0: off).")
    window: int = Field(50, ge=0, description="Stop the role when, among its last this many replies, the share "
                                              "max_unusable_share could not be used (0: off).")
    max_unusable_share: float = Field(0.8, gt=0, le=1, description="See window.")


class RoleGuard:
    """Counts one role's replies, usable or not; :meth:`record` raises :class:`RoleUnusableError`
    once the first ``first`` replies were all unusable, or ``max_unusable_share`` of the last
    ``window``, and again on every later call. ``setting``: where the thresholds are set (named
    in the error)."""

    def __init__(self, role: str, config: RoleGuardConfig | None = None, setting: str = "role_guard") -> None:
        self.role, self.config, self.setting = role, config or RoleGuardConfig(), setting
        self.replies = 0
        self.usable = 0
        self._recent: deque[bool] = deque(maxlen=self.config.window)  # True: unusable
        self.tripped: RoleUnusableError | None = None

    def record(self, usable: bool, model: str | None, reply: str | None, reason: str | None = None) -> None:
        """One reply of the role; raises :class:`RoleUnusableError` when the role is to stop."""
        if self.tripped is not None:
            raise self.tripped
        self.replies += 1
        self.usable += usable
        self._recent.append(not usable)
        cfg = self.config
        if cfg.first and self.replies == cfg.first and not self.usable:
            what = f"its first {cfg.first} replies could not be used"
        elif (cfg.window and len(self._recent) == cfg.window
              and (unusable := sum(self._recent)) / cfg.window >= cfg.max_unusable_share):
            what = f"{unusable} of its last {cfg.window} replies could not be used"
        else:
            return
        sample = " ".join((reply or "").split())
        sample = sample if len(sample) <= _SAMPLE_CHARS else sample[:_SAMPLE_CHARS] + "..."
        why = " ".join((reason or "").split())[:_SAMPLE_CHARS]
        self.tripped = RoleUnusableError(
            f"the {self.role} role (model {model}) is stopped: {what} (last: {why}); nothing more is sent "
            f"for it (thresholds: {self.setting}). A reply: {sample!r}")
        raise self.tripped


class LLMOperator(Operator):
    """Base of the operators that call an LLM: the client, the step's settings and a progress
    callback ``on_progress(done, total)``. Settings come as ``config=`` or as keywords.
    ``retry_failed``: ask again rows whose cached answers could not be used (see module doc).
    ``role``: the LLM role the step calls (:class:`rare_core.config.LLMRoles`); its settings
    hold ``role_guard`` (:class:`RoleGuardConfig`)."""

    config_class: type[BaseModel]
    prompt_version: str
    role: str

    def __init__(self, llm_serving: APILLMServing_request, config: BaseModel | None = None,
                 on_progress: ProgressCallback | None = None, retry_failed: bool = False, **settings) -> None:
        super().__init__()
        self.llm = llm_serving
        self.config = config or self.config_class(**settings)
        self.on_progress = on_progress
        self.retry_failed = retry_failed

    def role_guard(self, role: str | None = None) -> RoleGuard:
        """A fresh :class:`RoleGuard` for ``role`` (default: the step's own) on this step's thresholds."""
        return RoleGuard(role or self.role, self.config.role_guard, f"{self.step_name}.role_guard")


@dataclass
class Outcome(Generic[T]):
    parsed: T | None = None
    error: str | None = None
    kind: ErrorKind | None = None
    raw: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str | None = None
    simulated: bool = False
    truncations: int = 0


def llm_counters(totals: RunTotals) -> LLMCounters:
    """A step's :attr:`StepSummary.llm` from the client's totals of its batches."""
    return LLMCounters(**totals.model_dump(include=set(LLMCounters.model_fields)))


def ask_and_parse(
    llm: APILLMServing_request,
    requests: list[LLMRequest],
    parse: Callable[[LLMResponse], T],
    max_attempts: int = 3,
    on_progress: ProgressCallback | None = None,
    retry_unusable_cached: bool = False,
    guard: RoleGuard | None = None,
) -> tuple[list[Outcome[T]], RunTotals]:
    """One :class:`Outcome` per request, and the totals; ``parse(response)`` raises ParseError
    for an unusable answer. Re-asks are pipelined: a row is asked again the moment its
    unusable answer arrives (:meth:`APILLMServing_request.converse`), not after the batch.
    ``guard`` sees every reply; when it raises :class:`RoleUnusableError`, so does this."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    outcomes: list[Outcome[T]] = [Outcome() for _ in requests]
    refreshed: set[int] = set()

    def follow(i: int, current: LLMRequest, resp: LLMResponse) -> LLMRequest | None:
        out = outcomes[i]
        if retry_unusable_cached and resp.cached and i not in refreshed and _unusable(resp, parse):
            refreshed.add(i)  # asked again past the cache; not an attempt of its own
            return current.model_copy(update={"refresh_cache": True})
        out.attempts += 1
        out.prompt_tokens += resp.prompt_tokens
        out.completion_tokens += resp.completion_tokens
        out.model = resp.model or llm.model_name
        out.simulated = out.simulated or resp.simulated
        out.raw = resp.text
        out.error, out.kind = _judge(resp, parse, out)
        if guard is not None and resp.ok and resp.finish_reason != "length":
            guard.record(out.error is None, out.model, resp.text, out.error)
        if out.error is None or out.kind == REQUEST_ERROR or out.attempts >= max_attempts:
            return None
        if resp.finish_reason == "length":
            budget = next_budget(llm.config, current.max_tokens or llm.config.generation.max_tokens)
            if budget is None:
                return None  # at the cap: asking again would be cut again
            return current.model_copy(update={"max_tokens": budget, "refresh_cache": False})
        return _reask(requests[i], current, resp.text or "", out.error, out.attempts)

    batch = llm.converse(requests, follow, on_progress)
    for i, leader in enumerate(batch.leaders):  # rows that shared another row's conversation
        if leader != i:
            outcomes[i] = replace(outcomes[leader])
    for out in outcomes:
        if out.kind == CONTENT_ERROR and out.attempts > 1:
            out.error = f"{out.error} (after {out.attempts} attempts)"
    return outcomes, batch.totals


def _unusable(resp: LLMResponse, parse: Callable[[LLMResponse], object]) -> bool:
    """True when an answer arrived but cannot be used (cut off, or unparseable)."""
    if not resp.ok:
        return False
    if resp.finish_reason == "length":
        return True
    try:
        parse(resp)
    except ParseError:
        return True
    return False


def _judge(resp: LLMResponse, parse: Callable[[LLMResponse], T], out: Outcome[T]) -> tuple[str | None, ErrorKind | None]:
    """Parse ``resp`` into ``out.parsed``; returns the failure (reason, kind) or (None, None)."""
    out.parsed = None
    if not resp.ok:
        return f"request failed: {resp.error}", REQUEST_ERROR
    if resp.finish_reason == "length":
        out.truncations += 1
        return (f"truncated: the reply hit its token budget (finish_reason=length); raise "
                f"llm.generation.max_tokens or llm.max_tokens_cap"), CONTENT_ERROR
    try:
        out.parsed = parse(resp)
    except ParseError as exc:
        return f"unparseable: {exc}", CONTENT_ERROR
    return None, None


def _reask(original: LLMRequest, previous: LLMRequest, reply: str, reason: str, attempt: int) -> LLMRequest:
    """The original conversation + the unusable reply + the reason; ``previous``'s budget."""
    messages = list(original.messages) + [
        {"role": "assistant", "content": reply[:_MAX_ECHO_CHARS]},
        {"role": "user", "content": _REASK.format(reason=reason) + f" [attempt {attempt + 1}]"},
    ]
    return previous.model_copy(update={"messages": messages, "refresh_cache": False})


def provenance(step: str, outcome: Outcome, prompt_version: str) -> dict:
    """The per-row provenance columns of an LLM step (``rare_<step>_*``)."""
    return {
        step_column(step, "model"): outcome.model,
        step_column(step, "prompt_version"): prompt_version,
        step_column(step, "prompt_tokens"): outcome.prompt_tokens,
        step_column(step, "completion_tokens"): outcome.completion_tokens,
        step_column(step, "attempts"): outcome.attempts,
        step_column(step, "simulated"): outcome.simulated,
    }


PROVENANCE_INTS = ("prompt_tokens", "completion_tokens", "attempts")
