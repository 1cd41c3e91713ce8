"""Why a request got no usable answer, as data: :class:`RequestFailure` and its classifiers.

In: what the transport raised (an ``openai`` exception with its chain of causes), or a body
that is not a chat completion. Out: a :class:`RequestFailure` (kind, HTTP status, whether a
retry can help, a one-line message that says what happened), read from types, status codes and
content types, never from matching message text.

Workaround, in :func:`transport_failure`: the openai SDK's aiohttp transport (httpx-aiohttp)
maps every aiohttp connector error to ``httpx.ConnectTimeout``, which the SDK reports as
``APITimeoutError``: a refused connection, an unknown host and a bad certificate all read
"Request timed out". The real cause is further down the exception's chain, where we look.
"""

from __future__ import annotations

import socket
import ssl
from enum import Enum

import openai
from pydantic import BaseModel


class FailureKind(str, Enum):
    """What went wrong with one request."""

    REFUSED = "connection refused"  # nothing listens at the address
    DNS = "name not resolved"
    TLS = "TLS failure"
    TIMEOUT = "timed out"
    CONNECTION = "connection error"  # reset, closed mid-answer, other socket errors
    HTTP = "HTTP error"  # an error status from the endpoint
    RATE_LIMITED = "rate limited"  # HTTP 429
    NOT_COMPLETION = "not a chat completion"  # a 200 whose body is something else (a proxy's page)
    UNEXPECTED = "unexpected error"  # a bug of ours or the SDK's while handling the answer


# Kinds that say the endpoint is not there (as opposed to busy or failing): when a client has
# never had an answer, a few of these in a row stop the run (rare_core.llm.transport).
UNREACHABLE = frozenset({FailureKind.REFUSED, FailureKind.DNS, FailureKind.TLS, FailureKind.NOT_COMPLETION})


class RequestFailure(BaseModel):
    """One request's failure: ``kind``, the HTTP ``status`` (None below HTTP), whether a retry
    can help, and ``message``, one line without any API key."""

    kind: FailureKind
    status: int | None = None
    retryable: bool = False
    message: str


RETRYABLE_STATUS = frozenset({408, 409, 429})


def status_failure(status: int, endpoint_message: str) -> RequestFailure:
    """An error status with the endpoint's own message."""
    return RequestFailure(kind=FailureKind.RATE_LIMITED if status == 429 else FailureKind.HTTP, status=status,
                          retryable=status in RETRYABLE_STATUS or status >= 500,
                          message=f"HTTP {status}: {endpoint_message}")


def transport_failure(exc: BaseException, timeout: float) -> RequestFailure:
    """A failure below HTTP (``openai.APIConnectionError`` or ``APITimeoutError``), classified by
    the exception types in its chain of causes; ``timeout`` is the client's setting, named when
    the request really timed out."""
    chain = _chain(exc)
    tls = [e for e in chain if isinstance(e, (ssl.SSLError, ssl.CertificateError))]
    if tls:  # the innermost is the ssl module's own, with its reason (aiohttp wraps it)
        cause = tls[-1]
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or type(cause).__name__
        return RequestFailure(kind=FailureKind.TLS, message=f"TLS failure: {reason}")
    if any(isinstance(e, socket.gaierror) for e in chain):
        return RequestFailure(kind=FailureKind.DNS, message="name not resolved: the endpoint's host name is unknown")
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return RequestFailure(kind=FailureKind.REFUSED, retryable=True,
                              message="connection refused: nothing listens at the endpoint's address")
    if any(isinstance(e, (TimeoutError, openai.APITimeoutError)) for e in chain):
        return RequestFailure(kind=FailureKind.TIMEOUT, retryable=True, message=f"timed out after {timeout:g}s")
    innermost = chain[-1]
    detail = f"{type(innermost).__name__}: {innermost}" if str(innermost) else type(innermost).__name__
    return RequestFailure(kind=FailureKind.CONNECTION, retryable=True, message=f"connection error: {detail}")


def not_completion(content_type: str | None, body: str) -> RequestFailure:
    """A 200 whose body is not a chat completion (an HTML login page, an empty body...)."""
    shown = " ".join(body.split())[:80]
    what = (content_type or "no content type").split(";")[0].strip() or "no content type"
    return RequestFailure(kind=FailureKind.NOT_COMPLETION,
                          message=f"the endpoint answered {what}, not a chat completion: {shown!r}")


def unexpected(exc: BaseException) -> RequestFailure:
    """An exception of ours (or the SDK's) while handling one request."""
    return RequestFailure(kind=FailureKind.UNEXPECTED, message=f"unexpected error: {type(exc).__name__}: {exc}")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        out.append(node)
        node = node.__cause__ or node.__context__
    return out

