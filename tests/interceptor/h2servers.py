"""A small HTTP/2 server on loopback, built on the h2 library, whose behaviour each test scripts
(reset a stream, send GOAWAY, hold back WINDOW_UPDATEs, ...), a sink that records what an
`H2Upstreams` stream reports, and the helpers and fixtures the test_h2_upstream* modules share.

Each request runs `handler(stream)` in a task the server owns (cancelled and awaited by
`close`). Received DATA is acknowledged at once unless the server was made with
`auto_ack=False`; then the test opens the window with `stream.ack(n)`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from httpscale.interceptor.h2.upstream import H2Upstreams, UpstreamStream
from httpscale.interceptor.settings import Http2, InterceptorSettings, Limits, Timeouts, Tls
from httpscale.routing.spec import Endpoint

Headers = list[tuple[bytes, bytes]]
Handler = Callable[["ServerStream"], Awaitable[None]]


class ServerStream:
    def __init__(self, conn: ServerConn, stream_id: int, headers: Headers) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = dict(headers)
        self.body = bytearray()
        self.ended = asyncio.Event()  # the request's END_STREAM arrived
        self.reset_code: int | None = None  # RST_STREAM from the client
        self.request_trailers: Headers | None = None
        self.sent = 0  # response body bytes sent
        self.received = asyncio.Event()  # set on every DATA (tests clear it)

    def respond(self, headers: Headers, *, end_stream: bool = False) -> None:
        self.conn.h2.send_headers(self.id, headers, end_stream=end_stream)
        self.conn.flush()

    async def send(
        self, data: bytes, *, end_stream: bool = False, frame: int = 1 << 24, pad: int = 0
    ) -> None:
        """Send as the client's windows allow, waiting for WINDOW_UPDATEs (in frames of at
        most `frame` bytes, each with `pad` bytes of padding)."""
        h2 = self.conn.h2
        view = memoryview(data)
        while True:
            if self.reset_code is not None:
                return  # the client reset the stream: nothing more to send
            room = min(
                h2.local_flow_control_window(self.id) - (pad + 1 if pad else 0),
                h2.max_outbound_frame_size - (pad + 1 if pad else 0), frame,
            )
            if room <= 0 and view:
                self.conn.window.clear()
                await self.conn.window.wait()
                continue
            chunk, view = view[:room], view[room:]
            h2.send_data(
                self.id, bytes(chunk), end_stream=end_stream and not view,
                pad_length=pad or None,
            )
            self.sent += len(chunk)
            self.conn.flush()
            if not view:
                return

    def trailers(self, headers: Headers) -> None:
        self.conn.h2.send_headers(self.id, headers, end_stream=True)
        self.conn.flush()

    def reset(self, code: int) -> None:
        self.conn.h2.reset_stream(self.id, code)
        self.conn.flush()

    def ack(self, n: int) -> None:
        self.conn.h2.acknowledge_received_data(n, self.id)
        self.conn.flush()

    async def read_all(self) -> bytes:
        await self.ended.wait()
        return bytes(self.body)


class ServerConn(asyncio.Protocol):
    def __init__(self, server: H2Server) -> None:
        self.server = server
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, ServerStream] = {}
        self.window = asyncio.Event()
        self.closed = asyncio.Event()
        self.goaway_received = asyncio.Event()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def goaway(self, last_stream_id: int, code: int = ErrorCodes.NO_ERROR) -> None:
        self.h2.close_connection(code, last_stream_id=last_stream_id)
        # h2 marks itself CLOSED now; let it go on serving the streams up to last_stream_id
        # (as a graceful server does).
        self.h2.state_machine.state = type(self.h2.state_machine.state).SERVER_OPEN
        self.flush()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.conns.append(self)
        self.h2.initiate_connection()
        if self.server.settings:
            self.h2.update_settings(self.server.settings)
            window = self.server.settings.get(SettingCodes.INITIAL_WINDOW_SIZE, 65535)
            if window > 65535:  # the connection window as large as a stream's
                self.h2.increment_flow_control_window(window - 65535)
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            self.server.errors.append(exc)
            self.flush()
            if self.transport is not None:
                self.transport.abort()
            return
        for event in events:
            self._event(event)
        self.flush()

    def _event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            stream = self.streams[event.stream_id] = ServerStream(
                self, event.stream_id, cast(Headers, event.headers)
            )
            if event.stream_ended is not None:
                stream.ended.set()
            self.server.spawn(stream)
        elif isinstance(event, DataReceived):
            stream = self.streams[event.stream_id]
            stream.body += event.data
            stream.received.set()
            if self.server.auto_ack:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.stream_ended is not None:
                stream.ended.set()
        elif isinstance(event, TrailersReceived):
            stream = self.streams[event.stream_id]
            stream.request_trailers = cast(Headers, event.headers)
            stream.ended.set()
        elif isinstance(event, StreamEnded):
            self.streams[event.stream_id].ended.set()
        elif isinstance(event, StreamReset):
            if (stream := self.streams.get(event.stream_id)) is not None:
                stream.reset_code = int(event.error_code)
                stream.ended.set()
            self.window.set()
        elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
            self.window.set()
        elif isinstance(event, ConnectionTerminated):
            self.goaway_received.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.window.set()
        self.closed.set()


class H2Server:
    def __init__(
        self,
        handler: Handler,
        *,
        settings: dict[SettingCodes | int, int] | None = None,
        auto_ack: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.auto_ack = auto_ack
        self.ssl_context = ssl_context
        self.conns: list[ServerConn] = []
        self.requests: list[ServerStream] = []
        self.errors: list[Exception] = []  # from handlers, or HTTP/2 errors of a connection
        self.request_arrived = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> H2Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ServerConn(self), "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def spawn(self, stream: ServerStream) -> None:
        self.requests.append(stream)
        self.request_arrived.set()
        task = asyncio.get_running_loop().create_task(
            self._run(stream), name=f"h2 test server stream {stream.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, stream: ServerStream) -> None:
        try:
            await self.handler(stream)
        except Exception as exc:
            self.errors.append(exc)

    async def wait_requests(self, n: int) -> list[ServerStream]:
        while len(self.requests) < n:
            self.request_arrived.clear()
            await self.request_arrived.wait()
        return self.requests[:n]

    def open_conns(self) -> list[ServerConn]:
        return [c for c in self.conns if not c.closed.is_set()]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()


class Recorder:
    """An UpstreamStreamSink keeping every event; consumes data at once unless told not to."""

    def __init__(self, *, consume: bool = True) -> None:
        self.consume = consume
        self.stream: UpstreamStream | None = None
        self.events: list[tuple[str, Any]] = []
        self.headers: list[Headers] = []
        self.body = bytearray()
        self.trailers: Headers | None = None
        self.reset: tuple[int, str, bool] | None = None
        self.writable = 0
        self.ended = asyncio.Event()  # the last event came
        self._changed = asyncio.Event()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def status(self) -> int:
        final = [h for h in self.headers if int(dict(h)[b":status"]) >= 200]
        return int(dict(final[0])[b":status"])

    def upstream_headers(self, headers: Headers, *, end_stream: bool) -> None:
        self.events.append(("headers", end_stream))
        self.headers.append(headers)
        if end_stream:
            self.ended.set()
        self._changed.set()

    def upstream_data(self, data: bytes, *, end_stream: bool) -> None:
        self.events.append(("data", end_stream))
        self.body += data
        if self.consume and self.stream is not None:
            self.stream.consumed(len(data))
        if end_stream:
            self.ended.set()
        self._changed.set()

    def upstream_trailers(self, trailers: Headers) -> None:
        self.events.append(("trailers", None))
        self.trailers = trailers
        self.ended.set()
        self._changed.set()

    def upstream_reset(self, code: int, reason: str, *, retryable: bool) -> None:
        self.events.append(("reset", code))
        self.reset = (code, reason, retryable)
        self.ended.set()
        self._changed.set()

    def upstream_writable(self) -> None:
        self.events.append(("writable", None))
        self.writable += 1
        self._changed.set()


# -- for the tests ------------------------------------------------------------------------------

OK: list[tuple[bytes, bytes]] = [(b":status", b"200")]


def make_settings(
    *,
    connect: float = 5.0,
    idle: float = 60.0,
    connections: int = 4,
    window: int = 1048576,
    high: int = 256 * 1024,
    low: int = 64 * 1024,
    ca_file: str = "",
) -> InterceptorSettings:
    return InterceptorSettings(
        timeouts=Timeouts(upstream_connect=connect, upstream_idle=idle),
        limits=Limits(write_high_water=high, write_low_water=low),
        http2=Http2(upstream_connections=connections, initial_window_size=window),
        tls=Tls(upstream_ca_file=ca_file),
    )


def request(path: str = "/", method: bytes = b"GET", scheme: bytes = b"http") -> list[
    tuple[bytes, bytes]
]:
    return [
        (b":method", method), (b":scheme", scheme), (b":authority", b"app.test"),
        (b":path", path.encode()),
    ]


UpstreamsFactory = Callable[..., H2Upstreams]
ServerFactory = Callable[..., Awaitable[H2Server]]


@pytest.fixture(name="upstreams")
async def upstreams_fixture() -> AsyncIterator[UpstreamsFactory]:
    made: list[H2Upstreams] = []

    def make(**kw: Any) -> H2Upstreams:
        u = H2Upstreams(make_settings(**kw))
        made.append(u)
        return u

    yield make
    for u in made:
        await u.close()


@pytest.fixture(name="h2server")
async def h2server_fixture() -> AsyncIterator[ServerFactory]:
    made: list[H2Server] = []

    async def make(handler: Callable[[ServerStream], Awaitable[None]], **kw: Any) -> H2Server:
        server = await H2Server(handler, **kw).start()
        made.append(server)
        return server

    yield make
    for server in made:
        await server.close()
        assert not server.errors, server.errors


async def open_stream(
    up: H2Upstreams, server: H2Server, *, headers: list[tuple[bytes, bytes]] | None = None,
    end_stream: bool = True, consume: bool = True, tls: bool = False, server_name: str = "",
) -> tuple[UpstreamStream, Recorder]:
    sink = Recorder(consume=consume)
    stream = await up.open_stream(
        Endpoint("127.0.0.1", server.port), tls=tls, server_name=server_name,
        headers=headers or request(), end_stream=end_stream, sink=sink,
    )
    sink.stream = stream
    return stream, sink


async def hold(stream: ServerStream) -> None:
    """A handler that leaves the stream open for the test to drive."""


async def respond(stream: ServerStream, body: bytes) -> None:
    stream.respond(OK)
    await stream.send(body, end_stream=True)
