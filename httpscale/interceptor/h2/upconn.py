"""One HTTP/2 client connection to an upstream: the h2 state machine driven by an asyncio.Protocol,
and the streams multiplexed on it.

Rules this module keeps:
- Received DATA is acknowledged (WINDOW_UPDATE) only when the stream's sink calls `consumed`, so
  a slow client slows its upstream stream down instead of filling our memory. A stream that ends
  without its sink consuming everything (reset by either side) hands its bytes back to the
  connection window at once, or the other streams would starve.
- Request data past the peer's windows waits in a per-stream queue; `send_data` answers False
  above the write high-water mark and the sink hears `upstream_writable` below the low one.
- While the socket's write buffer is full we stop reading it (a peer that does not read cannot
  make us buffer its PING and SETTINGS answers), move no more DATA into it, and keep new
  streams' HEADERS back: such a stream has not been sent, so losing the connection leaves it
  retryable.
- h2 puts the whole connection into its CLOSED state on receiving GOAWAY (python-hyper/h2#1181),
  which would fail the streams the server still finishes; `_GracefulH2Connection` reports the
  GOAWAY without that transition, and this class refuses new streams itself.
- Every stream ends exactly once for its sink: end_stream / trailers, or `upstream_reset`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import TYPE_CHECKING, Final, Protocol, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    InformationalResponseReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes
from hyperframe.frame import Frame, GoAwayFrame

from httpscale.interceptor.settings import InterceptorSettings

if TYPE_CHECKING:
    from httpscale.interceptor.h2.upstream import UpstreamStreamSink

__all__ = ["ConnectionOwner", "H2UpConnection", "H2UpstreamRefused", "UpstreamStream"]

Headers = list[tuple[bytes, bytes]]

#: Stream ids are 31 bits; a client's are odd.
MAX_STREAM_ID: Final = 2**31 - 1
#: The connection receive window, in stream windows: each stream's own window bounds what it may
#: hold unread; the connection's only has to keep a few slow streams from stalling the others.
_CONNECTION_WINDOW_STREAMS: Final = 64
_DEFAULT_WINDOW: Final = 65535


class H2UpstreamRefused(Exception):
    """No stream could be opened on any connection to the endpoint (all at their limits,
    draining, shutting down, or the request cannot be sent to it); retryable elsewhere like
    a connect failure."""


class ConnectionOwner(Protocol):
    def stream_slot_freed(self, conn: H2UpConnection) -> None:
        """A connection can take another stream (or stopped taking any): wake waiters."""

    def connection_gone(self, conn: H2UpConnection) -> None:
        """The connection closed: forget it."""


class _GracefulH2Connection(H2Connection):
    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Event]]:
        # As h2 does, minus the CLOSED transition and the outbound-buffer purge: streams up to
        # last_stream_id may still complete (RFC 9113 6.8).
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


class UpstreamStream:
    """One request/response exchange on an upstream HTTP/2 connection (contract C)."""

    __slots__ = (
        "_blocked", "_conn", "_end", "_queue", "_queued", "_trailers", "_unacked", "done",
        "id", "local_closed", "sink",
    )

    def __init__(self, conn: H2UpConnection, sink: UpstreamStreamSink) -> None:
        self._conn = conn
        self.sink = sink
        self.id = 0  # assigned when its HEADERS go out
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in _queue
        self._end = False  # END_STREAM follows the queue
        self._trailers: Headers | None = None
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
        self._conn.flush_stream(self)
        if self._queued > self._conn.high_water:
            self._blocked = True
            return False
        return True

    def send_trailers(self, trailers: Headers) -> None:
        if self.done or self._end:
            return
        self._trailers = trailers
        self._end = True
        self._conn.flush_stream(self)

    def end(self) -> None:
        self.send_data(b"", end_stream=True)

    def consumed(self, n: int) -> None:
        n = min(n, self._unacked)
        if n > 0:
            self._unacked -= n
            self._conn.acknowledge(self, n)

    def reset(self, code: int = ErrorCodes.CANCEL) -> None:
        self._conn.reset_stream(self, code)


class H2UpConnection(asyncio.Protocol):
    """One HTTP/2 connection to an endpoint, client side (see the module docstring)."""

    def __init__(
        self, owner: ConnectionOwner, settings: InterceptorSettings, label: str, *, tls: bool
    ) -> None:
        self.owner = owner
        self.label = label  # "ip:port", for messages
        self._tls = tls
        self._settings = settings
        limits = settings.limits
        self.high_water = limits.write_high_water
        self.low_water = limits.write_low_water
        self._h2 = _GracefulH2Connection(
            H2Configuration(client_side=True, header_encoding=None)
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, UpstreamStream] = {}
        self._pending: deque[tuple[UpstreamStream, Headers, bool]] = deque()
        self.ready = asyncio.Event()  # the peer's SETTINGS arrived (or `failure` is set)
        self.closed = asyncio.Event()  # connection_lost ran
        self.failure: OSError | None = None
        self._reset_code: int = ErrorCodes.INTERNAL_ERROR  # for streams cut by connection loss
        self._reset_reason = ""
        self.draining = False  # takes no new stream; closes when its streams are done
        self._closing = False  # GOAWAY sent or aborted: h2 takes no more input from us
        self.lost = False
        self._write_paused = False
        self.last_used = 0.0
        self._loop = asyncio.get_running_loop()
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- for H2Upstreams -------------------------------------------------------------------

    def has_room(self) -> bool:
        if self.draining or self.lost or self.failure is not None or not self.ready.is_set():
            return False
        n = len(self.streams) + len(self._pending)
        if n >= self._h2.remote_settings.max_concurrent_streams:
            return False
        if self._h2.highest_outbound_stream_id + 2 * (len(self._pending) + 1) > MAX_STREAM_ID:
            # Ids exhausted: no new stream ever; the others finish, then the connection closes.
            self.drain()
            return False
        return True

    def open(self, headers: Headers, end_stream: bool, sink: UpstreamStreamSink) -> UpstreamStream:
        limit = self._h2.remote_settings.max_header_list_size
        if limit is not None:
            size = sum(len(n) + len(v) + 32 for n, v in headers)  # RFC 9113 6.5.2
            if size > limit:
                raise H2UpstreamRefused(
                    f"request header list of {size} bytes is over {self.label}'s "
                    f"SETTINGS_MAX_HEADER_LIST_SIZE of {limit}"
                )
        self._stop_idle_timer()
        self.last_used = self._loop.time()
        stream = UpstreamStream(self, sink)
        stream._end = end_stream
        if self._write_paused:
            self._pending.append((stream, headers, end_stream))
        else:
            self._start(stream, headers, end_stream)
        return stream

    def _start(self, stream: UpstreamStream, headers: Headers, end_stream: bool) -> None:
        h2 = self._h2
        sid = h2.get_next_available_stream_id()
        try:
            h2.send_headers(sid, headers, end_stream=end_stream)
        except ProtocolError as exc:
            # h2 validates while it HPACK-encodes: the encoder's table may now differ from the
            # peer's, so this connection takes no further stream.
            h2.streams.pop(sid, None)
            self.drain()
            raise H2UpstreamRefused(f"request headers not valid for HTTP/2: {exc}") from None
        stream.id = sid
        stream.local_closed = end_stream
        self.streams[sid] = stream
        self._flush()

    def drain(self) -> None:
        """Take no new stream; close once the open ones are done (GOAWAY, `retire`, ids)."""
        if self.draining:
            return
        self.draining = True
        self.owner.stream_slot_freed(self)
        if not self.streams and not self._pending:
            self.close()

    def close(self) -> None:
        """GOAWAY, then close once the write buffer has gone out."""
        self.draining = True
        self._stop_idle_timer()
        if self.transport is None or self.lost or self._closing:
            return
        self._closing = True
        try:
            self._h2.close_connection()
        except ProtocolError:
            pass  # a broken state: closing is all there is left to do
        self._flush()
        self.transport.close()

    def abort(self) -> None:
        self.draining = True
        self._closing = True
        self._stop_idle_timer()
        if self.transport is not None and not self.lost:
            self.transport.abort()

    # -- for UpstreamStream ----------------------------------------------------------------

    def flush_stream(self, stream: UpstreamStream) -> None:
        """Move queued request data into frames as far as the windows (and our socket) allow."""
        if stream.id == 0 or stream.done or self._closing or self.lost or self._write_paused:
            return
        h2 = self._h2
        sid = stream.id
        queue = stream._queue
        while queue and not self._write_paused:
            room = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size)
            if room <= 0:
                break
            chunk = queue[0]
            if len(chunk) <= room:
                queue.popleft()
            else:
                queue[0] = chunk[room:]
                chunk = chunk[:room]
            stream._queued -= len(chunk)
            last = not queue and stream._end and stream._trailers is None
            h2.send_data(sid, chunk, end_stream=last)
            stream.local_closed = last
            self._flush()  # lets the transport say pause_writing before the next frame
        if not queue and stream._end and not stream.local_closed:
            if stream._trailers is not None:
                h2.send_headers(sid, stream._trailers, end_stream=True)
            else:
                h2.send_data(sid, b"", end_stream=True)
            stream.local_closed = True
            self._flush()
        if stream._blocked and stream._queued <= self.low_water:
            stream._blocked = False
            stream.sink.upstream_writable()

    def acknowledge(self, stream: UpstreamStream, n: int) -> None:
        if self._closing or self.lost or stream.id == 0:
            return
        # For a closed stream h2 opens only the connection window, which is what is owed.
        self._h2.acknowledge_received_data(n, stream.id)
        self._flush()

    def reset_stream(self, stream: UpstreamStream, code: int) -> None:
        """The sink gives up on its stream (idempotent)."""
        if not stream.done:
            if stream.id != 0 and not self._closing and not self.lost:
                try:
                    self._h2.reset_stream(stream.id, code)
                except StreamClosedError:
                    pass  # closed by the peer in the same read
            self._drop(stream)
        self._release(stream)
        self._flush()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(self.high_water, self.low_water)
        if self._tls:
            ssl_object = cast(ssl.SSLObject | None, transport.get_extra_info("ssl_object"))
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn != "h2":
                self._fail(OSError(f"{self.label}: TLS server did not select h2 in ALPN "
                                   f"(selected {alpn!r}): it does not speak HTTP/2 over TLS"))
                return
        h2 = self._h2
        h2.initiate_connection()
        http2 = self._settings.http2
        h2.update_settings({
            SettingCodes.ENABLE_PUSH: 0,
            SettingCodes.INITIAL_WINDOW_SIZE: http2.initial_window_size,
            SettingCodes.MAX_FRAME_SIZE: http2.max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: http2.max_header_list_size,
        })
        window = min(MAX_STREAM_ID, _CONNECTION_WINDOW_STREAMS * http2.initial_window_size)
        if window > _DEFAULT_WINDOW:
            h2.increment_flow_control_window(window - _DEFAULT_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.lost or self._closing:
            return
        if not self.ready.is_set() and data.startswith(b"HTTP/"):
            first_line = data.split(b"\r\n", 1)[0][:60]
            self._fail(OSError(f"{self.label}: upstream is not HTTP/2: it answered {first_line!r}"))
            return
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as exc:
            self._flush()  # h2's GOAWAY
            what = "upstream broke HTTP/2" if self.ready.is_set() else "upstream is not HTTP/2"
            self._reset_code = ErrorCodes.PROTOCOL_ERROR
            self._fail(OSError(f"{self.label}: {what}: {exc}"))
            return
        for event in events:
            if self._closing:
                break  # its last stream ended and it closed: the rest is of no use
            self._event(event)
        self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._stop_idle_timer()
        if self.failure is None and not self.ready.is_set():
            self.failure = ConnectionResetError(
                f"{self.label}: connection closed before HTTP/2 was set up"
                + (f": {exc}" if exc else "")
            )
        self.ready.set()  # wakes a connect still waiting: it reads `failure`
        reason = self._reset_reason or (
            f"upstream connection to {self.label} lost" + (f": {exc}" if exc else "")
        )
        streams = list(self.streams.values())
        pending = [s for s, _, _ in self._pending]
        self.streams.clear()
        self._pending.clear()
        for stream in streams:
            stream.done = True
            stream.sink.upstream_reset(self._reset_code, reason, retryable=False)
        for stream in pending:
            stream.done = True
            stream.sink.upstream_reset(self._reset_code, reason, retryable=True)
        self.transport = None
        self.closed.set()
        self.owner.connection_gone(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is None or self.lost or self._closing:
            return
        self.transport.resume_reading()
        while self._pending and not self._write_paused:
            stream, headers, end_stream = self._pending.popleft()
            try:
                self._start(stream, headers, end_stream)
            except H2UpstreamRefused as exc:
                stream.done = True
                stream.sink.upstream_reset(ErrorCodes.INTERNAL_ERROR, str(exc), retryable=False)
                continue
            self.flush_stream(stream)
        for stream in list(self.streams.values()):
            self.flush_stream(stream)

    # -- inside ----------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self.transport is not None and not self.lost:
            self.transport.write(data)

    def _fail(self, failure: OSError) -> None:
        self.failure = failure
        self._reset_reason = str(failure)
        self.ready.set()
        self.abort()

    def _event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            self._data(event)
        elif isinstance(event, ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                ended = event.stream_ended is not None
                if ended:
                    self._remote_ended(stream)
                stream.sink.upstream_headers(_headers(event.headers), end_stream=ended)
        elif isinstance(event, InformationalResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.sink.upstream_headers(_headers(event.headers), end_stream=False)
        elif isinstance(event, TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._remote_ended(stream)
                stream.sink.upstream_trailers(_headers(event.headers))
        elif isinstance(event, StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._drop(stream)
                self._release(stream)
                code = int(event.error_code)
                if event.remote_reset:
                    reason = f"upstream reset the stream ({_code_name(code)})"
                else:
                    reason = f"invalid response from upstream ({_code_name(code)})"
                stream.sink.upstream_reset(
                    code, reason, retryable=event.remote_reset and code == ErrorCodes.REFUSED_STREAM
                )
        elif isinstance(event, WindowUpdated):
            if event.stream_id == 0:
                self._flush_all()
            elif (stream := self.streams.get(event.stream_id)) is not None:
                self.flush_stream(stream)
        elif isinstance(event, RemoteSettingsChanged):
            self.ready.set()
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._flush_all()
            self.owner.stream_slot_freed(self)
        elif isinstance(event, ConnectionTerminated):
            self._goaway(int(event.error_code or 0), event.last_stream_id or 0)

    def _data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        data = event.data
        if stream is None:
            # Reset by its sink earlier in this same read: h2 counted the frame against the
            # connection window, and nobody will consume it.
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        padding = event.flow_controlled_length - len(data)
        if padding:
            self._h2.acknowledge_received_data(padding, stream.id)
        stream._unacked += len(data)
        ended = event.stream_ended is not None
        if ended:
            self._remote_ended(stream)
        if data or ended:
            stream.sink.upstream_data(data, end_stream=ended)

    def _remote_ended(self, stream: UpstreamStream) -> None:
        """The response is complete; the sink hears it right after this."""
        if not stream.local_closed and not self._closing:
            # The server answered without the rest of the request: it wants no more of it.
            try:
                self._h2.reset_stream(stream.id, ErrorCodes.NO_ERROR)
            except StreamClosedError:
                pass
        self._drop(stream)

    def _drop(self, stream: UpstreamStream) -> None:
        """Take the stream off the connection (its last event is being delivered)."""
        stream.done = True
        stream._queue.clear()
        stream._queued = 0
        stream._blocked = False
        if self.streams.pop(stream.id, None) is None:
            for i, (pending, _, _) in enumerate(self._pending):
                if pending is stream:
                    del self._pending[i]
                    break
        self._stream_freed()

    def _release(self, stream: UpstreamStream) -> None:
        """Nobody consumes the stream's unread bytes any more: give them back to the connection."""
        n, stream._unacked = stream._unacked, 0
        if n and stream.id and not self.lost and not self._closing:
            self._h2.acknowledge_received_data(n, stream.id)

    def _stream_freed(self) -> None:
        if not self.streams and not self._pending:
            if self.draining:
                self.close()
                return
            self._stop_idle_timer()
            self._idle_timer = self._loop.call_later(
                self._settings.timeouts.upstream_idle, self.close_idle
            )
        self.owner.stream_slot_freed(self)

    def close_idle(self) -> None:
        self._idle_timer = None
        if not self.streams and not self._pending:
            self.draining = True
            self.owner.stream_slot_freed(self)
            self.close()

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _flush_all(self) -> None:
        for stream in list(self.streams.values()):
            self.flush_stream(stream)

    def _goaway(self, code: int, last_stream_id: int) -> None:
        self.draining = True
        cut = [s for sid, s in self.streams.items() if sid > last_stream_id]
        cut += [s for s, _, _ in self._pending]
        reason = (
            f"upstream {self.label} sent GOAWAY ({_code_name(code)}) before processing the stream"
        )
        for stream in cut:
            self._drop(stream)
            stream._unacked = 0  # the peer sent it nothing
            stream.sink.upstream_reset(ErrorCodes.REFUSED_STREAM, reason, retryable=True)
        if code != ErrorCodes.NO_ERROR:
            self._reset_code = code
            self._reset_reason = f"upstream {self.label} sent GOAWAY ({_code_name(code)})"
        self.owner.stream_slot_freed(self)
        if not self.streams and not self._pending:
            self.close()


def _headers(headers: object) -> Headers:
    # h2 gives HeaderTuple (a tuple subclass) of bytes when header_encoding is None.
    return cast(Headers, headers)
