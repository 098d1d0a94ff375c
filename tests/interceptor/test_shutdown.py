"""Graceful shutdown, in order: readyz 503 -> readiness delay -> stop accepting -> drain
in-flight requests (up to drain_timeout) -> close idle keep-alive connections -> done."""

from __future__ import annotations

import asyncio
import time

from httpscale.interceptor.settings import InterceptorShutdown

from .backends import BackendConn, Request, http_app
from .client import Conn, build_request
from .helpers import admin_get, app_route, wait_refused


def _holding_app(entered: asyncio.Event, release: asyncio.Event):
    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/hold":
            entered.set()
            await release.wait()
        await conn.respond(200, b"done " + req.target.encode())

    return app


async def test_in_flight_requests_complete_and_new_connections_refused(
    backends, make_interceptor, clients
):
    entered, release = asyncio.Event(), asyncio.Event()
    b = await backends(http_app(_holding_app(entered, release)))
    ic = await make_interceptor(
        routes=[app_route(b.endpoint)],
        shutdown=InterceptorShutdown(readiness_delay=0.0, drain_timeout=5.0),
    )
    addr, admin = ic.proxy_address, ic.admin_address
    busy = await clients(addr)
    await busy.send(build_request("GET", "/hold"))
    await asyncio.wait_for(entered.wait(), 5)

    stopping = asyncio.create_task(ic.shutdown())
    try:
        await wait_refused(addr)  # stopped accepting while the request is still in flight
        assert not stopping.done(), "shutdown must wait for the in-flight request"
        release.set()
        resp = await busy.read_response()
        assert (resp.status, resp.body) == (200, b"done /hold")
        # After its last response the draining connection is closed, not kept alive.
        assert await busy.read_until_eof() == b""
        await asyncio.wait_for(asyncio.shield(stopping), 5)
    finally:
        await stopping
    await wait_refused(admin)


async def test_idle_keepalive_connections_closed_at_shutdown(backends, make_interceptor, clients):
    b = await backends()
    ic = await make_interceptor(
        routes=[app_route(b.endpoint)],
        keepalive_idle=60.0,
        shutdown=InterceptorShutdown(readiness_delay=0.0, drain_timeout=60.0),
    )
    idle = await clients(ic.proxy_address)
    assert (await idle.request("GET", "/")).status == 200
    # Idle connections must not hold the drain: shutdown ends long before its 60 s timeout.
    await asyncio.wait_for(ic.shutdown(), 20)
    assert await idle.read_until_eof(within=2) == b"", "closed without a stray response"
    # The proxy also closed its pooled upstream connection.
    await b.wait_for(lambda: b.finished == b.accepted)


async def test_connection_mid_head_at_shutdown_is_closed(backends, make_interceptor, clients):
    b = await backends()
    ic = await make_interceptor(
        routes=[app_route(b.endpoint)],
        request_head=30.0,
        shutdown=InterceptorShutdown(readiness_delay=0.0, drain_timeout=0.5),
    )
    conn = await clients(ic.proxy_address)
    await conn.send(b"GET / HTTP/1.1\r\nHost: app")
    await asyncio.wait_for(ic.shutdown(), 15)  # not held by the 30 s head timeout
    data = await conn.read_until_eof(within=2)
    assert data == b"" or data.split(b" ")[1] in (b"408", b"503"), data


async def test_drain_timeout_bounds_shutdown(backends, make_interceptor, clients):
    entered = asyncio.Event()

    async def never(conn: BackendConn) -> None:
        await conn.read_request()
        entered.set()
        await conn.wait_eof(within=30)

    b = await backends(never)
    ic = await make_interceptor(
        routes=[app_route(b.endpoint)],
        upstream_response_header=60.0,
        shutdown=InterceptorShutdown(readiness_delay=0.0, drain_timeout=0.4),
    )
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/"))
    await asyncio.wait_for(entered.wait(), 5)
    t0 = time.monotonic()
    await ic.shutdown()
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 3.0, elapsed
    data = await conn.read_until_eof(within=2)
    # Cut off: either a clear 503/504 answer or a close; never a hang.
    assert data == b"" or data.split(b" ")[1] in (b"502", b"503", b"504"), data
    await b.wait_for(lambda: b.finished == b.accepted)
    assert ic.queue()["default/app"]["Concurrency"] == 0


async def test_readiness_delay_then_stop_accepting(backends, make_interceptor, clients):
    b = await backends()
    ic = await make_interceptor(
        routes=[app_route(b.endpoint)],
        shutdown=InterceptorShutdown(readiness_delay=0.4, drain_timeout=2.0),
    )
    addr, admin = ic.proxy_address, ic.admin_address
    t0 = time.monotonic()
    stopping = asyncio.create_task(ic.shutdown())
    try:
        await asyncio.sleep(0)
        assert (await admin_get(admin, "/readyz")).status == 503
        # New connections are still accepted and served during the delay.
        fresh = await Conn.open(addr)
        try:
            assert (await fresh.request("GET", "/during-delay")).status == 200
        finally:
            await fresh.aclose()
        await wait_refused(addr)
        assert time.monotonic() - t0 >= 0.35, "stopped accepting before the readiness delay"
    finally:
        await stopping


async def test_shutdown_twice_is_harmless(backends, make_interceptor, clients):
    """A second shutdown (SIGTERM while one is under way) returns only once the first is done,
    and one after that returns at once."""
    entered, release = asyncio.Event(), asyncio.Event()
    b = await backends(http_app(_holding_app(entered, release)))
    ic = await make_interceptor(
        routes=[app_route(b.endpoint)],
        shutdown=InterceptorShutdown(readiness_delay=0, drain_timeout=30),
    )
    addr, admin = ic.proxy_address, ic.admin_address
    conn = await clients(addr)
    await conn.send(build_request("GET", "/hold"))
    await entered.wait()
    first = asyncio.create_task(ic.shutdown())
    second = asyncio.create_task(ic.shutdown())
    await wait_refused(addr)  # the first is draining now: the held request keeps it there
    assert not first.done() and not second.done()
    release.set()
    assert (await conn.read_response()).body == b"done /hold"
    assert await asyncio.gather(first, second) == [None, None]
    await wait_refused(admin)  # stopped, not only draining
    await asyncio.wait_for(ic.shutdown(), 5)
