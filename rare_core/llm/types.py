"""What a batch of chat requests is made of.

In: nothing (data types). Out: :class:`LLMRequest` (one chat request: rendered messages, prompt
version, its own settings), :class:`LLMResponse` (what came back for it, or why nothing usable
did, with its typed :class:`~rare_core.llm.failures.RequestFailure`), :class:`RunTotals` (a
batch's counters), :class:`Batch` (one response per request, every response of each
conversation, the totals), and the callback types :data:`FollowUp` (a row's re-ask) and
:data:`ProgressCallback`.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel, Field

from rare_core.llm.failures import RequestFailure


class LLMRequest(BaseModel):
    """One chat request. ``prompt_version`` enters the cache key; ``max_tokens`` overrides
    ``generation.max_tokens`` for this request (and enters the key through the params sent);
    ``refresh_cache`` skips the cache read for this request (its answer is still written).
    ``response_format`` (e.g. a strict JSON schema) is sent with it; unless
    ``response_format_required``, an endpoint that answers 400 because it does not support it
    gets the request once more without, and the client sends no more for the rest of its life."""

    messages: list[dict[str, str]]
    prompt_version: str = ""
    max_tokens: int | None = Field(None, ge=1, le=262144)
    refresh_cache: bool = False
    response_format: dict[str, Any] | None = None
    response_format_required: bool = False
    temperature: float | None = Field(None, ge=0, le=2)  # overrides generation.temperature
    sample_index: int = Field(0, ge=0)  # > 0: another sample of the same prompt (its own seed and cache key)


class LLMResponse(BaseModel):
    """What came back for one request (or why nothing usable did)."""

    text: str | None = None
    reasoning: str | None = None  # thinking the server returned beside the content
    reasoning_field: str | None = None  # which message field held it (see REASONING_FIELDS)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    error: str | None = None  # one line: why no usable answer came (``failure.message`` and what was done)
    failure: RequestFailure | None = None  # the same, typed (kind, status, retryable); None for batch errors
    model: str | None = None
    simulated: bool = False
    cached: bool = False
    batch: bool = False  # answered through the Batch API (priced at batch prices)
    refused: int = 0  # 429s before this answer
    shared: bool = False  # a copy of the answer to an identical request of the same batch
    retries: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class RunTotals(BaseModel):
    """Totals of one batch."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0
    cache_hits: int = 0  # rows served from the response cache (the first row of each cache key)
    deduplicated: int = 0  # rows answered by an identical request of the same batch (LLMResponse.shared)
    batch_requests: int = 0  # of ``requests``, those answered through the Batch API (batch prices)
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    refused_429: int = 0  # 429s the endpoint answered (each retried)
    simulated: bool = False
    wall_seconds: float = 0.0

    def add(self, other: "RunTotals") -> "RunTotals":
        """Sum of two totals (wall time adds up: batches run one after another)."""
        summed = set(RunTotals.model_fields) - {"simulated"}
        data = {k: getattr(self, k) + getattr(other, k) for k in summed}
        return RunTotals(**data, simulated=self.simulated or other.simulated)


class Batch(BaseModel):
    """One response per request (a conversation's last), every response of each conversation
    (``chains``, in order) and the totals over all of them."""

    responses: list[LLMResponse]
    chains: list[list[LLMResponse]] = Field(default_factory=list)
    leaders: list[int] = Field(default_factory=list)  # the row whose conversation each row shares (itself if none)
    totals: RunTotals = Field(default_factory=RunTotals)


def _failed(failure: RequestFailure, note: str = "", **fields: Any) -> LLMResponse:
    """The response of a request that failed with ``failure`` (``note``: what the client did)."""
    return LLMResponse(error=f"{failure.message}{note}", failure=failure, **fields)


# follow(row, request, response) -> the row's next request (a re-ask), or None: the row is done.
FollowUp = Callable[[int, LLMRequest, LLMResponse], LLMRequest | None]
# on_progress(done, total): rows whose conversation is over, of all the batch's rows.
ProgressCallback = Callable[[int, int], None]
