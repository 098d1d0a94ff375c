"""A deadline enforced by one lazily re-armed timer.

Connections live long and serve many requests; each request moves a deadline (head wanted by,
idle until). Creating and cancelling a timer per move costs microseconds on the hot path, so
`Deadline` keeps one timer armed and only re-arms it when a deadline moves *earlier*. Moving it
later is a float assignment; when the armed timer fires early it looks at the current deadline
and either re-arms for it or calls `on_expiry`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

__all__ = ["NEVER", "Deadline"]

NEVER: Final = float("inf")


def _nothing() -> None:
    pass


class Deadline:
    __slots__ = ("_due", "_loop", "_on_expiry", "_timer", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expiry = on_expiry
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self.when = NEVER  # loop time; NEVER: nothing to enforce

    def set(self, when: float) -> None:
        """Enforce `when` (loop time), earlier or later than before."""
        self.when = when
        timer = self._timer
        if timer is not None:
            if self._due <= when:
                return  # fires earlier and re-evaluates then
            timer.cancel()
        if when != NEVER:
            self._due = when
            self._timer = self._loop.call_at(when, self._fire)

    def clear(self) -> None:
        """Nothing to enforce for now; the armed timer, if any, lapses harmlessly."""
        self.when = NEVER

    def stop(self) -> None:
        """For good (the connection is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.when = NEVER
        # `on_expiry` is the owner's bound method: dropping it breaks the owner -> deadline ->
        # owner cycle, so the closed connection is freed by reference counting.
        self._on_expiry = _nothing

    def _fire(self) -> None:
        self._timer = None
        when = self.when
        if when == NEVER:
            return
        if self._loop.time() < when:
            self.set(when)
        else:
            self.when = NEVER
            self._on_expiry()
