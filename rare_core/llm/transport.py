"""One request over HTTP, with retries.

In: an :class:`LLMRequest` and the endpoint it goes to (:class:`~rare_core.llm.endpoint.Endpoint`).
Out: its :class:`LLMResponse`, from the response cache or sent and then cached
(:meth:`Transport._one_safe`): retried only where a retry can help (408, 409, 429, 5xx,
connection errors, timeouts) with exponential backoff and jitter, honouring ``Retry-After`` up to
``max_retry_after``; paced by the rate limiter and the adaptive concurrency limit, a slot held
only while on the wire. Raised: :class:`LLMAuthError` for refused credentials (401/403),
:class:`LLMEndpointError` once :data:`UNREACHABLE_ATTEMPTS` failures said an endpoint that never
answered is not there. Any other exception while handling a request becomes that row's error.
The API key lives only in the openai client object and is scrubbed from every error text
(:func:`rare_core.llm.progress.scrub`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import httpx
import openai

from rare_core.errors import LLMAuthError, LLMEndpointError, RareError
from rare_core.llm.concurrency import AdaptiveConcurrency
from rare_core.llm.config import LLMConfig, redact_url
from rare_core.llm.endpoint import Endpoint, _from_payload
from rare_core.llm.failures import (
    UNREACHABLE, FailureKind, RequestFailure, not_completion, status_failure, transport_failure, unexpected,
)
from rare_core.llm.progress import scrub
from rare_core.llm.ratelimit import RateLimiter
from rare_core.llm.responses import (
    _message, _rate_headers, _refuses_response_format, parse_retry_after, response_from_completion,
)
from rare_core.llm.types import LLMRequest, LLMResponse, _failed

log = logging.getLogger("rare_core.llm")

# A client that has never had an answer stops the batch (LLMEndpointError) after this many
# failures saying the endpoint is not there (refused, unknown host, TLS, not an API): retrying
# every row of a dead address would only take time.
UNREACHABLE_ATTEMPTS = 3
_MISSING_KEY = "no-key-set"


class _Retry(Exception):
    """What a retry can fix: its ``failure``, the server's ``retry_after``, and ``kind`` for the
    adaptive limit: ``refused`` (429), ``timeout`` or ``error`` (5xx, connection)."""

    def __init__(self, failure: RequestFailure, retry_after: float | None = None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.reason = failure.message
        self.retry_after = retry_after
        self.kind = {FailureKind.RATE_LIMITED: "refused", FailureKind.TIMEOUT: "timeout"}.get(failure.kind, "error")


class Transport(Endpoint):
    """Sends one request at a time over HTTP (see the module docstring): the rate limiter and the
    adaptive concurrency limit it shares with every request of its life; the base of
    :class:`~rare_core.llm.engine.Engine`."""

    def __init__(self, config: LLMConfig) -> None:
        super().__init__(config)
        self._limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute)
        self.concurrency = AdaptiveConcurrency(config.max_workers)
        self._unreachable = 0  # failures saying the endpoint is not there, while it never answered

    def _http_client(self, key: str) -> openai.AsyncOpenAI:
        """The openai client one batch sends through, with ``key`` (the batch closes it)."""
        cfg = self.config
        return openai.AsyncOpenAI(
            base_url=cfg.base_url,
            api_key=key or _MISSING_KEY,
            max_retries=0,  # retries are ours: typed, with Retry-After and jitter
            timeout=cfg.timeout,
            # aiohttp transport: with httpx's own pool the client spent ~6 ms CPU per request and
            # reached 0.56 of the ideal rate at 64 workers; aiohttp: ~1.3 ms and 0.92 (bench/).
            http_client=openai.DefaultAioHttpClient(timeout=cfg.timeout),
        )

    async def _one_safe(self, client, cache, req: LLMRequest, key: str, priority: bool = False) -> LLMResponse:
        """:meth:`_one`, with any unexpected exception made that request's error (never the batch's)."""
        try:
            return await self._one(client, cache, req, key, priority)
        except RareError:
            raise
        except Exception as exc:  # noqa: BLE001 - one request's bug is its row's error, not the batch's
            failure = unexpected(exc)
            return _failed(failure.model_copy(update={"message": scrub(failure.message, key)[:500]}))

    async def _one(self, client, cache, req: LLMRequest, key: str, priority: bool = False) -> LLMResponse:
        """One request: from the cache, or sent (retried where a retry can help) and cached.

        Each attempt holds a slot of :attr:`concurrency` only while it is on the wire; backing
        off, it holds none. A 429 does not use up ``max_retries`` while the endpoint keeps
        answering other requests: a capped endpoint that is still working never costs a row.
        """
        cfg = self.config
        req = self._effective(req)
        params, ckey = self._params(req), self.request_key(req)
        if cache is not None and cfg.cache_mode == "use" and not req.refresh_cache:
            hit = cache.get(ckey)
            if hit is not None and self._trusted(hit):
                return _from_payload(hit)
        estimate = sum(len(m.get("content", "")) for m in req.messages) // 4 + params["max_tokens"]
        retries = refused = 0
        while True:
            await self._limiter.acquire(estimate)
            successes_before = self.concurrency.successes
            ticket = await self.concurrency.acquire(priority or retries + refused > 0)
            if self._effective(req) is not req:  # learned while this one waited for its slot
                await self.concurrency.release(ticket, "skipped")
                return await self._one(client, cache, req, key, priority)
            t0 = time.perf_counter()
            try:
                resp, headers = await self._send(client, req, params, key)
            except _Retry as r:
                delay = self._delay(retries, r.retry_after)
                await self.concurrency.release(ticket, r.kind, wait=delay)
                latency = time.perf_counter() - t0
                self._check_reachable(r.failure)
                answering = r.kind == "refused" and self.concurrency.successes > successes_before
                if retries >= cfg.max_retries and not answering:
                    return _failed(r.failure, f" (gave up after {retries} retries)", retries=retries, latency=latency)
                if r.retry_after is not None and r.retry_after > cfg.max_retry_after:
                    return _failed(r.failure, f" (the server asked to wait {r.retry_after:g}s before a retry, "
                                              f"more than llm.max_retry_after={cfg.max_retry_after:g}s; gave up after "
                                              f"{retries} retries)", retries=retries, latency=latency)
                await asyncio.sleep(delay)
                retries += 0 if answering else 1
                refused += r.kind == "refused"
                continue
            except BaseException:
                await self.concurrency.release(ticket, "error")
                raise
            await self.concurrency.release(ticket, "ok" if resp.ok else "error", *_rate_headers(headers))
            if resp.failure is not None:
                self._check_reachable(resp.failure)
            if not resp.ok and _refuses_response_format(req, resp):
                if not self.structured_output_unsupported:
                    log.warning("the endpoint %s does not support response_format (%s): sending without it",
                                redact_url(cfg.base_url or ""), resp.error)
                self.structured_output_unsupported = True
                return await self._one(client, cache, req, key, True)
            resp.latency = time.perf_counter() - t0
            resp.retries, resp.refused = retries, refused
            if resp.ok and cache is not None:
                cache.put(ckey, self._payload(resp))
            return resp

    def _check_reachable(self, failure: RequestFailure) -> None:
        """Raise :class:`LLMEndpointError` once :data:`UNREACHABLE_ATTEMPTS` failures have said the
        endpoint is not there and it never answered in this client's life (an endpoint that
        answered before and goes away is retried as any connection error)."""
        if failure.kind not in UNREACHABLE or self.concurrency.successes:
            return
        self._unreachable += 1
        if self._unreachable >= UNREACHABLE_ATTEMPTS:
            raise LLMEndpointError(f"the LLM endpoint {redact_url(self.config.base_url or '')} cannot be used: "
                                   f"{failure.message} ({self._unreachable} attempts, no answer yet); check "
                                   f"llm.base_url (--base-url) and that the server is running")

    async def _send(self, client, req: LLMRequest, params: dict[str, Any],
                    key: str) -> tuple[LLMResponse, httpx.Headers | None]:
        """One HTTP call -> (response, its headers). Returns a response (maybe with a
        non-retryable error), raises _Retry for what a retry can fix, raises LLMAuthError for
        refused credentials."""
        try:
            # The body goes as extra_body, merged into the JSON as it is: given as typed arguments,
            # the openai SDK first walks it through its TypedDict transform, which changes nothing
            # in a chat body of plain JSON like ours (no request field has an alias) yet was about
            # a third of this client's CPU per request in a profile (openai-python 2.x).
            raw = await client.chat.completions.with_raw_response.create(
                model=self.model_name, messages=[], extra_body=self.request_body(req, params))
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            env = self.config.api_key_env
            state = "is set" if key else "is NOT set"
            raise LLMAuthError(
                f"the endpoint {redact_url(self.config.base_url)} refused the credentials "
                f"(HTTP {exc.status_code}); the API key comes from the environment variable {env}, "
                f"which {state}: {scrub(_message(exc), key)}"
            ) from None
        except openai.APIConnectionError as exc:  # APITimeoutError too: see rare_core/llm/failures.py
            failure = transport_failure(exc, self.config.timeout)
            raise _Retry(failure.model_copy(update={"message": scrub(failure.message, key)})) from None
        except openai.APIStatusError as exc:
            failure = status_failure(exc.status_code, scrub(_message(exc), key))
            if failure.retryable:
                raise _Retry(failure, parse_retry_after(exc.response.headers)) from None
            return _failed(failure), exc.response.headers
        try:
            completion = raw.parse()
        except ValueError:  # a JSON content type whose body is not JSON
            completion = None
        if not isinstance(completion, openai.BaseModel) or not getattr(completion, "choices", None):
            # parse() hands back a str for a body that is not JSON (an HTML login page), and a
            # completion without choices for JSON of another shape.
            body = scrub(raw.http_response.text, key)
            return _failed(not_completion(raw.headers.get("content-type"), body)), raw.headers
        return response_from_completion(completion), raw.headers

    def _delay(self, retries: int, retry_after: float | None) -> float:
        if retry_after is not None:  # honoured in full: the caller refuses more than max_retry_after
            return retry_after
        base = min(self.config.backoff_max, self.config.backoff_base * (2 ** retries))
        return base * (0.5 + random.random() / 2)
