"""The LLM layer: an OpenAI-compatible client with bounded concurrency, retries, rate limits
and a persistent response cache. The simulator it runs against in a dry run is the ``rare_sim``
package; what the two share is in :mod:`rare_core.llm.simulated`."""

from rare_core.llm.cache import ResponseCache
from rare_core.llm.config import GenerationParams, LLMConfig
from rare_core.llm.serving import APILLMServing_request
from rare_core.llm.types import LLMRequest, LLMResponse, RunTotals

__all__ = [
    "APILLMServing_request",
    "GenerationParams",
    "LLMConfig",
    "LLMRequest",
    "LLMResponse",
    "ResponseCache",
    "RunTotals",
]
