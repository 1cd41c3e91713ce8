"""The LLM layer: an OpenAI-compatible client with bounded concurrency, retries, rate limits
and a persistent response cache; and (imported on demand) an OpenAI-compatible simulator."""

from rare_core.llm.cache import ResponseCache
from rare_core.llm.client import APILLMServing_request, LLMRequest, LLMResponse, RunTotals
from rare_core.llm.config import GenerationParams, LLMConfig

__all__ = [
    "APILLMServing_request",
    "GenerationParams",
    "LLMConfig",
    "LLMRequest",
    "LLMResponse",
    "ResponseCache",
    "RunTotals",
]
