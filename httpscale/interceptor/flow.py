"""Flow control between the proxy's two sides, one `Flow` per connection (client or upstream).

A side stops reading while the other side's write buffer is over its high-water mark, so a
fast sender never fills the proxy's memory for a slow receiver: the client's connection is
paused for `UPSTREAM_FULL` while the upstream's buffer is full, and the upstream's for
`CLIENT_FULL` while the client's is. A client connection also pauses for reasons of its own
(a pipelined request waiting its turn, a held body over its limit, a request that closes the
connection). Reasons are independent bits: pausing or resuming one twice is a no-op, and the
transport reads again only when no reason is left.

`lost` (from connection_lost) clears everything, and the side that was held back by this one
is let go by the exchange (`Exchange.upstream_lost`, `EndpointPool.give_back`): a reason set
because of a connection must never outlive it, or the other side would wait forever.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = [
    "CLIENT_FULL",
    "CLOSING",
    "ERROR",
    "PENDING_BODY",
    "PIPELINE",
    "UPSTREAM_FULL",
    "Flow",
]

#: Why a connection does not read (bits; compiled, a Final int is a C constant).
PIPELINE: Final = 1  # client: a request waits for the one before it to be answered
PENDING_BODY: Final = 2  # client: a held request's body reached its limit
UPSTREAM_FULL: Final = 4  # client: the upstream's write buffer is over its high-water mark
CLOSING: Final = 8  # client: bytes came after a request that closes the connection
ERROR: Final = 16  # client: bad bytes after complete requests, which are answered first
CLIENT_FULL: Final = 32  # upstream: the client's write buffer is over its high-water mark
_NAMES: Final = (
    (PIPELINE, "pipeline"), (PENDING_BODY, "pending-body"), (UPSTREAM_FULL, "upstream-full"),
    (CLOSING, "closing"), (ERROR, "error"), (CLIENT_FULL, "client-full"),
)


class Flow:
    """One connection's reading, paused for any of several reasons, and whether its own
    write buffer is over the high-water mark (`write_paused`, kept by the protocol's
    pause_writing/resume_writing)."""

    __slots__ = ("_reasons", "_transport", "write_paused")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._reasons = 0
        self.write_paused = False

    def attach(self, transport: asyncio.Transport) -> None:
        """The connection is made (connection_made)."""
        self._transport = transport

    def pause_reading(self, reason: int) -> None:
        if not self._reasons and self._transport is not None:
            self._transport.pause_reading()
        self._reasons |= reason

    def resume_reading(self, reason: int) -> None:
        if self._reasons & reason:
            self._reasons &= ~reason
            if not self._reasons and self._transport is not None:
                self._transport.resume_reading()

    def paused_for(self) -> list[str]:
        """The reasons reading is paused, by name (for tests and diagnostics)."""
        return [name for bit, name in _NAMES if self._reasons & bit]

    def lost(self) -> None:
        """The connection is gone (connection_lost): nothing is paused any more."""
        self._transport = None
        self._reasons = 0
        self.write_paused = False
