"""The simulator's types: its settings (:class:`SimulatorConfig`), its counters
(:class:`SimulatorStats`) and the part of a chat-completion request it reads
(:class:`ChatRequest`, :class:`ChatMessage`).

In: JSON from ``/_sim/config``, ``--config`` and request bodies. Out: validated pydantic models
the other modules of :mod:`rare_sim` read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from rare_core.prompts.view import message_text

ReasoningMode = Literal["inline", "reasoning_content", "reasoning", "swallowed"]
REASONING_FIELD_MODES = ("reasoning_content", "reasoning")
"""The ``reasoning`` modes that put the thinking into a message field of that name."""


class SimulatorConfig(BaseModel):
    """How the simulator answers. Every default is the plain behaviour: no latency, thinking
    inline in ``<think>`` tags, short thinking, no cap, structured output accepted, batches done
    at once.

    * ``latency``: each chat completion takes ``latency * (1 ± jitter)`` seconds, uniformly drawn.
    * ``reasoning``: where the thinking of a ReasonDistill answer goes. ``inline``: ``<think>…
      </think><answer>…</answer>`` in the content. ``reasoning_content`` (DeepSeek, vLLM ≤ 0.9
      reasoning parsers): the thinking in ``message.reasoning_content``, the content only
      ``<answer>…</answer>``. ``reasoning`` (newer vLLM, Ollama, OpenRouter): the thinking in
      ``message.reasoning``, the content ``<answer>…</answer>`` or the plain answer without tags,
      chosen by a hash of the prompt (both occur). ``swallowed`` (QwQ without a parser): the
      inline content without its opening ``<think>``. Other prompts (Doc2Query JSON, echoes)
      are unchanged, except that the two field modes put a short thinking in the field.
    * ``thinking_tokens``: 0 is the short thinking; N > 0 makes every thinking N tokens long,
      counts tokens as words (``usage.completion_tokens`` = words of the thinking + words of the
      content) and honours the request's ``max_tokens``: a completion longer than that is cut
      at ``max_tokens`` words, thinking first (a budget within the thinking leaves no answer),
      with ``finish_reason="length"``.
    * ``max_in_flight``: a chat completion arriving while that many are handled gets at once a
      429 with an OpenAI-shaped error body (``{"error": {"message", "type", "param", "code"}}``,
      the shape OpenAI, vLLM and LiteLLM share) and ``Retry-After: cap_retry_after`` in whole
      seconds, as servers and proxies send it (default 1; None sends none). A request counts
      in flight from the moment its handler takes it until its answer is ready, as a server
      counts its running requests; a refused one never counts. Every chat answer then carries
      ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` (slots free once this
      answer is sent) and ``x-ratelimit-reset-requests`` (OpenAI's ``"1s"``/``"120ms"`` format).
    * ``structured_output``: ``unsupported`` answers a request whose ``response_format`` has
      type ``json_schema`` with a 400, as servers without guided decoding do.
    * ``batch_delay``: seconds from a batch's creation until it is ``completed``; its lines are
      answered evenly over that time (``request_counts`` grows as it is polled). The setting in
      effect when a batch is looked at counts: 0 completes every pending batch at once.
    """

    model_config = ConfigDict(extra="forbid")

    latency: float = Field(default=0.0, ge=0)
    jitter: float = Field(default=0.0, ge=0, le=1)
    reasoning: ReasoningMode = "inline"
    thinking_tokens: int = Field(default=0, ge=0, le=1_000_000)
    max_in_flight: int | None = Field(default=None, ge=1)
    cap_retry_after: int | None = Field(default=1, ge=0)
    structured_output: Literal["supported", "unsupported"] = "supported"
    batch_delay: float = Field(default=0.0, ge=0)


class SimulatorStats(BaseModel):
    """Counters since start or the last reset.

    ``requests_total``/``requests_by_path`` count every routed request, admin calls included
    (a stats call counts itself). ``completions_served`` counts normal answers to online chat
    completions only; faults are counted in ``faults_served`` by kind (online and in batches).
    ``in_flight`` is the number of online chat completions being handled now, ``max_in_flight``
    the most seen at once; ``refused_over_cap`` the chat completions refused with a 429 by
    ``SimulatorConfig.max_in_flight`` (never counted in flight). Batch API: ``files_uploaded``,
    ``batches_created``, ``batch_completions_served`` (normal answers to batch lines, the
    counterpart of ``completions_served``) and ``batch_requests_failed`` (lines that went to a
    batch's error file).
    """

    requests_total: int = 0
    requests_by_path: dict[str, int] = Field(default_factory=dict)
    completions_served: int = 0
    faults_served: dict[str, int] = Field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    refused_over_cap: int = 0
    files_uploaded: int = 0
    batches_created: int = 0
    batch_completions_served: int = 0
    batch_requests_failed: int = 0
    models: list[str] = Field(default_factory=list)

    @computed_field
    @property
    def model_count(self) -> int:
        """Number of distinct model names asked for."""
        return len(self.models)

    def saw_model(self, model: str) -> None:
        """Note a model name asked for (once)."""
        if model not in self.models:
            self.models.append(model)


class ChatMessage(BaseModel):
    """One chat message; ``content`` may be a string or a list of OpenAI content parts."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text, with content parts joined."""
        return message_text({"content": self.content})


class ChatRequest(BaseModel):
    """The part of a chat-completion request the simulator reads; other fields are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None

    def token_budget(self) -> int | None:
        """``max_completion_tokens`` (OpenAI's newer name) or ``max_tokens``, if either is set."""
        return self.max_completion_tokens or self.max_tokens

    def texts(self) -> list[str]:
        """The text of each message, in order."""
        return [m.text() for m in self.messages]
