"""What the simulator sends back: a simulated answer rendered as a real server renders it, and the
OpenAI shapes of its replies.

In: a :class:`~rare_sim.models.ChatRequest` and the :class:`~rare_sim.models.SimulatorConfig`
in effect. Out: :func:`generate` -> :class:`Generated` (where the thinking goes by the
``reasoning`` mode, long thinking cut at the request's ``max_tokens``, the finish reason and
the completion tokens); :func:`completion_body` (a ``chat.completion`` object),
:func:`error_body` (``{"error": {"message", "type", "param", "code"}}``), :func:`unsupported`
(the 400 of a server without structured output) and :class:`Reply` (status, body, headers).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from rare_core.llm.simulated import SIMULATED_FINGERPRINT
from rare_sim.answers import FILLER_WORDS, simulated_parts
from rare_sim.models import REASONING_FIELD_MODES, ChatRequest, SimulatorConfig


@dataclass
class Generated:
    """A rendered assistant message: content, thinking field (if any), finish reason, tokens."""

    content: str
    reasoning_field: str | None = None
    reasoning: str | None = None
    finish_reason: str = "stop"
    completion_tokens: int = 0

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning_field is not None:
            message[self.reasoning_field] = self.reasoning
        return message


@dataclass
class Reply:
    """One chat completion's answer: status, JSON body (or raw bytes), extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def long_thinking(thinking: str, tokens: int, topic: Iterable[str] = ()) -> str:
    """``thinking`` made exactly ``tokens`` words long: cut, or padded with deterministic steps
    that weigh the prompt's ``topic`` words once more."""
    words = thinking.split()
    pool = list(topic) or list(FILLER_WORDS)
    step = 0
    while len(words) < tokens:
        words += f"Step {step + 1}: weighing {pool[step % len(pool)]} once more against the evidence.".split()
        step += 1
    return " ".join(words[:tokens])


def prompt_parity(texts: Iterable[str]) -> int:
    """0 or 1 from a hash of the prompt's texts (the ``reasoning`` mode's tagged/plain choice)."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).digest()[0] % 2


def generate(config: SimulatorConfig, body: ChatRequest, texts: list[str]) -> Generated:
    """The answer to ``body`` under ``config``'s reasoning and thinking settings."""
    parts = simulated_parts(body.messages, getattr(body, "seed", None))
    mode = config.reasoning
    thinking: str | None = None
    field_name: str | None = None
    opener = "<think>"
    answer = parts.answer
    if parts.kind == "reason_distill":
        thinking = parts.thinking
        if mode in REASONING_FIELD_MODES:
            field_name = mode
            if mode == "reasoning_content" or prompt_parity(texts) == 0:
                answer = f"<answer>{answer}</answer>"
        else:
            answer = f"<answer>{answer}</answer>"
            opener = "" if mode == "swallowed" else "<think>"
    elif mode in REASONING_FIELD_MODES:
        thinking, field_name = parts.thinking, mode
    if thinking is not None and config.thinking_tokens:
        thinking = long_thinking(thinking, config.thinking_tokens, parts.topic)

    budget = body.token_budget() if config.thinking_tokens else None
    think_words = thinking.split() if thinking is not None else []
    answer_words = answer.split()
    finish, closed = "stop", True
    if budget is not None and len(think_words) + len(answer_words) > budget:
        finish = "length"
        kept = think_words[:budget]
        closed = len(kept) == len(think_words)
        thinking = " ".join(kept) if thinking is not None else None
        answer = " ".join(answer_words[: max(0, budget - len(think_words))])
    if thinking is not None and field_name is None:  # inline or swallowed: all of it in the content
        content = opener + thinking + (f"</think>\n{answer}" if closed else "")
        out = Generated(content, finish_reason=finish)
    else:
        out = Generated(answer, field_name, thinking, finish)
    out.completion_tokens = count_tokens(config, out)
    return out


def count_tokens(config: SimulatorConfig, out: Generated) -> int:
    """Completion tokens of ``out``: words when ``thinking_tokens`` is set, else the estimate."""
    texts = [out.content] + ([out.reasoning] if out.reasoning else [])
    if config.thinking_tokens:
        return sum(len(t.split()) for t in texts)
    return sum(estimate_tokens(t) for t in texts)


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate: 1.3 tokens per whitespace-separated word."""
    return math.ceil(len(text.split()) * 1.3)


def completion_body(completion_id: str, model: str, generated: Generated, prompt_tokens: int) -> dict:
    """A chat-completion body in the OpenAI shape, marked simulated by its ``system_fingerprint``."""
    completion_tokens = generated.completion_tokens
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SIMULATED_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": generated.message(),
                "finish_reason": generated.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    """An error in the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def unsupported(config: SimulatorConfig, body: ChatRequest) -> Reply | None:
    """A 400 for what this server cannot do (``response_format`` json_schema when
    ``structured_output="unsupported"``)."""
    fmt = body.response_format
    if config.structured_output == "unsupported" and isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return Reply(400, error_body(
            "response_format json_schema is not supported by this model (simulated): the server was "
            "started without guided decoding", "invalid_request_error", "unsupported_parameter",
            "response_format"))
    return None
