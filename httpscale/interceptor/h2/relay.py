"""The bytes of one HTTP/2 stream: its request body on the way to the upstream, its response
on the way to the client, and the backpressure between the two (see server.py for the
connection's part).

- Request DATA waits in `body` until passed upstream (`pump_up`, to the stream's `up`: an
  HTTP/2 upstream stream or an HTTP/1.1 connection, http1client.py) and is acknowledged to
  the client only then: the stream's flow-control window is the bound on what it buffers.
- Response DATA waits in `out` for the client's windows; the upstream is told (`consumed`)
  as the bytes leave in DATA frames (`sent`): an HTTP/2 upstream's window is reopened only
  then, an HTTP/1.1 connection reads again once the queue is below the low-water mark.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from httpscale.interceptor.exchange import FINISHED, STREAMING
from httpscale.interceptor.h2.fields import HOP

if TYPE_CHECKING:
    from httpscale.interceptor.h2.server import H2ServerConnection
    from httpscale.interceptor.h2.timers import StreamDeadline
    from httpscale.interceptor.proxy import Proxy

__all__ = ["StreamRelay"]


class StreamRelay:
    """Base of `H2Stream`, which sets these and implements the two hooks below."""

    conn: H2ServerConnection
    proxy: Proxy
    id: int
    phase: int
    status: int
    cold_start: bool
    head_only: bool
    deadline: StreamDeadline
    _head_due: bool

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        # Request body from the client, not yet passed on (unacknowledged: the stream's
        # window bounds it).
        self.request_done = False
        self.body: deque[bytes] = deque()
        self.body_passed = False  # some of it went upstream: no retry elsewhere after that
        self.trailers_in: list[tuple[bytes, bytes]] | None = None
        self._request_sent = False
        # Response to the client, queued past its flow-control windows.
        self.response_started = False
        self.response_done = False
        self.out: deque[bytes] = deque()
        self.out_size = 0
        self.out_end = False
        self.out_trailers: list[tuple[bytes, bytes]] | None = None
        self.ended_out = False
        self.reset = False
        limits = proxy.settings.limits
        self.high_water = limits.write_high_water
        self.low_water = limits.write_low_water
        # An HTTP/2 upstream stream (forward.py binds it), and its window owed to it.
        self.up: Any = None
        self._up_blocked = False
        self._up_ended = False
        self._credit = 0

    def bound(self) -> None:
        """The request is leaving for the upstream (H2Stream: its deadlines start)."""
        raise NotImplementedError

    def request_sent(self) -> None:
        """All of the request went upstream (H2Stream: the response head is due)."""
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    # -- request body from the client (server.py) --------------------------------------------

    def request_data(self, data: bytes, *, ended: bool = False) -> None:
        """`ended`: the frame had END_STREAM (request_end follows), so the data can leave
        with the end toward the upstream, in one frame."""
        if ended:
            self.request_done = True
        if self.phase == FINISHED:
            self.conn.acknowledge(self.id, len(data))  # answered already: dropped
            return
        if not data:
            return
        self.body.append(data)
        if self.phase == STREAMING:
            self.deadline.set(self.proxy.time() + self.proxy.body_idle)
        if self.up is not None:
            self.pump_up()

    def request_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.trailers_in = trailers  # StreamEnded follows

    def request_end(self) -> None:
        self.request_done = True
        if self.phase == FINISHED:
            return
        if self.up is not None:
            self.pump_up()

    def pump_up(self) -> None:
        """Pass what the client sent to the HTTP/2 upstream, while it takes more."""
        up = self.up
        while self.body and not self._up_blocked:
            data = self.body.popleft()
            self.body_passed = True
            last = not self.body and self.request_done and self.trailers_in is None
            if not up.send_data(data, end_stream=last):
                self._up_blocked = True
            self.conn.acknowledge(self.id, len(data))
            if last:
                self._up_ended = True
                self.request_sent()
                return
        if not self.body and self.request_done and not self._up_ended:
            self._up_ended = True
            if self.trailers_in is not None:
                up.send_trailers(self.trailers_in)
            else:
                up.end()
            self.request_sent()

    def bind_up(self, up: Any, *, ended: bool) -> None:
        self.up = up
        self._up_ended = ended
        self.bound()
        if self._credit:
            credit, self._credit = self._credit, 0
            up.consumed(credit)
        if ended:
            self.request_sent()
        else:
            self.pump_up()

    # -- UpstreamStreamSink (contract C) -----------------------------------------------------

    def upstream_headers(self, headers: list[tuple[bytes, bytes]], *, end_stream: bool) -> None:
        status = 0
        for name, value in headers:
            if name == b":status":
                status = int(value)
                break
        if status < 200:
            return  # interim (100, 103): not relayed
        self.response_head(status, headers, end_stream=end_stream)

    def upstream_data(self, data: bytes, *, end_stream: bool) -> None:
        if end_stream:
            self.response_end(None, data)  # one DATA frame with END_STREAM, not two
        else:
            self.response_data(data)

    def upstream_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.response_end([(n, v) for n, v in trailers if n[:1] != b":"])

    def upstream_writable(self) -> None:
        self._up_blocked = False
        if self.up is not None and self.phase != FINISHED:
            self.pump_up()

    # -- response to the client ---------------------------------------------------------------

    def response_head(
        self, status: int, headers: list[tuple[bytes, bytes]], *, end_stream: bool
    ) -> None:
        if self.phase == FINISHED:
            return
        self._head_due = False
        self.status = status
        self.response_started = True
        out = [(b":status", str(status).encode())]
        for name, value in headers:
            name = name.lower()
            if name[:1] != b":" and name not in HOP:
                out.append((name, value))
        out.append(
            (b"x-httpscale-cold-start", b"true" if self.cold_start else b"false")
        )
        end = end_stream or self.head_only or status in (204, 304)
        self.deadline.set(self.proxy.time() + self.proxy.body_idle)
        self.conn.send_headers(self, out, end_stream=end)
        if end:
            self.response_end(None)

    def response_data(self, data: bytes) -> None:
        if self.phase == FINISHED or not data or self.head_only:
            if self.up is not None and data:
                self.up.consumed(len(data))
            return
        self.deadline.set(self.proxy.time() + self.proxy.body_idle)
        self.out.append(data)
        self.out_size += len(data)
        self.conn.flush_stream(self)

    def response_end(self, trailers: list[tuple[bytes, bytes]] | None, data: bytes = b"") -> None:
        """The response is complete; `data`, its last bytes, leave with its end (one frame)."""
        if data:
            if self.phase == FINISHED or self.head_only:
                if self.up is not None:
                    self.up.consumed(len(data))
            else:
                self.out.append(data)
                self.out_size += len(data)
        if self.phase == FINISHED:
            return
        self.response_done = True
        if not self.ended_out:
            self.out_end = True
            self.out_trailers = trailers or None
            self.conn.flush_stream(self)
        self.up = None
        self._finish()

    def sent(self, n: int) -> None:
        """`n` queued body bytes left in DATA frames (server.py)."""
        self.out_size -= n
        up = self.up
        if up is not None:
            up.consumed(n)
        elif self.phase != FINISHED:
            self._credit += n
