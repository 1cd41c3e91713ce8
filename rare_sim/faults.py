"""The faults the simulator injects: what a test queues (:class:`FaultSpec`), which request takes
one (:class:`Faults`), and what the faulty answer is.

In: specs from ``POST /_sim/faults`` (or :meth:`rare_sim.process.SimulatorProcess.inject`), and
each chat request's text. Out: :meth:`Faults.take` -> the spec a request gets (or None);
:func:`refusal` -> the reply that replaces the answer (429, 500, 401, a body that is no chat
completion), :func:`spoil` -> the answer made faulty (cut, half JSON, empty). ``hang`` is the
caller's to play: online it holds the request (:data:`HANG_SECONDS`), in a batch the line
times out.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rare_sim.completions import Generated, Reply, count_tokens, error_body
from rare_sim.models import SimulatorConfig

HANG_SECONDS = 600.0
DEFAULT_RETRY_AFTER = 1.0

FaultKind = Literal[
    "rate_limit", "server_error", "hang", "malformed_json", "bad_body", "length", "empty", "unauthorized",
    "odd_shape", "html_page",
]


class FaultSpec(BaseModel):
    """Serve fault ``kind`` to the next ``count`` chat completions whose messages contain ``match``.

    Kinds: ``rate_limit`` (429 with ``Retry-After: retry_after``), ``server_error`` (500),
    ``hang`` (no answer for 600 s, or until the client gives up), ``malformed_json`` (200 whose
    content is the unterminated first half of the answer), ``bad_body`` (200 whose HTTP body is
    not JSON), ``length`` (``finish_reason="length"``, content cut short), ``empty`` (content
    ``""``), ``unauthorized`` (401) and ``odd_shape`` (200 whose JSON body is not a chat
    completion: ``choices`` holds strings), ``html_page`` (200 whose body is a proxy's HTML
    login page, ``text/html``). ``retry_after_header`` sends that raw text as the
    429's ``Retry-After`` instead (e.g. an unparseable ``"soon"``).
    """

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    count: int = Field(default=1, ge=1)
    match: str | None = None
    retry_after: float | None = Field(default=None, ge=0)
    retry_after_header: str | None = None


class Faults:
    """The pending faults, in the order queued."""

    def __init__(self) -> None:
        self.pending: list[FaultSpec] = []

    def add(self, specs: list[FaultSpec]) -> list[FaultSpec]:
        """Queue copies of ``specs`` after those pending; returns all pending."""
        self.pending.extend(spec.model_copy() for spec in specs)
        return self.pending

    def clear(self) -> list[FaultSpec]:
        """Drop all pending faults; returns all pending (none)."""
        self.pending.clear()
        return self.pending

    def take(self, prompt: str) -> FaultSpec | None:
        """Consume one use of the first pending fault whose ``match`` occurs in ``prompt``."""
        for spec in self.pending:
            if spec.match is None or spec.match in prompt:
                spec.count -= 1
                if spec.count == 0:
                    self.pending.remove(spec)
                return spec
        return None


def refusal(fault: FaultSpec, model: str) -> Reply | None:
    """The reply that ``fault`` puts in place of the answer, or None when it spoils the answer
    itself (:func:`spoil`) or is a hang."""
    kind = fault.kind
    if kind == "rate_limit":
        retry_after = DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after
        header = f"{retry_after:g}" if fault.retry_after_header is None else fault.retry_after_header
        return Reply(429, error_body("Rate limit reached (simulated).", "requests", "rate_limit_exceeded"),
                     {"Retry-After": header})
    if kind == "server_error":
        return Reply(500, error_body("The server had an error (simulated).", "server_error", None))
    if kind == "unauthorized":
        return Reply(401, error_body("Incorrect API key provided (simulated).", "invalid_request_error",
                                     "invalid_api_key"))
    if kind == "odd_shape":
        return Reply(200, {"id": "chatcmpl-sim-odd", "object": "chat.completion", "model": model,
                           "choices": ["[simulated] not a choice object"]})
    if kind == "bad_body":
        return Reply(200, b"<html><body>502 Bad Gateway (simulated)</body></html>")
    if kind == "html_page":
        return Reply(200, b"<!DOCTYPE html><html><head><title>Sign in (simulated proxy)</title></head>"
                          b"<body><form action=/login>Please sign in to continue</form></body></html>",
                     {"Content-Type": "text/html; charset=utf-8"})
    return None


def spoil(fault: FaultSpec, out: Generated, config: SimulatorConfig) -> Generated:
    """``out`` as ``fault`` leaves it: half its content (``malformed_json``), its first third
    cut for length (``length``), empty (``empty``); unchanged for a hang."""
    kind = fault.kind
    if kind == "hang":
        return out
    if kind == "malformed_json":  # an unterminated prefix: never valid JSON
        out.content = out.content[: len(out.content) // 2]
    elif kind == "length":  # the first third of the words, as if max_tokens ran out
        words = out.content.split(" ")
        out.content, out.finish_reason = " ".join(words[: max(1, len(words) // 3)]), "length"
    else:  # empty
        out = Generated("", finish_reason="stop")
    out.completion_tokens = count_tokens(config, out)
    return out
