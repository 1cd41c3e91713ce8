"""Ask, parse, re-ask: the loop both LLM operators share.

In: one :class:`LLMRequest` per row and a parse function. Out: one :class:`Outcome` per row
(the parsed object or the failure reason with the raw reply) and the batch totals.

A reply that cannot be parsed (or was cut off, ``finish_reason == "length"``) is asked again
with the reason appended to the conversation, up to ``max_attempts`` calls in all; the last
reply is parsed too. The re-ask is a different conversation, so it has its own cache key and
reaches the model instead of getting the same bad answer back from the response cache.
A request that failed at the HTTP level is not re-asked here: the client already retried
whatever a retry can fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from pydantic import BaseModel

from rare_core.llm.client import APILLMServing_request, LLMRequest, ProgressCallback, RunTotals
from rare_core.operators.base import Operator
from rare_core.parsing import ParseError

T = TypeVar("T")

_REASK = (
    "Your reply could not be used ({reason}). Answer the original request again, following the "
    "required output format exactly and completely."
)
_MAX_ECHO_CHARS = 4000


class LLMOperator(Operator):
    """Base of the operators that call an LLM: the client, the step's settings and a progress
    callback ``on_progress(done, total)``. Settings come as ``config=`` or as keywords."""

    config_class: type[BaseModel]
    prompt_version: str

    def __init__(self, llm_serving: APILLMServing_request, config: BaseModel | None = None,
                 on_progress: ProgressCallback | None = None, **settings) -> None:
        super().__init__()
        self.llm = llm_serving
        self.config = config or self.config_class(**settings)
        self.on_progress = on_progress


@dataclass
class Outcome(Generic[T]):
    parsed: T | None = None
    error: str | None = None
    raw: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str | None = None
    simulated: bool = False


def ask_and_parse(
    llm: APILLMServing_request,
    requests: list[LLMRequest],
    parse: Callable[[str | None], T],
    max_attempts: int = 3,
    on_progress: ProgressCallback | None = None,
) -> tuple[list[Outcome[T]], RunTotals]:
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    outcomes: list[Outcome[T]] = [Outcome() for _ in requests]
    totals = RunTotals()
    pending = list(range(len(requests)))
    current = list(requests)
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        batch = llm.chat([current[i] for i in pending], on_progress if attempt == 1 else None)
        totals = totals.add(batch.totals)
        retry: list[int] = []
        for i, resp in zip(pending, batch.responses):
            out = outcomes[i]
            out.attempts = attempt
            out.prompt_tokens += resp.prompt_tokens
            out.completion_tokens += resp.completion_tokens
            out.model = resp.model or llm.config.model
            out.simulated = out.simulated or resp.simulated
            out.raw = resp.text
            if not resp.ok:
                out.error = f"request failed: {resp.error}"
                continue
            if resp.finish_reason == "length":
                out.error = "truncated: the reply hit max_tokens (finish_reason=length)"
            else:
                try:
                    out.parsed, out.error = parse(resp.text), None
                    continue
                except ParseError as exc:
                    out.error = f"unparseable: {exc}"
            if attempt < max_attempts:
                current[i] = _reask(requests[i], resp.text or "", out.error, attempt)
                retry.append(i)
        pending = retry
    for out in outcomes:
        if out.error is not None and out.attempts == max_attempts and not out.error.startswith("request failed"):
            out.error = f"{out.error} (after {max_attempts} attempts)"
    return outcomes, totals


def _reask(original: LLMRequest, reply: str, reason: str, attempt: int) -> LLMRequest:
    messages = list(original.messages) + [
        {"role": "assistant", "content": reply[:_MAX_ECHO_CHARS]},
        {"role": "user", "content": _REASK.format(reason=reason) + f" [attempt {attempt + 1}]"},
    ]
    return LLMRequest(messages=messages, prompt_version=original.prompt_version)


def provenance(step: str, outcome: Outcome, prompt_version: str) -> dict:
    """The per-row provenance columns of an LLM step."""
    return {
        f"{step}_model": outcome.model,
        f"{step}_prompt_version": prompt_version,
        f"{step}_prompt_tokens": outcome.prompt_tokens,
        f"{step}_completion_tokens": outcome.completion_tokens,
        f"{step}_attempts": outcome.attempts,
        f"{step}_simulated": outcome.simulated,
    }
