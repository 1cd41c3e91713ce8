"""``BatchRunner``: the client side of the OpenAI Batch API (``llm.mode: batch``).

In: a list of :class:`~rare_core.llm.types.LLMRequest` and the
:class:`~rare_core.llm.serving.APILLMServing_request` they belong to (its endpoint, key, model,
generation parameters, response cache and ``config.batch``: :class:`~rare_core.llm.config.BatchConfig`),
plus ``state_dir``, a folder for the ids of batches in progress. Out: one
:class:`~rare_core.llm.types.LLMResponse` per request, in input order: ``batch=True`` on answers
that came through the Batch API, ``cached=True`` on those the response cache already held,
``shared=True`` on copies for identical requests, ``error="batch: <reason>"`` where none came.

1. A request with a usable cached answer is not sent. Identical requests (same cache key) are
   sent once; the cache key is the line's ``custom_id``.
2. The rest, sorted by key (so the same pending set always splits the same way), go into JSONL
   input files of at most ``max_requests_per_file`` lines and ``max_bytes_per_file`` bytes; one
   upload (``purpose="batch"``) and one batch (``/v1/chat/completions``, ``completion_window``)
   per file. A single request larger than ``max_bytes_per_file`` fails at once.
3. **Resume rule, never paid twice**: the moment a batch id exists it is written to
   ``state_dir/<sha256 of the file's sorted custom_ids>.json`` (temp file + ``os.replace``; the
   id, the file id, counts, model and endpoint scope; never the key). A later run with the same
   pending requests (after a crash, a ``kill -9``, a Ctrl-C) finds that file and polls the
   batch it names instead of creating one; only a batch that is failed, expired, cancelled or
   unknown to the server is replaced by a new one, with a log line saying so. A state file is
   deleted once its batch's answers are in the response cache. Submission holds an exclusive
   lock on ``state_dir/.lock``, so two processes with the same requests share one batch.
4. Every batch is polled (``batches.retrieve``) with waits growing from ``poll_interval`` to
   ``poll_max`` seconds; ``on_progress(done, total)`` (rows) follows the ``request_counts``.
5. When a batch is over, its output and error files are read: each 200 line becomes an answer
   (:func:`~rare_core.llm.responses.response_from_completion`), stored in the response cache at
   once (a rerun is free). Lines that failed (error file, status != 200, an odd body, a batch
   that failed, expired or was cancelled before answering them) are submitted once more in a
   second batch; what fails again gets ``error="batch: <reason>"``.

Limits: the Batch API is asynchronous, so ``run`` blocks until every batch is over (up to the
completion window; Ctrl-C leaves the batches running and a rerun resumes them). If polling a
batch keeps failing, its rows fail with "lost track" and its state file stays, so the next run
resumes it rather than paying again. The resume rule matches whole files: a rerun whose pending
set differs (some rows answered meanwhile by other means) makes new files, and the old state
files stay behind, harmless. The API key is read from ``config.api_key_env`` when a run starts,
lives only in the ``openai`` client, and is scrubbed from every message, log line and file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import openai

from rare_core.errors import LLMAuthError, LLMEndpointError
from rare_core.llm.responses import response_from_completion
from rare_core.llm.types import LLMRequest, LLMResponse
from rare_core.llm.config import redact_url
from rare_core.llm.failures import UNREACHABLE, transport_failure
from rare_core.llm.progress import Progress, scrub

if TYPE_CHECKING:
    from rare_core.llm.serving import APILLMServing_request

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock, the state files still resume
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("rare_core.llm.batch")

ENDPOINT = "/v1/chat/completions"
STATE_VERSION = 1
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
REPLACEABLE = frozenset({"failed", "expired", "cancelled"})
"""Statuses of a batch named by a state file that make a new batch instead of a resume."""
POLL_FAILURES = 5
"""Consecutive failed polls of one batch (each after the openai client's own retries) before
its rows fail with "lost track" (its state file stays: the next run resumes it)."""
_MISSING_KEY = "no-key-set"

ProgressCallback = Callable[[int, int], None]


@dataclass
class _Chunk:
    """One input file and the batch made from it."""

    keys: list[str]
    data: bytes
    digest: str
    rows: int
    batch: Any = None  # the latest openai Batch object
    submit_error: str | None = None  # no batch could be made (resubmittable)
    lost: str | None = None  # polling kept failing (not resubmitted: the batch may still finish)
    poll_failures: int = 0
    results: dict[str, LLMResponse] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class BatchRunner:
    """Sends requests through the Batch API of ``serving``'s endpoint (see the module docstring).

    >>> runner = BatchRunner(llm, "./cache/batches")
    >>> responses = runner.run(requests)            # blocks until the batches are over
    """

    def __init__(self, serving: APILLMServing_request, state_dir: str | os.PathLike[str], *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.serving = serving
        self.state_dir = Path(state_dir)
        self._sleep = sleep
        self._key = ""

    @property
    def settings(self):
        """``serving.config.batch`` (:class:`~rare_core.llm.config.BatchConfig`)."""
        return self.serving.config.batch

    # -- public API -----------------------------------------------------------------------------

    def run(self, requests: list[LLMRequest], on_progress: ProgressCallback | None = None) -> list[LLMResponse]:
        """One response per request, in order; blocks until every batch is over."""
        groups, results, pending = self._pending(requests)
        progress = Progress(on_progress, len(requests), self._key)
        progress.update(sum(1 for r in results if r is not None))
        if pending:
            answers = self._send(pending, groups, progress)
            for key, resp in answers.items():
                self._fill(results, groups[key], resp)
        progress.update(len(requests))
        return [r if r is not None else LLMResponse(error="batch: no answer") for r in results]

    def submit(self, requests: list[LLMRequest]) -> list[str]:
        """Steps 1-3 only: upload and create (or find, from the state files) the batches for the
        requests not answered yet, and return their ids without waiting. A later :meth:`run`
        with the same requests polls these batches and collects their answers."""
        _, _, pending = self._pending(requests)
        if not pending:
            return []
        with self._client() as client:
            chunks, _ = self._chunks(pending)
            with self._locked():
                for chunk in chunks:
                    self._submit(client, chunk)
        return [c.batch.id for c in chunks if c.batch is not None]

    # -- rounds -----------------------------------------------------------------------------------

    def _pending(self, requests: list[LLMRequest]) -> tuple[dict[str, list[int]], list[LLMResponse | None],
                                                            dict[str, LLMRequest]]:
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(self.serving.request_key(req), []).append(i)
        results: list[LLMResponse | None] = [None] * len(requests)
        pending: dict[str, LLMRequest] = {}
        for key, rows in groups.items():
            hit = self.serving.cached_response(requests[rows[0]])
            if hit is not None:
                self._fill(results, rows, hit)
            else:
                pending[key] = requests[rows[0]]
        return groups, results, pending

    @staticmethod
    def _fill(results: list[LLMResponse | None], rows: list[int], resp: LLMResponse) -> None:
        results[rows[0]] = resp
        for j in rows[1:]:
            results[j] = resp.model_copy(update={"shared": True})

    def _send(self, pending: dict[str, LLMRequest], groups: dict[str, list[int]],
              progress: Progress) -> dict[str, LLMResponse]:
        """Two rounds at most: every request, then once more those whose lines failed."""
        with self._client() as client:
            answers, failed = self._round(client, pending, groups, progress)
            if failed:
                reason = next(iter(failed.values()))
                log.info("%d request(s) failed in the batch (first: %s); submitting them once more",
                         len(failed), reason)
                again, still = self._round(client, {k: pending[k] for k in failed}, groups, progress)
                for resp in again.values():
                    resp.retries = 1
                answers.update(again)
                for key, why in still.items():
                    answers[key] = LLMResponse(error=f"batch: {why}", retries=1)
        return answers

    def _round(self, client: openai.OpenAI, pending: dict[str, LLMRequest], groups: dict[str, list[int]],
               progress: Progress) -> tuple[dict[str, LLMResponse], dict[str, str]]:
        """Submit, wait for and read one set of batches. Returns the answers (errors that a
        resubmission cannot fix included) and the failed lines to submit again, with reasons."""
        chunks, answers = self._chunks(pending, groups)
        with self._locked():
            for chunk in chunks:
                self._submit(client, chunk)
        base = progress.total - sum(c.rows for c in chunks)
        self._wait(client, chunks, progress, base)
        failed: dict[str, str] = {}
        for chunk in chunks:
            self._collect(client, chunk, pending)
            answers.update(chunk.results)
            failed.update(chunk.failed)
            if chunk.lost:
                answers.update({k: LLMResponse(error=f"batch: {chunk.lost}") for k in chunk.keys
                                if k not in chunk.results})
        return answers, failed

    def _chunks(self, pending: dict[str, LLMRequest], groups: dict[str, list[int]] | None = None
                ) -> tuple[list[_Chunk], dict[str, LLMResponse]]:
        """The input files for ``pending`` (sorted by key), and the requests too big for any."""
        limit_lines, limit_bytes = self.settings.max_requests_per_file, self.settings.max_bytes_per_file
        chunks: list[_Chunk] = []
        too_big: dict[str, LLMResponse] = {}
        keys: list[str] = []
        lines: list[bytes] = []
        size = 0

        def flush() -> None:
            nonlocal size
            size = 0
            if keys:
                digest = hashlib.sha256("\n".join(keys).encode("ascii")).hexdigest()
                rows = sum(len(groups.get(k, [0])) for k in keys) if groups else len(keys)
                chunks.append(_Chunk(list(keys), b"".join(lines), digest, rows))
                keys.clear()
                lines.clear()

        for key in sorted(pending):
            item = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": self.serving.request_body(pending[key])}
            line = (json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            if len(line) > limit_bytes:
                too_big[key] = LLMResponse(error=f"batch: the request takes {len(line)} bytes, more than "
                                                 f"llm.batch.max_bytes_per_file={limit_bytes}")
                continue
            if keys and (len(keys) >= limit_lines or size + len(line) > limit_bytes):
                flush()
            keys.append(key)
            lines.append(line)
            size += len(line)
        flush()
        return chunks, too_big

    # -- one batch ----------------------------------------------------------------------------------

    def _submit(self, client: openai.OpenAI, chunk: _Chunk) -> None:
        """Resume the batch a state file names, else upload the file and create a batch."""
        path = self._state_path(chunk)
        state = self._read_state(path)
        if state is not None:
            batch_id = str(state.get("batch_id"))
            try:
                batch = self._api(client.batches.retrieve, batch_id)
            except openai.NotFoundError:
                batch = None
            except openai.APIError as exc:
                chunk.lost = f"could not look up batch {batch_id} of an earlier run: {self._reason(exc)}"
                return
            if batch is not None and batch.status not in REPLACEABLE:
                log.info("resuming batch %s of an earlier run (%s, %d requests): not sent again",
                         batch_id, batch.status, len(chunk.keys))
                chunk.batch = batch
                return
            log.warning("batch %s of an earlier run is %s: creating a new one for its %d requests",
                        batch_id, batch.status if batch is not None else "unknown to the server", len(chunk.keys))
            path.unlink(missing_ok=True)
        try:
            uploaded = self._api(client.files.create, file=(f"rare-batch-{chunk.digest[:16]}.jsonl", chunk.data,
                                                             "application/jsonl"), purpose="batch")
            batch = self._api(client.batches.create, input_file_id=uploaded.id, endpoint=ENDPOINT,
                              completion_window=self.settings.completion_window,
                              metadata={"rare_requests": str(len(chunk.keys)), "rare_custom_ids_sha256": chunk.digest})
        except openai.APIError as exc:
            chunk.submit_error = f"could not create the batch: {self._reason(exc)}"
            chunk.failed = {k: chunk.submit_error for k in chunk.keys}
            return
        self._write_state(path, {
            "version": STATE_VERSION, "batch_id": batch.id, "input_file_id": uploaded.id,
            "requests": len(chunk.keys), "custom_ids_sha256": chunk.digest, "model": self.serving.model_name,
            "scope": self.serving.scope, "endpoint": redact_url(self.serving.config.base_url or ""),
            "created_at": int(time.time()),
        })
        log.info("created batch %s with %d requests (%d bytes)", batch.id, len(chunk.keys), len(chunk.data))
        chunk.batch = batch

    def _wait(self, client: openai.OpenAI, chunks: list[_Chunk], progress: Progress, base: int) -> None:
        """Poll until every batch is over (or lost), waits growing from poll_interval to poll_max."""
        active = [c for c in chunks if c.batch is not None and c.batch.status not in TERMINAL]
        delay = self.settings.poll_interval
        self._report(chunks, progress, base)
        while active:
            self._sleep(delay)
            delay = min(delay * 2, self.settings.poll_max)
            for chunk in list(active):
                try:
                    chunk.batch = self._api(client.batches.retrieve, chunk.batch.id)
                    chunk.poll_failures = 0
                except openai.APIError as exc:
                    chunk.poll_failures += 1
                    if chunk.poll_failures < POLL_FAILURES:
                        continue
                    chunk.lost = (f"lost track of batch {chunk.batch.id} ({self._reason(exc)}); "
                                  "the next run resumes it")
                    log.warning("%s", chunk.lost)
                if chunk.lost or chunk.batch.status in TERMINAL:
                    active.remove(chunk)
            self._report(chunks, progress, base)

    def _report(self, chunks: list[_Chunk], progress: Progress, base: int) -> None:
        done = base
        for chunk in chunks:
            batch = chunk.batch
            if batch is None or chunk.lost or batch.status in TERMINAL:
                done += chunk.rows
            elif batch.request_counts is not None and batch.request_counts.total:
                counts = batch.request_counts
                done += chunk.rows * min(counts.total, counts.completed + counts.failed) // counts.total
        progress.update(done)

    def _collect(self, client: openai.OpenAI, chunk: _Chunk, pending: dict[str, LLMRequest]) -> None:
        """Read a finished batch's files into ``chunk.results`` (stored in the response cache)
        and ``chunk.failed``; then drop its state file."""
        batch = chunk.batch
        if batch is None or chunk.lost:
            return
        wanted = set(chunk.keys)
        elapsed = max(0.0, float((batch.completed_at or batch.failed_at or batch.expired_at
                                  or batch.cancelled_at or int(time.time())) - batch.created_at))
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                text = self._api(client.files.content, file_id).text
            except openai.NotFoundError as exc:
                log.warning("file %s of batch %s is gone: %s", file_id, batch.id, self._reason(exc))
                continue
            except openai.APIError as exc:
                chunk.lost = f"could not read the results of batch {batch.id} ({self._reason(exc)}); the next run resumes it"
                log.warning("%s", chunk.lost)
                return
            for raw in text.splitlines():
                try:
                    item = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                key = item.get("custom_id") if isinstance(item, dict) else None
                if key not in wanted or key in chunk.results:
                    continue
                resp, reason = self._line_result(item)
                if resp is not None:
                    resp.latency = elapsed
                    self.serving.store_response(pending[key], resp)
                    chunk.results[key] = resp
                    chunk.failed.pop(key, None)
                else:
                    chunk.failed[key] = reason
        why = f"batch {batch.id} ended {batch.status}" + self._batch_errors(batch)
        for key in wanted - set(chunk.results) - set(chunk.failed):
            chunk.failed[key] = why if batch.status != "completed" else f"{why} without an answer to this request"
        self._state_path(chunk).unlink(missing_ok=True)

    def _line_result(self, item: dict[str, Any]) -> tuple[LLMResponse | None, str]:
        """An output/error file line -> (answer, "") or (None, why it failed)."""
        response = item.get("response") if isinstance(item.get("response"), dict) else {}
        error = item.get("error") if isinstance(item.get("error"), dict) else None
        status, body = response.get("status_code"), response.get("body")
        if status == 200 and error is None and isinstance(body, dict):
            try:
                resp = response_from_completion(body)
            except Exception as exc:  # noqa: BLE001 - an odd body is this line's failure
                return None, self._scrub(f"invalid response: {type(exc).__name__}: {str(exc)[:200]}")
            if not resp.ok:
                return None, self._scrub(resp.error or "invalid response")
            resp.batch = True
            return resp, ""
        message = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = body["error"].get("message")
        if status is not None and status != 200:
            return None, self._scrub(f"HTTP {status}: {message or 'no message'}")
        if error is not None:
            return None, self._scrub(f"{error.get('code') or 'error'}: {error.get('message') or 'no message'}")
        return None, "a line without a usable response"

    def _batch_errors(self, batch: Any) -> str:
        data = getattr(getattr(batch, "errors", None), "data", None) or []
        if not data:
            return ""
        first = data[0]
        more = f" (+{len(data) - 1} more)" if len(data) > 1 else ""
        return self._scrub(f": {first.code}: {first.message}{more}")

    # -- state files --------------------------------------------------------------------------------

    def _state_path(self, chunk: _Chunk) -> Path:
        return self.state_dir / f"{chunk.digest}.json"

    def _read_state(self, path: Path) -> dict[str, Any] | None:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable batch state file %s: %s", path, exc)
            return None
        return state if isinstance(state, dict) and state.get("batch_id") else None

    def _write_state(self, path: Path, state: dict[str, Any]) -> None:
        """Atomically: a temp file in the same folder, flushed to disk, then ``os.replace``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        text = self._scrub(json.dumps(state, indent=1, sort_keys=True))
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on ``state_dir/.lock`` while batches are looked up and created."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        with open(self.state_dir / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- the API ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _client(self) -> Iterator[openai.OpenAI]:
        cfg = self.serving.config
        self._key = self.serving.api_key()
        client = openai.OpenAI(base_url=cfg.base_url, api_key=self._key or _MISSING_KEY,
                               max_retries=cfg.max_retries, timeout=cfg.timeout)
        try:
            yield client
        finally:
            client.close()

    def _api(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call``; a 401/403 becomes :class:`LLMAuthError` naming the key's variable, and an
        endpoint that is not there (refused, unknown host, TLS) :class:`LLMEndpointError` naming
        its URL: every request of the run would fail the same way."""
        try:
            return call(*args, **kwargs)
        except openai.APIConnectionError as exc:
            failure = transport_failure(exc, self.serving.config.timeout)
            if failure.kind in UNREACHABLE:
                raise LLMEndpointError(
                    f"the LLM endpoint {redact_url(self.serving.config.base_url or '')} cannot be used: "
                    f"{self._scrub(failure.message)} (Batch API); check llm.base_url (--base-url) and that the "
                    "server is running") from None
            raise
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            env = self.serving.config.api_key_env
            state = "is set" if self._key else "is NOT set"
            raise LLMAuthError(
                f"the endpoint {redact_url(self.serving.config.base_url or '')} refused the credentials "
                f"(HTTP {exc.status_code}) on the Batch API; the API key comes from the environment variable "
                f"{env}, which {state}: {self._reason(exc)}") from None

    def _reason(self, exc: openai.APIError) -> str:
        if isinstance(exc, openai.APIStatusError):
            body = exc.body
            message = exc.message
            if isinstance(body, dict):
                err = body.get("error", body)
                if isinstance(err, dict) and err.get("message"):
                    message = str(err["message"])
            return self._scrub(f"HTTP {exc.status_code}: {message}")
        if isinstance(exc, openai.APIConnectionError):
            return self._scrub(transport_failure(exc, self.serving.config.timeout).message)
        return self._scrub(f"{type(exc).__name__}: {exc}")

    def _scrub(self, text: str) -> str:
        return scrub(text, self._key)
