"""``APILLMServing_request``: an OpenAI-compatible chat client for batches of requests.

In: a list of :class:`LLMRequest` (rendered messages + prompt version, optionally its own
``max_tokens``). Out: a :class:`Batch` with one :class:`LLMResponse` per request, in input
order, and the batch's :class:`RunTotals`.

The client is built in layers, one module each: :mod:`~rare_core.llm.endpoint` (the config,
request bodies and cache keys, the response cache), :mod:`~rare_core.llm.transport` (one request
over HTTP: retries, rate limits, concurrency, typed failures), :mod:`~rare_core.llm.engine` (a
batch's conversations through one pool, or through the Batch API); this module adds the
parameters and methods of the system we implement (DataFlow) and picks how a batch is run:

* Bounded concurrency: up to ``max_workers`` requests in flight, a window of
  :func:`~rare_core.llm.engine.conversation_window` worker tasks taking the rows' conversations
  in input order.
* Identical requests (same cache key) in one batch are sent once; the duplicates get a copy of
  the answer marked ``shared``.
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
  on a private loop in a thread of ours (:mod:`~rare_core.llm.loop`); Ctrl-C while waiting
  cancels the batch's requests.

The API key is read from the environment variable named by ``LLMConfig.api_key_env`` when a
batch starts; it lives only in the openai client object and is scrubbed from every error text.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from rare_core.errors import LLMConfigError
from rare_core.llm.config import GenerationParams, LLMConfig, redact_url
from rare_core.llm.engine import Engine
from rare_core.llm.loop import run_here, run_on_private_loop
from rare_core.llm.types import Batch, FollowUp, LLMRequest, ProgressCallback

log = logging.getLogger("rare_core.llm")


class APILLMServing_request(Engine):  # noqa: N801 - name kept from the system we implement
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
        super().__init__(config)

    @staticmethod
    def _field_overrides(named: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
        """``overrides`` that use LLMConfig's own names (``base_url=``, ``model=``...) win over the
        defaults of the familiar parameters, but not over a value passed for them as well."""
        for name in set(named) & set(overrides):
            if named[name] != _DEFAULTS[name] and overrides[name] != named[name]:
                raise TypeError(f"{name} given twice (once under its LLMConfig name, once under the familiar one)")
        return overrides

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


# The familiar parameters -> their LLMConfig fields, and their defaults (read off the signature).
_FAMILIAR = {"api_url": "base_url", "key_name_of_api_key": "api_key_env", "model_name": "model",
             "max_workers": "max_workers", "max_retries": "max_retries"}
_DEFAULTS = {_FAMILIAR[name]: param.default
             for name, param in inspect.signature(APILLMServing_request.__init__).parameters.items()
             if name in _FAMILIAR}
