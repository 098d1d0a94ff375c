"""The scaler's pure-ish parts, fed values directly: ref resolution, names, the board."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from httpscale.scaler.activity import ActivityBoard, RouteLoad
from httpscale.scaler.collector import parse_queue
from httpscale.scaler.discovery import normalize_admin_url
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.routes import RouteTable, ScalerRoute, metric_name
from httpscale.scaler.service import FleetTarget, RefError, RouteTarget, resolve_ref


async def test_resolve_ref() -> None:
    table = RouteTable()
    route = ScalerRoute("shop/web.v2")
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


async def test_board_hold_runs_out_unless_a_poll_confirms() -> None:
    board = ActivityBoard(hold=0.1)
    with board.watch("a/b") as watch:
        changes = watch.changes()
        assert await anext(changes) is False
        board.wake("a/b")
        assert await asyncio.wait_for(anext(changes), 0.05) is True
        board.update({"a/b": RouteLoad(0, 0.0)})  # a stale poll: the hold stays
        assert board.is_active("a/b")
        assert await asyncio.wait_for(anext(changes), 1) is False  # hold ran out
        board.wake("a/b")
        assert await asyncio.wait_for(anext(changes), 0.05) is True
        board.update({"a/b": RouteLoad(1, 0.0)})  # confirmed: the poll carries it now
        assert not board.held("a/b")
        await asyncio.sleep(0.2)
        assert board.is_active("a/b")
        board.update({"a/b": RouteLoad(0, 0.5)})  # rate alone keeps it active
        assert board.is_active("a/b")
        board.update({})
        assert await asyncio.wait_for(anext(changes), 0.05) is False
        board.drop(frozenset({"a/b"}))
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(changes), 0.05)
    assert board.open_watches == 0
    board.close()
