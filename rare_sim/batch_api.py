"""The Batch API as OpenAI implements it, in memory: uploaded files, batches over them, their
lines answered as the batch is polled.

In: a ``multipart/form-data`` upload (:func:`parse_multipart`), a :class:`BatchCreate` body,
and from the simulator a function that answers one line (:data:`LineAnswer`: the same answers
and faults as online requests). Out: :class:`BatchStore` with the OpenAI File and Batch objects
(:meth:`StoredFile.obj`, :meth:`BatchJob.obj`), the output and error files of a finished batch,
and refusals as :class:`~rare_sim.completions.Reply` (400 for a bad batch, 409 for a cancel
too late). A malformed input file makes the batch ``failed`` with ``errors``, checked as OpenAI
checks it (:func:`validate_lines`). Lines are answered evenly over ``batch_delay`` seconds
from the batch's creation.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from rare_sim.completions import Reply, error_body
from rare_sim.models import ChatRequest

BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_MAX_REQUESTS = 50_000  # OpenAI's limits of one batch input file
BATCH_MAX_BYTES = 200 * 1024 * 1024
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})

LineAnswer = Callable[[str, ChatRequest], tuple[dict[str, Any], bool]]
"""custom_id, request -> the batch output line, and whether it succeeded (else it goes to the
error file)."""


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


class BatchCreate(BaseModel):
    """The body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="allow")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None


@dataclass
class StoredFile:
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
class BatchJob:
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


def validate_lines(data: bytes, endpoint: str) -> tuple[list[tuple[str, ChatRequest]], list[dict], str | None]:
    """The input file's requests and their model, or the errors that fail the batch (as OpenAI
    checks them)."""
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


def _invalid(message: str, param: str) -> Reply:
    return Reply(400, error_body(message, "invalid_request_error", "invalid_value", param))


class BatchStore:
    """The uploaded files and the batches of one simulator (single event loop, no locks)."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, BatchJob] = {}

    def clear(self) -> None:
        self.files.clear()
        self.batches.clear()

    def store_file(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(new_id("file-"), filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        return stored

    def create(self, spec: BatchCreate) -> BatchJob | Reply:
        """A new batch over ``spec.input_file_id`` (its lines validated now; answered as polled),
        or the 400 that refuses it."""
        stored = self.files.get(spec.input_file_id)
        if stored is None:
            return _invalid(f"Invalid 'input_file_id': no such file {spec.input_file_id!r} (simulated).",
                            "input_file_id")
        if stored.purpose != "batch":
            return _invalid(f"File {stored.id!r} has purpose {stored.purpose!r}; a batch needs purpose 'batch'.",
                            "input_file_id")
        if spec.endpoint != BATCH_ENDPOINT:
            return _invalid(f"Invalid 'endpoint': {spec.endpoint!r}; this simulator batches only {BATCH_ENDPOINT}.",
                            "endpoint")
        if spec.completion_window != "24h":
            return _invalid(f"Invalid 'completion_window': {spec.completion_window!r}; supported: '24h'.",
                            "completion_window")
        lines, errors, model = validate_lines(stored.data, spec.endpoint)
        job = BatchJob(
            id=new_id("batch_"), input_file_id=stored.id, endpoint=spec.endpoint,
            completion_window=spec.completion_window, metadata=spec.metadata, created_at=int(time.time()),
            started=time.monotonic(), lines=[] if errors else lines, errors=errors, model=model,
        )
        self.batches[job.id] = job
        return job

    def advance(self, job: BatchJob, delay: float, answer: LineAnswer) -> None:
        """Bring ``job`` up to now: answer the lines due (evenly over ``delay``), then finish it."""
        if job.status in _TERMINAL:
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
        elapsed = time.monotonic() - job.started
        total = len(job.lines)
        due = total if elapsed >= delay else min(total, int(total * elapsed / delay))
        while job.done < due:
            line, ok = answer(*job.lines[job.done])
            (job.outputs if ok else job.failures).append(line)
            job.done += 1
        if job.done == total and elapsed >= delay:
            self._finish(job, "completed")

    def advance_all(self, delay: float, answer: LineAnswer) -> None:
        for job in self.batches.values():
            self.advance(job, delay, answer)

    def cancel(self, job: BatchJob, delay: float, answer: LineAnswer) -> Reply | None:
        """Start cancelling ``job`` (None), or the 409 when it has already ended."""
        self.advance(job, delay, answer)
        if job.status in _TERMINAL:
            return Reply(409, error_body(f"Cannot cancel a batch with status {job.status!r}.",
                                         "invalid_request_error", None))
        job.status = "cancelling"
        job.times["cancelling_at"] = int(time.time())
        return None

    def _finish(self, job: BatchJob, status: str) -> None:
        now = int(time.time())
        job.times["finalizing_at"] = now
        for lines, attr, name in ((job.outputs, "output_file_id", "output"), (job.failures, "error_file_id", "error")):
            if lines:
                data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
                setattr(job, attr, self.store_file(f"{job.id}_{name}.jsonl", "batch_output", data).id)
        job.status = status
        job.times[f"{status}_at"] = now
