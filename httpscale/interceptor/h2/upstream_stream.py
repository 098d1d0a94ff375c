"""An HTTP/2 stream to an upstream, as its user sees it (contract C), and its send queue.

Request data past the peer's windows waits in the stream's queue: `send_data` answers False
above the write high-water mark, and the sink hears `upstream_writable` once the queue is back
under the low one. Nothing moves into the socket while its write buffer is full.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError

if TYPE_CHECKING:
    from httpscale.interceptor.h2.upconn import H2UpConnection
    from httpscale.interceptor.h2.upstream import UpstreamStreamSink

__all__ = ["H2Headers", "H2UpstreamRefused", "UpstreamStream", "code_name"]

H2Headers = list[tuple[bytes, bytes]]


class H2UpstreamRefused(Exception):
    """No stream could be opened on any connection to the endpoint (all at their limits,
    draining, shutting down, or the request cannot be sent to it); retryable elsewhere like
    a connect failure."""


def code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


class UpstreamStream:
    """One request/response exchange on an upstream HTTP/2 connection (contract C)."""

    __slots__ = (
        "_blocked", "_conn", "_end", "_offset", "_queue", "_queued", "_trailers", "_unacked",
        "done", "id", "local_closed", "sink",
    )

    def __init__(self, conn: H2UpConnection, sink: UpstreamStreamSink) -> None:
        self._conn = conn
        self.sink = sink
        self.id = 0  # assigned when its HEADERS go out
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in _queue not yet sent
        self._offset = 0  # of the first unsent byte in _queue[0]
        self._end = False  # END_STREAM follows the queue
        self._trailers: H2Headers | None = None
        self._blocked = False  # send_data answered False; upstream_writable is owed
        self._unacked = 0  # bytes handed to the sink and not yet consumed
        self.local_closed = False  # END_STREAM sent
        self.done = False  # off the connection; the sink had its last event (or reset it)

    def send_data(self, data: bytes, *, end_stream: bool = False) -> bool:
        if self.done or self._end:
            return True  # over: nothing the caller should wait for
        if data:
            self._queue.append(data)
            self._queued += len(data)
        self._end = end_stream
        self.pump()
        if self._queued > self._conn.high_water:
            self._blocked = True
            return False
        return True

    def send_trailers(self, trailers: H2Headers) -> None:
        if self.done or self._end:
            return
        self._trailers = trailers
        self._end = True
        self.pump()

    def end(self) -> None:
        self.send_data(b"", end_stream=True)

    def consumed(self, n: int) -> None:
        n = min(n, self._unacked)
        if n > 0:
            self._unacked -= n
            self._acknowledge(n)

    def reset(self, code: int = ErrorCodes.CANCEL) -> None:
        conn = self._conn
        if not self.done:
            if self.id and conn.usable():
                try:
                    conn.h2.reset_stream(self.id, code)
                except StreamClosedError:
                    pass  # closed by the peer in the same read
            self._finish()
        self._release()
        conn.flush()

    # -- the connection's side: what the peer sent on this stream ------------------------------

    def headers_received(self, headers: H2Headers, *, ended: bool) -> None:
        if ended:
            self._remote_ended()
        self.sink.upstream_headers(headers, end_stream=ended)

    def data_received(self, data: bytes, flow_controlled: int, *, ended: bool) -> None:
        if flow_controlled > len(data):
            self._acknowledge(flow_controlled - len(data))  # padding: nobody consumes it
        self._unacked += len(data)
        if ended:
            self._remote_ended()
        if data or ended:
            self.sink.upstream_data(data, end_stream=ended)

    def trailers_received(self, trailers: H2Headers) -> None:
        self._remote_ended()
        self.sink.upstream_trailers(trailers)

    def reset_received(self, code: int, *, by_peer: bool) -> None:
        self._finish()
        self._release()
        if by_peer:
            reason = f"upstream reset the stream ({code_name(code)})"
        else:  # h2 found the response invalid and reset the stream itself
            reason = f"invalid response from upstream ({code_name(code)})"
        retryable = by_peer and code == ErrorCodes.REFUSED_STREAM
        self.sink.upstream_reset(code, reason, retryable=retryable)

    def refused(self, reason: str) -> None:
        """GOAWAY says the peer never processed this stream."""
        self._finish()
        self._unacked = 0  # it sent nothing on it
        self.sink.upstream_reset(ErrorCodes.REFUSED_STREAM, reason, retryable=True)

    def _remote_ended(self) -> None:
        """The response is complete; the sink hears it right after this."""
        if not self.local_closed and self._conn.usable():
            # The server answered without the rest of the request: it wants no more of it.
            try:
                self._conn.h2.reset_stream(self.id, ErrorCodes.NO_ERROR)
            except StreamClosedError:
                pass
        self._finish()

    def _finish(self) -> None:
        self.done = True
        self._queue.clear()
        self._queued = 0
        self._offset = 0
        self._blocked = False
        self._conn.forget(self)

    def _acknowledge(self, n: int) -> None:
        conn = self._conn
        if self.id and conn.usable():
            # For a closed stream h2 opens only the connection window, which is what is owed.
            conn.h2.acknowledge_received_data(n, self.id)
            conn.flush_soon()

    def _release(self) -> None:
        """Nobody consumes the unread bytes any more: give them back to the connection."""
        n, self._unacked = self._unacked, 0
        if n:
            self._acknowledge(n)

    def pump(self) -> None:
        """Move queued request data into frames as far as the windows (and our socket) allow."""
        conn = self._conn
        if self.id == 0 or self.done or not conn.usable() or conn.write_paused:
            return
        h2 = conn.h2
        sid = self.id
        queue = self._queue
        while queue and not conn.write_paused:
            room = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size)
            if room <= 0:
                break
            chunk = queue[0]
            start = self._offset
            end = min(len(chunk), start + room)
            # Frames are cut from the queued bytes in place (a big body is not copied per frame).
            piece = chunk if start == 0 and end == len(chunk) else memoryview(chunk)[start:end]
            if end == len(chunk):
                queue.popleft()
                self._offset = 0
            else:
                self._offset = end
            self._queued -= end - start
            last = not queue and self._end and self._trailers is None
            h2.send_data(sid, piece, end_stream=last)
            self.local_closed = last
            if queue:
                conn.flush()  # lets the transport say pause_writing before the next frame
            else:
                # The last frame (a unary call's only one): with the other streams' of this
                # loop turn, in one write. What h2 holds meanwhile is within the windows.
                conn.flush_soon()
        if not queue and self._end and not self.local_closed:
            if self._trailers is not None:
                h2.send_headers(sid, self._trailers, end_stream=True)
            else:
                h2.send_data(sid, b"", end_stream=True)
            self.local_closed = True
            conn.flush_soon()
        if self._blocked and self._queued <= conn.low_water:
            self._blocked = False
            self.sink.upstream_writable()
