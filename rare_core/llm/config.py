"""Configuration of the LLM client: endpoint, concurrency, rate limits, retries, generation."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

CacheMode = Literal["use", "refresh", "off"]


class GenerationParams(BaseModel):
    """Sampling parameters sent with every request; all enter the response-cache key."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(2048, ge=1, le=262144, description="Completion token budget per request.")
    seed: int | None = Field(None, description="Sampling seed, where the endpoint supports it.")
    response_format: dict[str, Any] | None = Field(
        None, description="OpenAI response_format, e.g. a JSON schema, where the endpoint supports it."
    )


class LLMConfig(BaseModel):
    """Where and how to call an OpenAI-compatible chat-completions endpoint.

    ``base_url`` may be a base URL (``https://host/v1``) or the full chat-completions URL.
    The API key is never stored here: ``api_key_env`` names the environment variable holding it.
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL or full /chat/completions URL. "
        "Empty: the pipeline runs against the built-in simulator and marks every answer as simulated.")
    model: str = Field(..., min_length=1, description="Model name sent to the endpoint.")
    api_key_env: str = Field(
        "DF_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable that holds the API key (never the key itself).",
    )
    max_workers: int = Field(16, ge=1, le=4096, description="Requests in flight at once.")
    requests_per_minute: float | None = Field(None, gt=0, description="Optional request rate limit.")
    tokens_per_minute: float | None = Field(None, gt=0, description="Optional token rate limit (prompt estimate + max_tokens).")
    timeout: float = Field(120.0, gt=0, description="Seconds before one request times out.")
    max_retries: int = Field(5, ge=0, le=50, description="Retries of one request on 408/409/429/5xx/connection errors/timeouts.")
    backoff_base: float = Field(1.0, gt=0, description="First backoff delay in seconds (doubles each retry, with jitter).")
    backoff_max: float = Field(60.0, gt=0, description="Largest backoff delay in seconds.")
    cache_path: str | None = Field(
        "./cache/llm_responses.sqlite", description="SQLite response cache file; None turns caching off."
    )
    cache_mode: CacheMode = Field("use", description="use: read and write; refresh: write only; off: neither.")
    generation: GenerationParams = Field(default_factory=GenerationParams)

    @field_validator("base_url")
    @classmethod
    def _normalize_url(cls, value: str | None) -> str | None:
        return normalize_base_url(value) if value else None


def normalize_base_url(url: str) -> str:
    """Base URL for the openai client: ``url`` without a trailing ``/chat/completions``.
    Errors show it through :func:`redact_url`, so credentials in it never reach a message."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def redact_url(url: str) -> str:
    """``url`` without user info or query string, safe to print."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
