"""Upstream pools follow the endpoints routes use: when no route has an endpoint any more (as
a ready, fallback or static endpoint), its idle connections close at once and its pool goes
once its busy connections finish; nothing under way is cut. Checked on real sockets: each
backend counts the connections it accepted and the ones that were closed."""

from __future__ import annotations

import asyncio

from .backends import Backend, BackendConn, Request, http_app, named_app
from .client import build_request, get
from .helpers import APP_KEY, admin_json, app_route, eventually, queue_entry


def _open(b: Backend) -> int:
    return b.accepted - b.finished


async def _all_closed(b: Backend) -> None:
    await b.wait_for(lambda: b.accepted == b.finished)


async def test_pools_shrink_back_to_the_live_endpoints(backends, make_interceptor, clients):
    apps = [await backends(http_app(named_app(f"b{i}")), f"b{i}") for i in range(100)]
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    conn = await clients(ic.proxy_address)
    for i, b in enumerate(apps):
        # Two at a time, each replaced by the next: every one serves, then leaves.
        ic.set_endpoints(APP_KEY, [b.endpoint] if i == 0 else [apps[i - 1].endpoint, b.endpoint])
        assert (await conn.request("GET", "/")).status == 200
        while _open(b) == 0:
            assert (await conn.request("GET", "/")).status == 200
    live = {apps[-2].endpoint, apps[-1].endpoint}
    # Every endpoint that left: its idle connection was closed by the proxy.
    await asyncio.gather(*(_all_closed(b) for b in apps[:-2]))
    await eventually(lambda: len(ic.proxy.pools) == 2, what="pools of the two live endpoints")
    assert {ep for ep, _ in ic.proxy.pools.items()} == live
    assert [_open(b) for b in apps[-2:]] == [1, 1], "the live ones keep their idle connection"
    status = await admin_json(ic.admin_address, "/status")
    assert set(status["upstreamPools"]) == {str(ep) for ep in live}

    ic.set_endpoints(APP_KEY, [])  # to zero: nothing left open anywhere
    await asyncio.gather(*(_all_closed(b) for b in apps[-2:]))
    await eventually(lambda: len(ic.proxy.pools) == 0, what="no pool left")
    assert sum(b.accepted for b in apps) >= 100


async def test_a_busy_connection_is_not_cut_when_its_endpoint_leaves(
    backends, make_interceptor, clients
):
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(req: Request, conn: BackendConn) -> None:
        if req.target == "/slow":
            entered.set()
            await release.wait()
        await conn.respond(200, b"x" * 1000)

    old = await backends(http_app(slow), "old")
    new = await backends(http_app(named_app("new")), "new")
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    ic.set_endpoints(APP_KEY, [old.endpoint])
    busy = await clients(ic.proxy_address)
    await busy.send(build_request("GET", "/slow"))
    await asyncio.wait_for(entered.wait(), 5)
    idle_user = await clients(ic.proxy_address)
    assert (await idle_user.request("GET", "/")).status == 200  # a second connection, idle now
    assert old.accepted == 2

    ic.set_endpoints(APP_KEY, [new.endpoint])
    await old.wait_for(lambda: old.finished == 1)  # the idle one closed at once
    assert _open(old) == 1, "the busy one is still open"
    assert (await idle_user.request("GET", "/")).body == b"new"
    release.set()
    resp = await busy.read_response()
    assert (resp.status, resp.body) == (200, b"x" * 1000), "finished, not cut"
    await _all_closed(old)  # then closed instead of pooled, and the pool dropped
    await eventually(lambda: len(ic.proxy.pools) == 1)
    assert [ep for ep, _ in ic.proxy.pools.items()] == [new.endpoint]
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_an_endpoint_that_comes_back_revives_its_pool(backends, make_interceptor, clients):
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(req: Request, conn: BackendConn) -> None:
        if req.target == "/slow":
            entered.set()
            await release.wait()
        await conn.respond(200, b"ok")

    b = await backends(http_app(slow))
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    ic.set_endpoints(APP_KEY, [b.endpoint])
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/slow"))
    await asyncio.wait_for(entered.wait(), 5)
    ic.set_endpoints(APP_KEY, [])
    ic.set_endpoints(APP_KEY, [b.endpoint])  # back before its connection finished
    release.set()
    assert (await conn.read_response()).status == 200
    assert (await conn.request("GET", "/")).status == 200
    assert (b.accepted, _open(b)) == (1, 1), "the connection went back to the pool and was reused"


async def test_an_endpoint_moving_to_another_route_keeps_its_connections(
    backends, make_interceptor
):
    b = await backends(http_app(named_app("ok")))
    ic = await make_interceptor(routes=[
        app_route(dynamic=True),
        app_route(dynamic=True, key="default/two", hosts=("two.test",)),
    ])
    ic.set_endpoints(APP_KEY, [b.endpoint])
    assert (await get(ic.proxy_address, "/")).status == 200
    ic.set_endpoints("default/two", [b.endpoint])
    ic.set_endpoints(APP_KEY, [])
    assert (await get(ic.proxy_address, "/", host="two.test")).status == 200
    assert b.accepted == 1
    # A route list that moves it between routes in one update keeps it too.
    ic.set_routes([
        app_route(b.endpoint),
        app_route(dynamic=True, key="default/two", hosts=("two.test",)),
    ])
    ic.set_endpoints("default/two", [])
    assert (await get(ic.proxy_address, "/")).status == 200
    assert b.accepted == 1
    ic.set_routes([])  # every route gone: the pool too
    await _all_closed(b)
    await eventually(lambda: len(ic.proxy.pools) == 0)


async def test_fallback_endpoints_keep_their_pools_while_they_are_fallbacks(
    backends, make_interceptor, clients
):
    fb = await backends(http_app(named_app("fallback")), "fallback")
    static = await backends(http_app(named_app("static")), "static")
    ic = await make_interceptor(
        routes=[app_route(dynamic=True, failover_timeout=0.05, fallback=static.endpoint)]
    )
    ic.set_fallback_endpoints(APP_KEY, [fb.endpoint])
    conn = await clients(ic.proxy_address)
    assert (await conn.request("GET", "/")).body == b"fallback"
    assert (await conn.request("GET", "/")).body == b"fallback"
    assert (fb.accepted, _open(fb)) == (1, 1), "pooled and reused"
    ic.set_fallback_endpoints(APP_KEY, [])
    await _all_closed(fb)
    assert (await conn.request("GET", "/")).body == b"static"
    assert _open(static) == 1
    ic.set_routes([app_route(dynamic=True, failover_timeout=0.05)])  # static fallback dropped
    await _all_closed(static)
    await eventually(lambda: len(ic.proxy.pools) == 0)
