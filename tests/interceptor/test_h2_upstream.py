"""The HTTP/2 upstream client (`H2Upstreams`) against real HTTP/2 servers on loopback: a grpcio
server for gRPC calls, and a scripted h2-library server (h2servers.py) for frame-level behaviour:
resets, GOAWAY, stream limits, flow control both ways, TLS with ALPN."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from httpscale.interceptor.h2.upstream import H2UpstreamRefused, H2Upstreams, UpstreamStream
from httpscale.interceptor.settings import Http2, InterceptorSettings, Limits, Timeouts, Tls
from httpscale.routing.spec import Endpoint

from .h2servers import H2Server, Recorder, ServerStream

pytestmark = pytest.mark.timeout(60)

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


@pytest.fixture
async def upstreams() -> AsyncIterator[UpstreamsFactory]:
    made: list[H2Upstreams] = []

    def make(**kw: Any) -> H2Upstreams:
        u = H2Upstreams(make_settings(**kw))
        made.append(u)
        return u

    yield make
    for u in made:
        await u.close()


@pytest.fixture
async def h2server() -> AsyncIterator[ServerFactory]:
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


# -- gRPC against grpcio ------------------------------------------------------------------------


def _frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _messages(body: bytes) -> list[bytes]:
    out = []
    while body:
        n = int.from_bytes(body[1:5], "big")
        out.append(body[5 : 5 + n])
        body = body[5 + n :]
    return out


def _grpc_request(method: str) -> list[tuple[bytes, bytes]]:
    return [
        *request(f"/test.Echo/{method}", b"POST"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"),
    ]


@pytest.fixture
async def grpc_port() -> AsyncIterator[int]:
    async def unary(message: bytes, context: Any) -> bytes:
        return b"echo:" + message

    async def server_stream(message: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(3):
            yield message + b"#%d" % i

    async def bidi(messages: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for message in messages:
            yield message.upper()

    async def fail(message: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("abort returned")

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    })
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


async def test_grpc_unary_server_streaming_and_bidi(
    upstreams: UpstreamsFactory, grpc_port: int
) -> None:
    up = upstreams()
    ep = Endpoint("127.0.0.1", grpc_port)

    async def call(method: str, sink: Recorder) -> UpstreamStream:
        stream = await up.open_stream(
            ep, tls=False, server_name="", headers=_grpc_request(method), end_stream=False,
            sink=sink,
        )
        sink.stream = stream
        return stream

    unary = Recorder()
    stream = await call("Unary", unary)
    assert stream.send_data(_frame(b"hi"), end_stream=True)
    await unary.ended.wait()
    assert unary.status() == 200
    assert _messages(bytes(unary.body)) == [b"echo:hi"]
    assert unary.trailers is not None and dict(unary.trailers)[b"grpc-status"] == b"0"

    streaming = Recorder()
    stream = await call("Stream", streaming)
    stream.send_data(_frame(b"n"))
    stream.end()
    await streaming.ended.wait()
    assert _messages(bytes(streaming.body)) == [b"n#0", b"n#1", b"n#2"]
    assert streaming.trailers is not None and dict(streaming.trailers)[b"grpc-status"] == b"0"

    # Bidi: each answer arrives before the next message goes: the stream really is two-way.
    bidi = Recorder()
    stream = await call("Bidi", bidi)
    for i, word in enumerate([b"one", b"two", b"three"]):
        stream.send_data(_frame(word))
        await bidi.until(lambda i=i: len(_messages(bytes(bidi.body))) == i + 1)
    stream.end()
    await bidi.ended.wait()
    assert _messages(bytes(bidi.body)) == [b"ONE", b"TWO", b"THREE"]
    assert bidi.trailers is not None and dict(bidi.trailers)[b"grpc-status"] == b"0"
    # All three calls shared one connection.
    assert up.stats()[str(ep)]["connections"] == 1


async def test_grpc_error_status_arrives(upstreams: UpstreamsFactory, grpc_port: int) -> None:
    up = upstreams()
    sink = Recorder()
    stream = await up.open_stream(
        Endpoint("127.0.0.1", grpc_port), tls=False, server_name="",
        headers=_grpc_request("Fail"), end_stream=False, sink=sink,
    )
    sink.stream = stream
    stream.send_data(_frame(b"x"), end_stream=True)
    await sink.ended.wait()
    # grpcio answers an error with trailers only: one HEADERS frame that ends the stream.
    fields = dict(sink.trailers or sink.headers[-1])
    assert fields[b"grpc-status"] == b"5"
    assert fields[b"grpc-message"] == b"no such thing"
    assert sink.reset is None


# -- resets and GOAWAY ---------------------------------------------------------------------------


async def test_refused_stream_is_retryable_other_resets_are_not(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    async def handler(stream: ServerStream) -> None:
        path = stream.headers[b":path"]
        stream.reset(ErrorCodes.REFUSED_STREAM if path == b"/refuse" else ErrorCodes.INTERNAL_ERROR)

    server = await h2server(handler)
    up = upstreams()
    _, refused = await open_stream(up, server, headers=request("/refuse"))
    _, failed = await open_stream(up, server, headers=request("/fail"))
    await refused.ended.wait()
    await failed.ended.wait()
    assert refused.reset is not None and failed.reset is not None
    assert refused.reset[0] == ErrorCodes.REFUSED_STREAM and refused.reset[2] is True
    assert failed.reset[0] == ErrorCodes.INTERNAL_ERROR and failed.reset[2] is False
    assert "INTERNAL_ERROR" in failed.reset[1]
    # The connection outlives its streams' resets and serves the next one.
    server.handler = lambda s: _respond(s, b"fine")
    _, ok = await open_stream(up, server)
    await ok.ended.wait()
    assert bytes(ok.body) == b"fine"
    assert len(server.conns) == 1


async def _respond(stream: ServerStream, body: bytes) -> None:
    stream.respond(OK)
    await stream.send(body, end_stream=True)


async def test_goaway_mid_flight(upstreams: UpstreamsFactory, h2server: ServerFactory) -> None:
    server = await h2server(hold)
    up = upstreams()
    opened = [await open_stream(up, server) for _ in range(3)]
    first, second, third = await server.wait_requests(3)
    assert [s.id for s in (first, second, third)] == [1, 3, 5]
    conn = first.conn
    conn.goaway(last_stream_id=3)
    above = opened[2][1]
    await above.ended.wait()
    assert above.reset is not None
    assert above.reset[0] == ErrorCodes.REFUSED_STREAM and above.reset[2] is True
    assert "GOAWAY" in above.reset[1]
    # The streams at or below last_stream_id go on to the end.
    await _respond(first, b"one")
    assert not conn.closed.is_set()
    # A new stream goes on a new connection: the old one takes none.
    _, fresh = await open_stream(up, server)
    (*_, fourth) = await server.wait_requests(4)
    assert fourth.conn is not conn
    await _respond(fourth, b"four")
    await _respond(second, b"two")
    for sink, body in ((opened[0][1], b"one"), (opened[1][1], b"two"), (fresh, b"four")):
        await sink.ended.wait()
        assert (bytes(sink.body), sink.reset) == (body, None)
    # Its last stream done, the old connection says GOAWAY too and closes.
    await conn.goaway_received.wait()
    await conn.closed.wait()
    assert up.stats()[f"127.0.0.1:{server.port}"]["connections"] == 1


async def test_connection_lost_resets_open_streams_not_retryable(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(hold)
    up = upstreams()
    _, sink = await open_stream(up, server)
    (stream,) = await server.wait_requests(1)
    stream.respond(OK)
    await sink.until(lambda: bool(sink.headers))
    assert stream.conn.transport is not None
    stream.conn.transport.abort()
    await sink.ended.wait()
    assert sink.reset is not None and sink.reset[2] is False
    assert "lost" in sink.reset[1]
    assert up.stats() == {}


# -- stream limits and connections -------------------------------------------------------------


async def test_stream_limit_opens_a_second_connection_and_then_waits(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(hold, settings={SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    up = upstreams(connections=2, connect=0.5)
    _, a = await open_stream(up, server, headers=request("/a"))
    _, b = await open_stream(up, server, headers=request("/b"))
    await server.wait_requests(2)
    sa, sb = sorted(server.requests, key=lambda s: s.headers[b":path"])
    assert sa.conn is not sb.conn
    # Both connections full, no third allowed: the next stream waits for room...
    waiting = asyncio.ensure_future(open_stream(up, server))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert up.stats()[f"127.0.0.1:{server.port}"]["waiting"] == 1
    await _respond(sa, b"a")
    _, c = await waiting
    (*_, sc) = await server.wait_requests(3)
    assert sc.conn is sa.conn  # ...and gets the slot the first stream freed
    assert len(server.conns) == 2
    # ...for the connect timeout at most.
    with pytest.raises(H2UpstreamRefused, match="stream limit"):
        await open_stream(up, server)
    await _respond(sb, b"b")
    await _respond(sc, b"c")
    for sink, body in ((a, b"a"), (b, b"b"), (c, b"c")):
        await sink.ended.wait()
        assert bytes(sink.body) == body
    assert len(server.conns) == 2


async def test_most_recently_used_connection_is_preferred(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(hold, settings={SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    up = upstreams(connections=2)
    # Two streams on connection A, the third on B (the requests may reach the server in any
    # order: two sockets).
    sinks = [(await open_stream(up, server, headers=request(f"/{i}")))[1] for i in range(1, 4)]
    await server.wait_requests(3)
    s1, s2, s3 = sorted(server.requests, key=lambda s: s.headers[b":path"])
    assert s1.conn is s2.conn and s3.conn is not s1.conn
    await _respond(s1, b"")  # room on A again, B has room too: B was used last
    await sinks[0].ended.wait()
    await open_stream(up, server, headers=request("/4"))
    await server.wait_requests(4)
    (s4,) = [s for s in server.requests if s.headers[b":path"] == b"/4"]
    assert s4.conn is s3.conn
    for s in (s2, s3, s4):
        await _respond(s, b"")


async def test_stream_ids_exhausted_retire_the_connection(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(lambda s: _respond(s, b"ok"))
    up = upstreams()
    _, first = await open_stream(up, server)
    await first.ended.wait()
    # Reaching 2^31 for real takes a billion streams; h2 keeps the highest id it used in a
    # plain attribute, so start this connection near the end of the id space instead.
    (pool,) = up._pools.values()
    (conn,) = pool.conns
    conn.h2.highest_outbound_stream_id = 2**31 - 5
    for _ in range(2):
        _, sink = await open_stream(up, server)
        await sink.ended.wait()
        assert bytes(sink.body) == b"ok"
    ids = [s.id for s in server.requests]
    assert ids == [1, 2**31 - 3, 2**31 - 1]
    _, sink = await open_stream(up, server)
    await sink.ended.wait()
    assert bytes(sink.body) == b"ok"
    assert server.requests[-1].id == 1 and server.requests[-1].conn is not server.requests[0].conn
    await server.conns[0].closed.wait()  # the exhausted connection closed


async def test_idle_connection_closed_after_upstream_idle(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(lambda s: _respond(s, b"ok"))
    up = upstreams(idle=0.2)
    _, sink = await open_stream(up, server)
    await sink.ended.wait()
    await server.conns[0].goaway_received.wait()
    await server.conns[0].closed.wait()
    assert up.stats() == {}


async def test_retire_closes_idle_now_and_busy_when_done(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    busy_server = await h2server(hold)
    idle_server = await h2server(lambda s: _respond(s, b"ok"))
    up = upstreams()
    _, idle_sink = await open_stream(up, idle_server)
    await idle_sink.ended.wait()
    _, busy_sink = await open_stream(up, busy_server)
    (busy,) = await busy_server.wait_requests(1)
    up.retire(Endpoint("127.0.0.1", idle_server.port))
    up.retire(Endpoint("127.0.0.1", busy_server.port))
    await idle_server.conns[0].closed.wait()
    assert not busy.conn.closed.is_set()
    await _respond(busy, b"done")
    await busy_sink.ended.wait()
    assert bytes(busy_sink.body) == b"done"
    await busy.conn.closed.wait()
    assert up.stats() == {}


# -- flow control -------------------------------------------------------------------------------


async def test_send_data_backpressure_and_upstream_writable(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    # The server acknowledges nothing by itself: its 65,535-byte windows fill, and the rest
    # of the request queues in the client.
    server = await h2server(hold, auto_ack=False)
    up = upstreams(high=64 * 1024, low=16 * 1024)
    stream, sink = await open_stream(up, server, headers=request("/up", b"POST"), end_stream=False)
    (received,) = await server.wait_requests(1)
    chunk = bytes(range(256)) * 400  # 100 KiB
    assert stream.send_data(chunk) is True  # 64 KiB out, 36 KiB queued: under high water
    assert stream.send_data(chunk) is False  # 136 KiB queued
    await received.received.wait()
    while len(received.body) < 65535:
        received.received.clear()
        await received.received.wait()
    assert len(received.body) == 65535 and sink.writable == 0
    # The server reads on: the queue drains, and the sink hears it once, below low water.
    acked = 0

    async def read_on() -> None:
        nonlocal acked
        if acked < len(received.body):
            received.ack(len(received.body) - acked)
            acked = len(received.body)
        received.received.clear()
        await received.received.wait()

    while sink.writable == 0:
        await read_on()
    assert stream._queued <= 16 * 1024
    stream.end()
    while not received.ended.is_set():
        await read_on()
    assert bytes(received.body) == chunk * 2
    assert sink.writable == 1
    await _respond(received, b"got it")
    await sink.ended.wait()
    assert bytes(sink.body) == b"got it"


async def test_response_window_opens_only_as_the_sink_consumes(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB

    async def big(stream: ServerStream) -> None:
        if stream.headers[b":path"] == b"/ping":
            await _respond(stream, b"pong")
            return
        await _respond(stream, body)

    server = await h2server(big)
    window = 65535
    up = upstreams(window=window)
    stream, sink = await open_stream(up, server, headers=request("/big"), consume=False)
    await sink.until(lambda: len(sink.body) >= window)
    # A round trip on the same connection: a WINDOW_UPDATE sent by mistake would have reached
    # the server before this request, and its data would be here before this response.
    _, ping = await open_stream(up, server, headers=request("/ping"))
    await ping.ended.wait()
    assert bytes(ping.body) == b"pong"
    (sent,) = [s for s in server.requests if s.headers[b":path"] == b"/big"]
    assert len(sink.body) == window and sent.sent == window
    # The sink passes the bytes on: the server may send again, as far as the sink keeps up.
    consumed = 0
    while not sink.ended.is_set():
        stream.consumed(len(sink.body) - consumed)
        consumed = len(sink.body)
        await sink.until(lambda n=consumed: len(sink.body) > n or sink.ended.is_set())
        assert sent.sent - consumed <= window
    assert bytes(sink.body) == body and sink.reset is None


async def test_reset_streams_give_their_unread_bytes_back_to_the_connection(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    body = b"z" * (1 << 20)
    server = await h2server(lambda s: _respond(s, body))
    window = 65535
    up = upstreams(window=window)  # connection window: 64 stream windows
    # More abandoned streams than the connection window holds: had their unread bytes not
    # been handed back, the connection would stall for good.
    for _ in range(70):
        stream, sink = await open_stream(up, server, consume=False)
        await sink.until(lambda sink=sink: len(sink.body) >= window)
        stream.reset()
        stream.reset()  # idempotent
        assert sink.reset is None  # the sink's own reset is not reported back to it
    _, last = await open_stream(up, server)
    await last.ended.wait()
    assert bytes(last.body) == body
    assert len(server.conns) == 1
    assert all(s.reset_code == ErrorCodes.CANCEL for s in server.requests[:70])


async def test_padding_is_acknowledged_by_itself(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    # 4,000 frames each with 255 bytes of padding: 1 MB of padding, 16 windows' worth, that no
    # sink ever consumes. Were it not acknowledged at once, the stream would stall.
    body = bytes(range(250)) * 16 * 1000  # 4 MB

    async def padded(stream: ServerStream) -> None:
        stream.respond(OK)
        await stream.send(body, end_stream=True, frame=1000, pad=255)

    server = await h2server(padded)
    up = upstreams(window=65535)
    _, sink = await open_stream(up, server)
    await sink.ended.wait()
    assert bytes(sink.body) == body


async def test_interim_responses_and_request_trailers(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    async def handler(stream: ServerStream) -> None:
        stream.respond([(b":status", b"100")])
        stream.respond([(b":status", b"103"), (b"link", b"</a.css>; rel=preload")])
        body = await stream.read_all()
        stream.respond(OK)
        await stream.send(body)
        checksum = (b"x-checksum", str(len(body)).encode())
        stream.trailers([checksum, *(stream.request_trailers or [])])

    server = await h2server(handler)
    up = upstreams()
    stream, sink = await open_stream(
        up, server, headers=[*request("/t", b"POST"), (b"te", b"trailers")], end_stream=False
    )
    stream.send_data(b"payload")
    stream.send_trailers([(b"x-request-trailer", b"yes")])
    await sink.ended.wait()
    assert sink.reset is None, (sink.reset, server.errors)
    assert [dict(h)[b":status"] for h in sink.headers] == [b"100", b"103", b"200"]
    assert dict(sink.headers[1])[b"link"] == b"</a.css>; rel=preload"
    assert bytes(sink.body) == b"payload"
    assert sink.trailers == [(b"x-checksum", b"7"), (b"x-request-trailer", b"yes")]
    assert [e[0] for e in sink.events] == ["headers", "headers", "headers", "data", "trailers"]


async def test_early_response_resets_the_rest_of_the_request(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    async def handler(stream: ServerStream) -> None:
        stream.respond([(b":status", b"413")], end_stream=True)
        await stream.ended.wait()

    server = await h2server(handler)
    up = upstreams()
    stream, sink = await open_stream(up, server, headers=request("/up", b"POST"), end_stream=False)
    await sink.ended.wait()
    assert sink.status() == 413 and sink.events == [("headers", True)]
    (received,) = server.requests
    await received.ended.wait()
    assert received.reset_code == ErrorCodes.NO_ERROR
    assert stream.send_data(b"more") is True  # ignored: nothing to wait for
    stream.reset()  # idempotent after the end
    assert sink.reset is None


# -- connect failures and TLS -------------------------------------------------------------------


async def test_connect_failures(upstreams: UpstreamsFactory) -> None:
    up = upstreams(connect=0.3)
    sink = Recorder()

    async def serve_http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        writer.close()

    silent: list[asyncio.Transport] = []

    class Silent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            silent.append(transport)  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    http1 = await asyncio.start_server(serve_http1, "127.0.0.1", 0)
    mute = await loop.create_server(Silent, "127.0.0.1", 0)
    try:
        http1_ep = Endpoint("127.0.0.1", http1.sockets[0].getsockname()[1])
        with pytest.raises(OSError, match="not HTTP/2"):
            await up.open_stream(http1_ep, tls=False, server_name="", headers=request(),
                                 end_stream=True, sink=sink)
        mute_ep = Endpoint("127.0.0.1", mute.sockets[0].getsockname()[1])
        with pytest.raises(TimeoutError, match="timed out"):
            await up.open_stream(mute_ep, tls=False, server_name="", headers=request(),
                                 end_stream=True, sink=sink)
        mute.close()
        await mute.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await up.open_stream(mute_ep, tls=False, server_name="", headers=request(),
                                 end_stream=True, sink=sink)
    finally:
        http1.close()
        mute.close()
        for t in silent:
            t.abort()
        await http1.wait_closed()
        await mute.wait_closed()
    assert sink.events == []
    assert up.stats() == {}


async def test_waiters_share_a_failed_connect(upstreams: UpstreamsFactory) -> None:
    up = upstreams(connect=0.3)
    loop = asyncio.get_running_loop()
    mute = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    ep = Endpoint("127.0.0.1", mute.sockets[0].getsockname()[1])
    try:
        results = await asyncio.gather(
            *(up.open_stream(ep, tls=False, server_name="", headers=request(), end_stream=True,
                             sink=Recorder()) for _ in range(5)),
            return_exceptions=True,
        )
    finally:
        mute.close()
    assert all(isinstance(r, TimeoutError) for r in results), results
    assert up.stats() == {}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d,
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate it signed (upstream.test and 127.0.0.1), and another CA."""
    d = tmp_path_factory.mktemp("h2certs")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=upstream.test", cwd=d,
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:upstream.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d,
    )
    return d


def _server_context(certs: Path, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.crt", certs / "server.key")
    context.set_alpn_protocols(alpn)
    return context


async def test_h2_over_tls_verified(
    upstreams: UpstreamsFactory, h2server: ServerFactory, certs: Path
) -> None:
    server = await h2server(
        lambda s: _respond(s, s.headers[b":scheme"]), ssl_context=_server_context(certs, ["h2"])
    )
    up = upstreams(ca_file=str(certs / "ca.crt"))
    for name in ("upstream.test", ""):  # "" checks the endpoint's IP against the certificate
        _, sink = await open_stream(up, server, headers=request(scheme=b"https"), tls=True,
                                    server_name=name)
        await sink.ended.wait()
        assert bytes(sink.body) == b"https"
    # One connection per server name: the name is part of what was verified.
    assert len(server.conns) == 2
    assert up.stats()[f"127.0.0.1:{server.port} tls"]["connections"] == 2


async def test_tls_verification_failure_and_missing_alpn(
    upstreams: UpstreamsFactory, h2server: ServerFactory, certs: Path
) -> None:
    server = await h2server(hold, ssl_context=_server_context(certs, ["h2"]))
    wrong_ca = upstreams(ca_file=str(certs / "other-ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        await open_stream(wrong_ca, server, tls=True, server_name="upstream.test")
    right_ca = upstreams(ca_file=str(certs / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        await open_stream(right_ca, server, tls=True, server_name="elsewhere.test")
    http1_only = await h2server(hold, ssl_context=_server_context(certs, ["http/1.1"]))
    with pytest.raises(OSError, match="did not select h2 in ALPN"):
        await open_stream(right_ca, http1_only, tls=True, server_name="upstream.test")
    assert not server.requests and not http1_only.requests


# -- shutdown -------------------------------------------------------------------------------------


async def test_close_leaves_nothing_behind(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(hold, settings={SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    up = upstreams(connections=2)
    opened = [await open_stream(up, server) for _ in range(2)]
    waiting = asyncio.ensure_future(open_stream(up, server))
    await server.wait_requests(2)
    await up.close()
    with pytest.raises(H2UpstreamRefused, match="shut down"):
        await waiting
    assert len(server.conns) == 2
    for conn in server.conns:
        await conn.closed.wait()  # (the server's side may hear the close a moment later)
        assert conn.goaway_received.is_set()
    for _, sink in opened:
        assert sink.reset is not None and sink.reset[2] is False
    assert up.stats() == {}
    with pytest.raises(H2UpstreamRefused, match="shut down"):
        await open_stream(up, server)
    # The no_leaked_tasks fixture (tests/conftest.py) checks that no task is left behind.


# -- a peer that stops reading -------------------------------------------------------------------


async def _fill_until_paused(stream: UpstreamStream) -> int:
    """Send until send_data says stop: with windows as large as HTTP/2 allows, only the
    socket (the server does not read it) can make it say so."""
    chunk = b"x" * (1 << 20)
    for n in range(1, 512):
        if not stream.send_data(chunk):
            return n * len(chunk)
    raise AssertionError("send_data never pushed back")


async def test_peer_not_reading_pauses_sending_and_holds_new_streams_back(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    huge = {SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1}
    server = await h2server(hold, settings=huge)
    up = upstreams(high=64 * 1024, low=16 * 1024)
    stream, sink = await open_stream(up, server, headers=request("/up", b"POST"), end_stream=False)
    (first,) = await server.wait_requests(1)
    assert first.conn.transport is not None
    first.conn.transport.pause_reading()
    sent = await _fill_until_paused(stream)
    # A stream opened now is held back: its HEADERS wait for the socket to drain.
    second, second_sink = await open_stream(up, server, headers=request("/second"))
    assert second.id == 0
    first.conn.transport.resume_reading()
    await sink.until(lambda: sink.writable > 0)
    (_, late) = await server.wait_requests(2)
    assert late.headers[b":path"] == b"/second" and late.id == 3
    stream.end()
    assert len(await first.read_all()) == sent
    await _respond(first, b"")
    await _respond(late, b"")
    await sink.ended.wait()
    await second_sink.ended.wait()


async def test_lost_while_held_back_only_unsent_streams_are_retryable(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(hold, settings={SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    up = upstreams(high=64 * 1024, low=16 * 1024)
    stream, sink = await open_stream(up, server, headers=request("/up", b"POST"), end_stream=False)
    (first,) = await server.wait_requests(1)
    assert first.conn.transport is not None
    first.conn.transport.pause_reading()
    await _fill_until_paused(stream)
    _, unsent = await open_stream(up, server, headers=request("/second"))
    first.conn.transport.abort()
    await sink.ended.wait()
    await unsent.ended.wait()
    assert sink.reset is not None and sink.reset[2] is False
    assert unsent.reset is not None and unsent.reset[2] is True
    assert len(server.requests) == 1


async def test_header_list_over_the_peer_limit_is_refused(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(hold, settings={SettingCodes.MAX_HEADER_LIST_SIZE: 300})
    up = upstreams()
    # The peer's SETTINGS must have arrived: a first stream waits for the connection.
    await open_stream(up, server, headers=request("/small"))
    with pytest.raises(H2UpstreamRefused, match="MAX_HEADER_LIST_SIZE of 300"):
        await open_stream(up, server, headers=[*request("/big"), (b"x-big", b"v" * 300)])
    await open_stream(up, server, headers=request("/after"))
    paths = [s.headers[b":path"] for s in await server.wait_requests(2)]
    assert paths == [b"/small", b"/after"]


async def test_a_cancelled_connect_lets_a_waiter_try_again(upstreams: UpstreamsFactory) -> None:
    up = upstreams(connect=0.5)
    accepted = 0

    class Mute(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            nonlocal accepted
            accepted += 1

    mute = await asyncio.get_running_loop().create_server(Mute, "127.0.0.1", 0)
    ep = Endpoint("127.0.0.1", mute.sockets[0].getsockname()[1])

    def attempt() -> asyncio.Task[UpstreamStream]:
        return asyncio.ensure_future(up.open_stream(
            ep, tls=False, server_name="", headers=request(), end_stream=True, sink=Recorder()
        ))

    try:
        first = attempt()
        second = attempt()
        await asyncio.sleep(0)  # both started: the first connects, the second waits for it
        assert up.stats()[str(ep)] == {
            "connections": 0, "streams": 0, "connecting": 1, "waiting": 1
        }
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(TimeoutError):
            await second
        assert accepted == 2
    finally:
        mute.close()
        await mute.wait_closed()
    assert up.stats() == {}


async def test_close_cuts_a_connect_under_way(upstreams: UpstreamsFactory) -> None:
    up = upstreams(connect=30.0)
    connected = asyncio.Event()

    class Mute(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            connected.set()

    mute = await asyncio.get_running_loop().create_server(Mute, "127.0.0.1", 0)
    ep = Endpoint("127.0.0.1", mute.sockets[0].getsockname()[1])
    try:
        attempt = asyncio.ensure_future(up.open_stream(
            ep, tls=False, server_name="", headers=request(), end_stream=True, sink=Recorder()
        ))
        await connected.wait()
        await up.close()
        # Not the 30 s connect timeout: the attempt fails as soon as close() cut it.
        with pytest.raises(ConnectionResetError, match="before HTTP/2 was set up"):
            await attempt
    finally:
        mute.close()
        await mute.wait_closed()
    assert up.stats() == {}
