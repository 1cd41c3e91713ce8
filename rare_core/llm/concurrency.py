"""How many requests one endpoint gets in flight: adaptive, learned for the whole run.

In: ``max_workers`` (the most ever in flight) and the outcome of every request
(:meth:`AdaptiveConcurrency.release`: ``ok``, ``refused`` for a 429, ``timeout``, ``error``).
Out: :meth:`AdaptiveConcurrency.acquire`, which waits until a request may go out.

Gateways, OpenAI's tiers and small shared vLLM deployments cap the requests they accept at
once and answer 429 above the cap. Sending ``max_workers`` blindly gets most requests refused
(v1: 61% of all requests with 64 workers against a cap of 16). The rules:

* **Paced ramp.** While more requests are in flight than have ever been answered successfully
  at once (the *confirmed* level), new requests go out at least :data:`RAMP_SPACING` seconds
  apart. A refusal comes back in milliseconds, long before a success: the ramp stops at the cap
  after a refusal or two instead of a whole wave of them. On a healthy endpoint the first wave
  of 64 goes out within a fraction of a second and the confirmed level reaches ``max_workers``.
* **A 429 sets the limit to what the endpoint took**: the number in flight when the refused
  request was sent, minus that request. Only the first refusal of a congestion episode acts
  (the ``epoch`` of the request's send must be the current one), so a burst of 429s cuts once.
* **Timeouts halve the limit** (an overloaded server slows down before it refuses).
* **Additive probing.** After ``PROBE_ROUNDS × limit`` successes in a row the limit grows by one,
  so a cap that was raised, or a transient refusal, is found again (one refusal per probe).
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

RAMP_SPACING = 0.002  # seconds between sends above the confirmed level
PROBE_ROUNDS = 4
TIMEOUT_FACTOR = 0.5
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


@dataclass
class Ticket:
    """One request's slot: how many were in flight when it went out (itself included), and when."""

    in_flight: int
    epoch: int


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
        self.confirmed = 0
        self.refused = 0
        self.timeouts = 0
        self.successes = 0
        self.epoch = 0
        self._streak = 0
        self._last_send = 0.0
        self._hold_until = 0.0
        self._lock = threading.Lock()
        self._conditions: dict[asyncio.AbstractEventLoop, asyncio.Condition] = {}

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        with self._lock:
            if loop not in self._conditions:
                self._conditions = {l: c for l, c in self._conditions.items() if not l.is_closed()}
                self._conditions[loop] = asyncio.Condition()
            return self._conditions[loop]

    def _wait_needed(self, now: float) -> float | None:
        """None when a request may go now; else seconds to wait (0: until a slot frees)."""
        if now < self._hold_until:
            return self._hold_until - now
        if self.in_flight >= max(1, int(self.limit)):
            return 0.0
        if self.in_flight >= self.confirmed and now - self._last_send < RAMP_SPACING:
            return RAMP_SPACING - (now - self._last_send)
        return None

    async def acquire(self) -> Ticket:
        cond = self._condition()
        async with cond:
            while True:
                wait = self._wait_needed(time.monotonic())
                if wait is None:
                    break
                if wait == 0.0:
                    await cond.wait()
                else:
                    try:
                        await asyncio.wait_for(cond.wait(), timeout=wait)
                    except TimeoutError:
                        pass
            self.in_flight += 1
            self._last_send = time.monotonic()
            return Ticket(in_flight=self.in_flight, epoch=self.epoch)

    async def release(self, ticket: Ticket, outcome: str, remaining: int | None = None,
                      reset: float | None = None) -> None:
        """Record one request's outcome (``ok``, ``refused``, ``timeout``, ``error``) and wake waiters."""
        cond = self._condition()
        async with cond:
            self.in_flight -= 1
            if outcome == "ok":
                self.successes += 1
                self.confirmed = max(self.confirmed, ticket.in_flight)
                self._streak += 1
                if self._streak >= PROBE_ROUNDS * max(1.0, self.limit) and self.limit < self.max_workers:
                    self.limit += 1
                    self._streak = 0
            elif outcome == "refused":
                self.refused += 1
                if ticket.epoch == self.epoch:
                    self.limit = float(max(1, min(self.limit, ticket.in_flight - 1)))
                    self.confirmed = min(self.confirmed, int(self.limit))
                    self.epoch += 1
                    self._streak = 0
            elif outcome == "timeout":
                self.timeouts += 1
                if ticket.epoch == self.epoch:
                    self.limit = max(1.0, self.limit * TIMEOUT_FACTOR)
                    self.epoch += 1
                    self._streak = 0
            if remaining is not None and remaining <= 0 and reset:
                self._hold_until = max(self._hold_until, time.monotonic() + reset)
            cond.notify_all()

    def snapshot(self) -> dict[str, int]:
        """What a progress bar shows: requests in flight, the limit, 429s seen."""
        return {"in_flight": self.in_flight, "limit": int(self.limit), "refused_429": self.refused}
