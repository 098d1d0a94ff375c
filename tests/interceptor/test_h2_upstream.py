"""The HTTP/2 upstream client (`H2Upstreams`): its streams and connections against a scripted
h2-library server on loopback (h2servers.py): resets, GOAWAY, stream limits, ids, idle and
retired connections, shutdown. Flow control is in test_h2_upstream_flow.py, gRPC, TLS and
connecting in test_h2_upstream_connect.py."""

from __future__ import annotations

import asyncio

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from httpscale.interceptor.h2.upstream import H2UpstreamRefused
from httpscale.routing.spec import Endpoint

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
    server.handler = lambda s: respond(s, b"fine")
    _, ok = await open_stream(up, server)
    await ok.ended.wait()
    assert bytes(ok.body) == b"fine"
    assert len(server.conns) == 1


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
    await respond(first, b"one")
    assert not conn.closed.is_set()
    # A new stream goes on a new connection: the old one takes none.
    _, fresh = await open_stream(up, server)
    (*_, fourth) = await server.wait_requests(4)
    assert fourth.conn is not conn
    await respond(fourth, b"four")
    await respond(second, b"two")
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
    await respond(sa, b"a")
    _, c = await waiting
    (*_, sc) = await server.wait_requests(3)
    assert sc.conn is sa.conn  # ...and gets the slot the first stream freed
    assert len(server.conns) == 2
    # ...for the connect timeout at most.
    with pytest.raises(H2UpstreamRefused, match="stream limit"):
        await open_stream(up, server)
    await respond(sb, b"b")
    await respond(sc, b"c")
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
    await respond(s1, b"")  # room on A again, B has room too: B was used last
    await sinks[0].ended.wait()
    await open_stream(up, server, headers=request("/4"))
    await server.wait_requests(4)
    (s4,) = [s for s in server.requests if s.headers[b":path"] == b"/4"]
    assert s4.conn is s3.conn
    for s in (s2, s3, s4):
        await respond(s, b"")


async def test_stream_ids_exhausted_retire_the_connection(
    upstreams: UpstreamsFactory, h2server: ServerFactory
) -> None:
    server = await h2server(lambda s: respond(s, b"ok"))
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
    server = await h2server(lambda s: respond(s, b"ok"))
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
    idle_server = await h2server(lambda s: respond(s, b"ok"))
    up = upstreams()
    _, idle_sink = await open_stream(up, idle_server)
    await idle_sink.ended.wait()
    _, busy_sink = await open_stream(up, busy_server)
    (busy,) = await busy_server.wait_requests(1)
    up.retire(Endpoint("127.0.0.1", idle_server.port))
    up.retire(Endpoint("127.0.0.1", busy_server.port))
    await idle_server.conns[0].closed.wait()
    assert not busy.conn.closed.is_set()
    await respond(busy, b"done")
    await busy_sink.ended.wait()
    assert bytes(busy_sink.body) == b"done"
    await busy.conn.closed.wait()
    assert up.stats() == {}


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
