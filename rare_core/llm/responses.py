"""Reading what an endpoint sent back.

In: a chat completion (an ``openai`` ChatCompletion, or its JSON body as a batch output line
holds it), response headers, an ``openai.APIStatusError``. Out: the :class:`LLMResponse` of a
completion (:func:`response_from_completion`: the content, the thinking from
:data:`REASONING_FIELDS`, token counts, whether the simulator wrote it); seconds to wait from
``Retry-After`` (:func:`parse_retry_after`); the rate-limit headers; the message of an error
body; whether a 400 refuses the request's optional ``response_format``.
"""

from __future__ import annotations

import email.utils
import time
from datetime import timezone
from typing import Any

import httpx
import openai

from rare_core.llm.concurrency import parse_reset
from rare_core.llm.failures import FailureKind, RequestFailure
from rare_core.llm.simulated import SIMULATED_FINGERPRINT
from rare_core.llm.types import LLMRequest, LLMResponse, _failed

# Where servers put a reasoning model's thinking beside the content, in the order they are read:
# DeepSeek's API and vLLM's reasoning parsers up to 0.9 use ``reasoning_content``; newer vLLM,
# Ollama's OpenAI API and OpenRouter use ``reasoning``.
REASONING_FIELDS = ("reasoning_content", "reasoning")
_UNSUPPORTED_FORMAT = ("response_format", "json_schema", "structured output", "guided", "not supported", "unsupported")


def response_from_completion(completion: Any) -> LLMResponse:
    """An ``openai`` ChatCompletion (or its JSON body as a dict, as a batch output line holds it)
    -> :class:`LLMResponse`: the content, the thinking from :data:`REASONING_FIELDS` if any,
    the finish reason, the token counts and whether the simulator wrote it."""
    if isinstance(completion, dict):
        from openai.types.chat import ChatCompletion

        completion = ChatCompletion.model_validate(completion)
    if not completion.choices:
        return _failed(RequestFailure(kind=FailureKind.NOT_COMPLETION, message="response has no choices"),
                       model=completion.model)
    choice = completion.choices[0]
    message, usage = choice.message, completion.usage
    reasoning = field = None
    for name in REASONING_FIELDS:
        value = getattr(message, name, None) if message is not None else None
        if isinstance(value, str) and value.strip():
            reasoning, field = value, name
            break
    return LLMResponse(
        text=message.content if message else None,
        reasoning=reasoning,
        reasoning_field=field,
        finish_reason=choice.finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        model=completion.model,
        simulated=getattr(completion, "system_fingerprint", None) == SIMULATED_FINGERPRINT,
    )


def parse_retry_after(headers: httpx.Headers | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or HTTP date); None
    when absent or unparseable (e.g. ``"soon"``): the caller then falls back to its backoff."""
    if not headers:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return _non_negative(float(ms) / 1000.0)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return _non_negative(float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # raises (not None) on junk since 3.10
        return None
    if parsed.tzinfo is None:  # "-0000": RFC 5322's UTC of unknown origin
        parsed = parsed.replace(tzinfo=timezone.utc)
    return max(0.0, parsed.timestamp() - time.time())


def _non_negative(seconds: float) -> float | None:
    return None if seconds != seconds else max(0.0, seconds)  # NaN: no usable value


def _rate_headers(headers: httpx.Headers | None) -> tuple[int | None, float | None]:
    """(remaining requests, seconds to their reset) from ``x-ratelimit-*`` headers, where sent."""
    if not headers:
        return None, None
    try:
        remaining = int(headers.get("x-ratelimit-remaining-requests", ""))
    except ValueError:
        remaining = None
    return remaining, parse_reset(headers.get("x-ratelimit-reset-requests"))


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc.message)


def _refuses_response_format(req: LLMRequest, resp: LLMResponse) -> bool:
    """A 400 that says the endpoint cannot do the request's (optional) response_format. Servers
    answer it with no code of their own, so the endpoint's message is read for the words."""
    return (req.response_format is not None and not req.response_format_required
            and resp.failure is not None and resp.failure.status == 400
            and any(word in resp.failure.message.lower() for word in _UNSUPPORTED_FORMAT))
