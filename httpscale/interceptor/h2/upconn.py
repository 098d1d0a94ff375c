"""One HTTP/2 client connection to an upstream: the h2 state machine driven by an asyncio.Protocol,
and the streams multiplexed on it (each an `upstream_stream.UpstreamStream`).

Rules this module keeps:
- Received DATA is acknowledged (WINDOW_UPDATE) only when the stream's sink calls `consumed`, so
  a slow client slows its upstream stream down instead of filling our memory. A stream that ends
  without its sink consuming everything (reset by either side) hands its bytes back to the
  connection window at once, or the other streams would starve.
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
import itertools
import ssl
from collections import deque
from typing import TYPE_CHECKING, Final, Protocol, cast

from h2.config import H2Configuration
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
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hyperframe.frame import Frame, GoAwayFrame

from httpscale.interceptor.h2.quiet import QuietH2Connection
from httpscale.interceptor.h2.upstream_stream import (
    H2Headers,
    H2UpstreamRefused,
    UpstreamStream,
    code_name,
)
from httpscale.interceptor.settings import InterceptorSettings

if TYPE_CHECKING:
    from httpscale.interceptor.h2.upstream import UpstreamStreamSink

__all__ = ["ConnectionOwner", "H2UpConnection"]

#: Stream ids are 31 bits; a client's are odd.
MAX_STREAM_ID: Final = 2**31 - 1
#: The connection receive window, in stream windows: each stream's own window bounds what it may
#: hold unread; the connection's only has to keep a few slow streams from stalling the others.
_CONNECTION_WINDOW_STREAMS: Final = 64
_DEFAULT_WINDOW: Final = 65535
#: Orders connections by their latest stream: a clock would tie (uvloop's ticks in ms).
_OPENS: Final = itertools.count(1)


class ConnectionOwner(Protocol):
    def stream_slot_freed(self, conn: H2UpConnection) -> None:
        """A connection can take another stream (or stopped taking any): wake waiters."""

    def connection_gone(self, conn: H2UpConnection) -> None:
        """The connection closed: forget it."""


class _GracefulH2Connection(QuietH2Connection):  # quiet.py: no repr per frame
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
        self.h2 = _GracefulH2Connection(
            H2Configuration(client_side=True, header_encoding=None)
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, UpstreamStream] = {}
        self._pending: deque[tuple[UpstreamStream, H2Headers, bool]] = deque()
        self.ready = asyncio.Event()  # the peer's SETTINGS arrived (or `failure` is set)
        self.closed = asyncio.Event()  # connection_lost ran
        self.failure: OSError | None = None
        self._reset_code: int = ErrorCodes.INTERNAL_ERROR  # for streams cut by connection loss
        self._reset_reason = ""
        self.draining = False  # takes no new stream; closes when its streams are done
        self.closing = False  # GOAWAY sent or aborted: h2 takes no more input from us
        self.lost = False
        self.write_paused = False
        self.last_used = 0  # when its latest stream opened, as a count of opens (see _OPENS)
        self._loop = asyncio.get_running_loop()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._flush_pending = False

    # -- for H2Upstreams -------------------------------------------------------------------

    def has_room(self) -> bool:
        if self.draining or self.lost or self.failure is not None or not self.ready.is_set():
            return False
        n = len(self.streams) + len(self._pending)
        if n >= self.h2.remote_settings.max_concurrent_streams:
            return False
        if self.h2.highest_outbound_stream_id + 2 * (len(self._pending) + 1) > MAX_STREAM_ID:
            # Ids exhausted: no new stream ever; the others finish, then the connection closes.
            self.drain()
            return False
        return True

    def open(
        self, headers: H2Headers, end_stream: bool, sink: UpstreamStreamSink
    ) -> UpstreamStream:
        limit = self.h2.remote_settings.max_header_list_size
        if limit is not None:
            size = sum(len(n) + len(v) + 32 for n, v in headers)  # RFC 9113 6.5.2
            if size > limit:
                raise H2UpstreamRefused(
                    f"request header list of {size} bytes is over {self.label}'s "
                    f"SETTINGS_MAX_HEADER_LIST_SIZE of {limit}"
                )
        self._stop_idle_timer()
        self.last_used = next(_OPENS)
        stream = UpstreamStream(self, sink)
        stream._end = end_stream
        if self.write_paused:
            self._pending.append((stream, headers, end_stream))
        else:
            self._start(stream, headers, end_stream)
        return stream

    def _start(self, stream: UpstreamStream, headers: H2Headers, end_stream: bool) -> None:
        h2 = self.h2
        sid = h2.get_next_available_stream_id()
        try:
            h2.send_headers(sid, headers, end_stream=end_stream)
        except ProtocolError as exc:
            # H2Headers h2 refuses to send: it validates while it HPACK-encodes, so the encoder's
            # table may now differ from the peer's, and this connection takes no further stream.
            h2.streams.pop(sid, None)
            self.drain()
            raise H2UpstreamRefused(f"no stream could be opened on {self.label}: {exc}") from None
        stream.id = sid
        stream.local_closed = end_stream
        self.streams[sid] = stream
        self.flush_soon()

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
        if self.transport is None or self.lost or self.closing:
            return
        self.closing = True
        try:
            self.h2.close_connection()
        except ProtocolError:
            pass  # a broken state: closing is all there is left to do
        self.flush()
        if self.write_paused:
            # The peer has not been reading what we sent: a close would wait on it forever.
            self.transport.abort()
        else:
            self.transport.close()

    def abort(self) -> None:
        self.draining = True
        self.closing = True
        self._stop_idle_timer()
        if self.transport is not None and not self.lost:
            self.transport.abort()

    # -- for UpstreamStream ----------------------------------------------------------------

    def usable(self) -> bool:
        """h2 may still be fed and asked for frames (no GOAWAY sent, not aborted, not lost)."""
        return not self.closing and not self.lost

    def forget(self, stream: UpstreamStream) -> None:
        """The stream is done (its last event is being delivered, or its sink reset it)."""
        if self.streams.pop(stream.id, None) is None:
            for i, (pending, _, _) in enumerate(self._pending):
                if pending is stream:
                    del self._pending[i]
                    break
        if not self.streams and not self._pending:
            if self.draining:
                self.close()
                return
            self._arm_idle_timer()
        self.owner.stream_slot_freed(self)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if self.closing:  # aborted (shutdown) while it was being connected
            transport.abort()
            return
        transport.set_write_buffer_limits(self.high_water, self.low_water)
        if self._tls:
            ssl_object = cast(ssl.SSLObject | None, transport.get_extra_info("ssl_object"))
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn != "h2":
                self._fail(OSError(f"{self.label}: TLS server did not select h2 in ALPN "
                                   f"(selected {alpn!r}): it does not speak HTTP/2 over TLS"))
                return
        h2 = self.h2
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
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.lost or self.closing:
            return
        if not self.ready.is_set() and data.startswith(b"HTTP/"):
            first_line = data.split(b"\r\n", 1)[0][:60]
            self._fail(OSError(f"{self.label}: upstream is not HTTP/2: it answered {first_line!r}"))
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            self.flush()  # h2's GOAWAY
            what = "upstream broke HTTP/2" if self.ready.is_set() else "upstream is not HTTP/2"
            self._reset_code = ErrorCodes.PROTOCOL_ERROR
            self._fail(OSError(f"{self.label}: {what}: {exc}"))
            return
        for event in events:
            if self.closing:
                break  # its last stream ended and it closed: the rest is of no use
            self._event(event)
        self.flush()

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
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is None or self.lost or self.closing:
            return
        self.transport.resume_reading()
        while self._pending and not self.write_paused:
            stream, headers, end_stream = self._pending.popleft()
            try:
                self._start(stream, headers, end_stream)
            except H2UpstreamRefused as exc:
                stream.done = True
                stream.sink.upstream_reset(ErrorCodes.INTERNAL_ERROR, str(exc), retryable=False)
                continue
            stream.pump()
        for stream in list(self.streams.values()):
            stream.pump()

    # -- inside ----------------------------------------------------------------------------

    def flush_soon(self) -> None:
        """Write at the end of this loop turn: the HEADERS of the streams opened meanwhile
        leave in one write (one system call), not one each."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self._flush_pending = False
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.lost:
            self.transport.write(data)

    def _fail(self, failure: OSError) -> None:
        self.failure = failure
        self._reset_reason = str(failure)
        self.ready.set()
        self.abort()

    def _event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.data_received(
                    event.data, event.flow_controlled_length, ended=event.stream_ended is not None
                )
            elif self.usable():
                # Reset by its sink earlier in this same read: h2 counted the frame against
                # the connection window, and nobody will consume it.
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, ResponseReceived | InformationalResponseReceived):
            if (stream := self.streams.get(event.stream_id)) is not None:
                ended = isinstance(event, ResponseReceived) and event.stream_ended is not None
                stream.headers_received(_headers(event.headers), ended=ended)
        elif isinstance(event, TrailersReceived):
            if (stream := self.streams.get(event.stream_id)) is not None:
                stream.trailers_received(_headers(event.headers))
        elif isinstance(event, StreamReset):
            if (stream := self.streams.get(event.stream_id)) is not None:
                stream.reset_received(int(event.error_code), by_peer=event.remote_reset)
        elif isinstance(event, WindowUpdated):
            if event.stream_id == 0:
                self._pump_all()
            elif (stream := self.streams.get(event.stream_id)) is not None:
                stream.pump()
        elif isinstance(event, RemoteSettingsChanged):
            if not self.ready.is_set():
                self.ready.set()
                if not self.streams and not self._pending:
                    self._arm_idle_timer()  # in case its first stream never comes
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._pump_all()
            self.owner.stream_slot_freed(self)
        elif isinstance(event, ConnectionTerminated):
            self._goaway(int(event.error_code or 0), event.last_stream_id or 0)

    def close_idle(self) -> None:
        self._idle_timer = None
        if not self.streams and not self._pending:
            self.draining = True
            self.owner.stream_slot_freed(self)
            self.close()

    def _arm_idle_timer(self) -> None:
        self._stop_idle_timer()
        self._idle_timer = self._loop.call_later(
            self._settings.timeouts.upstream_idle, self.close_idle
        )

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _pump_all(self) -> None:
        for stream in list(self.streams.values()):
            stream.pump()

    def _goaway(self, code: int, last_stream_id: int) -> None:
        self.draining = True
        cut = [s for sid, s in self.streams.items() if sid > last_stream_id]
        cut += [s for s, _, _ in self._pending]
        reason = (
            f"upstream {self.label} sent GOAWAY ({code_name(code)}) before processing the stream"
        )
        for stream in cut:
            stream.refused(reason)
        if code != ErrorCodes.NO_ERROR:
            self._reset_code = code
            self._reset_reason = f"upstream {self.label} sent GOAWAY ({code_name(code)})"
        self.owner.stream_slot_freed(self)
        if not self.streams and not self._pending:
            self.close()


def _headers(headers: object) -> H2Headers:
    # h2 gives HeaderTuple (a tuple subclass) of bytes when header_encoding is None.
    return cast(H2Headers, headers)
