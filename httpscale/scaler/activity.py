"""Which routes are active, and the watches that push changes to StreamIsActive callers.

A route is active while any of these holds:
- a value KEDA is told is above zero: its concurrency, or its request rate (KEDA's own rule);
- it was in use recently: the collector saw it in use (a request counted, or one in flight) less
  than the route's activity window ago (`RouteLoad.idle_at`). This is what keeps a trickle of
  short requests, which no poll ever sees in flight, from letting the route drop to zero;
- a wake event from an interceptor holds it. The hold exists because the push (`/wake`)
  outruns the poll (`/queue`): a poll already in flight when the request arrived still reports
  Concurrency 0, and that stale zero must not flip the route back to inactive. So the hold ends
  only when a poll shows Concurrency > 0 (the poll carries the route from then on) or when
  `hold` seconds pass (the request was answered or dropped before any poll saw it).

The ends of the recent-use window and of the hold are timers, not loops: one per route, re-armed
only when it fires early (the window moved on meanwhile). IsActive and every stream read the
same state, so they always agree.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

__all__ = ["ActivityBoard", "ActivityWatch", "RouteLoad"]


@dataclass(frozen=True, slots=True)
class RouteLoad:
    concurrency: int = 0
    rate: float = 0.0  # requests per second over the route's window
    # Loop time at which the route's last seen use stops keeping it active (last use plus
    # its activity window); -inf when it was never seen in use.
    idle_at: float = -math.inf


class ActivityBoard:
    """Per-route load and wake holds; notifies watches when a route's activity flips."""

    def __init__(self, hold: float, clock: Callable[[], float] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._clock = clock or self._loop.time
        self._hold = hold
        self._load: dict[str, RouteLoad] = {}
        self._wake_until: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Routes kept active by recent use, until when; each with one timer set at or before.
        self._busy_until: dict[str, float] = {}
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        self._active: dict[str, bool] = {}
        self._watches: dict[str, set[ActivityWatch]] = {}
        self._closed = False

    # -- inputs ------------------------------------------------------------------------------

    def update(self, loads: Mapping[str, RouteLoad]) -> None:
        """Replace every route's load with a fresh aggregate (routes absent: no load)."""
        touched = set(self._load) | set(loads)
        self._load = dict(loads)
        now = self._clock()
        for key, load in loads.items():
            if load.concurrency > 0:
                self._clear_hold(key)
            if load.idle_at > now:
                self._busy_until[key] = load.idle_at
                self._arm_idle(key, load.idle_at)
            else:
                self._clear_busy(key)
        for key in touched - loads.keys():
            self._clear_busy(key)
        for key in touched:
            self._refresh(key)

    def wake(self, key: str) -> None:
        """An interceptor is holding a request for `key` right now."""
        until = self._clock() + self._hold
        if self._wake_until.get(key, -1.0) >= until:
            return
        self._wake_until[key] = until
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._timers[key] = self._loop.call_at(until, self._hold_expired, key)
        self._refresh(key)

    # -- queries -----------------------------------------------------------------------------

    def load(self, key: str) -> RouteLoad:
        return self._load.get(key, RouteLoad())

    def is_active(self, key: str) -> bool:
        load = self._load.get(key)
        if load is not None and (load.concurrency > 0 or load.rate > 0):
            return True
        if key in self._busy_until:
            return True
        until = self._wake_until.get(key)
        return until is not None and self._clock() < until

    def recently_used(self, key: str) -> bool:
        """True while recent use (not a value > 0 or a hold) keeps `key` active."""
        return key in self._busy_until

    def held(self, key: str) -> bool:
        """True while a wake hold (not yet confirmed by a poll) keeps `key` active."""
        return key in self._wake_until

    @property
    def closed(self) -> bool:
        return self._closed

    def watch(self, key: str) -> ActivityWatch:
        """A watch on `key`; close it (or use it as a context manager) when the stream ends."""
        watch = ActivityWatch(self, key)
        self._watches.setdefault(key, set()).add(watch)
        return watch

    @property
    def open_watches(self) -> int:
        return sum(len(w) for w in self._watches.values())

    def drop(self, keys: frozenset[str]) -> None:
        """Routes deleted: end their watches (the stream then reports NOT_FOUND)."""
        for key in keys:
            self._clear_hold(key)
            self._clear_busy(key)
            self._load.pop(key, None)
            self._active.pop(key, None)
            for watch in self._watches.get(key, ()):
                watch.end()

    def close(self) -> None:
        """End every watch (shutdown: streams finish instead of being cancelled)."""
        self._closed = True
        for timers in (self._timers, self._idle_timers):
            for timer in timers.values():
                timer.cancel()
            timers.clear()
        for watches in self._watches.values():
            for watch in watches:
                watch.notify()

    # -- internals ---------------------------------------------------------------------------

    def _discard(self, watch: ActivityWatch) -> None:
        watches = self._watches.get(watch.key)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.key]

    def _clear_hold(self, key: str) -> None:
        self._wake_until.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _arm_idle(self, key: str, until: float) -> None:
        timer = self._idle_timers.get(key)
        if timer is not None:
            if timer.when() <= until:
                return  # it fires first and re-arms for the later end (no churn per poll)
            timer.cancel()
        self._idle_timers[key] = self._loop.call_at(until, self._idle_check, key)

    def _idle_check(self, key: str) -> None:
        timer = self._idle_timers.pop(key)
        until = self._busy_until.get(key)
        if until is not None and until > timer.when():
            self._idle_timers[key] = self._loop.call_at(until, self._idle_check, key)
            return
        # Expired as scheduled; the clock is not compared again, since a timer may fire a
        # hair before its time (the loop's clock resolution).
        self._busy_until.pop(key, None)
        self._refresh(key)

    def _clear_busy(self, key: str) -> None:
        self._busy_until.pop(key, None)
        timer = self._idle_timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _hold_expired(self, key: str) -> None:
        self._timers.pop(key, None)
        self._wake_until.pop(key, None)
        self._refresh(key)

    def _refresh(self, key: str) -> None:
        active = self.is_active(key)
        if self._active.get(key, False) == active:
            return
        if active:
            self._active[key] = True
        else:
            self._active.pop(key, None)
        for watch in self._watches.get(key, ()):
            watch.notify()


class ActivityWatch:
    """Yields a route's activity now and then each time it flips (no repeats)."""

    def __init__(self, board: ActivityBoard, key: str) -> None:
        self.key = key
        self._board = board
        self._event = asyncio.Event()
        self._sent: bool | None = None
        self._ended = False

    def notify(self) -> None:
        self._event.set()

    def end(self) -> None:
        self._ended = True
        self._event.set()

    def close(self) -> None:
        self._board._discard(self)

    def __enter__(self) -> ActivityWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def changes(self) -> AsyncIterator[bool]:
        """The current value first, then every change, until the board closes or the route
        is dropped."""
        while True:
            # Clear before reading: a notify after this point re-arms the wait. The event loop
            # is single-threaded, so nothing runs between the clear and the read.
            self._event.clear()
            if self._ended:
                return
            value = self._board.is_active(self.key)
            if value != self._sent:
                self._sent = value
                yield value
                continue
            if self._board.closed:
                return
            await self._event.wait()
