"""The scaler's pure-ish parts, fed values directly: ref resolution, names, the board."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from scaler_helpers import route as make_route

from httpscale.model.httpso import ScalingMetric
from httpscale.scaler.activity import ActivityBoard, RouteLoad
from httpscale.scaler.collector import parse_queue
from httpscale.scaler.discovery import normalize_admin_url
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.routes import ScalerRouteTable, interceptor_route, metric_name
from httpscale.scaler.service import FleetTarget, RefError, RouteTarget, resolve_ref


async def test_resolve_ref() -> None:
    table = ScalerRouteTable()
    route = make_route("shop/web.v2")
    with pytest.raises(RefError) as err:
        resolve_ref(pb.ScaledObjectRef(namespace="shop", name="web.v2"), table)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    table.set_routes([route])
    by_meta = pb.ScaledObjectRef(
        namespace="shop", name="so", scalerMetadata={"httpScaledObject": "web.v2"}
    )
    assert resolve_ref(by_meta, table) == RouteTarget(route)
    # Without the metadata key, the ref's own name (older add-on ScaledObjects).
    assert resolve_ref(pb.ScaledObjectRef(namespace="shop", name="web.v2"), table) == RouteTarget(
        route
    )
    fleet = pb.ScaledObjectRef(
        namespace="keda", scalerMetadata={"interceptorTargetPendingRequests": "150"}
    )
    assert resolve_ref(fleet, table) == FleetTarget("keda", 150.0)
    for bad, code in [
        (pb.ScaledObjectRef(namespace="", name="web"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ScaledObjectRef(namespace="shop", name="a/b"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ScaledObjectRef(namespace="Shop", name="web"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.ScaledObjectRef(scalerMetadata={"interceptorTargetPendingRequests": "-1"}),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (pb.ScaledObjectRef(namespace="shop", name="api"), grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(RefError) as err:
            resolve_ref(bad, table)
        assert err.value.code == code, bad


async def test_resolve_ref_interceptor_route() -> None:
    table = ScalerRouteTable()
    ir = interceptor_route("shop/api", [ScalingMetric("concurrency", 5)])
    httpso = make_route("shop/web")
    table.set_routes([ir, httpso])

    def by(key: str, name: str) -> pb.ScaledObjectRef:
        return pb.ScaledObjectRef(namespace="shop", name="so", scalerMetadata={key: name})

    assert resolve_ref(by("interceptorRoute", "api"), table) == RouteTarget(ir)
    # An HTTPSO trigger reaches whatever route holds the key (the IR won it).
    assert resolve_ref(by("httpScaledObject", "api"), table) == RouteTarget(ir)
    # The IR key beats the fleet key when a ScaledObject carries both (KEDA checks it first).
    both = pb.ScaledObjectRef(namespace="shop", scalerMetadata={
        "interceptorRoute": "api", "interceptorTargetPendingRequests": "10"})
    assert resolve_ref(both, table) == RouteTarget(ir)
    for name, code, saying in (
        ("web", grpc.StatusCode.NOT_FOUND, "an HTTPScaledObject of that name is"),
        ("nope", grpc.StatusCode.NOT_FOUND, "InterceptorRoute shop/nope is not known"),
        ("Bad", grpc.StatusCode.INVALID_ARGUMENT, "interceptorRoute='Bad'"),
    ):
        with pytest.raises(RefError) as err:
            resolve_ref(by("interceptorRoute", name), table)
        assert err.value.code == code and saying in err.value.message, err.value.message


def test_interceptor_route_metrics() -> None:
    rate = ScalingMetric("requestRate", 20, window=30, granularity=2)
    both = interceptor_route("shop/api.v2", [rate, ScalingMetric("concurrency", 7)])
    # KEDA's add-on's names, concurrency first, float targets; the window from requestRate.
    assert [(m.name, m.kind, m.target) for m in both.metrics] == [
        ("http_api.v2_concurrency", "concurrency", 7.0),
        ("http_api.v2_rate", "requestRate", 20.0),
    ]
    assert (both.window, both.granularity, both.activity_window) == (30.0, 2.0, 30.0)
    assert both.origin == "InterceptorRoute"
    assert both.metric("http_api.v2_rate") is both.metrics[1]
    only = interceptor_route("shop/api", [ScalingMetric("concurrency", 7)], active_for=90)
    assert [m.name for m in only.metrics] == ["http_api_concurrency"]
    assert (only.window, only.activity_window) == (60.0, 90.0)
    assert make_route("shop/web", active_for=300).activity_window == 300.0
    assert make_route("shop/web", window=20).activity_window == 20.0


def test_metric_names_are_stable_and_valid() -> None:
    assert metric_name("shop/web.v2", "concurrency") == "http-shop-web-v2-concurrency"
    assert metric_name("shop/web.v2", "requestRate") == "http-shop-web-v2-rate"
    long = metric_name("n/" + "x" * 300, "requestRate")
    assert len(long) <= 200 and long.endswith("-rate")


def test_parse_queue_rejects_garbage() -> None:
    assert parse_queue({"a/b": {"Concurrency": 2, "RequestCount": 9}}) == {"a/b": (2, 9)}
    for bad in ([], {"a/b": 3}, {"a/b": {"Concurrency": -1}}, {"a/b": {"RequestCount": "9"}}):
        with pytest.raises(ValueError):
            parse_queue(bad)


def test_admin_urls_are_normalized() -> None:
    assert normalize_admin_url("127.0.0.1:9090") == "http://127.0.0.1:9090"
    assert normalize_admin_url("http://h:9090/") == "http://h:9090"
    with pytest.raises(ValueError):
        normalize_admin_url("ftp://h")


# The watch's changes are awaited with a deadline that only guards against a hang (a loaded
# machine can take seconds to run the next task): that a change is immediate is shown by the
# board's state right after the call, before anything else could run.
HANG = 10.0


async def test_board_hold_runs_out_unless_a_poll_confirms() -> None:
    # The watch reports the latest state: a hold shorter than a loaded machine's stalls could
    # end before the watch reads it, and the change would be lost. 0.5 s is well clear.
    board = ActivityBoard(hold=0.5)
    with board.watch("a/b") as watch:
        changes = watch.changes()
        assert await anext(changes) is False
        board.wake("a/b")
        assert board.is_active("a/b") and board.held("a/b")
        assert await asyncio.wait_for(anext(changes), HANG) is True
        board.update({"a/b": RouteLoad(0, 0.0)})  # a stale poll: the hold stays
        assert board.is_active("a/b")
        assert await asyncio.wait_for(anext(changes), HANG) is False  # hold ran out
        assert not board.held("a/b")
        board.wake("a/b")
        assert board.is_active("a/b")
        assert await asyncio.wait_for(anext(changes), HANG) is True
        board.update({"a/b": RouteLoad(1, 0.0)})  # confirmed: the poll carries it now
        assert not board.held("a/b")
        # Past the end the hold had: no timer of it may still drop a confirmed route (an
        # absence, so waited out rather than awaited).
        await asyncio.sleep(0.6)
        assert board.is_active("a/b")
        board.update({"a/b": RouteLoad(0, 0.5)})  # rate alone keeps it active
        assert board.is_active("a/b")
        board.update({})
        assert not board.is_active("a/b")
        assert await asyncio.wait_for(anext(changes), HANG) is False
        board.drop(frozenset({"a/b"}))
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(changes), HANG)
    assert board.open_watches == 0
    board.close()


def test_routes_in_use_between_two_readings() -> None:
    from httpscale.scaler.collector import routes_in_use

    before = {"a/one": (0, 10), "a/two": (0, 5), "a/three": (0, 7)}
    now = {"a/one": (0, 11), "a/two": (0, 5), "a/three": (2, 7), "a/new": (0, 3), "a/h": (1, 0)}
    # Counted since (one), in flight or held now (three, h); a route new on the replica sets a
    # baseline (new).
    assert routes_in_use(before, now) == {"a/one", "a/three", "a/h"}
    # A first sight: counts are history of unknown age, only what is in flight counts.
    assert routes_in_use(None, now) == {"a/three", "a/h"}
    # The replica restarted (same address): what it counted since is new; nothing since is
    # nothing, not a negative count.
    assert routes_in_use(before, {"a/one": (0, 2), "a/two": (0, 0)}) == {"a/one"}
    assert routes_in_use(before, {}) == set()


def test_admin_urls_from_endpoint_slices() -> None:
    from httpscale.scaler.discovery import admin_urls, parse_admin_port

    def ep(ip: str, ready: bool | None = None) -> dict[str, object]:
        conditions = {} if ready is None else {"ready": ready}
        return {"addresses": [ip], "conditions": conditions}

    slices = [
        {"addressType": "IPv4", "ports": [{"name": "admin", "port": 9090},
                                          {"name": "proxy", "port": 8080}],
         "endpoints": [ep("10.0.0.2", True), ep("10.0.0.1"), ep("10.0.0.3", False)]},
        # The same pod in a second slice while slices are rebalanced; another admin port.
        {"addressType": "IPv4", "ports": [{"name": "admin", "port": 9191}],
         "endpoints": [ep("10.0.0.4")]},
        {"addressType": "IPv4", "ports": [{"name": "admin", "port": 9090}],
         "endpoints": [ep("10.0.0.2"), {"addresses": [], "conditions": {}}]},
        {"addressType": "IPv6", "ports": [{"name": "admin", "port": 9090}],
         "endpoints": [ep("fd00::5")]},
        {"addressType": "FQDN", "ports": [{"name": "admin", "port": 9090}],
         "endpoints": [ep("interceptor.example")]},
        {"addressType": "IPv4", "ports": [{"name": "other", "port": 1}],
         "endpoints": [ep("10.0.0.9")]},  # no admin port here (yet): not a replica
    ]
    assert admin_urls(slices, "admin") == (
        "http://10.0.0.1:9090", "http://10.0.0.2:9090", "http://10.0.0.4:9191",
        "http://[fd00::5]:9090",
    )
    # A number is the pods' own port, whatever the slice lists (as KEDA's add-on does).
    assert admin_urls(slices[:1], 9999) == ("http://10.0.0.1:9999", "http://10.0.0.2:9999")
    assert admin_urls([], 9090) == ()
    assert parse_admin_port("9090") == 9090
    assert parse_admin_port("admin") == "admin"
    for bad in ("0", "70000", "Admin", "-admin", "a--b", "x" * 16, ""):
        with pytest.raises(ValueError):
            parse_admin_port(bad)


def test_build_routes_from_snapshots() -> None:
    from types import MappingProxyType

    from httpscale.kube.cache import Snapshot
    from httpscale.model import parse_httpso, parse_interceptor_route
    from httpscale.scaler.cluster import build_routes

    def snap(items: dict[str, object], invalid: dict[str, Exception]) -> Snapshot[object]:
        return Snapshot(MappingProxyType(items), MappingProxyType(invalid), MappingProxyType({}),
                        True)

    def httpso(name: str, **spec: object) -> object:
        body = {"hosts": [f"{name}.example"], "scaleTargetRef": {"name": name, "service": name,
                                                                  "port": 80}, **spec}
        return parse_httpso({"metadata": {"name": name, "namespace": "ns"}, "spec": body})

    web = httpso("web", scaledownPeriod=90)
    legacy = parse_httpso({"metadata": {"name": "old", "namespace": "ns"}, "spec": {
        "host": "old.example", "targetPendingRequests": 42,
        "scaleTargetRef": {"deployment": "old", "service": "old", "port": 80}}})
    shadowed = httpso("api", scalingMetric={"requestRate": {"targetValue": 3}})
    api = parse_interceptor_route({"metadata": {"name": "api", "namespace": "ns"}, "spec": {
        "target": {"service": "api", "port": 80},
        "scalingMetric": {"concurrency": {"targetValue": 4},
                          "requestRate": {"targetValue": 9, "window": "30s"}}}})
    httpsos = snap({"ns/web": web, "ns/old": legacy, "ns/api": shadowed},
                   {"ns/broken": ValueError("ns/broken: spec.hosts: required")})
    irs = snap({"ns/api": api}, {"ns/bad": ValueError("ns/bad: spec.target: required")})
    cache: dict[str, tuple[object, object]] = {}
    routes, invalid = build_routes(httpsos, irs, ir_activity_window=120, cache=cache)  # type: ignore[arg-type]
    by_key = {r.key: r for r in routes}
    assert set(by_key) == {"ns/web", "ns/old", "ns/api"}
    assert by_key["ns/web"].activity_window == 90.0  # its scaledownPeriod
    assert [(m.name, m.target) for m in by_key["ns/old"].metrics] == [
        ("http-ns-old-concurrency", 42.0)]  # legacy fields: targetPendingRequests
    assert by_key["ns/old"].activity_window == 300.0  # KEDA's default cooldown
    # The InterceptorRoute won its key, with both metrics and the flag's activity window.
    assert by_key["ns/api"].origin == "InterceptorRoute"
    assert [m.name for m in by_key["ns/api"].metrics] == ["http_api_concurrency", "http_api_rate"]
    assert (by_key["ns/api"].window, by_key["ns/api"].activity_window) == (30.0, 120.0)
    assert invalid == {"HTTPScaledObject ns/broken": "ns/broken: spec.hosts: required",
                       "InterceptorRoute ns/bad": "ns/bad: spec.target: required"}
    # Unchanged objects keep their route objects; a gone IR hands its key back to the HTTPSO.
    again, _ = build_routes(httpsos, snap({}, {}), cache=cache)  # type: ignore[arg-type]
    assert {r.key: r for r in again}["ns/web"] is by_key["ns/web"]
    assert {r.key: r for r in again}["ns/api"].origin == "HTTPScaledObject"


async def test_board_recent_use_ends_by_timer() -> None:
    board = ActivityBoard(hold=1.0)
    loop = asyncio.get_running_loop()
    with board.watch("a/b") as watch:
        changes = watch.changes()
        assert await anext(changes) is False
        start = loop.time()
        board.update({"a/b": RouteLoad(0, 0.0, idle_at=start + 0.5)})  # see the hold test
        assert board.is_active("a/b")
        assert await asyncio.wait_for(anext(changes), HANG) is True
        assert board.recently_used("a/b")
        # Seen in use again before the end: the end moves; the first timer fires, re-arms.
        board.update({"a/b": RouteLoad(0, 0.0, idle_at=start + 1.0)})
        assert await asyncio.wait_for(anext(changes), HANG) is False
        assert loop.time() - start >= 0.99  # not at the first end: order, not speed
        # An end in the past, or no use at all: not active.
        board.update({"a/b": RouteLoad(0, 0.0, idle_at=loop.time() - 1)})
        assert not board.is_active("a/b")
        # A window shortened (an edited route) takes effect: the later timer is replaced.
        board.update({"a/b": RouteLoad(0, 0.0, idle_at=loop.time() + 30)})
        assert board.is_active("a/b")
        assert await asyncio.wait_for(anext(changes), HANG) is True
        board.update({"a/b": RouteLoad(0, 0.0, idle_at=loop.time() + 0.1)})
        # Well before the 30 s timer: the shorter one replaced it.
        assert await asyncio.wait_for(anext(changes), HANG) is False
        board.update({"a/b": RouteLoad(0, 0.0, idle_at=loop.time() + 30)})
        assert board.is_active("a/b")
        assert await asyncio.wait_for(anext(changes), HANG) is True
        board.drop(frozenset({"a/b"}))
        assert not board._idle_timers
    board.close()
