"""An upstream that closes without answering (a pod shutting down just as it was picked):
a safe, bodiless request goes again, elsewhere or once the endpoint set has moved on; any
other request gets 502, since the app may have acted on it."""

from __future__ import annotations

import asyncio

import pytest

from .backends import BackendConn, http_app, named_app
from .helpers import APP_KEY, app_route


def _dies_after_reading(seen: list[str]):
    """Reads one request, then closes without a byte of answer."""

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request()
        if req is not None:
            seen.append(f"{req.method} {req.target}")
        conn.writer.close()

    return handler


async def test_a_get_lost_by_one_endpoint_is_answered_by_another(
    backends, make_interceptor, clients
):
    seen: list[str] = []
    dying = await backends(_dies_after_reading(seen), "dying")
    good = await backends(http_app(named_app("good")), "good")
    ic = await make_interceptor()
    ic.set_routes([app_route(dynamic=True)])
    ic.set_endpoints(APP_KEY, [dying.endpoint, good.endpoint])
    conn = await clients(ic.proxy_address)
    for i in range(20):  # the picks are random: the dying one gets some of them
        resp = await conn.request("GET", f"/g{i}")
        assert (resp.status, resp.body) == (200, b"good")
    assert seen, "the dying endpoint was never picked"
    assert len(good.requests) == 20


async def test_a_get_waits_for_the_endpoint_set_to_move_on(backends, make_interceptor, clients):
    seen: list[str] = []
    lost = asyncio.Event()

    async def dies_then_goes_away(conn: BackendConn) -> None:
        await _dies_after_reading(seen)(conn)
        lost.set()

    dying = await backends(dies_then_goes_away, "dying")
    good = await backends(http_app(named_app("replacement")), "replacement")
    ic = await make_interceptor()
    ic.set_routes([app_route(dynamic=True)])
    ic.set_endpoints(APP_KEY, [dying.endpoint])
    conn = await clients(ic.proxy_address)
    pending = asyncio.create_task(conn.request("GET", "/page"))
    await lost.wait()
    await dying.close()  # the pod's process is gone: connects are refused from now on
    ic.set_endpoints(APP_KEY, [good.endpoint])  # and its slice says so
    resp = await pending
    assert (resp.status, resp.body) == (200, b"replacement")
    assert seen == ["GET /page"]


@pytest.mark.parametrize(
    ("method", "tries"),
    [("POST", 1), ("GET", 4)],  # GET: the first try and three more, then the 502
    ids=["a-post-is-not-sent-twice", "get-losses-are-bounded"],
)
async def test_upstream_lost_after_reading(backends, make_interceptor, clients, method, tries):
    seen: list[str] = []
    dying = await backends(_dies_after_reading(seen), "dying")
    ic = await make_interceptor()
    ic.set_routes([app_route(dynamic=True)])
    ic.set_endpoints(APP_KEY, [dying.endpoint])
    conn = await clients(ic.proxy_address)
    resp = await conn.request(method, "/order")
    assert resp.status == 502
    assert seen == [f"{method} /order"] * tries


async def test_a_get_whose_last_replica_went_is_held_as_a_cold_start(
    backends, make_interceptor, clients
):
    """The app scaled to zero just as the request was picked: it waits for the next start,
    and says so (the header, the wake) as any request that found the route at zero."""
    lost = asyncio.Event()

    async def dies_then_goes_away(conn: BackendConn) -> None:
        await _dies_after_reading([])(conn)
        lost.set()

    dying = await backends(dies_then_goes_away, "dying")
    fresh = await backends(http_app(named_app("fresh")), "fresh")
    ic = await make_interceptor()
    woke = asyncio.Event()
    ic.add_wake_listener(lambda key: woke.set())
    ic.set_routes([app_route(dynamic=True)])
    ic.set_endpoints(APP_KEY, [dying.endpoint])
    conn = await clients(ic.proxy_address)
    pending = asyncio.create_task(conn.request("GET", "/page"))
    await lost.wait()
    await dying.close()
    ic.set_endpoints(APP_KEY, [])  # the slice catches up: no replica left
    await asyncio.wait_for(woke.wait(), 5)  # held at zero: the autoscaler is told
    ic.set_endpoints(APP_KEY, [fresh.endpoint])
    resp = await pending
    assert (resp.status, resp.body) == (200, b"fresh")
    assert resp.header("x-httpscale-cold-start") == "true"
