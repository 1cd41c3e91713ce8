"""An OpenAI-compatible LLM simulator: deterministic, prompt-aware answers over real HTTP.

Used by the test-suite (through the real ``openai`` client), as the offline dry-run backend of
the demo, and by the throughput benchmark. Nothing here calls a real model.

* ``POST /v1/chat/completions`` and ``GET /v1/models`` in the OpenAI response shapes. Answers are
  built from the prompt's own words in the formats of :mod:`rare_core.prompts.doc2query` (JSON
  questions) and :mod:`rare_core.prompts.reason_distill` (``<think>``/``<answer>``); anything else
  gets a short echo. Every answer is marked ``[simulated]`` and every completion carries
  ``"system_fingerprint": SIMULATED_MODEL_MARKER``.
* Latency (with optional jitter) is applied with ``await asyncio.sleep``: requests never block
  one another.
* Admin endpoints: ``POST/DELETE /_sim/faults`` (fault injection, see :class:`FaultSpec`),
  ``GET /_sim/stats`` (:class:`SimulatorStats`), ``POST /_sim/reset``, ``POST /_sim/config``.

Run it with ``python -m rare_core.llm.simulator --port 0`` (prints
``RARE_SIMULATOR_READY http://127.0.0.1:PORT/v1`` once it accepts connections), with
:func:`serve`, or from Python as a subprocess with :class:`SimulatorProcess`.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
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
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, computed_field

from rare_core.llm.client import SIMULATED_FINGERPRINT
from rare_core.prompts.doc2query import DOC_CLOSE, DOC_OPEN

SIMULATED_MODEL_MARKER = SIMULATED_FINGERPRINT  # the client marks answers carrying it as simulated
"""The ``system_fingerprint`` of every simulated completion (and the simulator's own model id)."""

READY_PREFIX = "RARE_SIMULATOR_READY"
API_KEY_ENV = "RARE_SIMULATOR_API_KEY"
HANG_SECONDS = 600.0
DEFAULT_RETRY_AFTER = 1.0

FaultKind = Literal[
    "rate_limit", "server_error", "hang", "malformed_json", "bad_body", "length", "empty", "unauthorized",
    "odd_shape",
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
    completion: ``choices`` holds strings). ``retry_after_header`` sends that raw text as the
    429's ``Retry-After`` instead (e.g. an unparseable ``"soon"``).
    """

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    count: int = Field(default=1, ge=1)
    match: str | None = None
    retry_after: float | None = Field(default=None, ge=0)
    retry_after_header: str | None = None


class SimulatorConfig(BaseModel):
    """Latency of every chat completion: ``latency * (1 ± jitter)`` seconds, uniformly drawn."""

    latency: float = Field(default=0.0, ge=0)
    jitter: float = Field(default=0.0, ge=0, le=1)


class SimulatorStats(BaseModel):
    """Counters since start or the last reset.

    ``requests_total``/``requests_by_path`` count every routed request, admin calls included
    (a stats call counts itself). ``completions_served`` counts normal answers only; faults are
    counted in ``faults_served`` by kind. ``in_flight`` is the number of chat completions being
    handled now, ``max_in_flight`` the most seen at once.
    """

    requests_total: int = 0
    requests_by_path: dict[str, int] = Field(default_factory=dict)
    completions_served: int = 0
    faults_served: dict[str, int] = Field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
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
            f"{_clip(sentences[i % len(sentences)], 40)}"
        )
        question = _QUESTION_TEMPLATES[i % len(_QUESTION_TEMPLATES)].format(a=a, b=b, c=c)
        items.append({"scenario": scenario, "question": question})
    return json.dumps(items[0] if num_questions == 1 else {"questions": items})


def reason_distill_answer(question: str, documents: list[str]) -> str:
    """The ``<think>``/``<answer>`` reply to a ReasonDistill prompt.

    Judges each document by the content words it shares with ``question``; the answer quotes
    the best-sharing sentence of the document that shares the most (the first one on ties).
    """
    asked = set(content_words(question))
    if not documents:
        return (
            "<think>[simulated reasoning] No documents were provided, so nothing can ground an answer."
            "</think>\n<answer>[simulated] The documents give no basis for an answer.</answer>"
        )
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
    steps.append(f"Document {best + 1} overlaps most with the question, so the answer rests on it.")
    sentences = _sentences(documents[best]) or [documents[best]]
    quote = max(sentences, key=lambda s: len(asked.intersection(content_words(s))))
    return (
        f"<think>[simulated reasoning] {' '.join(steps)}</think>\n"
        f'<answer>[simulated] According to Document {best + 1}: "{_clip(quote, 30)}"</answer>'
    )


def simulated_answer(messages: list[ChatMessage]) -> str:
    """The deterministic answer to ``messages``, in the format their prompt asks for."""
    # The newest user message that carries a known prompt: a re-ask appends a short
    # correction after the original prompt, and must be answered like the original.
    user_turns = [m.text() for m in reversed(messages) if m.role == "user"]
    for prompt in user_turns:
        num = _NUM_QUESTIONS.search(prompt)
        if num and DOC_OPEN in prompt and DOC_CLOSE in prompt:
            document = prompt[prompt.index(DOC_OPEN) + len(DOC_OPEN) : prompt.rindex(DOC_CLOSE)]
            return doc2query_answer(document.strip(), int(num.group(1)))
        question, docs = _QUESTION.search(prompt), _DOCUMENTS.search(prompt)
        if question and docs:
            parts = _DOC_HEADER.split(docs.group(1))[1:]  # [number, text, number, text, ...]
            return reason_distill_answer(question.group(1), [t.strip() for t in parts[1::2]])
    prompt = user_turns[0] if user_turns else ""
    return f"[simulated] echo: {_clip(prompt, 24) or '(empty prompt)'}"


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate: 1.3 tokens per whitespace-separated word."""
    return math.ceil(len(text.split()) * 1.3)


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


def _error(
    status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class _Simulator:
    """The state behind one app: config, pending faults and counters (single event loop, no locks)."""

    def __init__(self, config: SimulatorConfig, api_key: str | None) -> None:
        self.config = config
        self.api_key = api_key
        self.faults: list[FaultSpec] = []
        self.stats = SimulatorStats()
        self._ids = 0

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
        """Zero the counters (``in_flight`` stays: it is a gauge) and drop pending faults."""
        self.faults.clear()
        self.stats = SimulatorStats(in_flight=self.stats.in_flight, max_in_flight=self.stats.in_flight)

    def completion(self, model: str, content: str, prompt_tokens: int, finish_reason: str = "stop") -> dict:
        """A chat-completion body in the OpenAI shape."""
        self._ids += 1
        completion_tokens = estimate_tokens(content)
        return {
            "id": f"chatcmpl-sim-{self._ids}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": SIMULATED_MODEL_MARKER,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def chat(self, request: Request, body: ChatRequest) -> Response:
        """Handle one chat completion: auth, latency, then a fault or the simulated answer."""
        if denied := self.denied(request):
            return denied
        if body.model not in self.stats.models:
            self.stats.models.append(body.model)
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            if self.config.latency:
                jitter = self.config.jitter * random.uniform(-1.0, 1.0)
                await asyncio.sleep(self.config.latency * (1.0 + jitter))
            texts = [m.text() for m in body.messages]
            fault = self.take_fault("\n".join(texts)) if self.faults else None
            if fault is not None:
                self.stats.faults_served[fault.kind] = self.stats.faults_served.get(fault.kind, 0) + 1
                return await self._fault(fault, request, body, texts)
            answer = simulated_answer(body.messages)
            self.stats.completions_served += 1
            return JSONResponse(self.completion(body.model, answer, estimate_tokens(" ".join(texts))))
        finally:
            self.stats.in_flight -= 1  # not a saved reference: a reset may have replaced the stats

    async def _fault(self, fault: FaultSpec, request: Request, body: ChatRequest, texts: list[str]) -> Response:
        kind = fault.kind
        if kind == "rate_limit":
            retry_after = DEFAULT_RETRY_AFTER if fault.retry_after is None else fault.retry_after
            header = f"{retry_after:g}" if fault.retry_after_header is None else fault.retry_after_header
            return _error(
                429, "Rate limit reached (simulated).", "requests", "rate_limit_exceeded",
                headers={"Retry-After": header},
            )
        if kind == "server_error":
            return _error(500, "The server had an error (simulated).", "server_error", None)
        if kind == "unauthorized":
            return _error(401, "Incorrect API key provided (simulated).", "invalid_request_error", "invalid_api_key")
        if kind == "odd_shape":
            return JSONResponse({"id": "chatcmpl-sim-odd", "object": "chat.completion", "model": body.model,
                                 "choices": ["[simulated] not a choice object"]})
        if kind == "bad_body":
            return Response(b"<html><body>502 Bad Gateway (simulated)</body></html>", media_type="application/json")
        if kind == "hang":
            deadline = time.monotonic() + HANG_SECONDS
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return _error(504, "Simulated hang ended.", "timeout", None)
        answer, finish_reason = simulated_answer(body.messages), "stop"
        if kind == "malformed_json":  # an unterminated prefix: never valid JSON
            answer = answer[: len(answer) // 2]
        elif kind == "length":  # the first third of the words, as if max_tokens ran out
            words = answer.split(" ")
            answer, finish_reason = " ".join(words[: max(1, len(words) // 3)]), "length"
        else:  # empty
            answer = ""
        return JSONResponse(self.completion(body.model, answer, estimate_tokens(" ".join(texts)), finish_reason))


def create_app(latency: float = 0.0, api_key: str | None = None, jitter: float = 0.0) -> FastAPI:
    """The simulator's FastAPI app; its state is ``app.state.simulator``."""
    sim = _Simulator(SimulatorConfig(latency=latency, jitter=jitter), api_key)
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
        return sim.stats

    @app.post("/_sim/reset")
    async def reset() -> SimulatorStats:
        sim.reset()
        return sim.stats

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
) -> None:
    """Run the simulator in the foreground until SIGINT/SIGTERM (port 0 picks a free port).

    With ``stop_on_stdin_eof`` it also stops when its stdin closes, i.e. when the parent process
    that holds the other end dies, so a crashed parent leaves no orphan behind.
    """
    config = uvicorn.Config(
        create_app(latency=latency, api_key=api_key, jitter=jitter),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    server = _AnnouncingServer(config)
    if stop_on_stdin_eof:

        def stop_at_eof() -> None:
            sys.stdin.buffer.read()
            server.should_exit = True

        threading.Thread(target=stop_at_eof, name="stdin-eof-watch", daemon=True).start()
    server.run()


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m rare_core.llm.simulator --host H --port P --latency S [--api-key K]``."""
    parser = argparse.ArgumentParser(prog="python -m rare_core.llm.simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat completion")
    parser.add_argument("--jitter", type=float, default=0.0, help="latency jitter fraction in [0, 1]")
    parser.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), help=f"required bearer token (default: ${API_KEY_ENV})"
    )
    parser.add_argument("--stop-on-stdin-eof", action="store_true", help="exit when stdin closes")
    args = parser.parse_args(argv)
    serve(
        args.host, args.port, args.latency, args.api_key, jitter=args.jitter, stop_on_stdin_eof=args.stop_on_stdin_eof
    )


# --------------------------------------------------------------------------------------------
# Subprocess handle
# --------------------------------------------------------------------------------------------


class SimulatorProcess:
    """The simulator in a child process (own CPU and GIL), with sync admin helpers.

    >>> with SimulatorProcess(latency=0.0) as sim:
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
    ) -> None:
        self.latency, self.api_key, self.jitter = latency, api_key, jitter
        self.host, self.startup_timeout = host, startup_timeout
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
        ]
        stderr = tempfile.TemporaryFile()
        self._proc = proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True
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
        """Change the latency of subsequent chat completions."""
        self._call("POST", "/_sim/config", SimulatorConfig(latency=latency, jitter=jitter).model_dump())


if __name__ == "__main__":
    main()
