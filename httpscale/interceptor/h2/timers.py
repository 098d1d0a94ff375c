"""Stream deadlines of one HTTP/2 connection on a single timer.

An HTTP/1.1 connection carries one exchange at a time and keeps one lazily re-armed timer
(deadline.py). An HTTP/2 connection carries many streams; a `Deadline` each meant a timer made,
armed and cancelled for every stream (uvloop: a libuv timer handle apiece). Here each stream's
deadline is a number, and the connection keeps one `Deadline` armed for the earliest of them:
a stream's deadline set later than that (the usual case: every stream of a connection has the
same timeouts and started later) costs a comparison and a set insertion. When the timer fires,
the expired streams are told and the timer is armed for the next earliest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from httpscale.interceptor.deadline import NEVER, Deadline

__all__ = ["ConnectionDeadlines", "StreamDeadline"]


def _nothing() -> None:
    pass


class ConnectionDeadlines:
    __slots__ = ("_deadline", "_loop", "watched")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._deadline = Deadline(loop, self._due)
        self.watched: set[StreamDeadline] = set()

    def watch(self, deadline: StreamDeadline, when: float) -> None:
        self.watched.add(deadline)
        # Only ever moved earlier: an armed timer set for a later time would skip the others.
        if when < self._deadline.when:
            self._deadline.set(when)

    def _due(self) -> None:
        now = self._loop.time()
        earliest = NEVER
        for deadline in list(self.watched):
            when = deadline.when
            if when <= now:
                self.watched.discard(deadline)
                deadline.when = NEVER
                deadline.on_expiry()
            elif when < earliest:
                earliest = when
        if earliest < self._deadline.when:
            self._deadline.set(earliest)

    def stop(self) -> None:
        self._deadline.stop()
        self.watched.clear()


class StreamDeadline:
    """`deadline.Deadline`'s interface for one stream (set, clear, stop; `when`)."""

    __slots__ = ("_conn", "on_expiry", "when")

    def __init__(self, conn: ConnectionDeadlines, on_expiry: Callable[[], None]) -> None:
        self._conn = conn
        self.on_expiry = on_expiry
        self.when = NEVER

    def set(self, when: float) -> None:
        self.when = when
        self._conn.watch(self, when)

    def clear(self) -> None:
        self.when = NEVER

    def stop(self) -> None:
        self.when = NEVER
        self._conn.watched.discard(self)
        # Breaks the stream -> deadline -> stream cycle (freed by reference counting).
        self.on_expiry = _nothing
