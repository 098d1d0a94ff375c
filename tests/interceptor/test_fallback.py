"""Failover of held requests: to the route's live fallback endpoints (`set_fallback_endpoints`,
a fallback Service's ready pods), else to the spec's static `fallback`, else they stay held
until the readiness timeout."""

from __future__ import annotations

import asyncio
import collections
import time

from httpscale.routing.spec import Endpoint

from .backends import BackendConn, Request, free_port, http_app, named_app
from .client import Conn, build_request
from .helpers import APP_KEY, app_route, eventually, queue_entry


def _held(ic) -> int:
    stats = ic.route_stats(APP_KEY)
    return 0 if stats is None else stats["held"]


async def test_held_request_fails_over_to_a_live_fallback_endpoint(
    backends, make_interceptor, clients
):
    fb = await backends(http_app(named_app("fallback")), "fallback")
    static_fb = await backends(http_app(named_app("static")), "static")
    ic = await make_interceptor()
    # Buffered like set_endpoints: the fallback endpoints may come before their route.
    ic.set_fallback_endpoints(APP_KEY, [fb.endpoint])
    ic.set_routes([app_route(dynamic=True, failover_timeout=0.2, fallback=static_fb.endpoint)])
    conn = await clients(ic.proxy_address)
    t0 = time.monotonic()
    resp = await conn.request("GET", "/x")
    elapsed = time.monotonic() - t0
    assert (resp.status, resp.body) == (200, b"fallback"), "live ones before the static one"
    assert 0.15 <= elapsed < 3.0, elapsed
    assert [r.target for r in fb.requests] == ["/x"] and static_fb.requests == []
    status = ic.route_stats(APP_KEY)
    assert status is not None and status["held"] == 0

    ic.set_fallback_endpoints(APP_KEY, [])  # gone: the static fallback again
    assert (await conn.request("GET", "/y")).body == b"static"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 2


async def test_failover_spreads_over_the_least_loaded_fallback_endpoints(
    backends, make_interceptor
):
    release = asyncio.Event()

    def slow(name: str):
        async def app(req: Request, conn: BackendConn) -> None:
            await release.wait()
            await conn.respond(200, name.encode())

        return http_app(app)

    fbs = [await backends(slow(f"fb{i}"), f"fb{i}") for i in range(2)]
    ic = await make_interceptor(routes=[app_route(dynamic=True, failover_timeout=0.2)])
    ic.set_fallback_endpoints(APP_KEY, [b.endpoint for b in fbs])
    conns = await asyncio.gather(*(Conn.open(ic.proxy_address) for _ in range(10)))
    try:
        for c in conns:
            await c.send(build_request("GET", "/"))
        await eventually(lambda: sum(len(b.requests) for b in fbs) == 10, what="10 failed over")
        # Least outstanding: all ten are in flight at once, five on each.
        assert [len(b.requests) for b in fbs] == [5, 5]
        release.set()
        resps = await asyncio.gather(*(c.read_response() for c in conns))
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
    assert collections.Counter(r.body for r in resps) == {b"fb0": 5, b"fb1": 5}
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_a_refused_fallback_endpoint_is_skipped(backends, make_interceptor):
    fb = await backends(http_app(named_app("fallback")), "fallback")
    dead = Endpoint("127.0.0.1", free_port())
    ic = await make_interceptor(routes=[app_route(dynamic=True, failover_timeout=0.1)])
    ic.set_fallback_endpoints(APP_KEY, [dead, fb.endpoint])
    conns = await asyncio.gather(*(Conn.open(ic.proxy_address) for _ in range(8)))
    try:
        for c in conns:
            await c.send(build_request("GET", "/"))
        resps = await asyncio.gather(*(c.read_response() for c in conns))
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
    assert collections.Counter((r.status, r.body) for r in resps) == {(200, b"fallback"): 8}
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_no_fallback_at_the_failover_time_keeps_holding(backends, make_interceptor,
                                                               clients):
    """With nowhere to fail over to, a failover time changes nothing: the request stays held
    for the app (until the readiness timeout, then 504)."""
    b = await backends(http_app(named_app("app")))
    ic = await make_interceptor(
        routes=[
            app_route(dynamic=True, failover_timeout=0.1, readiness_timeout=5),
            app_route(dynamic=True, key="default/short", hosts=("short.test",),
                      failover_timeout=0.1, readiness_timeout=0.4),
        ]
    )
    held = await clients(ic.proxy_address)
    await held.send(build_request("GET", "/"))
    short = await clients(ic.proxy_address)
    t0 = time.monotonic()
    resp = await short.request("GET", "/", host="short.test")
    assert (resp.status, resp.body) == (504, b"default/short did not become ready within 0.4s\n")
    assert 0.35 <= time.monotonic() - t0 < 3.0
    # The first one is past its failover time too, and still held: the app answers it.
    assert _held(ic) == 1
    ic.set_endpoints(APP_KEY, [b.endpoint])
    assert (await held.read_response()).body == b"app"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_a_client_gone_before_its_connect_task_ran_gives_the_attempt_back(
    backends, make_interceptor, clients
):
    """The failover timer and the client's disconnect in one loop turn: the connect task is
    cancelled before it ever ran, and its reserved attempt must still go back to the pool
    (else the endpoint loses an attempt for good, and its pool can never be dropped)."""
    fb = await backends(http_app(named_app("fallback")), "fallback")
    ic = await make_interceptor(routes=[app_route(dynamic=True, failover_timeout=60)])
    ic.set_fallback_endpoints(APP_KEY, [fb.endpoint])
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/"))
    await eventually(lambda: _held(ic) == 1)
    (exchange,) = ic.proxy.registry.states[APP_KEY].waiters
    exchange._hold_timer.cancel()
    exchange._hold_expired()  # spawns the connect task (not started yet) ...
    exchange.client_lost()  # ... and the client's connection_lost comes first
    pool = ic.proxy.pools.get(fb.endpoint)
    assert pool.stats()["connecting"] == 0
    await asyncio.sleep(0)  # the cancelled task's only turn
    assert pool.stats()["connecting"] == 0
    assert fb.accepted == 0
