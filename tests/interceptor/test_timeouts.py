"""Every wait is bounded by its own setting: request head, keep-alive idle, body idle, upstream
connect, upstream response head (per route), pooled upstream idle. The autouse leak check
proves none of them leaves a task behind."""

from __future__ import annotations

import asyncio
import time

from .backends import Backend, BackendConn, Blackhole, Request, http_app
from .client import read_head
from .helpers import APP_KEY, app_route, eventually, queue_entry


def _status_or_none(data: bytes) -> int | None:
    """Status of whatever the proxy sent before closing (408 is polite; nothing is fine)."""
    if not data:
        return None
    return int(data.split(b" ", 2)[1])


async def test_request_head_timeout_slow_client(proxied, clients):
    ic, backend = await proxied(request_head=0.4)
    conn = await clients(ic.proxy_address)
    t0 = time.monotonic()
    await conn.send(b"GET / HTTP/1.1\r\nHost: app.te")
    data = await conn.read_until_eof(within=3)
    elapsed = time.monotonic() - t0
    assert _status_or_none(data) in (None, 408), data
    assert 0.3 <= elapsed < 3.0, elapsed
    assert backend.requests == []


async def test_request_head_timeout_is_total_not_per_byte(proxied, clients):
    # Slowloris: one byte every 50 ms keeps the socket busy but must not extend the deadline.
    ic, _ = await proxied(request_head=0.5)
    conn = await clients(ic.proxy_address)
    t0 = time.monotonic()
    head = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: " + b"a" * 200

    async def trickle() -> None:
        for b in head:
            conn.writer.write(bytes([b]))
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    try:
        data = await conn.read_until_eof(within=4)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert _status_or_none(data) in (None, 408)
    assert time.monotonic() - t0 < 3.0


async def test_request_head_timeout_does_not_cut_a_fast_request(proxied, clients):
    # The deadline is far from the pause, so that a loaded machine's delays cannot reach it.
    ic, _ = await proxied(request_head=3.0)
    conn = await clients(ic.proxy_address)
    await conn.send(b"GET / HTTP/1.1\r\n")
    await asyncio.sleep(0.1)  # part of the head, then the rest well within the deadline
    await conn.send(b"Host: app.test\r\n\r\n")
    assert (await conn.read_response()).status == 200


async def test_keepalive_idle_closes_connection(proxied, clients):
    ic, _ = await proxied(keepalive_idle=0.3, request_head=3.0)
    conn = await clients(ic.proxy_address)
    assert (await conn.request("GET", "/")).status == 200
    t0 = time.monotonic()
    assert await conn.read_until_eof(within=3) == b"", "an idle close sends nothing"
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 3.0, elapsed


async def test_keepalive_idle_applies_before_first_byte_too(proxied, clients):
    # A connection that never sends anything is closed (by request_head or keepalive_idle).
    ic, _ = await proxied(keepalive_idle=0.3, request_head=0.3)
    conn = await clients(ic.proxy_address)
    t0 = time.monotonic()
    assert await conn.read_until_eof(within=3) == b""
    assert time.monotonic() - t0 < 3.0


async def test_upstream_connect_timeout(backends, make_interceptor, clients):
    hole = Blackhole()
    try:
        ic = await make_interceptor(routes=[app_route(hole.endpoint)], upstream_connect=0.3)
        conn = await clients(ic.proxy_address)
        t0 = time.monotonic()
        resp = await conn.request("GET", "/")
        elapsed = time.monotonic() - t0
        assert resp.status in (502, 504), (resp.status, resp.body)
        assert resp.body and len(resp.body) < 1024
        assert 0.25 <= elapsed < 2.5, elapsed
        await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
        assert queue_entry(ic)["RequestCount"] == 1
    finally:
        hole.close()


def _silent_handler(got_request: asyncio.Event, eof: asyncio.Event):
    """Read a request, never answer, note when the proxy closes the connection."""

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request()
        if req is None:
            return
        got_request.set()
        await conn.wait_eof(within=10)
        eof.set()

    return handler


async def test_route_response_header_timeout_504(backends, make_interceptor, clients):
    got, eof = asyncio.Event(), asyncio.Event()
    backend = await backends(_silent_handler(got, eof))
    ic = await make_interceptor(
        routes=[app_route(backend.endpoint, response_header_timeout=0.3)],
        upstream_response_header=10.0,
    )
    conn = await clients(ic.proxy_address)
    t0 = time.monotonic()
    resp = await conn.request("GET", "/slow")
    elapsed = time.monotonic() - t0
    assert resp.status == 504, (resp.status, resp.body)
    assert resp.body and len(resp.body) < 1024
    assert 0.25 <= elapsed < 3.0, f"route timeout 0.3 s, global 10 s; took {elapsed:.2f}s"
    # The upstream connection with an unanswered request is closed, never pooled.
    await asyncio.wait_for(eof.wait(), 3)
    # The client connection survives a 504 and works again.
    assert got.is_set()


async def test_changed_route_takes_its_new_response_header_timeout(
    backends, make_interceptor, clients
):
    """set_routes with a changed spec for a known route: the route keeps its state (counters)
    and uses the new timeout at once (the value is copied out of the spec per route)."""
    got, eof = asyncio.Event(), asyncio.Event()
    backend = await backends(_silent_handler(got, eof))
    ic = await make_interceptor(
        routes=[app_route(backend.endpoint, response_header_timeout=30.0)],
        upstream_response_header=30.0,
    )
    ic.set_routes([app_route(backend.endpoint, response_header_timeout=0.3)])
    conn = await clients(ic.proxy_address)
    t0 = time.monotonic()
    resp = await conn.request("GET", "/slow")
    assert resp.status == 504, (resp.status, resp.body)
    assert b"0.3s" in resp.body
    assert time.monotonic() - t0 < 10.0
    assert ic.route_stats(APP_KEY)["request_count"] == 1


async def test_global_response_header_timeout_when_route_sets_none(
    backends, make_interceptor, clients
):
    got, eof = asyncio.Event(), asyncio.Event()
    backend = await backends(_silent_handler(got, eof))
    ic = await make_interceptor(routes=[app_route(backend.endpoint)], upstream_response_header=0.3)
    conn = await clients(ic.proxy_address)
    t0 = time.monotonic()
    resp = await conn.request("GET", "/")
    assert resp.status == 504
    assert 0.25 <= time.monotonic() - t0 < 3.0
    await asyncio.wait_for(eof.wait(), 3)


async def test_slow_head_within_timeout_is_fine(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await asyncio.sleep(0.1)
        await conn.respond(200, b"late but ok")

    ic, _ = await proxied(http_app(app), route_kw={"response_header_timeout": 1.0})
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert (resp.status, resp.body) == (200, b"late but ok")


async def test_response_header_timeout_does_not_limit_body(proxied, clients):
    # The head arrives in time; the body is slower than the head timeout in total, but never
    # idle for long: it must stream to the end.
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
        for b in b"streamed":
            await asyncio.sleep(0.06)
            await conn.send(bytes([b]))

    ic, _ = await proxied(http_app(app), route_kw={"response_header_timeout": 0.2})
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert (resp.status, resp.body) == (200, b"streamed")


async def test_response_body_idle_timeout_closes_both_sides(backends, make_interceptor, clients):
    eof = asyncio.Event()

    async def handler(conn: BackendConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await conn.wait_eof(within=10)
        eof.set()

    backend = await backends(handler)
    ic = await make_interceptor(routes=[app_route(backend.endpoint)], body_idle=0.3)
    conn = await clients(ic.proxy_address)
    await conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    start, _ = await asyncio.wait_for(read_head(conn.reader), 3)
    assert b" 200 " in start
    t0 = time.monotonic()
    rest = await conn.read_until_eof(within=3)
    assert rest == b"0123456789", "truncated: the client sees the short body then a close"
    assert 0.2 <= time.monotonic() - t0 < 3.0
    await asyncio.wait_for(eof.wait(), 3)
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_request_body_idle_timeout(backends, make_interceptor, clients):
    eof = asyncio.Event()

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request_head()
        if req is None:
            return
        await conn.wait_eof(within=10)
        eof.set()

    backend = await backends(handler)
    ic = await make_interceptor(routes=[app_route(backend.endpoint)], body_idle=0.3)
    conn = await clients(ic.proxy_address)
    await conn.send(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123")
    t0 = time.monotonic()
    data = await conn.read_until_eof(within=3)
    assert _status_or_none(data) in (None, 408, 504), data
    assert 0.2 <= time.monotonic() - t0 < 3.0
    await asyncio.wait_for(eof.wait(), 3)
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_pooled_upstream_idle_closed(backends, make_interceptor, clients):
    backend: Backend = await backends()
    ic = await make_interceptor(routes=[app_route(backend.endpoint)], upstream_idle=0.3)
    conn = await clients(ic.proxy_address)
    assert (await conn.request("GET", "/")).status == 200
    t0 = time.monotonic()
    # The echo handler ends when the proxy closes its idle pooled connection.
    await backend.wait_for(lambda: backend.finished == 1, within=3)
    assert 0.2 <= time.monotonic() - t0 < 3.0
    # The client connection is unaffected; the next request opens a new upstream connection.
    assert (await conn.request("GET", "/")).status == 200
    assert backend.accepted == 2
