"""The state behind one simulator and how it answers a chat request, online or as a batch line,
without the web framework (:mod:`rare_sim.app` serves it).

In: the :class:`~rare_sim.models.SimulatorConfig` in effect, the API key it requires (or None),
chat requests. Out: :class:`Simulator`, whose :meth:`~Simulator.reply` is the answer or the
injected fault, :meth:`~Simulator.answer_line` a batch's output line, :meth:`~Simulator.enter` /
:meth:`~Simulator.leave` / :meth:`~Simulator.limit_headers` the in-flight cap and its
``x-ratelimit-*`` headers; its counters (``stats``), pending faults (``faults``) and files and
batches (``store``).
"""

from __future__ import annotations

import time
from typing import Any

from rare_sim.batch_api import BatchJob, BatchStore, new_id
from rare_sim.completions import Reply, completion_body, estimate_tokens, generate, unsupported
from rare_sim.faults import Faults, FaultSpec, refusal, spoil
from rare_sim.models import ChatRequest, SimulatorConfig, SimulatorStats


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


class Simulator:
    """Config, pending faults, counters, files and batches of one simulator (single event loop,
    no locks)."""

    def __init__(self, config: SimulatorConfig, api_key: str | None) -> None:
        self.config = config
        self.api_key = api_key
        self.faults = Faults()
        self.stats = SimulatorStats()
        self.store = BatchStore()
        self._ids = 0
        self._tickets = 0
        self._started: dict[int, float] = {}  # online chat completions in flight: ticket -> start

    def reset(self) -> None:
        """Zero the counters (``in_flight`` stays: it is a gauge), drop pending faults, files and
        batches. The config stays."""
        self.faults.clear()
        self.store.clear()
        self.stats = SimulatorStats(in_flight=self.stats.in_flight, max_in_flight=self.stats.in_flight)

    def take_fault(self, texts: list[str]) -> FaultSpec | None:
        """The pending fault this request gets (counted as served), or None."""
        fault = self.faults.take("\n".join(texts)) if self.faults.pending else None
        if fault is not None:
            self.stats.faults_served[fault.kind] = self.stats.faults_served.get(fault.kind, 0) + 1
        return fault

    # -- the in-flight cap of online chat completions ------------------------------------------

    def over_cap(self) -> bool:
        """Whether a chat completion arriving now is refused by ``max_in_flight`` (counted so)."""
        cap = self.config.max_in_flight
        if cap is not None and self.stats.in_flight >= cap:
            self.stats.refused_over_cap += 1
            return True
        return False

    def enter(self, body: ChatRequest) -> int:
        """Count ``body`` in flight from now; returns its ticket for :meth:`leave`."""
        self.stats.saw_model(body.model)
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        self._tickets += 1
        self._started[self._tickets] = time.monotonic()
        return self._tickets

    def leave(self, ticket: int) -> None:
        self.stats.in_flight -= 1  # not a saved reference: a reset may have replaced the stats
        self._started.pop(ticket, None)

    def limit_headers(self, *, counted: bool) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers of the in-flight cap (none without a cap). ``counted``:
        the request was in flight, so its slot is free again once this answer is sent."""
        cap = self.config.max_in_flight
        if cap is None:
            return {}
        busy = self.stats.in_flight - (1 if counted else 0)
        remaining = max(0, cap - busy)
        reset = 0.0
        if remaining == 0 and self._started:
            longest = self.config.latency * (1.0 + self.config.jitter)
            reset = max(0.0, longest - (time.monotonic() - min(self._started.values())))
        return {"x-ratelimit-limit-requests": str(cap), "x-ratelimit-remaining-requests": str(remaining),
                "x-ratelimit-reset-requests": format_reset(reset)}

    # -- answers, shared by online requests and batch lines ------------------------------------

    def unsupported(self, body: ChatRequest) -> Reply | None:
        return unsupported(self.config, body)

    def reply(self, body: ChatRequest, texts: list[str], fault: FaultSpec | None) -> Reply:
        """The answer to ``body``, with ``fault`` applied (``hang`` excepted: the caller's)."""
        if fault is not None and (refused := refusal(fault, body.model)) is not None:
            return refused
        out = generate(self.config, body, texts)
        if fault is not None:
            out = spoil(fault, out, self.config)
        self._ids += 1
        return Reply(200, completion_body(f"chatcmpl-sim-{self._ids}", body.model, out,
                                          estimate_tokens(" ".join(texts))))

    def answer_line(self, custom_id: str, body: ChatRequest) -> tuple[dict[str, Any], bool]:
        """One batch line answered: its output line, and whether it succeeded."""
        texts = body.texts()
        line: dict[str, Any] = {"id": new_id("batch_req_"), "custom_id": custom_id, "response": None, "error": None}
        reply = self.unsupported(body)
        if reply is None:
            fault = self.take_fault(texts)
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
            line["response"] = {"status_code": reply.status, "request_id": new_id("req_"), "body": reply.body}
        ok = line["error"] is None and reply is not None and reply.status == 200
        if not ok:
            self.stats.batch_requests_failed += 1
        return line, ok

    # -- batches, brought up to now with the batch_delay in effect -------------------------------

    def advance(self, job: BatchJob) -> None:
        self.store.advance(job, self.config.batch_delay, self.answer_line)

    def advance_all(self) -> None:
        self.store.advance_all(self.config.batch_delay, self.answer_line)

    def cancel(self, job: BatchJob) -> Reply | None:
        return self.store.cancel(job, self.config.batch_delay, self.answer_line)
