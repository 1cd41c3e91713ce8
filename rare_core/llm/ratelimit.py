"""Token buckets for requests-per-minute and tokens-per-minute limits.

In: the limits, and ``acquire(amount)`` calls from any event loop. Out: ``acquire`` returns
once the units were taken (waiting with ``asyncio.sleep``).

A client keeps one :class:`RateLimiter` for its whole life, so a second batch (a re-ask round)
does not start with a fresh burst. Each batch may run on its own event loop, and asyncio
primitives belong to one loop: the bucket's state (tokens, timestamp) lives on the instance
behind a thread lock, and the asyncio.Lock that queues waiters is created lazily per loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref


class TokenBucket:
    """Allows ``rate_per_minute`` units per minute, with bursts up to one second's worth (min 1)."""

    def __init__(self, rate_per_minute: float) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._state = threading.Lock()  # batches on two threads' loops may share the bucket
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = asyncio.Lock()
        return lock

    def _take(self, amount: float) -> float:
        """Take ``amount`` units and return 0, or return the seconds to wait before trying again."""
        with self._state:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            need = min(amount, self.capacity)
            if self.tokens >= need:
                self.tokens -= amount
                return 0.0
            return (need - self.tokens) / self.rate

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` units are available, then take them. Amounts larger than the
        bucket are allowed (they wait for a full bucket and drive it negative)."""
        async with self._loop_lock():
            while (wait := self._take(amount)) > 0:
                await asyncio.sleep(wait)


class RateLimiter:
    """Both limits at once; either may be None (no limit)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests:
            await self.requests.acquire(1)
        if self.tokens:
            await self.tokens.acquire(estimated_tokens)
