"""Issue 3's scenarios: many requests held at zero, the hold cap, endpoints leaving while busy,
least-outstanding balancing, and the readiness/listen race of a replica that was just started."""

from __future__ import annotations

import asyncio
import collections
import resource

from httpscale.interceptor.settings import Limits
from httpscale.routing.spec import Endpoint

from .backends import BackendConn, Request, free_port, http_app, named_app
from .client import Conn, build_request
from .helpers import APP_KEY, app_route, eventually, queue_entry


def _held(ic) -> int:
    stats = ic.route_stats(APP_KEY)
    return 0 if stats is None else stats["held"]


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def test_500_concurrent_requests_at_zero_all_answered(backends, make_interceptor):
    _raise_fd_limit(4096)
    b = await backends(http_app(named_app("awake")))
    ic = await make_interceptor(routes=[app_route(dynamic=True, max_pending_requests=1000)])
    conns = await asyncio.gather(*(Conn.open(ic.proxy_address) for _ in range(500)))
    try:
        for i, c in enumerate(conns):
            await c.send(build_request("GET", f"/r{i}"))
        await eventually(lambda: _held(ic) == 500, within=10, what="500 held")
        assert queue_entry(ic) == {"Concurrency": 500, "RequestCount": 500}
        # The app becomes ready a second later, as a replica started from zero would.
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, ic.set_endpoints, APP_KEY, [b.endpoint])
        resps = await asyncio.gather(*(c.read_response(within=15) for c in conns))
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
    assert collections.Counter(r.status for r in resps) == {200: 500}
    assert all(r.header("x-httpscale-cold-start") == "true" for r in resps)
    assert sorted(r.target for r in b.requests) == sorted(f"/r{i}" for i in range(500))
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 500


async def test_hold_cap_refuses_exactly_the_excess(backends, make_interceptor):
    b = await backends(http_app(named_app("ok")))
    ic = await make_interceptor(routes=[app_route(dynamic=True, max_pending_requests=10)])
    conns = await asyncio.gather(*(Conn.open(ic.proxy_address) for _ in range(25)))
    try:
        for c in conns:
            await c.send(build_request("GET", "/"))
        reads = [asyncio.ensure_future(c.read_response(within=10)) for c in conns]
        # The 15 over the cap are answered at once while 10 stay held.
        await eventually(lambda: sum(r.done() for r in reads) == 15, within=5, what="15 refused")
        assert _held(ic) == 10
        refused = [r.result() for r in reads if r.done()]
        assert {r.status for r in refused} == {503}
        assert all(r.header("retry-after") for r in refused)
        ic.set_endpoints(APP_KEY, [b.endpoint])
        resps = await asyncio.gather(*reads)
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
    assert collections.Counter(r.status for r in resps) == {200: 10, 503: 15}
    assert len(b.requests) == 10
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 25


async def test_endpoint_removed_while_requests_in_flight(backends, make_interceptor):
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(req: Request, conn: BackendConn) -> None:
        entered.set()
        await release.wait()
        await conn.respond(200, b"old")

    old = await backends(http_app(slow), name="old")
    new = await backends(http_app(named_app("new")), name="new")
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    ic.set_endpoints(APP_KEY, [old.endpoint])
    c1 = await Conn.open(ic.proxy_address)
    c2 = await Conn.open(ic.proxy_address)
    try:
        await c1.send(build_request("GET", "/long"))
        await asyncio.wait_for(entered.wait(), 5)
        ic.set_endpoints(APP_KEY, [new.endpoint])  # "old" leaves the ready set mid-request
        assert ic.endpoint_in_flight(APP_KEY, old.endpoint) == 1
        idle = asyncio.ensure_future(ic.wait_endpoint_idle(APP_KEY, old.endpoint))
        for _ in range(5):  # new requests go to "new" only
            assert (await c2.request("GET", "/")).body == b"new"
        assert not idle.done()
        release.set()
        assert (await c1.read_response()).body == b"old"  # the in-flight one finished
        await asyncio.wait_for(idle, 5)
    finally:
        await c1.aclose()
        await c2.aclose()
    assert len(old.requests) == 1
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_least_outstanding_sends_most_traffic_to_the_fast_endpoint(backends,
                                                                         make_interceptor):
    async def slow(req: Request, conn: BackendConn) -> None:
        await asyncio.sleep(0.05)  # the backend's own service time, part of the scenario
        await conn.respond(200, b"slow")

    slow_b = await backends(http_app(slow), name="slow")
    fast_b = await backends(http_app(named_app("fast")), name="fast")
    ic = await make_interceptor(routes=[app_route(slow_b.endpoint, fast_b.endpoint)])
    counts: collections.Counter[bytes] = collections.Counter()

    async def client() -> None:
        conn = await Conn.open(ic.proxy_address)
        try:
            for _ in range(20):
                counts[(await conn.request("GET", "/")).body] += 1
        finally:
            await conn.aclose()

    await asyncio.gather(*(client() for _ in range(8)))
    assert sum(counts.values()) == 160
    # Round robin would give each half; least-outstanding keeps the slow one near one at a time.
    assert counts[b"fast"] > 0.75 * 160, counts


async def test_refused_connect_to_a_just_ready_endpoint_is_retried(backends, make_interceptor):
    port = free_port()
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    conn = await Conn.open(ic.proxy_address)
    started: list[asyncio.Server] = []

    async def app_starts_listening() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlate!")
            await writer.drain()
            writer.close()

        started.append(await asyncio.start_server(serve, "127.0.0.1", port))

    try:
        await conn.send(build_request("GET", "/"))
        await eventually(lambda: _held(ic) == 1, what="held")
        # Reported ready before it listens: the classic readiness/accept race.
        ic.set_endpoints(APP_KEY, [Endpoint("127.0.0.1", port)])
        asyncio.get_running_loop().call_later(
            0.3, lambda: asyncio.ensure_future(app_starts_listening())
        )
        resp = await conn.read_response(within=5)
        assert (resp.status, resp.body) == (200, b"late!")
    finally:
        await conn.aclose()
        for server in started:
            server.close()
            await server.wait_closed()
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_release_beyond_the_connection_cap_waits_for_pooled_connections(
    backends, make_interceptor
):
    """Held requests released at once share a bounded set of upstream connections: the ones
    past the cap wait for a connection to come back instead of failing."""
    b = await backends(http_app(named_app("ok")))
    limits = Limits(pool_max_per_endpoint=4, pool_max_connecting=2)
    ic = await make_interceptor(routes=[app_route(dynamic=True)], limits=limits)
    conns = await asyncio.gather(*(Conn.open(ic.proxy_address) for _ in range(50)))
    try:
        for c in conns:
            await c.send(build_request("GET", "/"))
        await eventually(lambda: _held(ic) == 50, what="50 held")
        ic.set_endpoints(APP_KEY, [b.endpoint])
        resps = await asyncio.gather(*(c.read_response(within=10) for c in conns))
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
    assert collections.Counter(r.status for r in resps) == {200: 50}
    assert b.accepted <= 4
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_client_leaving_while_waiting_for_a_pooled_connection(backends, make_interceptor):
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(req: Request, conn: BackendConn) -> None:
        entered.set()
        await release.wait()
        await conn.respond(200, req.target.encode())

    b = await backends(http_app(slow))
    limits = Limits(pool_max_per_endpoint=1, pool_max_connecting=1)
    ic = await make_interceptor(routes=[app_route(b.endpoint)], limits=limits)
    first = await Conn.open(ic.proxy_address)
    second = await Conn.open(ic.proxy_address)
    third = await Conn.open(ic.proxy_address)
    try:
        await first.send(build_request("GET", "/first"))
        await asyncio.wait_for(entered.wait(), 5)
        await second.send(build_request("GET", "/second"))
        await third.send(build_request("GET", "/third"))
        await eventually(lambda: queue_entry(ic)["Concurrency"] == 3, what="3 in flight")
        second.abort()  # gives up while waiting for the one upstream connection
        await eventually(lambda: queue_entry(ic)["Concurrency"] == 2, what="second dropped")
        release.set()
        assert (await first.read_response()).body == b"/first"
        assert (await third.read_response()).body == b"/third"  # reused the same connection
    finally:
        await first.aclose()
        await third.aclose()
    assert [r.target for r in b.requests] == ["/first", "/third"]
    assert b.accepted == 1
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
