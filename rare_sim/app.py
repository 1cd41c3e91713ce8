"""The simulator's HTTP app (FastAPI): the OpenAI routes and the admin routes over one
:class:`~rare_sim.engine.Simulator`.

In: HTTP requests. Out: :func:`create_app` -> the app; its state is ``app.state.simulator``.

* ``POST /v1/chat/completions`` and ``GET /v1/models`` in the OpenAI response shapes, behind
  the API key (when one is set) and the in-flight cap (``max_in_flight``: a 429 with
  ``Retry-After``, and ``x-ratelimit-*`` headers on every chat answer). Latency (with optional
  jitter) is applied with ``await asyncio.sleep``: requests never block one another.
* The Batch API (:mod:`rare_sim.batch_api`): ``POST /v1/files`` (multipart, kept in memory),
  ``GET /v1/files/{id}[/content]``, ``POST /v1/batches``, ``GET /v1/batches[/{id}]``,
  ``POST /v1/batches/{id}/cancel``.
* Admin: ``POST/DELETE /_sim/faults`` (:class:`~rare_sim.faults.FaultSpec`), ``GET
  /_sim/stats`` (:class:`~rare_sim.models.SimulatorStats`), ``POST /_sim/reset``,
  ``GET/POST /_sim/config``.
"""

from __future__ import annotations

import asyncio
import random
import time

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from rare_core.llm.simulated import SIMULATED_FINGERPRINT
from rare_sim.batch_api import FILE_PURPOSES, BatchCreate, parse_multipart
from rare_sim.completions import Reply, error_body
from rare_sim.engine import Simulator
from rare_sim.faults import HANG_SECONDS, FaultSpec
from rare_sim.models import ChatRequest, SimulatorConfig, SimulatorStats


def _error(status: int, message: str, type_: str, code: str | None, param: str | None = None, *,
           headers: dict[str, str] | None = None) -> JSONResponse:
    """An error in the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``."""
    return JSONResponse(error_body(message, type_, code, param), status_code=status, headers=headers)


def _response(reply: Reply) -> Response:
    """``reply`` as an HTTP response: JSON, or raw bytes of the type its headers name."""
    if isinstance(reply.body, bytes):
        media = reply.headers.get("Content-Type", "application/json")
        return Response(reply.body, status_code=reply.status, media_type=media)
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers or None)


def _not_found(kind: str, ident: str) -> JSONResponse:
    return _error(404, f"No such {kind} object: {ident!r} (simulated).", "invalid_request_error", None, "id")


def _denied(sim: Simulator, request: Request) -> JSONResponse | None:
    """A 401 when an API key is configured and the request's bearer token differs."""
    if sim.api_key is None or request.headers.get("authorization") == f"Bearer {sim.api_key}":
        return None
    return _error(401, "Incorrect API key provided (simulated).", "invalid_request_error", "invalid_api_key")


async def _chat(sim: Simulator, request: Request, body: ChatRequest) -> Response:
    """One online chat completion: auth, the in-flight cap, latency, then a fault or the answer;
    the ``x-ratelimit-*`` headers when a cap is set."""
    if denied := _denied(sim, request):
        denied.headers.update(sim.limit_headers(counted=False))
        return denied
    if sim.over_cap():
        retry = sim.config.cap_retry_after
        refusal = _error(
            429, f"Rate limit reached: at most {sim.config.max_in_flight} requests in flight at once (simulated).",
            "rate_limit_exceeded", "rate_limit_exceeded",
            headers={"Retry-After": str(retry)} if retry is not None else None,
        )
        refusal.headers.update(sim.limit_headers(counted=False))
        return refusal
    ticket = sim.enter(body)
    try:
        response = await _answer(sim, request, body)
        response.headers.update(sim.limit_headers(counted=True))
        return response
    finally:
        sim.leave(ticket)


async def _answer(sim: Simulator, request: Request, body: ChatRequest) -> Response:
    if refused := sim.unsupported(body):
        return _response(refused)
    if sim.config.latency:
        jitter = sim.config.jitter * random.uniform(-1.0, 1.0)
        await asyncio.sleep(sim.config.latency * (1.0 + jitter))
    texts = body.texts()
    fault = sim.take_fault(texts)
    if fault is None:
        sim.stats.completions_served += 1
    elif fault.kind == "hang":
        deadline = time.monotonic() + HANG_SECONDS
        while time.monotonic() < deadline and not await request.is_disconnected():
            await asyncio.sleep(0.05)
        return _error(504, "Simulated hang ended.", "timeout", None)
    return _response(sim.reply(body, texts, fault))


def create_app(latency: float = 0.0, api_key: str | None = None, jitter: float = 0.0, *,
               config: SimulatorConfig | None = None) -> FastAPI:
    """The simulator's FastAPI app; its state is ``app.state.simulator``. ``config`` (all
    settings) wins over ``latency``/``jitter``."""
    sim = Simulator(config or SimulatorConfig(latency=latency, jitter=jitter), api_key)

    async def count_request(request: Request) -> None:
        """App-wide dependency: count every routed request by path."""
        sim.stats.requests_total += 1
        path = request.scope["path"]
        sim.stats.requests_by_path[path] = sim.stats.requests_by_path.get(path, 0) + 1

    app = FastAPI(title="RARE LLM simulator", dependencies=[Depends(count_request)])
    app.state.simulator = sim

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(400, f"Invalid request (simulated): {problems}", "invalid_request_error", None)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest) -> Response:
        return await _chat(sim, request, body)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        if denied := _denied(sim, request):
            return denied
        ids = [SIMULATED_FINGERPRINT] + [m for m in sim.stats.models if m != SIMULATED_FINGERPRINT]
        data = [{"id": i, "object": "model", "created": 0, "owned_by": SIMULATED_FINGERPRINT} for i in ids]
        return JSONResponse({"object": "list", "data": data})

    # -- Batch API ----------------------------------------------------------------------------

    @app.post("/v1/files")
    async def upload_file(request: Request) -> Response:
        if denied := _denied(sim, request):
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
        return JSONResponse(sim.store.store_file(filename or "upload", purpose, data).obj())

    @app.get("/v1/files/{file_id}")
    async def get_file(request: Request, file_id: str) -> Response:
        if denied := _denied(sim, request):
            return denied
        stored = sim.store.files.get(file_id)
        return JSONResponse(stored.obj()) if stored else _not_found("File", file_id)

    @app.get("/v1/files/{file_id}/content")
    async def get_file_content(request: Request, file_id: str) -> Response:
        if denied := _denied(sim, request):
            return denied
        stored = sim.store.files.get(file_id)
        return Response(stored.data, media_type="application/octet-stream") if stored else _not_found("File", file_id)

    @app.post("/v1/batches")
    async def create_batch(request: Request, spec: BatchCreate) -> Response:
        if denied := _denied(sim, request):
            return denied
        job = sim.store.create(spec)
        if isinstance(job, Reply):
            return _response(job)
        sim.stats.batches_created += 1
        if job.model is not None:
            sim.stats.saw_model(job.model)
        return JSONResponse(job.obj())

    @app.get("/v1/batches")
    async def list_batches(request: Request, limit: int = 20) -> Response:
        if denied := _denied(sim, request):
            return denied
        sim.advance_all()
        batches = sim.store.batches
        data = [job.obj() for job in reversed(list(batches.values()))][: max(1, min(limit, 100))]
        return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None, "has_more": len(batches) > len(data)})

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(request: Request, batch_id: str) -> Response:
        if denied := _denied(sim, request):
            return denied
        job = sim.store.batches.get(batch_id)
        if job is None:
            return _not_found("Batch", batch_id)
        sim.advance(job)
        return JSONResponse(job.obj())

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> Response:
        if denied := _denied(sim, request):
            return denied
        job = sim.store.batches.get(batch_id)
        if job is None:
            return _not_found("Batch", batch_id)
        refused = sim.cancel(job)
        return _response(refused) if refused else JSONResponse(job.obj())

    # -- admin --------------------------------------------------------------------------------

    @app.post("/_sim/faults")
    async def add_faults(specs: list[FaultSpec]) -> list[FaultSpec]:
        """Queue fault specs after those already pending; returns all pending specs."""
        return sim.faults.add(specs)

    @app.delete("/_sim/faults")
    async def clear_faults() -> list[FaultSpec]:
        return sim.faults.clear()

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
