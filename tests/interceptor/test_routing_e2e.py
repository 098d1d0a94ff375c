"""Routing through the proxy: which backend answers which request, and route/endpoint swaps
while requests are flowing."""

from __future__ import annotations

import asyncio

import pytest

from httpscale.routing.spec import HeaderMatch

from .backends import BackendConn, Request, http_app, named_app
from .client import Conn, build_request, get
from .helpers import app_route, eventually, queue_entry

CASES = [
    # (host header, path, extra headers, expected backend)
    ("app.test", "/", (), "exact"),
    ("APP.TEST", "/x", (), "exact"),
    ("app.test:8080", "/", (), "exact"),
    ("App.Test.", "/", (), "exact"),
    ("a.example.com", "/", (), "wild"),
    ("a.b.example.com", "/q?x=1", (), "wild"),
    ("example.com", "/", (), "catchall"),
    ("other.test", "/anything", (), "catchall"),
    ("svc.test", "/api", (), "svc-api"),
    ("svc.test", "/api/", (), "svc-api"),
    ("svc.test", "/api/v1/items", (), "svc-api"),
    ("svc.test", "/api?x=1", (), "svc-api"),
    ("svc.test", "/apix", (), "svc-root"),
    ("svc.test", "/API", (), "svc-root"),
    ("svc.test", "/", (), "svc-root"),
    ("hdr.test", "/", (("X-Canary", "yes"),), "hdr-canary"),
    ("hdr.test", "/", (("x-canary", "no"),), "hdr-plain"),
    ("hdr.test", "/", (), "hdr-plain"),
    ("hdr.test", "/", (("X-Debug", "whatever"),), "hdr-present"),
]


@pytest.fixture
async def routed(backends, make_interceptor):
    names = [
        "exact", "wild", "catchall", "svc-api", "svc-root", "hdr-canary", "hdr-plain",
        "hdr-present",
    ]  # fmt: skip
    b = {n: await backends(http_app(named_app(n)), n) for n in names}
    ic = await make_interceptor(
        routes=[
            app_route(b["exact"].endpoint, key="r/exact", hosts=("app.test",)),
            app_route(b["wild"].endpoint, key="r/wild", hosts=("*.example.com",)),
            app_route(b["catchall"].endpoint, key="r/catchall", hosts=()),
            app_route(b["svc-api"].endpoint, key="r/svc-api", hosts=("svc.test",),
                      prefixes=("/api",)),
            app_route(b["svc-root"].endpoint, key="r/svc-root", hosts=("svc.test",),
                      prefixes=("/",)),
            app_route(b["hdr-canary"].endpoint, key="r/hdr-canary", hosts=("hdr.test",),
                      headers=(HeaderMatch("x-canary", "yes"),)),
            app_route(b["hdr-present"].endpoint, key="r/hdr-present", hosts=("hdr.test",),
                      headers=(HeaderMatch("x-debug"),)),
            app_route(b["hdr-plain"].endpoint, key="r/hdr-plain", hosts=("hdr.test",)),
        ]
    )  # fmt: skip
    return ic


@pytest.mark.parametrize(("host", "path", "headers", "expected"), CASES)
async def test_route_selection(routed, host, path, headers, expected):
    resp = await get(routed.proxy_address, path, host=host, headers=headers)
    assert resp.status == 200, (resp.status, resp.body)
    assert resp.text == expected
    q = routed.queue()
    assert q[f"r/{expected}"]["RequestCount"] == 1
    assert sum(v["RequestCount"] for v in q.values()) == 1


async def test_no_catch_all_gives_404(backends, make_interceptor):
    b = await backends()
    ic = await make_interceptor(routes=[app_route(b.endpoint, prefixes=("/api",))])
    assert (await get(ic.proxy_address, "/api/x")).status == 200
    assert (await get(ic.proxy_address, "/apix")).status == 404
    assert (await get(ic.proxy_address, "/api", host="app.test.evil")).status == 404
    missing_host = await get(ic.proxy_address, "/api", host=None)
    assert missing_host.status in (400, 404)


async def test_route_table_swap_while_requests_flow(backends, make_interceptor):
    """set_routes while requests are in flight and arriving: none fails, in-flight ones finish
    on the old backend, new ones go to the new one, counters survive by key."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def old_app(req: Request, conn: BackendConn) -> None:
        if req.target == "/hold":
            entered.set()
            await release.wait()
        await conn.respond(200, b"old")

    old = await backends(http_app(old_app), "old")
    new = await backends(http_app(named_app("new")), "new")
    ic = await make_interceptor(routes=[app_route(old.endpoint)])
    addr = ic.proxy_address

    held_conn = await Conn.open(addr)
    try:
        await held_conn.send(build_request("GET", "/hold"))
        await asyncio.wait_for(entered.wait(), 5)

        stop = asyncio.Event()
        results: list[tuple[int, bytes]] = []

        async def hammer() -> None:
            c = await Conn.open(addr)
            try:
                while not stop.is_set():
                    r = await c.request("GET", "/")
                    results.append((r.status, r.body))
            finally:
                await c.aclose()

        workers = [asyncio.create_task(hammer()) for _ in range(8)]
        await eventually(lambda: len(results) >= 50, within=10, what="traffic before swap")
        ic.set_routes([app_route(new.endpoint)])
        n_at_swap = len(results)
        await eventually(lambda: len(results) >= n_at_swap + 100, within=10, what="traffic after")
        stop.set()
        await asyncio.gather(*workers)

        assert {s for s, _ in results} == {200}, "no request may fail during a table swap"
        assert results[-1][1] == b"new"
        # Once a worker has seen "new", the old backend never answers it again; overall the
        # tail of the run is all "new".
        assert all(body == b"new" for _, body in results[n_at_swap + 8 * 2 :])

        release.set()
        held = await held_conn.read_response()
        assert (held.status, held.body) == (200, b"old"), "in-flight request finishes on old"
    finally:
        await held_conn.aclose()
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == len(results) + 1, "counter kept across the swap"


async def test_dynamic_endpoints_switch_and_spread(backends, make_interceptor):
    a = await backends(http_app(named_app("a")), "a")
    b = await backends(http_app(named_app("b")), "b")
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    ic.set_endpoints("default/app", [a.endpoint])
    assert (await get(ic.proxy_address, "/")).text == "a"
    ic.set_endpoints("default/app", [b.endpoint])
    assert (await get(ic.proxy_address, "/")).text == "b"
    ic.set_endpoints("default/app", [a.endpoint, b.endpoint])
    seen = [(await get(ic.proxy_address, "/")).text for _ in range(20)]
    assert set(seen) == {"a", "b"}, f"both ready endpoints should get traffic: {seen}"


async def test_removed_endpoint_finishes_in_flight(backends, make_interceptor):
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow_a(req: Request, conn: BackendConn) -> None:
        entered.set()
        await release.wait()
        await conn.respond(200, b"a")

    a = await backends(http_app(slow_a), "a")
    b = await backends(http_app(named_app("b")), "b")
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    ic.set_endpoints("default/app", [a.endpoint])
    conn = await Conn.open(ic.proxy_address)
    try:
        await conn.send(build_request("GET", "/"))
        await asyncio.wait_for(entered.wait(), 5)
        ic.set_endpoints("default/app", [b.endpoint])
        assert ic.endpoint_in_flight("default/app", a.endpoint) == 1
        assert (await get(ic.proxy_address, "/")).text == "b"
        idle = asyncio.create_task(ic.wait_endpoint_idle("default/app", a.endpoint))
        await asyncio.sleep(0)
        assert not idle.done()
        release.set()
        assert (await conn.read_response()).text == "a"
        await asyncio.wait_for(idle, 5)
    finally:
        await conn.aclose()


async def test_host_with_trailing_whitespace_routes_on_both_parsers(proxied, clients):
    # Whitespace after a field value is not part of it (RFC 9110 §5.5); llhttp hands it over,
    # the splice drops it. A bodiless GET takes the splice, a POST the full parser.
    ic, backend = await proxied()
    conn = await clients(ic.proxy_address)
    get = await conn.request("GET", "/g", host="app.test \t")
    post = await conn.request("POST", "/p", host="app.test \t", body=b"x")
    assert (get.status, post.status) == (200, 200), (get.body, post.body)
    assert [r.target for r in backend.requests] == ["/g", "/p"]
