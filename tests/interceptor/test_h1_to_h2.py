"""HTTP/1.1 clients on routes whose upstream speaks HTTP/2 (upstream_scheme h2c): each request
goes to the app as an HTTP/2 stream on `proxy.h2_upstreams`' shared connections (h2/bridge.py).
The app is an h2-library server on loopback that speaks nothing but HTTP/2 (h2servers.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
from h2.errors import ErrorCodes

from httpscale.routing.spec import Endpoint

from . import h2servers
from .client import Conn, build_request
from .h2servers import H2Server, ServerFactory, ServerStream
from .helpers import APP_KEY, app_route, eventually, queue_entry

pytestmark = pytest.mark.timeout(60)
h2server_fixture = h2servers.h2server_fixture


async def echo(stream: ServerStream) -> None:
    """Answers with what it got: method, path, authority, scheme, fields and body (JSON);
    `x-trailers: yes` asks for response trailers; `x-length: no` for no content-length."""
    body = await stream.read_all()
    h = stream.headers
    out = json.dumps({
        "method": h[b":method"].decode(), "path": h[b":path"].decode(),
        "authority": h.get(b":authority", b"").decode(), "scheme": h[b":scheme"].decode(),
        "headers": {k.decode(): v.decode() for k, v in h.items() if k[:1] != b":"},
        "body": len(body), "tail": body[-16:].decode("latin-1"),
        "trailers": {k.decode(): v.decode() for k, v in stream.request_trailers or ()},
    }).encode()
    head = [(b":status", b"200"), (b"content-type", b"application/json")]
    if h.get(b"x-length") != b"no":
        head.append((b"content-length", str(len(out)).encode()))
    trailers = h.get(b"x-trailers") == b"yes"
    stream.respond(head, end_stream=h[b":method"] == b"HEAD")
    if h[b":method"] == b"HEAD":
        return
    await stream.send(out, end_stream=not trailers)
    if trailers:
        stream.trailers([(b"x-status", b"0"), (b"x-message", b"fine")])


async def _proxy(make_interceptor, server: H2Server, **route_kw):
    endpoint = Endpoint("127.0.0.1", server.port)
    return await make_interceptor(routes=[app_route(endpoint, upstream_scheme="h2c", **route_kw)])


async def test_requests_go_as_http2_streams_on_one_shared_connection(
    make_interceptor, clients, h2server: ServerFactory
):
    server = await h2server(echo)
    ic = await _proxy(make_interceptor, server)
    c = await clients(ic.proxy_address)
    get = await c.request("GET", "/a?q=1", headers=[("Accept", "text/plain")])
    post = await c.request("POST", "/p", body=b"x" * 1000)
    await c.send(
        build_request("POST", "/c", headers=[("Transfer-Encoding", "chunked")])
        + b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n"
    )
    chunked = await c.read_response(method="POST")
    head = await c.request("HEAD", "/h")
    for r in (get, post, chunked):
        assert r.status == 200, r.body
        assert r.header("content-length") == str(len(r.body))  # the app's length, kept
        assert r.header("x-httpscale-cold-start") == "false"
    seen = json.loads(get.body)
    assert (seen["method"], seen["path"], seen["authority"], seen["scheme"]) == (
        "GET", "/a?q=1", "app.test", "http",
    )
    assert seen["headers"]["accept"] == "text/plain"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert seen["headers"]["x-forwarded-host"] == "app.test"
    assert "host" not in seen["headers"] and "connection" not in seen["headers"]
    assert json.loads(post.body)["body"] == 1000
    assert json.loads(post.body)["headers"]["content-length"] == "1000"
    got = json.loads(chunked.body)
    assert (got["body"], got["tail"]) == (11, "hello world")
    assert got["trailers"] == {"x-checksum": "42"}
    assert "transfer-encoding" not in got["headers"]
    assert head.status == 200 and head.body == b""
    # One client connection, four requests, one upstream HTTP/2 connection.
    assert len(server.conns) == 1 and len(server.requests) == 4
    stats = ic.proxy.h2_upstreams.stats()
    assert stats[f"127.0.0.1:{server.port}"]["connections"] == 1
    assert queue_entry(ic) == {"Concurrency": 0, "RequestCount": 4}


async def test_chunked_out_without_length_and_trailers_only_with_te(
    make_interceptor, clients, h2server: ServerFactory
):
    server = await h2server(echo)
    ic = await _proxy(make_interceptor, server)
    c = await clients(ic.proxy_address)
    with_te = await c.request(
        "GET", "/t", headers=[("TE", "trailers"), ("X-Trailers", "yes"), ("X-Length", "no")]
    )
    without = await c.request("GET", "/t", headers=[("X-Trailers", "yes"), ("X-Length", "no")])
    assert with_te.chunked and without.chunked
    assert json.loads(with_te.body)["headers"]["te"] == "trailers"
    assert dict(with_te.trailers) == {"x-status": "0", "x-message": "fine"}
    assert without.trailers == []
    # An HTTP/1.0 client: no chunking, the body ends with the connection.
    old = await clients(ic.proxy_address)
    await old.send(build_request("GET", "/old", headers=[("X-Length", "no")], version="HTTP/1.0"))
    r = await old.read_response()
    assert r.status == 200 and not r.chunked and json.loads(r.body)["path"] == "/old"


async def test_cold_start_held_then_served(make_interceptor, clients, h2server: ServerFactory):
    server = await h2server(echo)
    ic = await make_interceptor(routes=[app_route(dynamic=True, upstream_scheme="h2c")])
    c = await clients(ic.proxy_address)
    await c.send(build_request("POST", "/cold", body=b"held body"))
    await eventually(lambda: ic.proxy.registry.states[APP_KEY].held == 1)
    assert queue_entry(ic)["Concurrency"] == 1
    ic.set_endpoints(APP_KEY, [Endpoint("127.0.0.1", server.port)])
    r = await c.read_response(method="POST")
    assert r.status == 200 and r.header("x-httpscale-cold-start") == "true"
    assert json.loads(r.body)["tail"] == "held body"
    assert queue_entry(ic) == {"Concurrency": 0, "RequestCount": 1}


async def test_refused_stream_goes_again(make_interceptor, clients, h2server: ServerFactory):
    refused: list[int] = []

    async def refuse_first(stream: ServerStream) -> None:
        if not refused:
            refused.append(stream.id)
            stream.reset(ErrorCodes.REFUSED_STREAM)
            return
        await echo(stream)

    server = await h2server(refuse_first)
    ic = await _proxy(make_interceptor, server)
    c = await clients(ic.proxy_address)
    r = await c.request("GET", "/again")
    assert r.status == 200 and json.loads(r.body)["path"] == "/again"
    assert refused and len(server.requests) == 2


async def test_errors_say_why(make_interceptor, clients, h2server: ServerFactory):
    async def silent(stream: ServerStream) -> None:
        await asyncio.Event().wait()  # never answers (cancelled at teardown)

    async def broken(stream: ServerStream) -> None:
        stream.reset(ErrorCodes.INTERNAL_ERROR)

    slow = await h2server(silent)
    ic = await _proxy(make_interceptor, slow, response_header_timeout=0.3)
    c = await clients(ic.proxy_address)
    r = await c.request("GET", "/slow")
    assert r.status == 504 and b"did not send a response head within 0.3s" in r.body
    bad = await h2server(broken)
    ic2 = await _proxy(make_interceptor, bad)
    r = await (await clients(ic2.proxy_address)).request("GET", "/bad")
    assert r.status == 502 and b"upstream reset the stream (INTERNAL_ERROR)" in r.body
    # Nothing listening: connect refused, 502 naming the endpoint.
    gone = await h2server(silent)
    port = gone.port
    await gone.close()
    ic3 = await _proxy(make_interceptor, gone)
    r = await (await clients(ic3.proxy_address)).request("GET", "/gone")
    assert r.status == 502 and f"cannot connect to 127.0.0.1:{port}".encode() in r.body
    up = await clients(ic3.proxy_address)
    r = await up.request(
        "GET", "/ws", headers=[("Connection", "upgrade"), ("Upgrade", "websocket")]
    )
    assert r.status == 501 and b"upgrade (websocket)" in r.body
    # curl --http2 on http:// asks for h2c by Upgrade: declined, the request bridged.
    h2c = await clients(ic2.proxy_address)
    bad.handler = echo
    r = await h2c.request("GET", "/h2c", headers=[
        ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
        ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
    ])
    assert r.status == 200 and json.loads(r.body)["path"] == "/h2c"
    assert "upgrade" not in json.loads(r.body)["headers"]
    assert "http2-settings" not in json.loads(r.body)["headers"]
    r = await h2c.request("GET", "/after")  # the connection goes on in HTTP/1.1
    assert r.status == 200 and json.loads(r.body)["path"] == "/after"
    for each in (ic, ic2, ic3):
        await eventually(lambda each=each: queue_entry(each)["Concurrency"] == 0)


async def test_backpressure_both_ways(make_interceptor, h2server: ServerFactory):
    big = 8 * 1024 * 1024
    release = asyncio.Event()

    async def slow_reader(stream: ServerStream) -> None:
        # Reads nothing until released: the upload waits in the windows and the stream queue.
        await release.wait()
        stream.conn.server.auto_ack = True
        stream.ack(len(stream.body))
        await stream.read_all()
        stream.respond([(b":status", b"200")])
        await stream.send(b"y" * big, end_stream=True)

    server = await h2server(slow_reader, auto_ack=False)
    ic = await _proxy(make_interceptor, server)
    c = await Conn.open(ic.proxy_address, rcvbuf=16384)
    try:
        c.writer.write(build_request("POST", "/up", headers=[("Content-Length", str(big))]))
        sending = asyncio.ensure_future(_send_all(c, b"x" * big))
        await eventually(lambda: _client_paused(ic), what="client reads paused")
        bridge = _bridge(ic)
        assert bridge.up is not None and bridge.up._queued <= 2 * 1024 * 1024
        assert not sending.done()  # the upload is held back, not buffered whole
        release.set()
        await sending
        # Now the client does not read the response: the app's window is not reopened.
        await eventually(lambda: _bridge(ic).owed > 0, what="client paused, bytes owed")
        conn = next(iter(ic.proxy.connections))
        window = ic.proxy.settings.http2.initial_window_size
        high = ic.proxy.settings.limits.write_high_water
        assert conn.transport.get_write_buffer_size() <= window + high
        assert server.requests[0].sent < big
        r = await c.read_response(method="POST", within=30)
        assert r.status == 200 and len(r.body) == big
    finally:
        await c.aclose()
    assert queue_entry(ic) == {"Concurrency": 0, "RequestCount": 1}


async def _send_all(c: Conn, data: bytes) -> None:
    view = memoryview(data)
    while view:
        c.writer.write(view[:65536])
        view = view[65536:]
        await c.writer.drain()


def _client_paused(ic) -> bool:
    return any("upstream-full" in conn.flow.paused_for() for conn in ic.proxy.connections)


def _bridge(ic):
    (conn,) = ic.proxy.connections
    return conn.pipeline[0]._bridge


async def test_traced_request_carries_the_spans_context_to_the_app(
    monkeypatch, make_interceptor, clients, h2server: ServerFactory
):
    from tracingkit import CLIENT_TRACE_ID, TRACEPARENT, OtlpReceiver, trace_to, traceparent

    receiver = await OtlpReceiver().start()
    try:
        trace_to(monkeypatch, receiver)
        server = await h2server(echo)
        ic = await _proxy(make_interceptor, server)
        assert ic.proxy.tracer is not None
        c = await clients(ic.proxy_address)
        r = await c.request("GET", "/traced", headers=[("traceparent", TRACEPARENT)])
        assert r.status == 200
        (span,) = await receiver.wait_spans(1)
        sent = json.loads(r.body)["headers"]
        # The app's parent is the interceptor's span, in the client's trace.
        assert traceparent(sent["traceparent"])[:2] == (CLIENT_TRACE_ID, span.span_id)
        assert span.attributes["httpscale.upstream"] == f"127.0.0.1:{server.port}"
        assert span.attributes["http.response.status_code"] == 200
    finally:
        await receiver.close()


async def test_100_continue_relayed_other_interim_dropped(
    make_interceptor, clients, h2server: ServerFactory
):
    async def interim(stream: ServerStream) -> None:
        stream.respond([(b":status", b"100")])
        body = await stream.read_all()
        stream.respond([(b":status", b"103"), (b"link", b"</s.css>; rel=preload")])
        stream.respond([(b":status", b"201"), (b"content-length", str(len(body)).encode())])
        await stream.send(body, end_stream=True)

    server = await h2server(interim)
    ic = await _proxy(make_interceptor, server)
    c = await clients(ic.proxy_address)
    await c.send(build_request("PUT", "/x", headers=[("Expect", "100-continue"),
                                                     ("Content-Length", "4")]))
    first = await c.read_interim_or_final()
    assert first.status == 100
    await c.send(b"data")
    r = await c.read_response(method="PUT")
    assert r.status == 201 and r.body == b"data" and r.interim == []  # no 103
    assert server.requests[0].headers[b"expect"] == b"100-continue"


async def test_upstream_connection_lost_is_a_502_saying_so(
    make_interceptor, clients, h2server: ServerFactory
):
    async def vanish(stream: ServerStream) -> None:
        assert stream.conn.transport is not None
        stream.conn.transport.abort()  # the app's process died with the request in it

    server = await h2server(vanish)
    ic = await _proxy(make_interceptor, server)
    c = await clients(ic.proxy_address)
    r = await c.request("POST", "/lost", body=b"payload")  # not safe: never sent again
    assert r.status == 502 and b"upstream connection to 127.0.0.1" in r.body
    assert b"lost" in r.body and len(server.requests) == 1
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
