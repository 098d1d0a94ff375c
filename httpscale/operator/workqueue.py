"""The reconcile queue: keys to look at again, each at most once in the queue and never
handled by two workers at once (client-go's workqueue contract).

- `add(key)` while the key waits: nothing (it is looked at once, with the newest state);
  while a worker handles it: it is queued again when that worker calls `done(key)`.
- `retry(key)` after a failure: queued again after a per-key delay that grows with each
  consecutive failure (jittered), until `forget(key)` after a success resets it.
- Order is first-in first-out, so one object failing over and over cannot starve the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from httpscale.kube.backoff import Backoff, BackoffSettings

__all__ = ["QueueClosed", "WorkQueue"]

K = TypeVar("K", bound=Hashable)


class QueueClosed(Exception):
    """`get()` on a closed queue: the worker should stop."""


class WorkQueue(Generic[K]):
    def __init__(self, retry_backoff: BackoffSettings) -> None:
        self._retry_backoff = retry_backoff
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()  # added again while being processed
        self._failures: dict[K, Backoff] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued, nothing being processed
        self._idle.set()
        self._closed = False

    def __len__(self) -> int:
        """Keys waiting (not counting those being processed or waiting out a retry delay)."""
        return len(self._queue)

    @property
    def processing(self) -> int:
        return len(self._processing)

    def add(self, key: K) -> None:
        if self._closed:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()  # looked at now, so the delayed retry is moot
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._ready.set()
            self._idle.clear()

    def add_after(self, key: K, delay: float) -> None:
        if self._closed or key in self._queued:
            return
        old = self._timers.pop(key, None)
        if old is not None and old.when() <= asyncio.get_running_loop().time() + delay:
            self._timers[key] = old  # an earlier retry is already due
            return
        if old is not None:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def retry(self, key: K) -> float:
        """Queue `key` again after its next backoff delay; returns that delay (seconds)."""
        backoff = self._failures.setdefault(key, Backoff(self._retry_backoff))
        delay = backoff.next_delay()
        self.add_after(key, delay)
        return delay

    def failures(self, key: K) -> int:
        backoff = self._failures.get(key)
        return backoff.attempts if backoff is not None else 0

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    async def get(self) -> K:
        """The next key, marked as processing until `done(key)`; `QueueClosed` once closed."""
        while not self._queue:
            if self._closed:
                raise QueueClosed
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)
        elif not self._queue and not self._processing:
            self._idle.set()

    async def join(self) -> None:
        """Until no key is queued or being processed (retries still waiting do not count)."""
        await self._idle.wait()

    def close(self) -> None:
        """Wake every waiting `get()` with `QueueClosed`; drop pending retries."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._queue.clear()
        self._queued.clear()
        self._ready.set()
        if not self._processing:
            self._idle.set()

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)
