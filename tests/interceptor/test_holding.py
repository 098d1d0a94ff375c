"""Requests to a route at zero are held until an endpoint is ready, bounded in time and
number; held requests count as Concurrency so the scaler sees them."""

from __future__ import annotations

import asyncio
import collections
import resource
import time

from httpscale.routing.spec import Placeholder, RouteMatch

from .backends import BackendConn, Request, http_app, named_app
from .client import Conn, build_request
from .helpers import APP_KEY, app_route, eventually, queue_entry


def _held(ic) -> int:
    stats = ic.route_stats(APP_KEY)
    return 0 if stats is None else stats["held"]


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def test_held_then_released_by_set_endpoints(backends, make_interceptor, clients):
    b = await backends()
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    woken: list[str] = []
    woke = asyncio.Event()

    def on_wake(key: str) -> None:
        woken.append(key)
        woke.set()

    ic.add_wake_listener(on_wake)
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("POST", "/cold", body=b"payload"))
    await asyncio.wait_for(woke.wait(), 5)
    assert woken == [APP_KEY]
    await eventually(lambda: _held(ic) == 1, what="request held")
    assert queue_entry(ic) == {"Concurrency": 1, "RequestCount": 1}

    ic.set_endpoints(APP_KEY, [b.endpoint])
    resp = await conn.read_response()
    assert resp.status == 200
    assert resp.header("x-httpscale-cold-start") == "true"
    req = b.requests[0]
    assert (req.target, req.body) == ("/cold", b"payload")
    # Warm now: the next request is not a cold start.
    again = await conn.request("GET", "/warm")
    assert again.header("x-httpscale-cold-start") == "false"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 2
    assert woken == [APP_KEY], "wake fires once per cold start, not per request"


async def test_many_held_requests_all_released(backends, make_interceptor):
    b = await backends()
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    conns = [await Conn.open(ic.proxy_address) for _ in range(20)]
    try:
        for i, c in enumerate(conns):
            await c.send(build_request("GET", f"/{i}"))
        await eventually(lambda: _held(ic) == 20, what="20 held")
        assert queue_entry(ic)["Concurrency"] == 20
        ic.set_endpoints(APP_KEY, [b.endpoint])
        resps = await asyncio.gather(*(c.read_response() for c in conns))
        assert [r.status for r in resps] == [200] * 20
    finally:
        for c in conns:
            await c.aclose()
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 20


async def test_client_disconnect_while_held_releases_count(make_interceptor, clients):
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/"))
    await eventually(lambda: _held(ic) == 1, what="request held")
    assert queue_entry(ic)["Concurrency"] == 1
    conn.abort()
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0, what="held request dropped")
    assert _held(ic) == 0
    assert queue_entry(ic)["RequestCount"] == 1


async def test_readiness_timeout_504(make_interceptor, clients):
    ic = await make_interceptor(routes=[app_route(dynamic=True, readiness_timeout=0.3)])
    conn = await clients(ic.proxy_address)
    t0 = time.monotonic()
    resp = await conn.request("GET", "/")
    elapsed = time.monotonic() - t0
    assert resp.status == 504, (resp.status, resp.body)
    assert resp.body and len(resp.body) < 1024
    assert 0.25 <= elapsed < 3.0, elapsed
    assert queue_entry(ic) == {"Concurrency": 0, "RequestCount": 1}


async def test_max_pending_requests_503_with_retry_after(make_interceptor, clients):
    ic = await make_interceptor(routes=[app_route(dynamic=True, max_pending_requests=2)])
    held = [await clients(ic.proxy_address) for _ in range(2)]
    for c in held:
        await c.send(build_request("GET", "/"))
    await eventually(lambda: _held(ic) == 2, what="2 held")
    extra = await clients(ic.proxy_address)
    resp = await extra.request("GET", "/")
    assert resp.status == 503, (resp.status, resp.body)
    assert resp.header("retry-after") is not None
    assert int(resp.header("retry-after")) >= 0
    assert resp.body and len(resp.body) < 1024
    assert _held(ic) == 2
    for c in held:
        c.abort()
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 3


async def test_held_request_504_keeps_client_connection(backends, make_interceptor, clients):
    b = await backends()
    ic = await make_interceptor(routes=[app_route(dynamic=True, readiness_timeout=0.2)])
    conn = await clients(ic.proxy_address)
    assert (await conn.request("GET", "/")).status == 504
    ic.set_endpoints(APP_KEY, [b.endpoint])
    resp = await conn.request("GET", "/")
    assert resp.status == 200


async def test_route_removed_while_held_gets_503(make_interceptor, clients):
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/"))
    await eventually(lambda: _held(ic) == 1, what="request held")
    ic.set_routes([])
    resp = await conn.read_response()
    assert resp.status == 503, (resp.status, resp.body)
    assert resp.body and len(resp.body) < 1024


async def test_failover_to_fallback_after_failover_timeout(backends, make_interceptor, clients):
    fallback = await backends(http_app(named_app("fallback")), "fallback")
    ic = await make_interceptor(
        routes=[app_route(dynamic=True, fallback=fallback.endpoint, failover_timeout=0.2)]
    )
    conn = await clients(ic.proxy_address)
    t0 = time.monotonic()
    resp = await conn.request("GET", "/")
    elapsed = time.monotonic() - t0
    assert (resp.status, resp.body) == (200, b"fallback"), (resp.status, resp.body)
    assert 0.15 <= elapsed < 3.0, elapsed
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 1


async def test_placeholder_for_all_answers_instead_of_holding(make_interceptor, clients):
    ph = Placeholder(status=503, headers=(("Retry-After", "3"),), body="warming up", for_all=True)
    ic = await make_interceptor(routes=[app_route(dynamic=True, placeholder=ph)])
    woke = asyncio.Event()
    ic.add_wake_listener(lambda key: woke.set())
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/", headers=[("Accept", "application/json")])
    assert resp.status == 503
    assert resp.body == b"warming up"
    assert resp.header_all("retry-after") == ["3"]  # the configured one, not doubled
    await asyncio.wait_for(woke.wait(), 5)  # the placeholder still wakes the app
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_placeholder_keeps_an_http10_keep_alive_connection(make_interceptor, clients):
    ph = Placeholder(status=503, body="warming up", for_all=True)
    ic = await make_interceptor(routes=[app_route(dynamic=True, placeholder=ph)])
    conn = await clients(ic.proxy_address)
    for _ in range(2):  # the same connection answers twice: it was announced and kept
        await conn.send(b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
        resp = await conn.read_response()
        assert (resp.status, resp.body) == (503, b"warming up")
        assert resp.header("connection") == "keep-alive"
    await conn.send(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nab")
    resp = await conn.read_response()
    assert (resp.status, resp.header("connection")) == (503, "close"), "body still unread"
    assert await conn.is_closed_by_peer()


async def test_max_concurrency_per_endpoint_queues(backends, make_interceptor):
    entered = asyncio.Event()
    release = asyncio.Event()
    active = 0
    peak = 0

    async def app(req: Request, conn: BackendConn) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        entered.set()
        if req.target == "/first":
            await release.wait()
        active -= 1
        await conn.respond(200, req.target.encode())

    b = await backends(http_app(app))
    ic = await make_interceptor(routes=[app_route(b.endpoint, max_concurrency_per_endpoint=1)])
    c1 = await Conn.open(ic.proxy_address)
    c2 = await Conn.open(ic.proxy_address)
    try:
        await c1.send(build_request("GET", "/first"))
        await asyncio.wait_for(entered.wait(), 5)
        await c2.send(build_request("GET", "/second"))
        await eventually(lambda: _held(ic) == 1, what="second request queued in the proxy")
        assert queue_entry(ic)["Concurrency"] == 2
        assert len(b.requests) == 1
        release.set()
        assert (await c1.read_response()).body == b"/first"
        assert (await c2.read_response()).body == b"/second"
        assert peak == 1
    finally:
        await c1.aclose()
        await c2.aclose()


async def test_route_updates_drop_nothing_held_or_in_flight(backends, make_interceptor):
    """200 requests held for one route and 20 in flight on another; both routes are replaced
    by an edited spec ten times; then the app comes up and the slow one answers: all 220
    get 200, and the counters never reset."""
    _raise_fd_limit(4096)
    release = asyncio.Event()

    async def slow(req: Request, conn: BackendConn) -> None:
        await release.wait()
        await conn.respond(200, b"slow")

    app = await backends(http_app(named_app("app")), "app")
    busy = await backends(http_app(slow), "busy")

    def routes(i: int) -> list:
        return [
            app_route(dynamic=True, readiness_timeout=60 + i, max_pending_requests=300 + i,
                      response_header_timeout=5 + i, placeholder=Placeholder(body=f"v{i}"),
                      extra_matches=(RouteMatch(hosts=(f"v{i}.test",)),)),
            app_route(busy.endpoint, key="default/busy", hosts=("busy.test",),
                      readiness_timeout=60 + i, request_timeout=300 + i),
        ]

    ic = await make_interceptor(routes=routes(0))
    conns = await asyncio.gather(*(Conn.open(ic.proxy_address) for _ in range(220)))
    try:
        for c in conns[:200]:
            await c.send(build_request("GET", "/", headers=[("Accept", "application/json")]))
        for c in conns[200:]:
            await c.send(build_request("GET", "/", host="busy.test"))
        await eventually(lambda: _held(ic) == 200, within=10, what="200 held")
        await busy.wait_for(lambda: len(busy.requests) == 20)
        for i in range(1, 11):
            ic.set_routes(routes(i))
            assert ic.route_stats(APP_KEY)["held"] == 200  # type: ignore[index]
            assert queue_entry(ic) == {"Concurrency": 200, "RequestCount": 200}
            assert queue_entry(ic, "default/busy") == {"Concurrency": 20, "RequestCount": 20}
        assert ic.proxy.registry.states[APP_KEY].spec.readiness_timeout == 70
        ic.set_endpoints(APP_KEY, [app.endpoint])
        release.set()
        resps = await asyncio.gather(*(c.read_response(within=15) for c in conns))
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
    assert collections.Counter((r.status, r.body) for r in resps) == {
        (200, b"app"): 200, (200, b"slow"): 20
    }
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 200
