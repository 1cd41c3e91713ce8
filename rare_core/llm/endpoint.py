"""One endpoint as the client sees it: its settings, what a request is sent as, the response cache.

In: an :class:`~rare_core.llm.config.LLMConfig`. Out: :class:`Endpoint`, the base of
:class:`~rare_core.llm.serving.APILLMServing_request` that holds the config and knows, for an
:class:`LLMRequest`, the generation parameters and JSON body it is sent with
(:meth:`~Endpoint.request_body`; without its ``response_format`` once the endpoint refused one),
its response-cache key (:meth:`~Endpoint.request_key`: model, messages, params, prompt version,
endpoint scope) and the cached answer it may be served (:meth:`~Endpoint.cached_response`); and
the API key, read from the environment variable ``LLMConfig.api_key_env``.
"""

from __future__ import annotations

import os
from typing import Any

from rare_core.llm.cache import ResponseCache, cache_key
from rare_core.llm.config import DEFAULT_MODEL, LLMConfig, endpoint_scope
from rare_core.llm.types import LLMRequest, LLMResponse

_CACHED_FIELDS = {"text", "reasoning", "reasoning_field", "finish_reason", "prompt_tokens", "completion_tokens",
                  "model", "simulated"}


class Endpoint:
    """An endpoint's settings, and what a request is sent as and cached under (see the module
    docstring); the base of :class:`~rare_core.llm.transport.Transport`."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.structured_output_unsupported = False  # learned from a 400 (see LLMRequest.response_format)
        self._cache: ResponseCache | None = None

    @property
    def model_name(self) -> str:
        """The model asked for: ``config.model``, or :data:`DEFAULT_MODEL` when that is None."""
        return self.config.model or DEFAULT_MODEL

    @property
    def scope(self) -> str:
        """The endpoint's identity in the response-cache key (:func:`endpoint_scope`)."""
        return endpoint_scope(self.config)

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

    def close(self) -> None:
        """Close the response cache (the client holds no other resource between batches)."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def _from_payload(payload: dict) -> LLMResponse:
    return LLMResponse(**{k: v for k, v in payload.items() if k in _CACHED_FIELDS}, cached=True)
