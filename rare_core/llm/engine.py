"""The batching engine: many rows' conversations through one pool of requests.

In: a list of :class:`LLMRequest` and, optionally, ``follow(row, request, response)`` giving a
row's next request (a re-ask) and ``on_progress(done, total)``. Out: a :class:`Batch`, one
response per row in input order, every response of each conversation and the batch's
:class:`RunTotals` (:meth:`Engine.aconverse`).

* A window of :func:`conversation_window` worker tasks takes the rows' conversations one at a
  time, in input order (a batch of 100,000 rows is a few dozen tasks); each request goes through
  :class:`~rare_core.llm.transport.Transport`, up to ``max_workers`` in flight.
* Identical requests (same cache key) in one batch are sent once; the duplicates get a copy of
  the answer marked ``shared`` (counted in ``RunTotals.deduplicated``, not as requests).
* ``llm.mode=batch``: every pending request of a round goes into one Batch API batch
  (:class:`rare_core.llm.batch.BatchRunner`), its re-asks into the next.
* :func:`cancel_running_batches` cancels, from any thread, every batch this process runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from rare_core.errors import RareError
from rare_core.llm.progress import Progress
from rare_core.llm.transport import Transport
from rare_core.llm.types import Batch, FollowUp, LLMRequest, LLMResponse, ProgressCallback, RunTotals

log = logging.getLogger("rare_core.llm")

# Worker tasks of one batch per request in flight (at least WINDOW_MIN). One task per row, all
# created up front, made 100,000 tasks wait for a slot before the first request of 100,000 rows
# went out (+160 MiB peak RSS, bench/llm_window.py). More workers than slots keep every slot
# busy while some rows back off before a retry (a row backing off holds no slot).
WINDOW_PER_WORKER = 2
WINDOW_MIN = 32


def conversation_window(max_workers: int) -> int:
    """How many conversations one batch runs at once (a worker task each) for ``max_workers``
    requests in flight: ``max(WINDOW_PER_WORKER * max_workers, WINDOW_MIN)``."""
    return max(WINDOW_PER_WORKER * max_workers, WINDOW_MIN)


class Engine(Transport):
    """Runs a batch's conversations (see the module docstring); the base of
    :class:`~rare_core.llm.serving.APILLMServing_request`."""

    async def achat(self, requests: list[LLMRequest], on_progress: ProgressCallback | None = None) -> Batch:
        """Async form of :meth:`chat`."""
        return await self.aconverse(requests, None, on_progress)

    async def aconverse(self, requests: list[LLMRequest], follow: FollowUp | None = None,
                        on_progress: ProgressCallback | None = None) -> Batch:
        """Async form of :meth:`converse`: :func:`conversation_window` worker tasks share an
        iterator over the batch's distinct requests; each runs one row's conversation to its
        end, then takes the next row."""
        started = time.perf_counter()
        cfg = self.config
        key = self.api_key()
        # One conversation per first request: duplicates (the same document twice) share it.
        groups: dict[tuple[str, bool], list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault((self.request_key(req), req.refresh_cache), []).append(i)
        client = self._http_client(key)
        cache = self._open_cache()
        chains: list[list[LLMResponse]] = [[] for _ in requests]
        progress = Progress(on_progress, len(requests), key)

        async def conversation(rows: list[int]) -> None:
            req: LLMRequest | None = requests[rows[0]]
            chain = chains[rows[0]]
            while req is not None:  # follow-ups (re-asks) go before rows still waiting for a first answer
                chain.append(await self._one_safe(client, cache, req, key, priority=bool(chain)))
                req = follow(rows[0], req, chain[-1]) if follow is not None else None
            for j in rows[1:]:
                chains[j] = [r.model_copy(update={"shared": True}) for r in chain]
            progress.advance(len(rows))

        pending = iter(groups.values())  # shared: each group goes to the worker that is free first

        workers: list[asyncio.Task] = []

        async def worker() -> None:
            try:
                for rows in pending:
                    await conversation(rows)
                    # An answer from the cache comes without a suspension: yield to the loop between
                    # rows, or a run of cached rows holds off the other workers' answers and Ctrl-C.
                    await asyncio.sleep(0)
            except BaseException:
                # Stop the other workers now: the task group cancels them only from this task's
                # done callback, after a worker woken for the slot this one freed has sent its request.
                for task in workers:
                    if task is not asyncio.current_task():
                        task.cancel()
                raise

        running = (asyncio.get_running_loop(), asyncio.current_task())
        with _running_lock:
            _running.add(running)
        try:
            async with asyncio.TaskGroup() as tg:
                workers.extend(tg.create_task(worker())
                               for _ in range(min(conversation_window(cfg.max_workers), len(groups))))
        except* RareError as group:  # stops the whole batch: refused key, dead endpoint, full cache...
            raise group.exceptions[0] from None
        finally:
            with _running_lock:
                _running.discard(running)
            await client.close()
        every = [r for chain in chains for r in chain]
        leaders = list(range(len(requests)))
        for rows in groups.values():
            for j in rows:
                leaders[j] = rows[0]
        return Batch(responses=[chain[-1] for chain in chains], chains=chains, leaders=leaders,
                     totals=self._totals(every, time.perf_counter() - started))

    def _converse_in_batches(self, requests: list[LLMRequest], follow: FollowUp | None,
                             on_progress: ProgressCallback | None) -> Batch:
        """:meth:`converse` through the Batch API: every pending request of a round goes into one
        batch (:class:`rare_core.llm.batch.BatchRunner`, resumable after a kill), the re-asks
        of that round into the next. ``on_progress`` counts rows done after each round."""
        from rare_core.llm.batch import BatchRunner

        started = time.perf_counter()
        runner = BatchRunner(self, self.batch_state_dir())
        chains: list[list[LLMResponse]] = [[] for _ in requests]
        pending = dict(enumerate(requests))
        progress = Progress(on_progress, len(requests), self.api_key())
        while pending:
            rows = list(pending)
            answers = runner.run([pending[r] for r in rows])
            following: dict[int, LLMRequest] = {}
            for row, resp in zip(rows, answers):
                chains[row].append(resp)
                nxt = follow(row, pending[row], resp) if follow is not None else None
                if nxt is not None:
                    following[row] = nxt
            progress.advance(len(rows) - len(following))
            pending = following
        every = [r for chain in chains for r in chain]
        return Batch(responses=[chain[-1] for chain in chains], chains=chains, leaders=list(range(len(requests))),
                     totals=self._totals(every, time.perf_counter() - started))

    def batch_state_dir(self) -> Path:
        """Where batch ids are kept while their batches run: ``batches/`` beside the response cache."""
        base = Path(self.config.cache_path).parent if self.config.cache_path else Path(".rare")
        return base / "batches"

    @staticmethod
    def _totals(responses: list[LLMResponse], wall: float) -> RunTotals:
        sent = [r for r in responses if not r.cached and not r.shared]
        return RunTotals(
            requests=sum(1 + r.retries for r in sent),
            retries=sum(r.retries for r in sent),
            prompt_tokens=sum(r.prompt_tokens for r in sent),
            completion_tokens=sum(r.completion_tokens for r in sent),
            failures=sum(1 for r in responses if not r.ok),
            batch_requests=sum(1 for r in sent if r.batch),
            batch_prompt_tokens=sum(r.prompt_tokens for r in sent if r.batch),
            batch_completion_tokens=sum(r.completion_tokens for r in sent if r.batch),
            refused_429=sum(r.refused for r in sent),
            cache_hits=sum(1 for r in responses if r.cached and not r.shared),
            deduplicated=sum(1 for r in responses if r.shared),
            simulated=any(r.simulated for r in responses),
            wall_seconds=wall,
        )


# The batches this process is running, each as (its loop, its task): see cancel_running_batches.
_running: set[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = set()
_running_lock = threading.Lock()


def cancel_running_batches() -> int:
    """Cancel every batch running in this process, whichever thread runs it -> how many.

    For a caller that stops waiting on work it handed to other threads (a flow whose shard
    tasks run on a thread pool, interrupted or failed): a thread cannot be stopped from
    outside, but its batch can be cancelled on its own loop. Its in-flight requests are then
    cancelled, it sends no more, and its ``converse`` raises ``CancelledError`` in that thread.
    """
    with _running_lock:
        running = list(_running)
    for loop, task in running:
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:  # the loop closed meanwhile: that batch is over anyway
            pass
    return len(running)
