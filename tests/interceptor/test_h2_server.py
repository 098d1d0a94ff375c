"""HTTP/2 from clients (h2c with prior knowledge on the plain port) to HTTP/1.1 backends: curl
(nghttp2) and the h2 library over real sockets; routing, counting, headers, many streams."""

from __future__ import annotations

import asyncio
import collections
import json

import pytest
from h2.errors import ErrorCodes

from .backends import BackendConn, Request, http_app, named_app
from .h2client import H2Client
from .helpers import APP_KEY, app_route, eventually, queue_entry


async def _curl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "20", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_curl_h2c_prior_knowledge_reaches_http1_backend(proxied):
    ic, _ = await proxied()
    host, port = ic.proxy_address
    rc, out, err = await _curl(
        "--http2-prior-knowledge", "-H", "Host: app.test", "-w", "\n%{http_version}",
        f"http://{host}:{port}/hello?x=1",
    )
    assert rc == 0, err
    body, version = out.rsplit("\n", 1)
    assert version == "2"
    seen = json.loads(body)
    assert seen["target"] == "/hello?x=1"
    assert seen["version"] == "HTTP/1.1"
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["host"] == "app.test"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "app.test"
    assert "accept-encoding" not in headers  # nothing invented on the way
    assert queue_entry(ic)["RequestCount"] == 1


async def test_h2c_off_refuses_the_preface_as_before(backends, make_interceptor):
    import dataclasses

    from httpscale.interceptor.settings import Http2

    from .helpers import settings

    b = await backends()
    s = dataclasses.replace(settings(), http2=Http2(h2c=False))
    ic = await make_interceptor(routes=[app_route(b.endpoint)], settings=s)
    reader, writer = await asyncio.open_connection(*ic.proxy_address)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400")


async def test_authority_routes_and_unknown_host_is_404(proxied):
    ic, _ = await proxied()
    c = await H2Client.open(ic.proxy_address)
    try:
        ok = await c.get("/a", host="app.test")
        missing = await c.get("/a", host="other.test")
    finally:
        await c.aclose()
    assert ok.status == 200
    assert ok.header(b"x-httpscale-cold-start") == b"false"
    assert missing.status == 404
    assert b"no route for host 'other.test'" in missing.body


async def test_many_concurrent_streams_one_connection_counted(backends, make_interceptor):
    release = asyncio.Event()
    entered = 0

    async def app(req: Request, conn: BackendConn) -> None:
        nonlocal entered
        entered += 1
        await release.wait()
        await conn.respond(200, req.target.encode(), [("Content-Type", "text/plain")])

    b = await backends(http_app(app))
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    c = await H2Client.open(ic.proxy_address)
    try:
        sids = [c.request(f"/s{i}") for i in range(50)]
        await eventually(lambda: entered == 50, within=10, what="50 at the backend")
        assert queue_entry(ic) == {"Concurrency": 50, "RequestCount": 50}
        release.set()
        replies = [await c.reply(s) for s in sids]
    finally:
        await c.aclose()
    assert collections.Counter(r.status for r in replies) == {200: 50}
    assert sorted(bytes(r.body) for r in replies) == sorted(f"/s{i}".encode() for i in range(50))
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 50


async def test_post_body_forwarded(proxied):
    ic, _ = await proxied()
    c = await H2Client.open(ic.proxy_address)
    try:
        sid = c.request("/up", method="POST", headers=[("content-length", "11")],
                        body=b"hello world")
        r = await c.reply(sid)
    finally:
        await c.aclose()
    assert r.status == 200
    seen = json.loads(bytes(r.body))
    assert seen["method"] == "POST" and seen["body"] == "hello world"


async def test_client_reset_cancels_upstream_and_counts_499(backends, make_interceptor):
    entered = asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/after":
            await conn.respond(200, b"ok", [])
            return
        entered.set()
        await conn.wait_eof()  # the proxy drops the upstream connection
        conn.close_after = True

    b = await backends(http_app(app))
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    c = await H2Client.open(ic.proxy_address)
    try:
        sid = c.request("/slow")
        await asyncio.wait_for(entered.wait(), 10)
        assert queue_entry(ic)["Concurrency"] == 1
        c.reset(sid, ErrorCodes.CANCEL)
        await eventually(lambda: queue_entry(ic)["Concurrency"] == 0, within=5)
        # The connection goes on serving.
        again = await c.get("/after")
    finally:
        await c.aclose()
    assert again.status == 200
    assert ic.proxy.metrics.requests_by_status().get(499) == 1


@pytest.mark.parametrize("n", [3])
async def test_streams_over_the_limit_are_refused_not_the_connection(
    backends, make_interceptor, n
):
    import dataclasses

    from httpscale.interceptor.settings import Http2

    from .helpers import settings

    release = asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        await release.wait()
        await conn.respond(200, b"ok", [])

    b = await backends(http_app(app))
    s = dataclasses.replace(settings(), http2=Http2(max_concurrent_streams=n))
    ic = await make_interceptor(routes=[app_route(b.endpoint)], settings=s)
    c = await H2Client.open(ic.proxy_address)
    try:
        # Sent before our SETTINGS could be read: the client does not know the limit yet.
        c.h2.remote_settings.max_concurrent_streams = 100
        sids = [c.request(f"/s{i}") for i in range(n + 2)]
        refused = [await c.reply(s) for s in sids[n:]]
        assert all(r.reset == ErrorCodes.REFUSED_STREAM for r in refused)
        release.set()
        ok = [await c.reply(s) for s in sids[:n]]
        assert all(r.status == 200 for r in ok)
        assert (await c.get("/later")).status == 200
    finally:
        await c.aclose()
    assert queue_entry(ic)["RequestCount"] == n + 1


async def test_oversized_header_list_is_431_on_its_stream(proxied):
    ic, _ = await proxied()
    c = await H2Client.open(ic.proxy_address)
    try:
        big = await c.get("/", headers=[("x-big", "v" * 70000)])
        ok = await c.get("/")
    finally:
        await c.aclose()
    assert big.status == 431
    assert ok.status == 200


async def test_oversized_frame_is_a_connection_error(proxied):
    ic, _ = await proxied()
    c = await H2Client.open(ic.proxy_address)
    try:
        # The client believes the server takes 1 MiB frames: its 64 KiB DATA frame is over
        # the 16 KiB the server advertised.
        c.h2.max_outbound_frame_size = 1 << 20
        c.h2.outbound_flow_control_window = 1 << 20
        sid = c.request("/", method="POST", body=None, end=False)
        c.h2.streams[sid].outbound_flow_control_window = 1 << 20
        c.send(sid, b"x" * 65536)
        await asyncio.wait_for(c.goaway_seen.wait(), 5)
    finally:
        await c.aclose()
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR


async def test_drain_sends_goaway_and_lets_open_streams_finish(backends, make_interceptor):
    entered = asyncio.Event()
    release = asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        entered.set()
        await release.wait()
        await conn.respond(200, b"finished", [])

    b = await backends(http_app(app))
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    c = await H2Client.open(ic.proxy_address)
    try:
        sid = c.request("/long")
        await asyncio.wait_for(entered.wait(), 10)
        shutdown = asyncio.ensure_future(ic.shutdown())
        await asyncio.wait_for(c.goaway_seen.wait(), 5)
        assert c.goaway is not None and c.goaway.error_code == ErrorCodes.NO_ERROR
        assert c.goaway.last_stream_id == sid
        release.set()
        r = await c.reply(sid)
        assert c.error is None, c.error
        await asyncio.wait_for(shutdown, 10)
        await asyncio.wait_for(c.closed.wait(), 5)
    finally:
        await c.aclose()
    assert r.status == 200 and bytes(r.body) == b"finished"


async def test_held_stream_goes_through_after_cold_start(backends, make_interceptor):
    b = await backends(http_app(named_app("awake")))
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    woken: list[str] = []
    ic.add_wake_listener(woken.append)
    c = await H2Client.open(ic.proxy_address)
    try:
        sid = c.request("/cold")
        await eventually(lambda: (ic.route_stats(APP_KEY) or {}).get("held") == 1)
        assert woken == [APP_KEY]
        assert queue_entry(ic) == {"Concurrency": 1, "RequestCount": 1}
        ic.set_endpoints(APP_KEY, [b.endpoint])
        r = await c.reply(sid)
    finally:
        await c.aclose()
    assert r.status == 200 and bytes(r.body) == b"awake"
    assert r.header(b"x-httpscale-cold-start") == b"true"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


def test_out_of_range_http2_settings_name_the_option():
    from httpscale.interceptor.h2.server import check_settings
    from httpscale.interceptor.settings import Http2

    with pytest.raises(ValueError, match=r"--http2-max-frame-size: 100 is outside 16384\.\."):
        check_settings(Http2(max_frame_size=100))
    check_settings(Http2())


async def test_idle_connection_gets_goaway_and_is_closed(proxied):
    ic, _ = await proxied(keepalive_idle=0.3)
    c = await H2Client.open(ic.proxy_address)
    try:
        assert (await c.get("/")).status == 200
        await asyncio.wait_for(c.closed.wait(), 10)
    finally:
        await c.aclose()
    assert c.goaway is not None and c.goaway.error_code == ErrorCodes.NO_ERROR
    assert not ic.proxy.h2_connections


async def test_no_request_within_the_head_timeout_closes(proxied):
    ic, _ = await proxied(request_head=0.3)
    reader, writer = await asyncio.open_connection(*ic.proxy_address)
    try:
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the preface, then nothing
        data = await asyncio.wait_for(reader.read(), 10)  # until the interceptor closes
    finally:
        writer.close()
    assert data  # its SETTINGS and a GOAWAY came before the close
    await eventually(lambda: not ic.proxy.h2_connections)


async def test_streams_after_the_drain_goaway_are_refused(backends, make_interceptor):
    entered = asyncio.Event()
    release = asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        entered.set()
        await release.wait()
        await conn.respond(200, b"done", [])

    b = await backends(http_app(app))
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    c = await H2Client.open(ic.proxy_address)
    try:
        first = c.request("/first")
        await asyncio.wait_for(entered.wait(), 10)
        shutdown = asyncio.ensure_future(ic.shutdown())
        await asyncio.wait_for(c.goaway_seen.wait(), 5)
        late = await c.get("/late")
        assert late.reset == ErrorCodes.REFUSED_STREAM
        release.set()
        assert (await c.reply(first)).status == 200
        await asyncio.wait_for(shutdown, 10)
    finally:
        await c.aclose()
    assert len(b.requests) == 1


async def test_refused_connect_to_a_just_ready_endpoint_is_retried(make_interceptor):
    from httpscale.routing.spec import Endpoint

    from .backends import free_port

    port = free_port()
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    started: list[asyncio.Server] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlate!")
        await writer.drain()
        writer.close()

    refused = ic.proxy.metrics._upstream_errors
    c = await H2Client.open(ic.proxy_address)
    try:
        sid = c.request("/")
        await eventually(lambda: (ic.route_stats(APP_KEY) or {}).get("held") == 1)
        # Reported ready before it listens (the readiness/accept race): the stream's connect
        # is refused, and it tries again until the app listens.
        ic.set_endpoints(APP_KEY, [Endpoint("127.0.0.1", port)])
        await eventually(lambda: refused[(APP_KEY, "connect")] >= 1, within=5)
        started.append(await asyncio.start_server(serve, "127.0.0.1", port))
        r = await c.reply(sid)
    finally:
        await c.aclose()
        for server in started:
            server.close()
            await server.wait_closed()
    assert r.status == 200 and bytes(r.body) == b"late!"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
