"""The admin server: /queue (KEDA's wire shape), /livez, /readyz, /metrics, /status."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from httpscale import dataplane
from httpscale.interceptor.settings import InterceptorShutdown
from httpscale.routing.spec import Endpoint

from .backends import BackendConn, Request, free_port, http_app
from .client import Conn, build_request, get
from .helpers import admin_get, admin_json, app_route, eventually, wait_refused


async def test_livez_and_readyz_before_and_after_routes(backends, make_interceptor):
    b = await backends()
    ic = await make_interceptor()
    assert (await admin_get(ic.admin_address, "/livez")).status == 200
    before = await admin_get(ic.admin_address, "/readyz")
    assert before.status == 503, "not ready until the first route table is loaded"
    ic.set_routes([app_route(b.endpoint)])
    assert (await admin_get(ic.admin_address, "/readyz")).status == 200


async def test_readyz_ready_with_empty_route_table(make_interceptor):
    # An empty table that was loaded is still "loaded": the interceptor answers 404s correctly.
    ic = await make_interceptor(routes=[])
    assert (await admin_get(ic.admin_address, "/readyz")).status == 200


async def test_queue_shape_matches_keda(backends, make_interceptor):
    entered = asyncio.Event()
    release = asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/hold":
            entered.set()
            await release.wait()
        await conn.respond(200, b"ok")

    b = await backends(http_app(app))
    ic = await make_interceptor(
        routes=[
            app_route(b.endpoint, key="ns1/one", hosts=("one.test",)),
            app_route(b.endpoint, key="ns2/two", hosts=("two.test",)),
        ]
    )
    for _ in range(3):
        assert (await get(ic.proxy_address, "/", host="one.test")).status == 200

    conn = await Conn.open(ic.proxy_address)
    try:
        await conn.send(build_request("GET", "/hold", host="two.test"))
        await asyncio.wait_for(entered.wait(), 5)
        q = await admin_json(ic.admin_address, "/queue")
        assert q == {
            "ns1/one": {"Concurrency": 0, "RequestCount": 3},
            "ns2/two": {"Concurrency": 1, "RequestCount": 1},
        }
        assert q == ic.queue()
        for entry in q.values():
            assert set(entry) == {"Concurrency", "RequestCount"}
            assert all(type(v) is int for v in entry.values())
        release.set()
        assert (await conn.read_response()).status == 200
    finally:
        await conn.aclose()
    await eventually(lambda: ic.queue()["ns2/two"]["Concurrency"] == 0)
    assert (await admin_json(ic.admin_address, "/queue"))["ns2/two"] == {
        "Concurrency": 0,
        "RequestCount": 1,
    }


def _samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


async def test_metrics_families(backends, make_interceptor):
    async def slow(conn: BackendConn) -> None:
        await conn.read_request()
        await conn.wait_eof()

    ok = await backends()
    silent = await backends(slow)
    ic = await make_interceptor(
        routes=[
            app_route(ok.endpoint),
            app_route(Endpoint("127.0.0.1", free_port()), key="default/down", hosts=("down.test",)),
            app_route(silent.endpoint, key="default/slow", hosts=("slow.test",),
                      response_header_timeout=0.2),
        ]
    )  # fmt: skip
    assert (await get(ic.proxy_address, "/")).status == 200
    assert (await get(ic.proxy_address, "/", method="POST", body=b"x")).status == 200
    assert (await get(ic.proxy_address, "/", host="down.test")).status == 502
    assert (await get(ic.proxy_address, "/", host="slow.test")).status == 504
    await eventually(lambda: all(v["Concurrency"] == 0 for v in ic.queue().values()))

    resp = await admin_get(ic.admin_address, "/metrics")
    assert resp.status == 200
    assert (resp.header("content-type") or "").startswith("text/plain")
    s = _samples(resp.text)

    def value(name: str, **labels: str) -> float:
        hits = [x for x in s.get(name, []) if all(x.labels.get(k) == v for k, v in labels.items())]
        assert hits, f"no {name}{labels} in /metrics"
        return sum(x.value for x in hits)

    assert value("httpscale_requests_total", route="default/app", method="GET", status="200") == 1
    assert value("httpscale_requests_total", route="default/app", method="POST", status="200") == 1
    assert value("httpscale_requests_total", route="default/down", status="502") == 1
    assert value("httpscale_requests_total", route="default/slow", status="504") == 1
    assert value("httpscale_request_duration_seconds_count", route="default/app") == 2
    assert "httpscale_request_duration_seconds_bucket" in s
    assert value("httpscale_concurrency", route="default/app") == 0
    assert value("httpscale_upstream_errors_total", route="default/down") == 1
    assert value("httpscale_upstream_errors_total", route="default/slow") == 1
    kinds = {x.labels.get("kind") for x in s["httpscale_upstream_errors_total"]}
    assert len(kinds - {None}) >= 2, f"refused and timeout are different kinds: {kinds}"


async def test_route_counts_outlive_the_route_and_idle_routes_show_none(backends,
                                                                       make_interceptor):
    """A route's counters live with its state on the request path; they must survive the route
    going and coming back (Prometheus counters never reset), and a route that has answered
    nothing has no series (10,000 idle routes must not fill /metrics)."""
    backend = await backends()
    app = app_route(backend.endpoint)
    idle = app_route(backend.endpoint, key="default/idle", hosts=("idle.test",))
    ic = await make_interceptor(routes=[app, idle])
    assert (await get(ic.proxy_address, "/")).status == 200
    ic.set_routes([idle])  # default/app goes, with its state
    assert (await get(ic.proxy_address, "/")).status == 404
    ic.set_routes([app, idle])
    assert (await get(ic.proxy_address, "/")).status == 200
    assert (await get(ic.proxy_address, "/", method="HEAD")).status == 200

    s = _samples((await admin_get(ic.admin_address, "/metrics")).text)

    def series(name: str, route: str) -> dict[tuple[str, str], float]:
        return {(x.labels.get("method", ""), x.labels.get("status", "")): x.value
                for x in s.get(name, []) if x.labels.get("route") == route}

    assert series("httpscale_requests_total", "default/app") == {("GET", "200"): 2,
                                                                 ("HEAD", "200"): 1}
    assert series("httpscale_request_duration_seconds_count", "default/app") == {("", ""): 3}
    assert series("httpscale_requests_total", "") == {("GET", "404"): 1}
    assert not series("httpscale_requests_total", "default/idle")
    assert not series("httpscale_request_duration_seconds_count", "default/idle")


async def test_status_is_json(backends, make_interceptor):
    b = await backends()
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    ic.add_status_provider("extra", lambda: {"answer": 42})
    assert (await get(ic.proxy_address, "/")).status == 200
    data = await admin_json(ic.admin_address, "/status")
    assert data["extra"] == {"answer": 42}
    assert data["dataplane"]["build"] == dataplane.active().name
    route = data["routes"]["default/app"]
    assert (route["concurrency"], route["requestCount"]) == (0, 1)
    assert route["endpoints"] == {str(b.endpoint): {"inFlight": 0, "draining": False}}
    # The keep-alive connection the request used is back in its pool, idle.
    assert data["upstreamPools"][str(b.endpoint)] == {
        "connections": 1, "idle": 1, "connecting": 0, "waiting": 0
    }


async def test_readyz_503_while_draining(backends, make_interceptor):
    entered, release = asyncio.Event(), asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/hold":
            entered.set()
            await release.wait()
        await conn.respond(200, b"ok")

    b = await backends(http_app(app))
    ic = await make_interceptor(
        routes=[app_route(b.endpoint)],
        shutdown=InterceptorShutdown(readiness_delay=0.3, drain_timeout=5.0),
    )
    assert (await admin_get(ic.admin_address, "/readyz")).status == 200
    busy = await Conn.open(ic.proxy_address)
    stopping: asyncio.Task[None] | None = None
    try:
        await busy.send(build_request("GET", "/hold"))
        await asyncio.wait_for(entered.wait(), 5)
        stopping = asyncio.create_task(ic.shutdown())
        await asyncio.sleep(0)  # let shutdown start: readyz turns 503 before anything else
        assert (await admin_get(ic.admin_address, "/readyz")).status == 503
        assert (await admin_get(ic.admin_address, "/livez")).status == 200
        # During the readiness delay new requests are still served (load balancers catch up).
        assert (await get(ic.proxy_address, "/")).status == 200
        # Still draining the held request after the delay (it has stopped accepting): still
        # 503, admin still up.
        await wait_refused(ic.proxy_address)
        assert (await admin_get(ic.admin_address, "/readyz")).status == 503
        assert not stopping.done()
        release.set()
        assert (await busy.read_response()).status == 200
    finally:
        release.set()
        await busy.aclose()
        if stopping is not None:
            await stopping


async def test_wrong_method_is_405_and_unknown_path_404(make_interceptor):
    # The admin server has a catch-all for mounted routes (local mode's /apps, /history):
    # it must not turn a wrong method on a known path into "not found".
    ic = await make_interceptor(routes=[])
    host = f"{ic.admin_address[0]}:{ic.admin_address[1]}"
    wrong = await get(ic.admin_address, "/status", host=host, method="POST")
    assert wrong.status == 405
    assert (await admin_get(ic.admin_address, "/nothing-here")).status == 404
