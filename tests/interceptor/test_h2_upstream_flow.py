"""The HTTP/2 upstream client's flow control, both ways, against a scripted h2-library server:
request data queued past the peer's windows and pushed back (send_data / upstream_writable),
response data acknowledged only as the sink consumes it, a peer that stops reading."""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from httpscale.interceptor.h2.upstream import UpstreamStream

from . import h2servers
from .h2servers import (
    OK,
    ServerFactory,
    ServerStream,
    UpstreamsFactory,
    hold,
    open_stream,
    request,
    respond,
)

pytestmark = pytest.mark.timeout(60)
# The shared fixtures, by the names tests ask for (`upstreams`, `h2server`).
upstreams_fixture = h2servers.upstreams_fixture
h2server_fixture = h2servers.h2server_fixture


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
    await respond(received, b"got it")
    await sink.ended.wait()
    assert bytes(sink.body) == b"got it"


async def test_response_window_opens_only_as_the_sink_consumes(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB

    async def big(stream: ServerStream) -> None:
        if stream.headers[b":path"] == b"/ping":
            await respond(stream, b"pong")
            return
        await respond(stream, body)

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
    server = await h2server(lambda s: respond(s, body))
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
    await respond(first, b"")
    await respond(late, b"")
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


async def test_idle_connection_to_a_peer_not_reading_is_aborted(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(hold, settings={SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    up = upstreams(high=64 * 1024, low=16 * 1024, idle=0.2)
    stream, _ = await open_stream(up, server, headers=request("/up", b"POST"), end_stream=False)
    (first,) = await server.wait_requests(1)
    assert first.conn.transport is not None
    first.conn.transport.pause_reading()
    await _fill_until_paused(stream)
    (pool,) = up._pools.values()
    (conn,) = pool.conns
    stream.reset()  # (as the h2 side does when its client went away)
    # Idle now, with a write buffer the peer will never read: a graceful close would wait
    # for it forever.
    await conn.closed.wait()
    assert up.stats() == {}
