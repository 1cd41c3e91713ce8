"""An OpenAI-compatible LLM simulator: deterministic, prompt-aware answers over real HTTP.

Used by the test-suite (through the real ``openai`` client), as the offline dry-run backend of
the demo, and by the throughput benchmark. Nothing here calls a real model.

* ``POST /v1/chat/completions`` and ``GET /v1/models`` in the OpenAI response shapes. Answers are
  built from the prompt's own words in the formats of :mod:`rare_core.prompts.doc2query` (JSON
  questions) and :mod:`rare_core.prompts.reason_distill` (``<think>``/``<answer>``); anything else
  gets a short echo. Every answer is marked ``[simulated]`` and every completion carries
  ``"system_fingerprint": SIMULATED_MODEL_MARKER``.
* What real servers do, each a :class:`SimulatorConfig` setting whose default is the plain
  behaviour above: where a reasoning model's thinking goes (``reasoning``: inline ``<think>``,
  ``message.reasoning_content``, ``message.reasoning``, or an opening ``<think>`` swallowed), long
  thinking that honours ``max_tokens`` (``thinking_tokens``), a cap on requests in flight
  answered with 429 and ``Retry-After: 1`` as gateways and proxies answer it, plus
  ``x-ratelimit-*`` headers (``max_in_flight``), servers without
  ``response_format: json_schema`` (``structured_output``).
* The Batch API as OpenAI implements it: ``POST /v1/files`` (multipart, kept in memory),
  ``GET /v1/files/{id}[/content]``, ``POST /v1/batches``, ``GET /v1/batches[/{id}]``,
  ``POST /v1/batches/{id}/cancel``. A batch's lines are answered by the same logic as online
  requests (faults included) over ``batch_delay`` seconds from its creation, as its status is
  polled; a malformed input file makes the batch ``failed`` with ``errors``.
* Latency (with optional jitter) is applied with ``await asyncio.sleep``: requests never block
  one another.
* Admin endpoints: ``POST/DELETE /_sim/faults`` (fault injection, see :class:`FaultSpec`),
  ``GET /_sim/stats`` (:class:`SimulatorStats`), ``POST /_sim/reset``, ``GET/POST /_sim/config``.

Run it with ``python -m rare_core.llm.simulator --port 0`` (prints
``RARE_SIMULATOR_READY http://127.0.0.1:PORT/v1`` once it accepts connections), with
:func:`serve`, or from Python as a subprocess with :class:`SimulatorProcess`.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, Iterable, Literal

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from rare_core.llm.client import SIMULATED_FINGERPRINT
from rare_core.prompts.doc2query import DOC_CLOSE, DOC_OPEN

SIMULATED_MODEL_MARKER = SIMULATED_FINGERPRINT  # the client marks answers carrying it as simulated
"""The ``system_fingerprint`` of every simulated completion (and the simulator's own model id)."""

READY_PREFIX = "RARE_SIMULATOR_READY"
API_KEY_ENV = "RARE_SIMULATOR_API_KEY"
HANG_SECONDS = 600.0
DEFAULT_RETRY_AFTER = 1.0

ReasoningMode = Literal["inline", "reasoning_content", "reasoning", "swallowed"]
REASONING_FIELD_MODES = ("reasoning_content", "reasoning")
"""The ``reasoning`` modes that put the thinking into a message field of that name."""

BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_MAX_REQUESTS = 50_000  # OpenAI's limits of one batch input file
BATCH_MAX_BYTES = 200 * 1024 * 1024
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
_BATCH_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})

FaultKind = Literal[
    "rate_limit", "server_error", "hang", "malformed_json", "bad_body", "length", "empty", "unauthorized",
    "odd_shape", "html_page",
]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


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


class SimulatorConfig(BaseModel):
    """How the simulator answers. Every default is the plain behaviour: no latency, thinking
    inline in ``<think>`` tags, short thinking, no cap, structured output accepted, batches done
    at once.

    * ``latency``: each chat completion takes ``latency * (1 ± jitter)`` seconds, uniformly drawn.
    * ``reasoning``: where the thinking of a ReasonDistill answer goes. ``inline``: ``<think>…
      </think><answer>…</answer>`` in the content. ``reasoning_content`` (DeepSeek, vLLM ≤ 0.9
      reasoning parsers): the thinking in ``message.reasoning_content``, the content only
      ``<answer>…</answer>``. ``reasoning`` (newer vLLM, Ollama, OpenRouter): the thinking in
      ``message.reasoning``, the content ``<answer>…</answer>`` or the plain answer without tags,
      chosen by a hash of the prompt (both occur). ``swallowed`` (QwQ without a parser): the
      inline content without its opening ``<think>``. Other prompts (Doc2Query JSON, echoes)
      are unchanged, except that the two field modes put a short thinking in the field.
    * ``thinking_tokens``: 0 is the short thinking; N > 0 makes every thinking N tokens long,
      counts tokens as words (``usage.completion_tokens`` = words of the thinking + words of the
      content) and honours the request's ``max_tokens``: a completion longer than that is cut
      at ``max_tokens`` words, thinking first (a budget within the thinking leaves no answer),
      with ``finish_reason="length"``.
    * ``max_in_flight``: a chat completion arriving while that many are handled gets at once a
      429 with an OpenAI-shaped error body (``{"error": {"message", "type", "param", "code"}}``,
      the shape OpenAI, vLLM and LiteLLM share) and ``Retry-After: cap_retry_after`` in whole
      seconds, as servers and proxies send it (default 1; None sends none). A request counts
      in flight from the moment its handler takes it until its answer is ready, as a server
      counts its running requests; a refused one never counts. Every chat answer then carries
      ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` (slots free once this
      answer is sent) and ``x-ratelimit-reset-requests`` (OpenAI's ``"1s"``/``"120ms"`` format).
    * ``structured_output``: ``unsupported`` answers a request whose ``response_format`` has
      type ``json_schema`` with a 400, as servers without guided decoding do.
    * ``batch_delay``: seconds from a batch's creation until it is ``completed``; its lines are
      answered evenly over that time (``request_counts`` grows as it is polled). The setting in
      effect when a batch is looked at counts: 0 completes every pending batch at once.
    """

    model_config = ConfigDict(extra="forbid")

    latency: float = Field(default=0.0, ge=0)
    jitter: float = Field(default=0.0, ge=0, le=1)
    reasoning: ReasoningMode = "inline"
    thinking_tokens: int = Field(default=0, ge=0, le=1_000_000)
    max_in_flight: int | None = Field(default=None, ge=1)
    cap_retry_after: int | None = Field(default=1, ge=0)
    structured_output: Literal["supported", "unsupported"] = "supported"
    batch_delay: float = Field(default=0.0, ge=0)


class SimulatorStats(BaseModel):
    """Counters since start or the last reset.

    ``requests_total``/``requests_by_path`` count every routed request, admin calls included
    (a stats call counts itself). ``completions_served`` counts normal answers to online chat
    completions only; faults are counted in ``faults_served`` by kind (online and in batches).
    ``in_flight`` is the number of online chat completions being handled now, ``max_in_flight``
    the most seen at once; ``refused_over_cap`` the chat completions refused with a 429 by
    ``SimulatorConfig.max_in_flight`` (never counted in flight). Batch API: ``files_uploaded``,
    ``batches_created``, ``batch_completions_served`` (normal answers to batch lines, the
    counterpart of ``completions_served``) and ``batch_requests_failed`` (lines that went to a
    batch's error file).
    """

    requests_total: int = 0
    requests_by_path: dict[str, int] = Field(default_factory=dict)
    completions_served: int = 0
    faults_served: dict[str, int] = Field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    refused_over_cap: int = 0
    files_uploaded: int = 0
    batches_created: int = 0
    batch_completions_served: int = 0
    batch_requests_failed: int = 0
    models: list[str] = Field(default_factory=list)

    @computed_field
    @property
    def model_count(self) -> int:
        """Number of distinct model names asked for."""
        return len(self.models)


class ChatMessage(BaseModel):
    """One chat message; ``content`` may be a string or a list of OpenAI content parts."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text, with content parts joined."""
        if isinstance(self.content, list):
            return "\n".join(str(part.get("text", "")) for part in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    """The part of a chat-completion request the simulator reads; other fields are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None

    def token_budget(self) -> int | None:
        """``max_completion_tokens`` (OpenAI's newer name) or ``max_tokens``, if either is set."""
        return self.max_completion_tokens or self.max_tokens


class BatchCreate(BaseModel):
    """The body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="allow")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    """a about above after again against all also an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how however i if in into is it its itself
    may might more most much must no nor not of off on once only or other our out over own same
    she should so some such than that the their theirs them then there these they this those
    through thus to too under until up upon very was we were what when where whether which while
    who whom why will with within without would yet you your document documents passage text
    study authors question questions""".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NUM_QUESTIONS = re.compile(r"Number of questions:\s*(\d+)")
_SCENARIO = re.compile(r"<scenario>\s*(.*?)\s*</scenario>", re.S)
_QUESTION = re.compile(r"<question>\s*(.*?)\s*</question>", re.S)
_DOCUMENTS = re.compile(r"<documents>\s*(.*)\s*</documents>", re.S)
_DOC_HEADER = re.compile(r"^\[Document (\d+)\]\s*$", re.M)
_FILLER_WORDS = ("mechanism", "outcome", "condition")
_QUESTION_TEMPLATES = (
    "How would a change in {a} alter {b}, and what would that imply for {c}?",
    "Why might {b} respond differently to {a} when {c} is also present?",
    "Which outcome for {c} would you expect if {a} were removed but {b} kept constant, and why?",
    "What trade-off between {a} and {c} should guide a decision about {b}?",
)


def content_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` minus stopwords and words shorter than three letters."""
    words = (w.lower().strip("'-") for w in _WORD.findall(text))
    return [w for w in words if len(w) >= 3 and w not in _STOPWORDS]


def keywords(text: str, limit: int) -> list[str]:
    """The ``limit`` most frequent content words of ``text``, ties broken by first appearance."""
    counts = Counter(content_words(text))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _clip(text: str, max_words: int) -> str:
    words = text.split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


def doc2query_answer(document: str, num_questions: int) -> str:
    """The JSON answer to a Doc2Query prompt, built from the document's salient words."""
    words = keywords(document, limit=num_questions + 4)
    words += _FILLER_WORDS[: max(0, 3 - len(words))]
    sentences = _sentences(document) or ["No details are given."]
    items = []
    for i in range(num_questions):
        a, b, c = (words[(i + k) % len(words)] for k in range(3))
        scenario = (
            f"[simulated] A specialist is assessing a case that involves {a} and {b}. "
            f"{_clip(sentences[i % len(sentences)], 10)}"  # a scenario never copies 13+ words (leakage filter)
        )
        question = _QUESTION_TEMPLATES[i % len(_QUESTION_TEMPLATES)].format(a=a, b=b, c=c)
        # The reference is what a faithful teacher would quote for this question from this document.
        reference = f"[simulated] {_clip(_best_sentence(question, sentences), 30)}"
        items.append({"scenario": scenario, "question": question, "reference_answer": reference})
    return json.dumps(items[0] if num_questions == 1 else {"questions": items})


def _best_sentence(question: str, sentences: list[str]) -> str:
    asked = set(content_words(question))
    return max(sentences, key=lambda s: len(asked.intersection(content_words(s))))


def reason_distill_parts(question: str, documents: list[str], seed: int | None = None) -> tuple[str, str]:
    """The thinking and the final answer of a ReasonDistill reply, without their tags.

    Judges each document by the content words it shares with ``question``; the answer quotes
    the best-sharing sentence of the document that shares the most (the first one on ties).
    With a ``seed`` (another sample), the document is drawn among those sharing any word.
    """
    asked = set(content_words(question))
    if not documents:
        return ("[simulated reasoning] No documents were provided, so nothing can ground an answer.",
                "[simulated] The documents give no basis for an answer.")
    steps = [f"The question turns on: {', '.join(keywords(question, 4)) or 'nothing specific'}."]
    shared_by_doc = []
    for i, doc in enumerate(documents, start=1):
        shared = sorted(asked.intersection(content_words(doc)))
        shared_by_doc.append(shared)
        verdict = (
            f"shares {len(shared)} words with the question ({', '.join(shared[:5])}): helpful."
            if shared
            else "shares no words with the question: it only looks relevant."
        )
        steps.append(f"Document {i} {verdict}")
    best = max(range(len(documents)), key=lambda i: (len(shared_by_doc[i]), -i))
    sharing = [i for i in range(len(documents)) if shared_by_doc[i]]
    if seed and len(sharing) > 1:
        best = random.Random(f"{seed}\x00{question}").choice(sharing)
    steps.append(f"Document {best + 1} overlaps most with the question, so the answer rests on it.")
    quote = _best_sentence(question, _sentences(documents[best]) or [documents[best]])
    return (f"[simulated reasoning] {' '.join(steps)}",
            f'[simulated] According to Document {best + 1}: "{_clip(quote, 30)}"')


def reason_distill_answer(question: str, documents: list[str]) -> str:
    """The ``<think>``/``<answer>`` reply to a ReasonDistill prompt (see :func:`reason_distill_parts`)."""
    thinking, answer = reason_distill_parts(question, documents)
    return f"<think>{thinking}</think>\n<answer>{answer}</answer>"


@dataclass(frozen=True)
class SimulatedParts:
    """What a simulated model thinks and answers for one prompt, before any formatting.

    ``kind``: ``doc2query``, ``reason_distill`` or ``echo``. ``thinking`` and ``answer`` carry no
    tags; ``topic`` holds the prompt's salient words (long thinking is padded with them)."""

    kind: Literal["doc2query", "reason_distill", "echo"]
    thinking: str
    answer: str
    topic: tuple[str, ...] = ()


# A closed (yes/no/maybe) question, as PubMedQA's are: answered at random, seeded by the prompt
# and the request's seed, so that each sample of a rejection-sampling run is a new draw.
# (Closed: not opened by a wh-word; PubMedQA's titles are often statements with a "?".)
_OPEN_QUESTION = re.compile(r"^\s*(what|why|how|which|who|whom|whose|when|where|in what|to what)\b", re.I)
_JUDGE_REFERENCE = re.compile(r"<reference_answer>\s*(.*?)\s*</reference_answer>", re.S)
_JUDGE_CANDIDATE = re.compile(r"<candidate_answer>\s*(.*?)\s*</candidate_answer>", re.S)


def closed_answer(prompt: str, seed: int | None) -> str:
    """yes, no or maybe, drawn from the prompt and the seed."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode("utf-8", "surrogatepass")).digest()
    return ("yes", "no", "maybe")[digest[0] % 3]


def judge_answer(reference: str, candidate: str) -> str:
    """The simulated judge: correct when the closed forms agree, or when the candidate holds
    most of the reference's content words."""
    from rare_core.verify import closed_form

    want, got = closed_form(reference), closed_form(candidate)
    if want is not None:
        ok = want == got
    else:
        words = set(content_words(reference))
        ok = bool(words) and len(words & set(content_words(candidate))) >= 0.5 * len(words)
    verdict = "correct" if ok else "incorrect"
    return json.dumps({"verdict": verdict, "reason": f"[simulated] the candidate {'agrees' if ok else 'disagrees'} "
                                                     f"with the reference"})


def simulated_parts(messages: list[ChatMessage], seed: int | None = None) -> SimulatedParts:
    """The deterministic thinking and answer for ``messages`` (and the request's ``seed``), by
    the prompt they carry."""
    # The newest user message that carries a known prompt: a re-ask appends a short
    # correction after the original prompt, and must be answered like the original.
    user_turns = [m.text() for m in reversed(messages) if m.role == "user"]
    for prompt in user_turns:
        num = _NUM_QUESTIONS.search(prompt)
        if num and DOC_OPEN in prompt and DOC_CLOSE in prompt:
            document = prompt[prompt.index(DOC_OPEN) + len(DOC_OPEN) : prompt.rindex(DOC_CLOSE)].strip()
            n, topic = int(num.group(1)), tuple(keywords(document, 4))
            thinking = (f"[simulated reasoning] The document is about {', '.join(topic) or 'nothing specific'}; "
                        f"the reply is {n} standalone question{'s' if n != 1 else ''} as JSON.")
            return SimulatedParts("doc2query", thinking, doc2query_answer(document, n), topic)
        reference, candidate = _JUDGE_REFERENCE.search(prompt), _JUDGE_CANDIDATE.search(prompt)
        if reference and candidate:
            return SimulatedParts("judge", "[simulated reasoning] Compare the candidate with the reference.",
                                  judge_answer(reference.group(1), candidate.group(1)), ())
        question, docs = _QUESTION.search(prompt), _DOCUMENTS.search(prompt)
        if question and docs:
            parts = _DOC_HEADER.split(docs.group(1))[1:]  # [number, text, number, text, ...]
            thinking, answer = reason_distill_parts(question.group(1), [t.strip() for t in parts[1::2]], seed)
            if not _OPEN_QUESTION.match(question.group(1)):
                answer = f"{closed_answer(prompt, seed).capitalize()}. {answer}"
            return SimulatedParts("reason_distill", thinking, answer, tuple(keywords(question.group(1), 4)))
    prompt = user_turns[0] if user_turns else ""
    return SimulatedParts("echo", "[simulated reasoning] A plain prompt: echo it back.",
                          f"[simulated] echo: {_clip(prompt, 24) or '(empty prompt)'}", tuple(keywords(prompt, 4)))


def simulated_answer(messages: list[ChatMessage]) -> str:
    """The deterministic answer to ``messages``, in the format their prompt asks for (thinking
    inline: the ``reasoning="inline"`` content)."""
    parts = simulated_parts(messages)
    if parts.kind == "reason_distill":
        return f"<think>{parts.thinking}</think>\n<answer>{parts.answer}</answer>"
    return parts.answer


def long_thinking(thinking: str, tokens: int, topic: Iterable[str] = ()) -> str:
    """``thinking`` made exactly ``tokens`` words long: cut, or padded with deterministic steps
    that weigh the prompt's ``topic`` words once more."""
    words = thinking.split()
    pool = list(topic) or list(_FILLER_WORDS)
    step = 0
    while len(words) < tokens:
        words += f"Step {step + 1}: weighing {pool[step % len(pool)]} once more against the evidence.".split()
        step += 1
    return " ".join(words[:tokens])


def prompt_parity(texts: Iterable[str]) -> int:
    """0 or 1 from a hash of the prompt's texts (the ``reasoning`` mode's tagged/plain choice)."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).digest()[0] % 2


@dataclass
class Generated:
    """A rendered assistant message: content, thinking field (if any), finish reason, tokens."""

    content: str
    reasoning_field: str | None = None
    reasoning: str | None = None
    finish_reason: str = "stop"
    completion_tokens: int = 0

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning_field is not None:
            message[self.reasoning_field] = self.reasoning
        return message


def generate(config: SimulatorConfig, body: ChatRequest, texts: list[str]) -> Generated:
    """The answer to ``body`` under ``config``'s reasoning and thinking settings."""
    parts = simulated_parts(body.messages, getattr(body, "seed", None))
    mode = config.reasoning
    thinking: str | None = None
    field_name: str | None = None
    opener = "<think>"
    answer = parts.answer
    if parts.kind == "reason_distill":
        thinking = parts.thinking
        if mode in REASONING_FIELD_MODES:
            field_name = mode
            if mode == "reasoning_content" or prompt_parity(texts) == 0:
                answer = f"<answer>{answer}</answer>"
        else:
            answer = f"<answer>{answer}</answer>"
            opener = "" if mode == "swallowed" else "<think>"
    elif mode in REASONING_FIELD_MODES:
        thinking, field_name = parts.thinking, mode
    if thinking is not None and config.thinking_tokens:
        thinking = long_thinking(thinking, config.thinking_tokens, parts.topic)

    budget = body.token_budget() if config.thinking_tokens else None
    think_words = thinking.split() if thinking is not None else []
    answer_words = answer.split()
    finish, closed = "stop", True
    if budget is not None and len(think_words) + len(answer_words) > budget:
        finish = "length"
        kept = think_words[:budget]
        closed = len(kept) == len(think_words)
        thinking = " ".join(kept) if thinking is not None else None
        answer = " ".join(answer_words[: max(0, budget - len(think_words))])
    if thinking is not None and field_name is None:  # inline or swallowed: all of it in the content
        content = opener + thinking + (f"</think>\n{answer}" if closed else "")
        out = Generated(content, finish_reason=finish)
    else:
        out = Generated(answer, field_name, thinking, finish)
    out.completion_tokens = count_tokens(config, out)
    return out


def count_tokens(config: SimulatorConfig, out: Generated) -> int:
    """Completion tokens of ``out``: words when ``thinking_tokens`` is set, else the estimate."""
    texts = [out.content] + ([out.reasoning] if out.reasoning else [])
    if config.thinking_tokens:
        return sum(len(t.split()) for t in texts)
    return sum(estimate_tokens(t) for t in texts)


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate: 1.3 tokens per whitespace-separated word."""
    return math.ceil(len(text.split()) * 1.3)


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


def _error(
    status: int, message: str, type_: str, code: str | None, param: str | None = None, *,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``."""
    return JSONResponse(_error_body(message, type_, code, param), status_code=status, headers=headers)


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def format_reset(seconds: float) -> str:
    """A duration in the format of OpenAI's ``x-ratelimit-reset-*`` headers: ``"120ms"``,
    ``"1s"``, ``"17.5s"``, ``"6m0s"``, ``"1h2m3s"``."""
    seconds = max(0.0, seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + f"{round(secs, 3):g}s"


@dataclass
class _Reply:
    """One chat completion's answer: status, JSON body (or raw bytes), extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        """The OpenAI File object."""
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": None, "status_details": None}


@dataclass
class _BatchJob:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    started: float  # time.monotonic() at creation
    lines: list[tuple[str, ChatRequest]]
    errors: list[dict[str, Any]]
    model: str | None
    status: str = "validating"
    done: int = 0
    outputs: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    times: dict[str, int] = field(default_factory=dict)  # in_progress_at, completed_at...
    output_file_id: str | None = None
    error_file_id: str | None = None

    def obj(self) -> dict[str, Any]:
        """The OpenAI Batch object."""
        stamps = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                  "cancelling_at", "cancelled_at")
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status, "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "created_at": self.created_at, "expires_at": self.created_at + 24 * 3600,
            **{name: self.times.get(name) for name in stamps},
            "request_counts": {"total": len(self.lines), "completed": len(self.outputs),
                               "failed": len(self.failures)},
            "metadata": self.metadata,
        }


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a ``multipart/form-data`` body: name -> (filename or None, bytes).
    Raises ValueError when the body is not multipart form data."""
    header = BytesHeaderParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode("latin-1"))
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not boundary:
        raise ValueError("the body is not multipart/form-data")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for chunk in (b"\r\n" + body).split(b"\r\n--" + str(boundary).encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a multipart part has no header")
        part = BytesHeaderParser().parsebytes(head.lstrip(b" \t").removeprefix(b"\r\n") + b"\r\n\r\n")
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), data)
    return fields


class _Simulator:
    """The state behind one app: config, pending faults, counters, files and batches (single
    event loop, no locks)."""

    def __init__(self, config: SimulatorConfig, api_key: str | None) -> None:
        self.config = config
        self.api_key = api_key
        self.faults: list[FaultSpec] = []
        self.stats = SimulatorStats()
        self.files: dict[str, _StoredFile] = {}
        self.batches: dict[str, _BatchJob] = {}
        self._ids = 0
        self._tickets = 0
        self._started: dict[int, float] = {}  # online chat completions in flight: ticket -> start

    async def count_request(self, request: Request) -> None:
        """App-wide dependency: count every routed request by path."""
        self.stats.requests_total += 1
        path = request.scope["path"]
        self.stats.requests_by_path[path] = self.stats.requests_by_path.get(path, 0) + 1

    def denied(self, request: Request) -> JSONResponse | None:
        """A 401 when an API key is configured and the request's bearer token differs."""
        if self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "Incorrect API key provided (simulated).", "invalid_request_error", "invalid_api_key")

    def take_fault(self, prompt: str) -> FaultSpec | None:
        """Consume one use of the first pending fault whose ``match`` occurs in ``prompt``."""
        for spec in self.faults:
            if spec.match is None or spec.match in prompt:
                spec.count -= 1
                if spec.count == 0:
                    self.faults.remove(spec)
                return spec
        return None

    def reset(self) -> None:
        """Zero the counters (``in_flight`` stays: it is a gauge), drop pending faults, files and
        batches. The config stays."""
        self.faults.clear()
        self.files.clear()
        self.batches.clear()
        self.stats = SimulatorStats(in_flight=self.stats.in_flight, max_in_flight=self.stats.in_flight)

    def completion(self, model: str, content: str, prompt_tokens: int, finish_reason: str = "stop", *,
                   generated: Generated | None = None) -> dict:
        """A chat-completion body in the OpenAI shape (``generated``: the message, thinking field
        and token count to send instead of ``content``'s)."""
        self._ids += 1
        if generated is None:
            generated = Generated(content, finish_reason=finish_reason, completion_tokens=estimate_tokens(content))
        completion_tokens = generated.completion_tokens
        return {
            "id": f"chatcmpl-sim-{self._ids}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": SIMULATED_MODEL_MARKER,
            "choices": [
                {
                    "index": 0,
                    "message": generated.message(),
                    "finish_reason": generated.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    # -- online chat completions ------------------------------------------------------------

    async def chat(self, request: Request, body: ChatRequest) -> Response:
        """Handle one chat completion: auth, the in-flight cap, latency, then a fault or the
        simulated answer; the ``x-ratelimit-*`` headers when a cap is set."""
        if denied := self.denied(request):
            return self._with_limits(denied, counted=False)
        cap = self.config.max_in_flight
        if cap is not None and self.stats.in_flight >= cap:
            self.stats.refused_over_cap += 1
            retry = self.config.cap_retry_after
            refusal = _error(
                429, f"Rate limit reached: at most {cap} requests in flight at once (simulated).",
                "rate_limit_exceeded", "rate_limit_exceeded",
                headers={"Retry-After": str(retry)} if retry is not None else None,
            )
            return self._with_limits(refusal, counted=False)
        if body.model not in self.stats.models:
            self.stats.models.append(body.model)
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        self._tickets += 1
        ticket = self._tickets
        self._started[ticket] = time.monotonic()
        try:
            return self._with_limits(await self._chat(request, body), counted=True)
        finally:
            self.stats.in_flight -= 1  # not a saved reference: a reset may have replaced the stats
            self._started.pop(ticket, None)

    async def _chat(self, request: Request, body: ChatRequest) -> Response:
        if refusal := self.unsupported(body):
            return JSONResponse(refusal.body, status_code=refusal.status)
        if self.config.latency:
            jitter = self.config.jitter * random.uniform(-1.0, 1.0)
            await asyncio.sleep(self.config.latency * (1.0 + jitter))
        texts = [m.text() for m in body.messages]
        fault = self.take_fault("\n".join(texts)) if self.faults else None
        if fault is not None:
            self.stats.faults_served[fault.kind] = self.stats.faults_served.get(fault.kind, 0) + 1
            if fault.kind == "hang":
                deadline = time.monotonic() + HANG_SECONDS
                while time.monotonic() < deadline and not await request.is_disconnected():
                    await asyncio.sleep(0.05)
                return _error(504, "Simulated hang ended.", "timeout", None)
        else:
            self.stats.completions_served += 1
        reply = self.reply(body, texts, fault)
        if isinstance(reply.body, bytes):
            media = (reply.headers or {}).get("Content-Type", "application/json")
            return Response(reply.body, status_code=reply.status, media_type=media)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers or None)

    def _with_limits(self, response: Response, *, counted: bool) -> Response:
        """Add the ``x-ratelimit-*`` headers of the in-flight cap (if one is set). ``counted``:
        the request was in flight, so its slot is free again once this answer is sent."""
        cap = self.config.max_in_flight
        if cap is None:
            return response
        busy = self.stats.in_flight - (1 if counted else 0)
        remaining = max(0, cap - busy)
        reset = 0.0
        if remaining == 0 and self._started:
            longest = self.config.latency * (1.0 + self.config.jitter)
            reset = max(0.0, longest - (time.monotonic() - min(self._started.values())))
        response.headers["x-ratelimit-limit-requests"] = str(cap)
        response.headers["x-ratelimit-remaining-requests"] = str(remaining)
        response.headers["x-ratelimit-reset-requests"] = format_reset(reset)
        return response

    # -- answers, shared by online requests and batch lines ------------------------------------

    def unsupported(self, body: ChatRequest) -> _Reply | None:
        """A 400 for what this server cannot do (``response_format`` json_schema when
        ``structured_output="unsupported"``)."""
        fmt = body.response_format
        if self.config.structured_output == "unsupported" and isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return _Reply(400, _error_body(
                "response_format json_schema is not supported by this model (simulated): the server was "
                "started without guided decoding", "invalid_request_error", "unsupported_parameter",
                "response_format"))
        return None

    def reply(self, body: ChatRequest, texts: list[str], fault: FaultSpec | None) -> _Reply:
        """The answer to ``body``, with ``fault`` applied (``hang`` excepted: the caller's)."""
        prompt_tokens = estimate_tokens(" ".join(texts))
        kind = fault.kind if fault is not None else None
        if kind == "rate_limit":
            retry_after = DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after
            header = f"{retry_after:g}" if fault.retry_after_header is None else fault.retry_after_header
            return _Reply(429, _error_body("Rate limit reached (simulated).", "requests", "rate_limit_exceeded"),
                          {"Retry-After": header})
        if kind == "server_error":
            return _Reply(500, _error_body("The server had an error (simulated).", "server_error", None))
        if kind == "unauthorized":
            return _Reply(401, _error_body("Incorrect API key provided (simulated).", "invalid_request_error",
                                           "invalid_api_key"))
        if kind == "odd_shape":
            return _Reply(200, {"id": "chatcmpl-sim-odd", "object": "chat.completion", "model": body.model,
                                "choices": ["[simulated] not a choice object"]})
        if kind == "bad_body":
            return _Reply(200, b"<html><body>502 Bad Gateway (simulated)</body></html>")
        if kind == "html_page":
            return _Reply(200, b"<!DOCTYPE html><html><head><title>Sign in (simulated proxy)</title></head>"
                               b"<body><form action=/login>Please sign in to continue</form></body></html>",
                          {"Content-Type": "text/html; charset=utf-8"})
        out = generate(self.config, body, texts)
        if kind is not None and kind != "hang":
            if kind == "malformed_json":  # an unterminated prefix: never valid JSON
                out.content = out.content[: len(out.content) // 2]
            elif kind == "length":  # the first third of the words, as if max_tokens ran out
                words = out.content.split(" ")
                out.content, out.finish_reason = " ".join(words[: max(1, len(words) // 3)]), "length"
            else:  # empty
                out = Generated("", finish_reason="stop")
            out.completion_tokens = count_tokens(self.config, out)
        return _Reply(200, self.completion(body.model, out.content, prompt_tokens, generated=out))

    # -- Batch API -------------------------------------------------------------------------------

    def store_file(self, filename: str, purpose: str, data: bytes) -> _StoredFile:
        stored = _StoredFile(_new_id("file-"), filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        return stored

    def create_batch(self, spec: BatchCreate) -> _BatchJob | JSONResponse:
        """A new batch over ``spec.input_file_id`` (its lines validated now; answered as polled)."""
        stored = self.files.get(spec.input_file_id)
        if stored is None:
            return _error(400, f"Invalid 'input_file_id': no such file {spec.input_file_id!r} (simulated).",
                          "invalid_request_error", "invalid_value", "input_file_id")
        if stored.purpose != "batch":
            return _error(400, f"File {stored.id!r} has purpose {stored.purpose!r}; a batch needs purpose 'batch'.",
                          "invalid_request_error", "invalid_value", "input_file_id")
        if spec.endpoint != BATCH_ENDPOINT:
            return _error(400, f"Invalid 'endpoint': {spec.endpoint!r}; this simulator batches only {BATCH_ENDPOINT}.",
                          "invalid_request_error", "invalid_value", "endpoint")
        if spec.completion_window != "24h":
            return _error(400, f"Invalid 'completion_window': {spec.completion_window!r}; supported: '24h'.",
                          "invalid_request_error", "invalid_value", "completion_window")
        lines, errors, model = self._validate_lines(stored.data, spec.endpoint)
        job = _BatchJob(
            id=_new_id("batch_"), input_file_id=stored.id, endpoint=spec.endpoint,
            completion_window=spec.completion_window, metadata=spec.metadata, created_at=int(time.time()),
            started=time.monotonic(), lines=[] if errors else lines,
            errors=errors, model=model,
        )
        self.batches[job.id] = job
        self.stats.batches_created += 1
        if model is not None and model not in self.stats.models:
            self.stats.models.append(model)
        return job

    @staticmethod
    def _validate_lines(data: bytes, endpoint: str) -> tuple[list[tuple[str, ChatRequest]], list[dict], str | None]:
        """The input file's requests, or the errors that fail the batch (as OpenAI checks them)."""
        errors: list[dict] = []

        def bad(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
            errors.append({"code": code, "message": message, "param": param, "line": line})

        if len(data) > BATCH_MAX_BYTES:
            bad("file_too_large", f"The input file has {len(data)} bytes; the limit is {BATCH_MAX_BYTES}.")
            return [], errors, None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            bad("invalid_file_format", "The input file is not UTF-8 text.")
            return [], errors, None
        lines: list[tuple[str, ChatRequest]] = []
        seen: set[str] = set()
        model: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except json.JSONDecodeError:
                bad("invalid_json_line", f"Line {number} is not valid JSON.", number)
                continue
            if not isinstance(item, dict):
                bad("invalid_json_line", f"Line {number} is not a JSON object.", number)
                continue
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                bad("missing_required_parameter", f"Line {number} has no 'custom_id'.", number, "custom_id")
                continue
            if custom_id in seen:
                bad("duplicate_custom_id", f"The custom_id {custom_id!r} of line {number} is not unique.", number,
                    "custom_id")
                continue
            seen.add(custom_id)
            if item.get("method") != "POST":
                bad("invalid_method", f"Line {number}: 'method' must be 'POST'.", number, "method")
                continue
            if item.get("url") != endpoint:
                bad("invalid_url", f"Line {number}: 'url' {item.get('url')!r} is not the batch's endpoint {endpoint}.",
                    number, "url")
                continue
            body = item.get("body")
            if not isinstance(body, dict):
                bad("missing_required_parameter", f"Line {number} has no 'body' object.", number, "body")
                continue
            try:
                request = ChatRequest.model_validate(body)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                bad("invalid_request", f"Line {number}: invalid body: {problems}", number, "body")
                continue
            if model is None:
                model = request.model
            elif request.model != model:
                bad("mismatched_model", f"Line {number} asks for model {request.model!r}; the batch uses {model!r}: "
                    "one model per batch.", number, "body.model")
                continue
            lines.append((custom_id, request))
        if not lines and not errors:
            bad("empty_file", "The input file has no requests.")
        if len(lines) > BATCH_MAX_REQUESTS:
            bad("too_many_requests", f"The input file has {len(lines)} requests; the limit is {BATCH_MAX_REQUESTS}.")
        return lines, errors, model

    def advance(self, job: _BatchJob) -> None:
        """Bring ``job`` up to now: answer the lines due (evenly over its delay), then finish it."""
        if job.status in _BATCH_TERMINAL:
            return
        now = int(time.time())
        if job.errors:
            job.status = "failed"
            job.times["failed_at"] = now
            return
        if job.status == "cancelling":
            self._finish(job, "cancelled")
            return
        if job.status == "validating":
            job.status = "in_progress"
            job.times["in_progress_at"] = now
        elapsed, delay = time.monotonic() - job.started, self.config.batch_delay
        total = len(job.lines)
        due = total if elapsed >= delay else min(total, int(total * elapsed / delay))
        while job.done < due:
            self._answer_line(job, *job.lines[job.done])
            job.done += 1
        if job.done == total and elapsed >= delay:
            self._finish(job, "completed")

    def advance_all(self) -> None:
        for job in self.batches.values():
            self.advance(job)

    def cancel(self, job: _BatchJob) -> JSONResponse | None:
        self.advance(job)
        if job.status in _BATCH_TERMINAL:
            return _error(409, f"Cannot cancel a batch with status {job.status!r}.", "invalid_request_error", None)
        job.status = "cancelling"
        job.times["cancelling_at"] = int(time.time())
        return None

    def _answer_line(self, job: _BatchJob, custom_id: str, body: ChatRequest) -> None:
        texts = [m.text() for m in body.messages]
        line: dict[str, Any] = {"id": _new_id("batch_req_"), "custom_id": custom_id, "response": None, "error": None}
        reply = self.unsupported(body)
        if reply is None:
            fault = self.take_fault("\n".join(texts)) if self.faults else None
            if fault is not None:
                self.stats.faults_served[fault.kind] = self.stats.faults_served.get(fault.kind, 0) + 1
            if fault is not None and fault.kind == "hang":
                line["error"] = {"code": "request_timeout", "message": "The request timed out (simulated hang)."}
            elif fault is not None and fault.kind == "bad_body":
                line["error"] = {"code": "server_error",
                                 "message": "The model server's answer was not JSON (simulated bad_body)."}
            else:
                reply = self.reply(body, texts, fault)
                if fault is None:
                    self.stats.batch_completions_served += 1
        if reply is not None:
            line["response"] = {"status_code": reply.status, "request_id": _new_id("req_"), "body": reply.body}
        if line["error"] is None and reply is not None and reply.status == 200:
            job.outputs.append(line)
        else:
            job.failures.append(line)
            self.stats.batch_requests_failed += 1

    def _finish(self, job: _BatchJob, status: str) -> None:
        now = int(time.time())
        job.times["finalizing_at"] = now
        for lines, attr, name in ((job.outputs, "output_file_id", "output"), (job.failures, "error_file_id", "error")):
            if lines:
                data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
                setattr(job, attr, self.store_file(f"{job.id}_{name}.jsonl", "batch_output", data).id)
        job.status = status
        job.times[f"{status}_at"] = now


def _not_found(kind: str, ident: str) -> JSONResponse:
    return _error(404, f"No such {kind} object: {ident!r} (simulated).", "invalid_request_error", None, "id")


def create_app(latency: float = 0.0, api_key: str | None = None, jitter: float = 0.0, *,
               config: SimulatorConfig | None = None) -> FastAPI:
    """The simulator's FastAPI app; its state is ``app.state.simulator``. ``config`` (all
    settings) wins over ``latency``/``jitter``."""
    sim = _Simulator(config or SimulatorConfig(latency=latency, jitter=jitter), api_key)
    app = FastAPI(title="RARE LLM simulator", dependencies=[Depends(sim.count_request)])
    app.state.simulator = sim

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(400, f"Invalid request (simulated): {problems}", "invalid_request_error", None)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest) -> Response:
        return await sim.chat(request, body)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        if denied := sim.denied(request):
            return denied
        ids = [SIMULATED_MODEL_MARKER] + [m for m in sim.stats.models if m != SIMULATED_MODEL_MARKER]
        data = [{"id": i, "object": "model", "created": 0, "owned_by": SIMULATED_MODEL_MARKER} for i in ids]
        return JSONResponse({"object": "list", "data": data})

    # -- Batch API ----------------------------------------------------------------------------

    @app.post("/v1/files")
    async def upload_file(request: Request) -> Response:
        if denied := sim.denied(request):
            return denied
        try:
            fields = parse_multipart(request.headers.get("content-type", ""), await request.body())
        except ValueError as exc:
            return _error(400, f"Invalid upload (simulated): {exc}", "invalid_request_error", None)
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
        if purpose not in FILE_PURPOSES:
            return _error(400, f"Invalid 'purpose': {purpose!r}; one of {sorted(FILE_PURPOSES)}.",
                          "invalid_request_error", "invalid_value", "purpose")
        if "file" not in fields:
            return _error(400, "Missing required parameter: 'file'.", "invalid_request_error",
                          "missing_required_parameter", "file")
        filename, data = fields["file"]
        sim.stats.files_uploaded += 1
        return JSONResponse(sim.store_file(filename or "upload", purpose, data).obj())

    @app.get("/v1/files/{file_id}")
    async def get_file(request: Request, file_id: str) -> Response:
        if denied := sim.denied(request):
            return denied
        stored = sim.files.get(file_id)
        return JSONResponse(stored.obj()) if stored else _not_found("File", file_id)

    @app.get("/v1/files/{file_id}/content")
    async def get_file_content(request: Request, file_id: str) -> Response:
        if denied := sim.denied(request):
            return denied
        stored = sim.files.get(file_id)
        return Response(stored.data, media_type="application/octet-stream") if stored else _not_found("File", file_id)

    @app.post("/v1/batches")
    async def create_batch(request: Request, spec: BatchCreate) -> Response:
        if denied := sim.denied(request):
            return denied
        job = sim.create_batch(spec)
        return job if isinstance(job, JSONResponse) else JSONResponse(job.obj())

    @app.get("/v1/batches")
    async def list_batches(request: Request, limit: int = 20) -> Response:
        if denied := sim.denied(request):
            return denied
        sim.advance_all()
        data = [job.obj() for job in reversed(list(sim.batches.values()))][: max(1, min(limit, 100))]
        return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None, "has_more": len(sim.batches) > len(data)})

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(request: Request, batch_id: str) -> Response:
        if denied := sim.denied(request):
            return denied
        job = sim.batches.get(batch_id)
        if job is None:
            return _not_found("Batch", batch_id)
        sim.advance(job)
        return JSONResponse(job.obj())

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> Response:
        if denied := sim.denied(request):
            return denied
        job = sim.batches.get(batch_id)
        if job is None:
            return _not_found("Batch", batch_id)
        return sim.cancel(job) or JSONResponse(job.obj())

    # -- admin --------------------------------------------------------------------------------

    @app.post("/_sim/faults")
    async def add_faults(specs: list[FaultSpec]) -> list[FaultSpec]:
        """Queue fault specs after those already pending; returns all pending specs."""
        sim.faults.extend(spec.model_copy() for spec in specs)
        return sim.faults

    @app.delete("/_sim/faults")
    async def clear_faults() -> list[FaultSpec]:
        sim.faults.clear()
        return sim.faults

    @app.get("/_sim/stats")
    async def get_stats() -> SimulatorStats:
        sim.advance_all()  # batch lines due by now are counted
        return sim.stats

    @app.post("/_sim/reset")
    async def reset() -> SimulatorStats:
        sim.reset()
        return sim.stats

    @app.get("/_sim/config")
    async def get_config() -> SimulatorConfig:
        return sim.config

    @app.post("/_sim/config")
    async def set_config(config: SimulatorConfig) -> SimulatorConfig:
        sim.config = config
        return sim.config

    return app


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints the READY line once its socket accepts connections."""

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"{READY_PREFIX} http://{self.config.host}:{port}/v1", flush=True)


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    latency: float = 0.0,
    api_key: str | None = None,
    *,
    jitter: float = 0.0,
    stop_on_stdin_eof: bool = False,
    config: SimulatorConfig | None = None,
) -> None:
    """Run the simulator in the foreground until SIGINT/SIGTERM (port 0 picks a free port).

    ``config`` (all settings) wins over ``latency``/``jitter``. With ``stop_on_stdin_eof`` it
    also stops when its stdin closes, i.e. when the parent process that holds the other end
    dies, so a crashed parent leaves no orphan behind.
    """
    uv_config = uvicorn.Config(
        create_app(latency=latency, api_key=api_key, jitter=jitter, config=config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    server = _AnnouncingServer(uv_config)
    if stop_on_stdin_eof:

        def stop_at_eof() -> None:
            sys.stdin.buffer.read()
            server.should_exit = True

        threading.Thread(target=stop_at_eof, name="stdin-eof-watch", daemon=True).start()
    server.run()


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m rare_core.llm.simulator --host H --port P --latency S [--api-key K]
    [--config JSON]`` (``--config``: any :class:`SimulatorConfig` settings as a JSON object;
    ``--latency``/``--jitter`` win over it when given)."""
    parser = argparse.ArgumentParser(prog="python -m rare_core.llm.simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=None, help="seconds per chat completion")
    parser.add_argument("--jitter", type=float, default=None, help="latency jitter fraction in [0, 1]")
    parser.add_argument("--config", default=None, help="SimulatorConfig settings as a JSON object")
    parser.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), help=f"required bearer token (default: ${API_KEY_ENV})"
    )
    parser.add_argument("--stop-on-stdin-eof", action="store_true", help="exit when stdin closes")
    args = parser.parse_args(argv)
    settings = json.loads(args.config) if args.config else {}
    settings.update({k: v for k, v in (("latency", args.latency), ("jitter", args.jitter)) if v is not None})
    config = SimulatorConfig.model_validate(settings)
    serve(args.host, args.port, api_key=args.api_key, stop_on_stdin_eof=args.stop_on_stdin_eof, config=config)


# --------------------------------------------------------------------------------------------
# Subprocess handle
# --------------------------------------------------------------------------------------------


class SimulatorProcess:
    """The simulator in a child process (own CPU and GIL), with sync admin helpers.

    The keyword settings are :class:`SimulatorConfig`'s (defaults: the plain behaviour);
    :meth:`configure` and :meth:`set_latency` change them while it runs.

    >>> with SimulatorProcess(latency=0.0, reasoning="reasoning_content") as sim:
    ...     client = openai.OpenAI(base_url=sim.base_url, api_key="x")
    """

    def __init__(
        self,
        latency: float = 0.0,
        api_key: str | None = None,
        *,
        jitter: float = 0.0,
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        reasoning: ReasoningMode = "inline",
        thinking_tokens: int = 0,
        max_in_flight: int | None = None,
        cap_retry_after: int | None = 1,
        structured_output: Literal["supported", "unsupported"] = "supported",
        batch_delay: float = 0.0,
    ) -> None:
        self.latency, self.api_key, self.jitter = latency, api_key, jitter
        self.host, self.startup_timeout = host, startup_timeout
        self.settings = SimulatorConfig(
            latency=latency, jitter=jitter, reasoning=reasoning, thinking_tokens=thinking_tokens,
            max_in_flight=max_in_flight, cap_retry_after=cap_retry_after, structured_output=structured_output,
            batch_delay=batch_delay,
        )
        """The settings it starts with; :meth:`configure` starts from them."""
        self._proc: subprocess.Popen | None = None
        self._admin: httpx.Client | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the ``base_url`` for an OpenAI client."""
        if self._base_url is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._base_url

    def start(self) -> SimulatorProcess:
        """Start the child and wait for its READY line; ``RuntimeError`` with its stderr on failure."""
        if self._proc is not None:
            return self
        project_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [project_root, os.environ.get("PYTHONPATH")])))
        env.pop(API_KEY_ENV, None)
        if self.api_key is not None:
            env[API_KEY_ENV] = self.api_key  # not on the command line, where `ps` would show it
        cmd = [
            sys.executable, "-m", "rare_core.llm.simulator", "--host", self.host, "--port", "0",
            "--latency", str(self.latency), "--jitter", str(self.jitter), "--stop-on-stdin-eof",
            "--config", self.settings.model_dump_json(),
        ]
        stderr = tempfile.TemporaryFile()
        self._proc = proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
            start_new_session=True,  # a Ctrl-C to the terminal reaches us, not the server we stop ourselves
        )
        atexit.register(self.stop)
        ready = threading.Event()
        url: list[str] = []

        def read_stdout() -> None:  # keeps draining stdout after READY so the child never blocks
            with proc.stdout:
                for line in proc.stdout:
                    if not ready.is_set() and line.startswith(READY_PREFIX):
                        url.append(line.split()[1])
                        ready.set()

        threading.Thread(target=read_stdout, name="simulator-stdout", daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while not ready.wait(0.02):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                stderr.seek(0)
                detail = stderr.read().decode("utf-8", "replace").strip() or "(no stderr)"
                raise RuntimeError(
                    f"LLM simulator did not become ready within {self.startup_timeout:g} s "
                    f"(exit code {proc.returncode}); stderr:\n{detail}"
                )
        stderr.close()
        self._base_url = url[0]
        self._admin = httpx.Client(base_url=self._base_url.removesuffix("/v1"), timeout=10.0)
        return self

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 5 s) and wait for it. Idempotent."""
        proc, self._proc, self._base_url = self._proc, None, None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if proc is None:
            return
        atexit.unregister(self.stop)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdin.close()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, method: str, path: str, json_body: Any = None) -> Any:
        if self._admin is None:
            raise RuntimeError("the simulator is not running; call start() first")
        response = self._admin.request(method, path, json=json_body)
        response.raise_for_status()
        return response.json()

    def stats(self) -> SimulatorStats:
        """The simulator's counters (this call counts itself under ``/_sim/stats``)."""
        return SimulatorStats.model_validate(self._call("GET", "/_sim/stats"))

    def inject(self, faults: Iterable[FaultSpec]) -> list[FaultSpec]:
        """Queue faults after those pending; returns all pending faults."""
        specs = [f.model_dump(exclude_none=True) for f in faults]
        return [FaultSpec.model_validate(f) for f in self._call("POST", "/_sim/faults", specs)]

    def clear_faults(self) -> None:
        """Drop all pending faults."""
        self._call("DELETE", "/_sim/faults")

    def reset(self) -> None:
        """Zero the counters and drop pending faults."""
        self._call("POST", "/_sim/reset")

    def set_latency(self, latency: float, jitter: float = 0.0) -> None:
        """Change the latency of subsequent chat completions (the other settings go back to the
        constructor's, as with :meth:`configure`)."""
        self.configure(latency=latency, jitter=jitter)

    def configure(self, **settings: Any) -> SimulatorConfig:
        """Set :class:`SimulatorConfig` settings for what follows. Each call starts from the
        constructor's settings: whatever it does not name goes back to them (``configure()``
        restores them all). Returns the settings now in effect."""
        config = SimulatorConfig.model_validate({**self.settings.model_dump(), **settings})
        return SimulatorConfig.model_validate(self._call("POST", "/_sim/config", config.model_dump()))

    def config(self) -> SimulatorConfig:
        """The settings in effect."""
        return SimulatorConfig.model_validate(self._call("GET", "/_sim/config"))


if __name__ == "__main__":
    main()
