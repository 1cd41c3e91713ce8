"""``APILLMServing_request``: an OpenAI-compatible chat client for batches of requests.

In: a list of :class:`LLMRequest` (rendered messages + prompt version, optionally its own
``max_tokens``). Out: a :class:`Batch` with one :class:`LLMResponse` per request, in input
order, and the batch's :class:`RunTotals`.

* Bounded concurrency: up to ``max_workers`` requests in flight. A window of
  :func:`conversation_window` worker tasks takes the rows' conversations one at a time, in
  input order: a batch of 100,000 rows is a few dozen tasks, not 100,000.
* Identical requests (same cache key) in one batch are sent once; the duplicates get a copy of
  the answer marked ``shared`` (counted in ``RunTotals.deduplicated``, not as requests).
* Retries only where a retry can help (408, 409, 429, 5xx, connection errors, timeouts),
  exponential backoff with jitter, honouring ``Retry-After`` up to ``max_retry_after`` (a server
  asking for a longer wait fails the row at once). Other errors fail the row.
* 401/403 raise :class:`LLMAuthError` at once, naming the key's environment variable. Any other
  exception while handling one request (a bug, an odd response) becomes that row's error.
* Requests-per-minute / tokens-per-minute limits, one bucket per client for its whole life
  (re-ask rounds do not start with a fresh burst).
* A persistent :class:`ResponseCache` consulted before, and written after, every request; its
  key includes the endpoint's scope (:func:`~rare_core.llm.config.endpoint_scope`).
* :meth:`APILLMServing_request.chat` from code that already runs an event loop runs the batch
  on a private loop in a thread of ours; Ctrl-C while waiting cancels the batch's requests.

The API key is read from the environment variable named by ``LLMConfig.api_key_env`` when a
batch starts; it lives only in the openai client object and is scrubbed from every error text.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import logging
import os
import random
import threading
import time
from pathlib import Path
from datetime import timezone
from typing import Any, Callable, Coroutine, TypeVar

import httpx
import openai
from pydantic import BaseModel, Field

from rare_core.errors import LLMAuthError, LLMConfigError, LLMEndpointError, RareError
from rare_core.llm.cache import ResponseCache, cache_key
from rare_core.llm.concurrency import AdaptiveConcurrency, parse_reset
from rare_core.llm.config import DEFAULT_MODEL, GenerationParams, LLMConfig, endpoint_scope, redact_url
from rare_core.llm.failures import (
    UNREACHABLE, FailureKind, RequestFailure, not_completion, status_failure, transport_failure, unexpected,
)
from rare_core.llm.ratelimit import RateLimiter

log = logging.getLogger("rare_core.llm")

# The simulator stamps this into ``system_fingerprint``; answers carrying it are marked simulated.
SIMULATED_FINGERPRINT = "rare-simulator"
# A client that has never had an answer stops the batch (LLMEndpointError) after this many
# failures saying the endpoint is not there (refused, unknown host, TLS, not an API): retrying
# every row of a dead address would only take time.
UNREACHABLE_ATTEMPTS = 3
_MISSING_KEY = "no-key-set"
_CACHED_FIELDS = {"text", "reasoning", "reasoning_field", "finish_reason", "prompt_tokens", "completion_tokens",
                  "model", "simulated"}
# Where servers put a reasoning model's thinking beside the content, in the order they are read:
# DeepSeek's API and vLLM's reasoning parsers up to 0.9 use ``reasoning_content``; newer vLLM,
# Ollama's OpenAI API and OpenRouter use ``reasoning``.
REASONING_FIELDS = ("reasoning_content", "reasoning")
_JOIN_POLL = 0.1  # seconds between checks of the waiting thread for a Ctrl-C
# Worker tasks of one batch per request in flight (at least WINDOW_MIN). One task per row, all
# created up front, made 100,000 tasks wait for a slot before the first request of 100,000 rows
# went out (+160 MiB peak RSS, bench/llm_window.py). More workers than slots keep every slot
# busy while some rows back off before a retry (a row backing off holds no slot).
WINDOW_PER_WORKER = 2
WINDOW_MIN = 32
_T = TypeVar("_T")

ProgressCallback = Callable[[int, int], None]


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


class _Retry(Exception):
    """What a retry can fix: its ``failure``, the server's ``retry_after``, and ``kind`` for the
    adaptive limit: ``refused`` (429), ``timeout`` or ``error`` (5xx, connection)."""

    def __init__(self, failure: RequestFailure, retry_after: float | None = None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.reason = failure.message
        self.retry_after = retry_after
        self.kind = {FailureKind.RATE_LIMITED: "refused", FailureKind.TIMEOUT: "timeout"}.get(failure.kind, "error")


def _failed(failure: RequestFailure, note: str = "", **fields: Any) -> "LLMResponse":
    """The response of a request that failed with ``failure`` (``note``: what the client did)."""
    return LLMResponse(error=f"{failure.message}{note}", failure=failure, **fields)


# follow(row, request, response) -> the row's next request (a re-ask), or None: the row is done.
FollowUp = Callable[[int, "LLMRequest", "LLMResponse"], "LLMRequest | None"]


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


def conversation_window(max_workers: int) -> int:
    """How many conversations one batch runs at once (a worker task each) for ``max_workers``
    requests in flight: ``max(WINDOW_PER_WORKER * max_workers, WINDOW_MIN)``."""
    return max(WINDOW_PER_WORKER * max_workers, WINDOW_MIN)


def next_budget(config: LLMConfig, current: int | None) -> int | None:
    """The token budget to ask a truncated reply again with: twice ``current`` (None: the
    configured ``generation.max_tokens``), at most ``config.max_tokens_cap``; None when
    ``current`` is already at or above the cap (asking again would be cut again)."""
    current = config.generation.max_tokens if current is None else current
    if current >= config.max_tokens_cap:
        return None
    return min(2 * current, config.max_tokens_cap)


class APILLMServing_request:  # noqa: N801 - name kept from the system we implement
    """Chat client for any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, Ollama, the simulator).

    >>> llm = APILLMServing_request(api_url="http://127.0.0.1:8000/v1/chat/completions",
    ...                             model_name="gpt-4o-mini", max_workers=5)     # doctest: +SKIP

    The parameters, their order and defaults are those of the system we implement. Either pass
    a full :class:`LLMConfig` as ``config`` (then leave the others at their defaults) or the
    familiar parameters; any other ``LLMConfig`` field (``timeout``, ``cache_path``...) or
    generation field (``temperature``, ``max_tokens``, ``seed``...) may be given as a keyword too.
    """

    def __init__(
        self,
        api_url: str | None = "https://api.openai.com/v1/chat/completions",
        key_name_of_api_key: str = "DF_API_KEY",
        model_name: str | None = "gpt-4o",
        max_workers: int = 10,
        max_retries: int = 5,
        *,
        config: LLMConfig | None = None,
        **overrides: Any,
    ) -> None:
        named = {"base_url": api_url, "api_key_env": key_name_of_api_key, "model": model_name,
                 "max_workers": max_workers, "max_retries": max_retries}
        if config is None:
            gen_fields = set(GenerationParams.model_fields)
            gen = {k: overrides.pop(k) for k in list(overrides) if k in gen_fields}
            base = GenerationParams.model_validate(overrides.pop("generation", None) or {})
            config = LLMConfig(**{**named, **self._field_overrides(named, overrides)},
                               generation=GenerationParams(**{**base.model_dump(), **gen}))
        elif overrides or any(value != _DEFAULTS[name] for name, value in named.items()):
            raise TypeError("pass either config=LLMConfig(...) or keyword settings, not both")
        if not config.base_url:
            raise LLMConfigError("no LLM endpoint configured: set api_url (base_url) to an OpenAI-compatible URL")
        self.config = config
        self._limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute)
        self.concurrency = AdaptiveConcurrency(config.max_workers)
        self.structured_output_unsupported = False  # learned from a 400 (see LLMRequest.response_format)
        self._cache: ResponseCache | None = None
        self._unreachable = 0  # failures saying the endpoint is not there, while it never answered

    @property
    def model_name(self) -> str:
        """The model asked for: ``config.model``, or :data:`DEFAULT_MODEL` when that is None."""
        return self.config.model or DEFAULT_MODEL

    @property
    def scope(self) -> str:
        """The endpoint's identity in the response-cache key (:func:`endpoint_scope`)."""
        return endpoint_scope(self.config)

    @staticmethod
    def _field_overrides(named: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
        """``overrides`` that use LLMConfig's own names (``base_url=``, ``model=``...) win over the
        defaults of the familiar parameters, but not over a value passed for them as well."""
        for name in set(named) & set(overrides):
            if named[name] != _DEFAULTS[name] and overrides[name] != named[name]:
                raise TypeError(f"{name} given twice (once under its LLMConfig name, once under the familiar one)")
        return overrides

    # -- public API ---------------------------------------------------------------------------

    def chat(self, requests: list[LLMRequest], on_progress: ProgressCallback | None = None) -> Batch:
        """Send ``requests``; blocks until all are answered or failed (one response each)."""
        return self.converse(requests, None, on_progress)

    def converse(self, requests: list[LLMRequest], follow: FollowUp | None = None,
                 on_progress: ProgressCallback | None = None) -> Batch:
        """Conversations: each row's request, then, as soon as its answer arrives,
        ``follow(row, request, response)``'s next request for that row (a re-ask), until it
        returns None; all in one pool, so a re-ask never waits for the rest of the batch.
        ``on_progress(done, total)`` counts rows whose conversation is over. Blocks until all
        are. Safe to call from code that already runs an event loop (it then runs on a private
        loop in a thread of ours; a KeyboardInterrupt while waiting cancels the requests, then
        propagates)."""
        if self.config.mode == "batch":
            return self._converse_in_batches(requests, follow, on_progress)
        coro = self.aconverse(requests, follow, on_progress)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run_here(coro)  # Ctrl-C: asyncio.run cancels the batch itself
        return run_on_private_loop(coro)

    def generate_from_input(self, user_inputs: list[str], system_prompt: str = "You are a helpful assistant") -> list[str | None]:
        """Compatibility with the system we implement: one user message per input, texts out
        (None where a request failed)."""
        return self.generate_from_conversations([
            [{"role": "system", "content": system_prompt}, {"role": "user", "content": u}] for u in user_inputs
        ])

    def generate_from_conversations(self, conversations: list[list[dict]]) -> list[str | None]:
        """Compatibility with the system we implement: each conversation is a list of chat
        messages (``{"role", "content"}``); texts out (None where a request failed)."""
        batch = self.chat([LLMRequest(messages=messages) for messages in conversations])
        return [r.text if r.ok else None for r in batch.responses]

    def start_serving(self) -> None:
        """Compatibility with the system we implement: an HTTP endpoint has nothing to start."""
        log.info("LLM endpoint %s (model %s): nothing to start", redact_url(self.config.base_url or ""), self.model_name)

    def cleanup(self) -> None:
        """Compatibility with the system we implement: same as :meth:`close`."""
        self.close()

    def _converse_in_batches(self, requests: list[LLMRequest], follow: FollowUp | None,
                             on_progress: ProgressCallback | None) -> Batch:
        """:meth:`converse` through the Batch API: every pending request of a round goes into one
        batch (:class:`rare_core.llm.batch.BatchRunner`, resumable after a kill), the re-asks
        of that round into the next. ``on_progress`` counts rows done after each round."""
        from rare_core.llm.batch import BatchRunner

        started = time.perf_counter()
        runner = BatchRunner(self, self.batch_state_dir())
        chains: list[list[LLMResponse]] = [[] for _ in requests]
        pending = dict(enumerate(requests))
        progress = _Progress(on_progress, len(requests), self.api_key())
        while pending:
            rows = list(pending)
            answers = runner.run([pending[r] for r in rows])
            following: dict[int, LLMRequest] = {}
            for row, resp in zip(rows, answers):
                chains[row].append(resp)
                nxt = follow(row, pending[row], resp) if follow is not None else None
                if nxt is not None:
                    following[row] = nxt
            progress.advance(len(rows) - len(following))
            pending = following
        every = [r for chain in chains for r in chain]
        return Batch(responses=[chain[-1] for chain in chains], chains=chains, leaders=list(range(len(requests))),
                     totals=self._totals(every, time.perf_counter() - started))

    def batch_state_dir(self) -> Path:
        """Where batch ids are kept while their batches run: ``batches/`` beside the response cache."""
        base = Path(self.config.cache_path).parent if self.config.cache_path else Path(".rare")
        return base / "batches"

    async def achat(self, requests: list[LLMRequest], on_progress: ProgressCallback | None = None) -> Batch:
        """Async form of :meth:`chat`."""
        return await self.aconverse(requests, None, on_progress)

    async def aconverse(self, requests: list[LLMRequest], follow: FollowUp | None = None,
                        on_progress: ProgressCallback | None = None) -> Batch:
        """Async form of :meth:`converse`: :func:`conversation_window` worker tasks share an
        iterator over the batch's distinct requests; each runs one row's conversation to its
        end, then takes the next row."""
        started = time.perf_counter()
        cfg = self.config
        key = self.api_key()
        # One conversation per first request: duplicates (the same document twice) share it.
        groups: dict[tuple[str, bool], list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault((self.request_key(req), req.refresh_cache), []).append(i)
        client = openai.AsyncOpenAI(
            base_url=cfg.base_url,
            api_key=key or _MISSING_KEY,
            max_retries=0,  # retries are ours: typed, with Retry-After and jitter
            timeout=cfg.timeout,
            # aiohttp transport: with httpx's own pool the client spent ~6 ms CPU per request and
            # reached 0.56 of the ideal rate at 64 workers; aiohttp: ~1.3 ms and 0.92 (bench/).
            http_client=openai.DefaultAioHttpClient(timeout=cfg.timeout),
        )
        cache = self._open_cache()
        chains: list[list[LLMResponse]] = [[] for _ in requests]
        progress = _Progress(on_progress, len(requests), key)

        async def conversation(rows: list[int]) -> None:
            req: LLMRequest | None = requests[rows[0]]
            chain = chains[rows[0]]
            while req is not None:  # follow-ups (re-asks) go before rows still waiting for a first answer
                chain.append(await self._one_safe(client, cache, req, key, priority=bool(chain)))
                req = follow(rows[0], req, chain[-1]) if follow is not None else None
            for j in rows[1:]:
                chains[j] = [r.model_copy(update={"shared": True}) for r in chain]
            progress.advance(len(rows))

        pending = iter(groups.values())  # shared: each group goes to the worker that is free first

        workers: list[asyncio.Task] = []

        async def worker() -> None:
            try:
                for rows in pending:
                    await conversation(rows)
                    # An answer from the cache comes without a suspension: yield to the loop between
                    # rows, or a run of cached rows holds off the other workers' answers and Ctrl-C.
                    await asyncio.sleep(0)
            except BaseException:
                # Stop the other workers now: the task group cancels them only from this task's
                # done callback, after a worker woken for the slot this one freed has sent its request.
                for task in workers:
                    if task is not asyncio.current_task():
                        task.cancel()
                raise

        running = (asyncio.get_running_loop(), asyncio.current_task())
        with _running_lock:
            _running.add(running)
        try:
            async with asyncio.TaskGroup() as tg:
                workers.extend(tg.create_task(worker())
                               for _ in range(min(conversation_window(cfg.max_workers), len(groups))))
        except* RareError as group:  # stops the whole batch: refused key, dead endpoint, full cache...
            raise group.exceptions[0] from None
        finally:
            with _running_lock:
                _running.discard(running)
            await client.close()
        every = [r for chain in chains for r in chain]
        leaders = list(range(len(requests)))
        for rows in groups.values():
            for j in rows:
                leaders[j] = rows[0]
        return Batch(responses=[chain[-1] for chain in chains], chains=chains, leaders=leaders,
                     totals=self._totals(every, time.perf_counter() - started))

    def close(self) -> None:
        """Close the response cache (the client holds no other resource between batches)."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    # -- internals ----------------------------------------------------------------------------

    def request_key(self, req: LLMRequest) -> str:
        """The response-cache key of ``req`` (model, messages, params sent, prompt version, scope)."""
        return cache_key(self.model_name, req.messages, self._params(req), req.prompt_version, scope=self.scope)

    def request_body(self, req: LLMRequest, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON body ``req`` is sent as to ``/chat/completions`` (``params``: its
        :meth:`_params`, when the caller has them already)."""
        return {"model": self.model_name, "messages": req.messages, **(self._params(req) if params is None else params)}

    def response_cache(self) -> ResponseCache | None:
        """The response cache this client reads and writes (None when caching is off)."""
        return self._open_cache()

    def cached_response(self, req: LLMRequest) -> LLMResponse | None:
        """The cached answer of ``req`` this client may serve, if any (honours cache_mode and
        ``req.refresh_cache``)."""
        cache = self._open_cache()
        if cache is None or self.config.cache_mode != "use" or req.refresh_cache:
            return None
        hit = cache.get(self.request_key(req))
        return _from_payload(hit) if hit is not None and self._trusted(hit) else None

    def store_response(self, req: LLMRequest, resp: LLMResponse) -> None:
        """Put an answer to ``req`` into the response cache (answers with an error are not kept)."""
        cache = self._open_cache()
        if resp.ok and cache is not None:
            cache.put(self.request_key(req), self._payload(resp))

    def _payload(self, resp: LLMResponse) -> dict[str, Any]:
        """What the response cache keeps of an answer: its fields, and the scope it came from."""
        return {**resp.model_dump(include=_CACHED_FIELDS), "scope": self.scope}

    def api_key(self) -> str:
        """The API key from the environment variable ``config.api_key_env`` ("" when unset)."""
        return os.environ.get(self.config.api_key_env) or ""

    def _open_cache(self) -> ResponseCache | None:
        if self.config.cache_mode == "off" or not self.config.cache_path:
            return None
        if self._cache is None:
            self._cache = ResponseCache(self.config.cache_path)
        return self._cache

    def _params(self, req: LLMRequest) -> dict[str, Any]:
        """The generation parameters sent for ``req`` (and hashed into its cache key)."""
        params = self.config.generation.model_dump(exclude_none=True)
        if req.max_tokens is not None:
            params["max_tokens"] = req.max_tokens
        if req.response_format is not None:
            params["response_format"] = req.response_format
        if req.temperature is not None:
            params["temperature"] = req.temperature
        if req.sample_index:
            # Another sample of the same prompt: its own seed makes it another answer at servers
            # that honour seeds (OpenAI, vLLM, the simulator) and its own response-cache key.
            params["seed"] = (params.get("seed") or 0) + req.sample_index
        return params

    def _effective(self, req: LLMRequest) -> LLMRequest:
        """``req`` as it is sent: without its response_format once the endpoint refused one."""
        if req.response_format is not None and self.structured_output_unsupported and not req.response_format_required:
            return req.model_copy(update={"response_format": None})
        return req

    def _trusted(self, payload: dict) -> bool:
        """Whether a cached payload may be served. The scope is in the key already; belt and
        braces: a simulated answer is never served outside the scope it was stored under."""
        return not payload.get("simulated") or payload.get("scope") == self.scope

    async def _one_safe(self, client, cache, req: LLMRequest, key: str, priority: bool = False) -> LLMResponse:
        """:meth:`_one`, with any unexpected exception made that request's error (never the batch's)."""
        try:
            return await self._one(client, cache, req, key, priority)
        except RareError:
            raise
        except Exception as exc:  # noqa: BLE001 - one request's bug is its row's error, not the batch's
            failure = unexpected(exc)
            return _failed(failure.model_copy(update={"message": _scrub(failure.message, key)[:500]}))

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
                f"which {state}: {_scrub(_message(exc), key)}"
            ) from None
        except openai.APIConnectionError as exc:  # APITimeoutError too: see rare_core/llm/failures.py
            failure = transport_failure(exc, self.config.timeout)
            raise _Retry(failure.model_copy(update={"message": _scrub(failure.message, key)})) from None
        except openai.APIStatusError as exc:
            failure = status_failure(exc.status_code, _scrub(_message(exc), key))
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
            body = _scrub(raw.http_response.text, key)
            return _failed(not_completion(raw.headers.get("content-type"), body)), raw.headers
        return response_from_completion(completion), raw.headers

    def _delay(self, retries: int, retry_after: float | None) -> float:
        if retry_after is not None:  # honoured in full: the caller refuses more than max_retry_after
            return retry_after
        base = min(self.config.backoff_max, self.config.backoff_base * (2 ** retries))
        return base * (0.5 + random.random() / 2)

    @staticmethod
    def _totals(responses: list[LLMResponse], wall: float) -> RunTotals:
        sent = [r for r in responses if not r.cached and not r.shared]
        return RunTotals(
            requests=sum(1 + r.retries for r in sent),
            retries=sum(r.retries for r in sent),
            prompt_tokens=sum(r.prompt_tokens for r in sent),
            completion_tokens=sum(r.completion_tokens for r in sent),
            failures=sum(1 for r in responses if not r.ok),
            batch_requests=sum(1 for r in sent if r.batch),
            batch_prompt_tokens=sum(r.prompt_tokens for r in sent if r.batch),
            batch_completion_tokens=sum(r.completion_tokens for r in sent if r.batch),
            refused_429=sum(r.refused for r in sent),
            cache_hits=sum(1 for r in responses if r.cached and not r.shared),
            deduplicated=sum(1 for r in responses if r.shared),
            simulated=any(r.simulated for r in responses),
            wall_seconds=wall,
        )


_UNSUPPORTED_FORMAT = ("response_format", "json_schema", "structured output", "guided", "not supported", "unsupported")


def _refuses_response_format(req: LLMRequest, resp: LLMResponse) -> bool:
    """A 400 that says the endpoint cannot do the request's (optional) response_format. Servers
    answer it with no code of their own, so the endpoint's message is read for the words."""
    return (req.response_format is not None and not req.response_format_required
            and resp.failure is not None and resp.failure.status == 400
            and any(word in resp.failure.message.lower() for word in _UNSUPPORTED_FORMAT))



def _rate_headers(headers: httpx.Headers | None) -> tuple[int | None, float | None]:
    """(remaining requests, seconds to their reset) from ``x-ratelimit-*`` headers, where sent."""
    if not headers:
        return None, None
    try:
        remaining = int(headers.get("x-ratelimit-remaining-requests", ""))
    except ValueError:
        remaining = None
    return remaining, parse_reset(headers.get("x-ratelimit-reset-requests"))


def _from_payload(payload: dict) -> LLMResponse:
    return LLMResponse(**{k: v for k, v in payload.items() if k in _CACHED_FIELDS}, cached=True)


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


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc.message)


def _scrub(text: str, key: str) -> str:
    """``text`` with the API key (if any) replaced: the one place keys are kept out of errors."""
    return text.replace(key, "***") if key and len(key) >= 4 else text


# The familiar parameters -> their LLMConfig fields, and their defaults (read off the signature).
_FAMILIAR = {"api_url": "base_url", "key_name_of_api_key": "api_key_env", "model_name": "model",
             "max_workers": "max_workers", "max_retries": "max_retries"}
_DEFAULTS = {_FAMILIAR[name]: param.default
             for name, param in inspect.signature(APILLMServing_request.__init__).parameters.items()
             if name in _FAMILIAR}


class _Progress:
    """Calls ``on_progress(done, total)``; an exception in it is logged (once per batch) and
    ignored: a broken progress bar must neither fail a row nor stop the batch."""

    def __init__(self, callback: ProgressCallback | None, total: int, key: str) -> None:
        self.callback, self.total, self.key = callback, total, key
        self.done = 0
        self.warned = False

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.callback is None:
            return
        try:
            self.callback(self.done, self.total)
        except Exception as exc:  # noqa: BLE001
            if not self.warned:
                self.warned = True
                log.warning("the on_progress callback raised %s: %s (ignored for the rest of this batch)",
                            type(exc).__name__, _scrub(str(exc), self.key)[:500])


# The batches this process is running, each as (its loop, its task): see cancel_running_batches.
_running: set[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = set()
_running_lock = threading.Lock()


def cancel_running_batches() -> int:
    """Cancel every batch running in this process, whichever thread runs it -> how many.

    For a caller that stops waiting on work it handed to other threads (a flow whose shard
    tasks run on a thread pool, interrupted or failed): a thread cannot be stopped from
    outside, but its batch can be cancelled on its own loop. Its in-flight requests are then
    cancelled, it sends no more, and its ``converse`` raises ``CancelledError`` in that thread.
    """
    with _running_lock:
        running = list(_running)
    for loop, task in running:
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:  # the loop closed meanwhile: that batch is over anyway
            pass
    return len(running)


def run_here(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(coro)`` in this thread, with the result kept off the main task.

    Workaround: when ``asyncio.run`` ends in the main thread it puts back the SIGINT handler,
    and CPython (3.11) formats the repr of the handler it replaces, which holds the main task,
    whose repr includes its result's: a whole :class:`Batch`, every answer's text (found in a
    profile: ~0.16 s and a string of every answer per 2,000 rows, at the end of every call).
    """
    box: dict[str, _T] = {}

    async def main() -> None:
        box["result"] = await coro

    asyncio.run(main())
    return box["result"]


def run_on_private_loop(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on a new event loop in a thread of ours; return its result or raise its error.

    Workaround for callers that already run a loop (Jupyter, an async flow): they cannot run a
    second one in their thread. A KeyboardInterrupt (or any BaseException) raised in the calling
    thread while it waits cancels the coroutine's task thread-safely, waits until the thread has
    finished (the in-flight requests cancelled, the HTTP client closed), then propagates: a
    Ctrl-C does not leave the batch sending, and paying for, every remaining request.
    """
    box: dict[str, Any] = {}
    ready = threading.Event()

    async def main() -> _T:
        box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
        ready.set()
        return await coro

    def target() -> None:
        try:
            with asyncio.Runner() as runner:  # closes the loop: leftover tasks, async generators, executor
                box["result"] = runner.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="rare-llm-batch", daemon=True)
    thread.start()
    try:
        _wait_for(thread)
    except BaseException:
        ready.wait()
        task, loop = box.get("task"), box.get("loop")
        if task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed meanwhile: the batch is over anyway
                pass
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]


def _wait_for(thread: threading.Thread) -> None:
    """Block until ``thread`` ends, in short joins: a signal or an asynchronous exception reaches
    the waiting thread within ``_JOIN_POLL`` seconds."""
    while thread.is_alive():
        thread.join(_JOIN_POLL)
