"""Typed errors of rare_core. Every message names the problem; none ever contains an API key."""

from __future__ import annotations


class RareError(Exception):
    """Base class for every error raised by rare_core."""


class InputColumnError(RareError, ValueError):
    """A required input column is missing, or an output column would be overwritten."""


class StorageError(RareError, ValueError):
    """A file cannot be read or written in the requested format."""


class LLMError(RareError):
    """Base class for errors of the LLM layer."""


class LLMAuthError(LLMError):
    """The endpoint refused the credentials (401/403). Stops a run at once."""


class LLMConfigError(LLMError, ValueError):
    """The LLM endpoint is configured wrongly (missing key variable, bad URL)."""


class RetrievalError(RareError):
    """The BM25 index cannot be built, opened or searched."""


class LLMEndpointError(LLMError):
    """The endpoint cannot be used at all (nothing listens, unknown host, TLS, not an
    OpenAI-compatible API) and never answered. Stops the run at once, naming the URL."""
