"""Configuration of the LLM client: endpoint, concurrency, rate limits, retries, generation.

In: settings (``LLMConfig``, ``GenerationParams``). Out: validated settings, plus
:func:`endpoint_scope` (the endpoint's identity in the response-cache key), the URL helpers
:func:`normalize_base_url` / :func:`redact_url` and :func:`next_budget` (the token budget a
truncated reply is asked again with). A ``base_url`` that carries credentials (user
info, or a query parameter named like a key) is refused: keys live only in the environment.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

CacheMode = Literal["use", "refresh", "off"]
Mode = Literal["online", "batch"]

DEFAULT_MODEL = "gpt-4o"
"""The model asked for when ``LLMConfig.model`` is None (the default of the system we implement)."""

CREDENTIALS_IN_URL = (
    "llm.base_url must not carry credentials (user info or a 'key' query parameter): "
    "put the key in the environment variable named by api_key_env"
)
# Query-parameter names (or ``-``/``_``/``.``-separated parts of them: ``subscription-key``,
# ``client_secret``) that carry a credential. ``api-version`` and the like stay allowed.
_CREDENTIAL_PARAMS = frozenset(
    {"key", "api_key", "apikey", "token", "access_token", "auth", "sig", "signature", "secret", "password"}
)
_NAME_PARTS = re.compile(r"[-_.]")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class GenerationParams(BaseModel):
    """Sampling parameters sent with every request; all enter the response-cache key."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(
        8192, ge=1, le=262144, description="Completion token budget per request (8,192: a reasoning teacher's "
        "thinking fits, as in the RARE recipe; a truncated reply is asked again with up to max_tokens_cap).")
    seed: int | None = Field(None, description="Sampling seed, where the endpoint supports it.")
    response_format: dict[str, Any] | None = Field(
        None, description="OpenAI response_format, e.g. a JSON schema, where the endpoint supports it."
    )


class BatchConfig(BaseModel):
    """How ``mode: batch`` uses the OpenAI Batch API (``rare_core.llm.batch``)."""

    model_config = ConfigDict(extra="forbid")

    completion_window: Literal["24h"] = Field("24h", description="The Batch API's completion window.")
    poll_interval: float = Field(30.0, gt=0, description="First wait between status polls, seconds (grows to poll_max).")
    poll_max: float = Field(300.0, gt=0, description="Longest wait between status polls, seconds.")
    max_requests_per_file: int = Field(50_000, ge=1, le=50_000, description="Requests per batch input file (OpenAI: 50,000).")
    max_bytes_per_file: int = Field(200 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024,
                                    description="Bytes per batch input file (OpenAI: 200 MB).")


class LLMConfig(BaseModel):
    """Where and how to call an OpenAI-compatible chat-completions endpoint.

    ``base_url`` may be a base URL (``https://host/v1``) or the full chat-completions URL.
    The API key is never stored here: ``api_key_env`` names the environment variable holding it.
    """

    # hide_input_in_errors: a refused base_url may hold a secret; never echo it in a ValidationError.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str | None = Field(
        None, description="OpenAI-compatible base URL or full /chat/completions URL. "
        "Empty: the pipeline runs against the built-in simulator and marks every answer as simulated.")
    model: str | None = Field(
        None, min_length=1, description=f"Model name sent to the endpoint; empty: {DEFAULT_MODEL}.")
    api_key_env: str = Field(
        "DF_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable that holds the API key (never the key itself).",
    )
    max_workers: int = Field(16, ge=1, le=4096, description="Requests in flight at once.")
    requests_per_minute: float | None = Field(None, gt=0, description="Optional request rate limit.")
    tokens_per_minute: float | None = Field(None, gt=0, description="Optional token rate limit (prompt estimate + max_tokens).")
    timeout: float = Field(600.0, gt=0, description="Seconds before one request times out (a reasoning model may think for minutes).")
    max_retries: int = Field(5, ge=0, le=50, description="Retries of one request on 408/409/429/5xx/connection errors/timeouts.")
    backoff_base: float = Field(1.0, gt=0, description="First backoff delay in seconds (doubles each retry, with jitter).")
    backoff_max: float = Field(60.0, gt=0, description="Largest backoff delay in seconds.")
    max_retry_after: float = Field(
        600.0, ge=0, description="Longest Retry-After (seconds) honoured; a server asking for more fails the row at once.")
    cache_path: str | None = Field(
        "./cache/llm_responses.sqlite", description="SQLite response cache file; None turns caching off."
    )
    cache_mode: CacheMode = Field("use", description="use: read and write; refresh: write only; off: neither.")
    cache_scope: str | None = Field(
        None, min_length=1, description="Identity of the endpoint in the response-cache key; default: the base URL "
        "without credentials or query (scheme://host:port/path).")
    max_tokens_cap: int = Field(
        32768, ge=1, le=262144, description="Largest max_tokens a truncated reply may be asked again with.")
    mode: Mode = Field("online", description="online: one request at a time; batch: the Batch API (half the price, "
                                             "answers within the completion window).")
    batch: BatchConfig = Field(default_factory=BatchConfig)
    generation: GenerationParams = Field(default_factory=GenerationParams)

    @field_validator("base_url")
    @classmethod
    def _normalize_url(cls, value: str | None) -> str | None:
        return normalize_base_url(value) if value else None


def normalize_base_url(url: str) -> str:
    """Base URL for the openai client: ``url`` without a trailing ``/chat/completions``.
    Errors show it through :func:`redact_url`, so credentials in it never reach a message;
    a URL carrying credentials is refused (:data:`CREDENTIALS_IN_URL`)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError("llm.base_url is not a valid URL") from None  # the text may hold a secret
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {redact_url(url)!r}")
    if has_credentials(url):
        raise ValueError(CREDENTIALS_IN_URL)
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries user info or a query parameter named like a credential."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return True
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        name = name.strip().lower()
        if name in _CREDENTIAL_PARAMS or any(p in _CREDENTIAL_PARAMS for p in _NAME_PARTS.split(name)):
            return True
    return False


def endpoint_scope(config: LLMConfig) -> str:
    """The endpoint's identity in the response-cache key: ``config.cache_scope`` if set, else the
    base URL without credentials, query or default port (``scheme://host:port/path``)."""
    if config.cache_scope:
        return config.cache_scope
    if not config.base_url:
        return ""
    parts = urlsplit(config.base_url)
    host = parts.hostname or ""
    if parts.port and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def redact_url(url: str) -> str:
    """``url`` without user info or query string, safe to print."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def next_budget(config: LLMConfig, current: int | None) -> int | None:
    """The token budget to ask a truncated reply again with: twice ``current`` (None: the
    configured ``generation.max_tokens``), at most ``config.max_tokens_cap``; None when
    ``current`` is already at or above the cap (asking again would be cut again)."""
    current = config.generation.max_tokens if current is None else current
    if current >= config.max_tokens_cap:
        return None
    return min(2 * current, config.max_tokens_cap)
