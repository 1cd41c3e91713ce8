"""How many requests one endpoint gets in flight: adaptive, learned for the whole run.

In: ``max_workers`` (the most ever in flight) and the outcome of every request
(:meth:`AdaptiveConcurrency.release`: ``ok``, ``refused`` for a 429, ``timeout``, ``error``).
Out: :meth:`AdaptiveConcurrency.acquire`, which waits until a request may go out.

Gateways, OpenAI's tiers and small shared vLLM deployments cap the requests they accept at
once and answer 429 above the cap. Sending ``max_workers`` blindly gets most requests refused
(v1: 61% of all requests with 64 workers against a cap of 16). The rules:

* **Paced ramp.** A request that would take the number in flight above the highest level
  reached so far goes out at least :data:`RAMP_SPACING` seconds after the previous such one;
  requests that fill slots freed below that level go at once. A refusal comes back in
  milliseconds, long before a success: the ramp stops at the cap after a refusal or two instead
  of a whole wave of them. Above :data:`RAMP_FINE` in flight the spacing shrinks (caps are
  most often small): on a healthy endpoint the first wave of 64 is out within 0.2 s.
* **Follow-ups first.** ``acquire(priority=True)`` (a re-ask, or the retry of a refused
  request) goes before the rows still waiting for their first request, so a row's
  conversation finishes as early as it can instead of at the end of the batch.
* **A 429 sets the limit to what the endpoint took**: the number in flight when the refused
  request was sent, minus that request. Only the first refusal of a congestion episode acts
  (the ``epoch`` of the request's send must be the current one), so a burst of 429s cuts once.
* **Timeouts halve the limit** (an overloaded server slows down before it refuses).
* **Additive probing, while a refusal costs nothing.** After ``PROBE_ROUNDS × limit`` successes
  in a row the limit grows by one, so a cap that was raised, or a transient refusal, is found
  again (one refusal per probe). A refused probe's row waits out the refusal (the ``wait`` the
  client reports: ``Retry-After: 1`` from most servers and proxies) before it is sent again; at
  the end of a batch that row would finish a whole wait after the others. So a probe goes only
  while the requests waiting for a slot keep the limit busy for at least that wait
  (``waiting × latency ≥ limit × wait``, ``latency`` the mean of recent answers), or, where the
  backlog is never that long (an answer much shorter than the wait), after
  ``1 + wait / latency`` times as many successes.
* ``x-ratelimit-remaining-requests: 0`` holds new requests until ``x-ratelimit-reset-requests``.

State lives on the instance (one per endpoint, shared by every step and re-ask of a run); the
asyncio condition is made per event loop, as each ``chat()`` may run on a new one.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass

# Seconds between sends that raise the number in flight to a new level. It must exceed the time
# a refusal takes to come back *as the client sees it*: the event loop also spends 1-2 ms of CPU
# on every send, so at 2 ms a burst of 30 went out before the first 429 was read (bench/).
RAMP_SPACING = 0.005
# Levels above this one come faster (the spacing shrinks as RAMP_FINE / level): caps are most
# often small, and every millisecond of the ramp delays a slot for the whole run.
RAMP_FINE = 16
PROBE_ROUNDS = 4
TIMEOUT_FACTOR = 0.5
LATENCY_WEIGHT = 0.2  # of the newest answer in the mean latency (an exponential moving average)
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


@dataclass
class Ticket:
    """One request's slot: how many were in flight when it went out (itself included), in which
    congestion epoch, and when (``time.monotonic()``)."""

    in_flight: int
    epoch: int
    sent: float


def parse_reset(value: str | None) -> float | None:
    """Seconds from an ``x-ratelimit-reset-*`` header (``"1s"``, ``"6m0s"``, ``"120ms"``, ``"0.5"``)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    m = _DURATION.match(value)
    if not m or not any(m.groups()):
        return None
    h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


class AdaptiveConcurrency:
    """The in-flight limit of one endpoint (see the module docstring)."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self.limit = float(max_workers)
        self.in_flight = 0
        self.high_water = 0  # the most in flight at once so far (since the last cut)
        self.refused = 0
        self.timeouts = 0
        self.successes = 0
        self.probes = 0  # times the limit grew by one after a streak of successes
        self.waiting = 0  # requests waiting for a slot now
        self.latency = 0.0  # mean seconds from send to a successful answer (0: none yet)
        self.refusal_wait = 0.0  # seconds the last refused or timed-out request waited before its retry
        self.epoch = 0
        self._streak = 0
        self._priority_waiting = 0
        self._last_ramp = 0.0
        self._hold_until = 0.0
        self._lock = threading.Lock()
        self._conditions: dict[asyncio.AbstractEventLoop, tuple[asyncio.Condition, asyncio.Lock]] = {}

    def _primitives(self) -> tuple[asyncio.Condition, asyncio.Lock]:
        """This event loop's condition (slots) and pacing lock (one ramp timer at a time)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if loop not in self._conditions:
                self._conditions = {l: c for l, c in self._conditions.items() if not l.is_closed()}
                self._conditions[loop] = (asyncio.Condition(), asyncio.Lock())
            return self._conditions[loop]

    def _may_send(self, now: float) -> bool:
        """A free slot, no hold, and outside the ramp (or the ramp's spacing elapsed)."""
        return (now >= self._hold_until and self.in_flight < max(1, int(self.limit))
                and (self.in_flight < self.high_water or now - self._last_ramp >= self._spacing()))

    def _spacing(self) -> float:
        return RAMP_SPACING * min(1.0, RAMP_FINE / max(1, self.high_water))

    def _take(self, now: float) -> Ticket:
        if self.in_flight >= self.high_water:  # a new level: the next one waits out the spacing
            self.high_water = self.in_flight + 1
            self._last_ramp = now
        self.in_flight += 1
        return Ticket(in_flight=self.in_flight, epoch=self.epoch, sent=now)

    async def acquire(self, priority: bool = False) -> Ticket:
        """Wait for a slot (see the module docstring); the caller must :meth:`release` it."""
        cond, pacer = self._primitives()
        self.waiting += 1
        try:
            return await self._acquire(cond, pacer, priority)
        finally:
            self.waiting -= 1

    async def _acquire(self, cond, pacer, priority: bool) -> Ticket:
        while True:
            async with cond:
                while True:
                    now = time.monotonic()
                    if now < self._hold_until:
                        try:
                            await asyncio.wait_for(cond.wait(), timeout=self._hold_until - now)
                        except TimeoutError:
                            pass
                    elif self.in_flight >= max(1, int(self.limit)) or (self._priority_waiting and not priority):
                        self._priority_waiting += priority
                        try:
                            await cond.wait()
                        finally:
                            self._priority_waiting -= priority
                    else:
                        break
                if self._may_send(now):
                    return self._take(now)
            # Ramping above the highest level so far: one coroutine at a time sleeps out the spacing,
            # the others queue on the lock (not one timer each: 600 timers every 2 ms would
            # saturate the loop).
            async with pacer:
                await asyncio.sleep(max(0.0, self._spacing() - (time.monotonic() - self._last_ramp)))
                async with cond:
                    now = time.monotonic()
                    if self._may_send(now):
                        return self._take(now)

    async def release(self, ticket: Ticket, outcome: str, remaining: int | None = None,
                      reset: float | None = None, wait: float | None = None) -> None:
        """Record one request's outcome (``ok``, ``refused``, ``timeout``, ``error``; ``skipped``: the
        slot was given back unused) and wake waiters. ``wait``: the seconds a refused or timed-out
        request waits before its retry (its ``Retry-After``, or the client's backoff)."""
        cond, _ = self._primitives()
        async with cond:
            self.in_flight -= 1
            if wait is not None and outcome in ("refused", "timeout"):
                self.refusal_wait = wait
            if outcome == "ok":
                self.successes += 1
                self._streak += 1
                took = time.monotonic() - ticket.sent
                self.latency = took if not self.latency else self.latency + LATENCY_WEIGHT * (took - self.latency)
                if self._probe_due():
                    self.limit += 1
                    self.probes += 1
                    self._streak = 0
            elif outcome == "refused":
                self.refused += 1
                if ticket.epoch == self.epoch:
                    self.limit = float(max(1, min(self.limit, ticket.in_flight - 1)))
                    self.high_water = min(self.high_water, int(self.limit))
                    self.epoch += 1
                    self._streak = 0
            elif outcome == "timeout":
                self.timeouts += 1
                if ticket.epoch == self.epoch:
                    self.limit = max(1.0, self.limit * TIMEOUT_FACTOR)
                    self.high_water = min(self.high_water, int(self.limit))
                    self.epoch += 1
                    self._streak = 0
            if remaining is not None and remaining <= 0 and reset:
                self._hold_until = max(self._hold_until, time.monotonic() + reset)
            # Wake as many waiters as there are free slots, not all of them: with hundreds of
            # rows waiting, waking every one on every answer costs more than the requests.
            # (All of them while a follow-up waits: a woken first request would only go back to
            # waiting behind it, and the follow-up might not be woken at all.)
            if self._priority_waiting:
                cond.notify_all()
            else:
                cond.notify(max(1, int(self.limit) - self.in_flight))

    def _probe_due(self) -> bool:
        """Whether the limit grows by one now (see *Additive probing* in the module docstring)."""
        if self.limit >= self.max_workers:
            return False
        due = PROBE_ROUNDS * max(1.0, self.limit)
        if self._streak < due:
            return False
        if self.waiting * self.latency >= self.limit * self.refusal_wait:
            return True
        return self._streak >= due * (1 + self.refusal_wait / max(self.latency, 0.001))

    def snapshot(self) -> dict[str, int]:
        """What a progress bar shows: requests in flight, the limit, 429s seen."""
        return {"in_flight": self.in_flight, "limit": int(self.limit), "refused_429": self.refused}
