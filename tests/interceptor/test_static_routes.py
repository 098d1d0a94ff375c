"""What an InterceptorRoute brings to the data plane: several rules per route
(`extra_matches`) and static routes answered by the interceptor itself (`canned`)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from httpscale.routing.spec import BodyFiles, CannedResponse, HeaderMatch, RouteMatch, RouteSpec

from .backends import http_app, named_app
from .client import get
from .helpers import admin_get, admin_json, app_route, eventually

STATIC_KEY = "ns/web#static-0"


async def test_one_route_answers_every_one_of_its_matches(backends, make_interceptor):
    web = await backends(http_app(named_app("web")), name="web")
    other = await backends(http_app(named_app("other")), name="other")
    route = RouteSpec(
        key="ns/web",
        match=RouteMatch(hosts=("web.test",), path_prefixes=("/api",)),
        extra_matches=(
            RouteMatch(hosts=("api.test",)),
            RouteMatch(hosts=("*.tenant.test",), headers=(HeaderMatch("x-tenant", "blue"),)),
        ),
        static_endpoints=(web.endpoint,),
    )
    ic = await make_interceptor(routes=[route, app_route(other.endpoint, hosts=("web.test",))])
    addr = ic.proxy_address
    assert (await get(addr, "/api/x", host="web.test")).body == b"web"
    assert (await get(addr, "/", host="web.test")).body == b"other", "first rule's path only"
    assert (await get(addr, "/anything", host="api.test")).body == b"web"
    blue = [("X-Tenant", "blue")]
    assert (await get(addr, "/", host="a.tenant.test", headers=blue)).body == b"web"
    assert (await get(addr, "/", host="a.tenant.test")).status == 404, "the header is required"
    # A header match in an extra rule only: header routing must be on for every request.
    assert ic.proxy.registry.needs_headers
    assert ic.queue()["ns/web"]["RequestCount"] == 3

    status = await admin_json(ic.admin_address, "/status")
    matches = status["routes"]["ns/web"]["matches"]
    assert matches == [
        {"hosts": ["web.test"], "pathPrefixes": ["/api"], "headers": []},
        {"hosts": ["api.test"], "pathPrefixes": [], "headers": []},
        {"hosts": ["*.tenant.test"], "pathPrefixes": [],
         "headers": [{"name": "x-tenant", "value": "blue"}]},
    ]


async def test_overlapping_matches_of_one_route_are_no_conflict(backends, make_interceptor):
    b = await backends()
    route = RouteSpec(key="ns/web", match=RouteMatch(hosts=("a.test", "b.test")),
                      extra_matches=(RouteMatch(hosts=("b.test",)),),
                      static_endpoints=(b.endpoint,))
    ic = await make_interceptor(routes=[route])
    assert ic.proxy.registry.table.conflicts == ()
    assert (await get(ic.proxy_address, "/", host="b.test")).status == 200


async def test_canned_always_is_answered_by_the_interceptor(backends, make_interceptor):
    b = await backends(http_app(named_app("app")))
    app = app_route(b.endpoint, key="ns/web", hosts=("web.test",))
    static = RouteSpec(
        key=STATIC_KEY,
        match=RouteMatch(hosts=("web.test",), path_prefixes=("/healthz",)),
        extra_matches=(RouteMatch(hosts=("status.test",)),),
        canned=CannedResponse(status=200, headers=(("X-Static", "1"),), body=b"OK"),
        static_endpoints=(b.endpoint,),
    )
    ic = await make_interceptor(routes=[static, app])
    woken: list[str] = []
    ic.add_wake_listener(woken.append)
    for host, path in (("web.test", "/healthz"), ("status.test", "/x")):
        resp = await get(ic.proxy_address, path, host=host)
        assert (resp.status, resp.body) == (200, b"OK")
        assert resp.header("x-static") == "1"
        assert resp.header("content-type") == "text/plain; charset=utf-8"
    assert (await get(ic.proxy_address, "/", host="web.test")).body == b"app"
    assert len(b.requests) == 1, "the static answers never reached the app"
    assert woken == []
    # Not for scaling: not in /queue; still counted in /metrics under its own key.
    queue = await admin_json(ic.admin_address, "/queue")
    assert set(queue) == {"ns/web"} and queue == ic.queue()
    metrics = (await admin_get(ic.admin_address, "/metrics")).text
    counts = {
        (s.labels["route"], s.labels["status"]): s.value
        for fam in text_string_to_metric_families(metrics)
        for s in fam.samples
        if s.name == "httpscale_requests_total"
    }
    assert counts[(STATIC_KEY, "200")] == 2
    assert ic.route_stats(STATIC_KEY) is not None
    await eventually(lambda: ic.route_stats(STATIC_KEY)["concurrency"] == 0)  # type: ignore[index]


async def test_canned_when_unavailable_answers_only_at_zero(backends, make_interceptor):
    b = await backends(http_app(named_app("the app")))
    static = RouteSpec(
        key=STATIC_KEY,
        match=RouteMatch(hosts=("web.test",), path_prefixes=("/status",)),
        canned=CannedResponse(status=503, body=b"<p>down</p>", always=False),
    )
    ic = await make_interceptor(routes=[static])
    woken: list[str] = []
    ic.add_wake_listener(woken.append)
    resp = await get(ic.proxy_address, "/status", host="web.test")
    assert (resp.status, resp.body) == (503, b"<p>down</p>")
    assert resp.header("content-type") == "text/html; charset=utf-8"
    assert woken == [] and ic.route_stats(STATIC_KEY)["held"] == 0  # type: ignore[index]

    ic.set_endpoints(STATIC_KEY, [b.endpoint])  # the target is up: forwarded
    resp = await get(ic.proxy_address, "/status", host="web.test")
    assert (resp.status, resp.body) == (200, b"the app")
    assert [r.target for r in b.requests] == ["/status"]

    ic.set_endpoints(STATIC_KEY, [])  # down again: canned again, never held
    assert (await get(ic.proxy_address, "/status", host="web.test")).status == 503
    assert ic.queue() == {}


async def test_canned_files_and_framing(make_interceptor, clients):
    files = BodyFiles(files=(("index.html", b"<html>hi</html>"), ("data.json", b"{}")))
    routes = [
        RouteSpec(key="ns/a#static-0", match=RouteMatch(hosts=("files.test",)),
                  canned=CannedResponse(status=200, files=files)),
        RouteSpec(key="ns/a#static-1", match=RouteMatch(hosts=("gone.test",)),
                  canned=CannedResponse(files=BodyFiles(missing="ConfigMap ns/x not found"))),
        RouteSpec(key="ns/a#static-2", match=RouteMatch(hosts=("empty.test",)),
                  canned=CannedResponse(status=204, headers=(("X-A", "b"),))),
        RouteSpec(key="ns/a#static-3", match=RouteMatch(hosts=("interim.test",)),
                  canned=CannedResponse(status=103)),
    ]
    ic = await make_interceptor(routes=routes)
    conn = await clients(ic.proxy_address)
    index = await conn.request("GET", "/", host="files.test")
    assert (index.status, index.body) == (200, b"<html>hi</html>")
    assert index.header("content-type") == "text/html; charset=utf-8"
    data = await conn.request("GET", "/data.json", host="files.test")
    assert (data.body, data.header("content-type")) == (b"{}", "application/json")
    none = await conn.request("GET", "/x.txt", host="files.test")
    assert (none.status, none.body) == (404, b"no file 'x.txt' for path '/x.txt'\n")
    gone = await conn.request("GET", "/", host="gone.test")
    assert (gone.status, gone.body) == (500, b"ConfigMap ns/x not found\n")
    empty = await conn.request("GET", "/", host="empty.test")
    assert (empty.status, empty.header("x-a"), empty.has_header("content-length")) == (
        204, "b", False
    )
    interim = await conn.request("GET", "/", host="interim.test")
    assert interim.status == 500 and b"interim status 103" in interim.body
    head = await conn.request("HEAD", "/", host="files.test")
    assert (head.status, head.header("content-length"), head.body) == (200, "15", b"")
    # Every answer kept the one connection open and framed.
    assert (await conn.request("GET", "/data.json", host="files.test")).status == 200
