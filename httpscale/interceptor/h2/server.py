"""Client side of HTTP/2: one asyncio.Protocol per client connection, driving h2's sans-IO
H2Connection (h2 over TLS chosen by ALPN, and h2c with prior knowledge on the plain port).

Each stream is an `H2Stream` (stream.py), which routes, counts, holds and forwards it exactly
as an HTTP/1.1 exchange. This module owns what is per connection:
- Settings advertised from `settings.http2`; h2 enforces the frame size and the HPACK bound.
  Streams over SETTINGS_MAX_CONCURRENT_STREAMS are refused one by one (RST_STREAM
  REFUSED_STREAM, RFC 9113 §5.1.2: the client may retry them) instead of h2's connection error,
  and a header list over SETTINGS_MAX_HEADER_LIST_SIZE is answered 431 on its stream (§10.5.1);
  only one over twice that (a compression bomb) costs the connection (ENHANCE_YOUR_CALM).
- Flow control: a client's DATA is acknowledged (WINDOW_UPDATE) only once its stream passed it
  upstream, so a stream not yet bound to an upstream buffers at most its window. Response DATA
  leaves within the client's windows; the rest waits in its stream's queue, bounded by
  `limits.write_high_water` (the stream stops pulling from its upstream meanwhile).
- While the transport's write buffer is over its high-water mark nothing more is written and
  the client is not read (pause_writing / resume_writing).
- Timeouts: `timeouts.request_head` for the preface and first request, `keepalive_idle` for a
  connection without streams. Drain: GOAWAY with the last stream id, streams finish, close.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final, cast

from h2.config import H2Configuration
from h2.connection import ConnectionState, _decode_headers
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, TooManyStreamsError
from h2.settings import SettingCodes, Settings
from h2.stream import StreamClosedBy
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from httpscale.interceptor.h2.quiet import QuietH2Connection
from httpscale.interceptor.h2.relay import StreamRelay
from httpscale.interceptor.h2.stream import H2Stream
from httpscale.interceptor.h2.timers import ConnectionDeadlines

if TYPE_CHECKING:
    from httpscale.interceptor.proxy import Proxy
    from httpscale.interceptor.settings import Http2

__all__ = ["PREFACE", "H2ServerConnection", "check_settings"]

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# HPACK bound as a multiple of the advertised header list size: between the two the stream is
# answered 431; past it the decoder stops (a header block that large is an attack).
_HARD_HEADER_FACTOR = 2


def check_settings(s: Http2) -> None:
    """ValueError naming the option when a value is outside what RFC 9113 §6.5.2 allows
    (else every HTTP/2 connection would fail at its start instead)."""
    bounds = (
        ("max_frame_size", s.max_frame_size, 16384, 16777215),
        ("initial_window_size", s.initial_window_size, 1024, 2**31 - 1),
        ("max_concurrent_streams", s.max_concurrent_streams, 1, 2**31 - 1),
        ("max_header_list_size", s.max_header_list_size, 1024, 2**31 - 1),
    )
    for name, value, low, high in bounds:
        if not low <= value <= high:
            option = "--http2-" + name.replace("_", "-")
            raise ValueError(f"{option}: {value} is outside {low}..{high}")


class _Connection(QuietH2Connection):
    """h2's connection, refusing a stream over the limit instead of the whole connection."""

    hard_header_limit = 0

    def _receive_headers_frame(self, frame: Any) -> Any:
        try:
            return super()._receive_headers_frame(frame)
        except TooManyStreamsError:
            # Decoded all the same: HPACK state is shared by the connection.
            _decode_headers(self.decoder, frame.data)
            self.highest_inbound_stream_id = max(self.highest_inbound_stream_id, frame.stream_id)
            # Recorded as reset, so that its DATA frames get RST_STREAM, not a GOAWAY.
            self._closed_streams[frame.stream_id] = StreamClosedBy.SEND_RST_STREAM
            rst = RstStreamFrame(frame.stream_id)
            rst.error_code = ErrorCodes.REFUSED_STREAM
            self._prepare_for_sending([rst])
            return [], []

    def _local_settings_acked(self) -> Any:
        changes = super()._local_settings_acked()
        self.decoder.max_header_list_size = self.hard_header_limit
        return changes


# Seconds a connection closed for an error keeps reading (and discarding) after its GOAWAY.
_LINGER: Final = 2.0


class H2ServerConnection(asyncio.Protocol):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        s = proxy.settings.http2
        self.max_header_list = s.max_header_list_size
        # h2's options, chosen for cost (each header option runs per field of every stream):
        # - header_encoding=None: fields stay bytes both ways (no decode/encode per field).
        # - validate_inbound_headers: on; RFC 9113 §8.2 makes a malformed request (upper-case
        #   or connection-specific field, bad pseudo-fields, te other than trailers) a stream
        #   error, and h2spec checks it. normalize_inbound_headers: on (joins cookie crumbs,
        #   what route header matching and HTTP/1.1 apps expect; cheap).
        # - validate_outbound_headers / normalize_outbound_headers: off. Every block this
        #   connection sends is the proxy's own: names lower-cased and connection-specific
        #   fields dropped (relay.response_head, fields.from_http1, grpc.trailers_only), values
        #   from h2 (validated inbound) or httptools (trailing whitespace cut, http1client.py).
        #   Normalising would only redo that, and mark authorization/cookie fields
        #   never-indexed, which responses do not carry.
        self.h2 = _Connection(
            config=H2Configuration(
                client_side=False, header_encoding=None, validate_inbound_headers=True,
                normalize_inbound_headers=True, validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: s.max_header_list_size,
                SettingCodes.MAX_FRAME_SIZE: s.max_frame_size,
                SettingCodes.INITIAL_WINDOW_SIZE: s.initial_window_size,
            },
        )
        # h2 copies these at construction; the settings above are in force from the start
        # (RFC 9113 §6.5.3: a peer honours them once it has read our SETTINGS).
        self.h2.max_inbound_frame_size = s.max_frame_size
        self.h2.hard_header_limit = s.max_header_list_size * _HARD_HEADER_FACTOR
        self.h2.decoder.max_header_list_size = self.h2.hard_header_limit
        self.initial_window = s.initial_window_size
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.scheme = b"http"
        self.client_ip = ""
        self.write_paused = False
        # A GOAWAY went either way: no new stream; the connection closes once its streams are done.
        self.closing = False
        self._lingering = False  # after a connection error: reading only to discard
        self._timer: asyncio.TimerHandle | None = None
        self._flush_pending = False
        self.deadlines = ConnectionDeadlines(proxy.loop)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if transport.get_extra_info("ssl_object") is not None:
            self.scheme = b"https"
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        limits = self.proxy.settings.limits
        transport.set_write_buffer_limits(limits.write_high_water, limits.write_low_water)
        self.proxy.h2_connections.add(self)
        self.h2.initiate_connection()
        # The connection window starts at 65,535 whatever SETTINGS say: open it to one
        # stream's window, so a single upload is not throttled below it.
        if self.initial_window > 65535:
            self.h2.increment_flow_control_window(self.initial_window - 65535)
        self._flush()
        self._arm(self.proxy.settings.timeouts.request_head)
        if self.proxy.draining:
            self.start_drain()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            # h2 queued the GOAWAY with the right code: send it and close.
            log.debug("HTTP/2 protocol error from %s: %s", self.client_ip, exc)
            self._flush()
            self._linger_close()
            return
        for event in events:
            self._event(event)
        self._flush()

    def _event(self, event: object) -> None:
        if isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            length = event.flow_controlled_length or 0
            data = event.data or b""
            if stream is None:
                self.acknowledge(event.stream_id, length)
            else:
                # Padding is acknowledged at once: it is never passed on.
                if length > len(data):
                    self.acknowledge(event.stream_id, length - len(data))
                stream.request_data(data, ended=event.stream_ended is not None)
        elif isinstance(event, RequestReceived):
            self._request(event)
        elif isinstance(event, StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.request_end()
        elif isinstance(event, WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self.flush_stream(stream)
            else:
                self.flush_all()
        elif isinstance(event, StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.client_reset()
                self._maybe_idle()
        elif isinstance(event, TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.request_trailers(event.headers)
        elif isinstance(event, RemoteSettingsChanged):
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self.flush_all()
        elif isinstance(event, ConnectionTerminated):
            # Any GOAWAY, whatever its error code (RFC 9113 §7: an unknown code triggers
            # nothing special): the client opens no more streams, and closes when it likes.
            # A graceful GOAWAY: the client opens no more streams, those it has may finish.
            # (h2 closes its state machine on any GOAWAY; reopened so that they can.)
            self.h2.state_machine.state = ConnectionState.SERVER_OPEN
            self.closing = True
            if not self.streams:
                # Not closed at once: what the client sent after its GOAWAY (a PING) is
                # still answered, then the connection closes (`_maybe_idle` after that
                # event), or when the client closes, or at the idle timeout.
                self._arm(self.proxy.settings.timeouts.keepalive_idle)
            return

    def _request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        assert stream_id is not None
        if self.closing:
            # A stream past our GOAWAY's last id: refused, the client retries it elsewhere.
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self._disarm()
        headers = cast(list[tuple[bytes, bytes]], event.headers or [])
        stream = H2Stream(self, stream_id, headers)
        self.streams[stream_id] = stream
        size = stream.header_list_size
        if size > self.max_header_list:
            stream.begin_refused(431, f"request header list of {size} bytes is too large")
        else:
            stream.begin(ended=event.stream_ended is not None)

    def eof_received(self) -> bool:
        return False

    def _linger_close(self) -> None:
        """Close after a connection error so that the GOAWAY is read: a socket closed with the
        client's next bytes unread, or bytes arriving after it, is reset (RST), and the client
        may lose the GOAWAY with the reset. So send FIN, discard what still comes until the
        client closes too (eof_received returns False: the transport then closes) or
        `_LINGER` seconds pass (bounded, as nginx's lingering close)."""
        transport = self.transport
        if transport is None:
            return
        if not transport.can_write_eof():  # TLS: close_notify and close
            self.close()
            return
        self._lingering = True
        self.closing = True
        self._disarm()
        transport.write_eof()
        self._timer = self.proxy.loop.call_later(_LINGER, self.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.deadlines.stop()
        self.proxy.h2_connections.discard(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.client_lost()
        self.transport = None
        self.proxy.connection_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self.flush_all()

    # -- used by streams ---------------------------------------------------------------------

    def acknowledge(self, stream_id: int, n: int) -> None:
        """`n` bytes of the stream's DATA were passed on: the client may send that much more."""
        if n <= 0 or self.transport is None:
            return
        try:
            self.h2.acknowledge_received_data(n, stream_id)
        except ProtocolError:
            return  # the stream closed meanwhile; h2 still credits the connection window
        self._flush_soon()

    def send_headers(
        self, stream: StreamRelay, headers: list[tuple[bytes, bytes]], *, end_stream: bool
    ) -> None:
        if self.transport is None or stream.reset:
            return
        try:
            self.h2.send_headers(stream.id, headers, end_stream=end_stream)
        except ProtocolError:
            self._lost_stream(stream)  # reset by the client meanwhile
            return
        if end_stream:
            self._stream_sent(stream)
        self._flush_soon()

    def flush_stream(self, stream: StreamRelay) -> None:
        """Send the stream's queued body within the client's windows; its end when all is."""
        if self.transport is None or stream.reset:
            return
        try:
            self._flush_stream(stream)
        except ProtocolError:
            self._lost_stream(stream)

    def _lost_stream(self, stream: StreamRelay) -> None:
        stream.reset = True
        stream.out.clear()
        self.streams.pop(stream.id, None)
        self._flush_soon()
        self._maybe_idle()

    def _flush_stream(self, stream: StreamRelay) -> None:
        h2 = self.h2
        sent = 0
        ended = False
        out = stream.out
        while out and not self.write_paused:
            window = min(h2.local_flow_control_window(stream.id), h2.max_outbound_frame_size)
            if window <= 0:
                break
            data = out[0]
            if len(data) > window:
                out[0] = data[window:]
                data = data[:window]
            else:
                out.popleft()
            last = not out and stream.out_end and stream.out_trailers is None
            h2.send_data(stream.id, data, end_stream=last)
            ended = last
            sent += len(data)
        if sent:
            stream.sent(sent)
        if ended:
            self._stream_sent(stream)
        elif not out and stream.out_end and not stream.ended_out:
            if stream.out_trailers is not None:
                h2.send_headers(stream.id, stream.out_trailers, end_stream=True)
            else:
                h2.send_data(stream.id, b"", end_stream=True)
            self._stream_sent(stream)
        self._flush_soon()

    def flush_all(self) -> None:
        for stream in list(self.streams.values()):
            if stream.out or (stream.out_end and not stream.ended_out):
                self.flush_stream(stream)

    def reset_stream(self, stream: StreamRelay, code: int) -> None:
        """RST_STREAM to the client (a response cut short, or an upload no longer wanted)."""
        if self.streams.pop(stream.id, None) is None or self.transport is None:
            return
        stream.reset = True
        stream.out.clear()
        try:
            self.h2.reset_stream(stream.id, code)
        except ProtocolError:
            pass  # closed both ways already
        self._flush_soon()
        self._maybe_idle()

    def _stream_sent(self, stream: StreamRelay) -> None:
        """The response's END_STREAM left: the stream is done on our side."""
        stream.ended_out = True
        if not stream.request_done:
            # RFC 9113 §8.1: a response before the end of the request: stop the upload.
            self.reset_stream(stream, ErrorCodes.NO_ERROR)
            return
        self.streams.pop(stream.id, None)
        self._maybe_idle()

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self.streams

    def start_drain(self) -> None:
        """GOAWAY now (last stream id: the highest seen); close once the streams are done."""
        if self.transport is None:
            return
        if not self.closing:
            self.closing = True
            # Not h2's close_connection: that closes its state machine, and the open streams
            # could send nothing more. A GOAWAY frame alone lets them finish (RFC 9113 §6.8).
            frame = GoAwayFrame(0)
            frame.last_stream_id = self.h2.highest_inbound_stream_id
            frame.error_code = ErrorCodes.NO_ERROR
            self.h2._prepare_for_sending([frame])
            self._flush()
        self._maybe_idle()

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _maybe_idle(self) -> None:
        if self.streams or self.transport is None:
            return
        if self.closing:
            self.close()
        else:
            self._arm(self.proxy.settings.timeouts.keepalive_idle)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.proxy.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.streams or self.transport is None:
            return
        # No preface or first request in time, or idle too long: say goodbye politely.
        self.closing = True
        self.h2.close_connection(ErrorCodes.NO_ERROR)
        self._flush()
        self.close()

    def _flush_soon(self) -> None:
        """Write what h2 has queued at the end of this loop turn: the frames one response
        makes (HEADERS, DATA, END_STREAM), and those of other streams meanwhile, leave in one
        write, one system call, instead of one each."""
        if not self._flush_pending:
            self._flush_pending = True
            self.proxy.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
