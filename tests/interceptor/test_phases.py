"""An exchange's phase over real sockets: held while its route is at zero, streaming while
bound to an upstream, finished once answered; and a held request whose client leaves."""

from __future__ import annotations

import asyncio

from httpscale.interceptor.exchange import FINISHED, HELD, PHASES, STREAMING

from .backends import BackendConn
from .client import build_request
from .helpers import APP_KEY, app_route, eventually


def _held(ic) -> list:
    """The exchanges held on the app route (the hold queue is the route's `waiters`)."""
    return list(ic.proxy.registry.states[APP_KEY].waiters)


async def test_held_then_streaming_then_finished(backends, make_interceptor, clients):
    answer = asyncio.Event()
    reached = asyncio.Event()

    async def handler(conn: BackendConn) -> None:
        if await conn.read_request() is None:
            return
        reached.set()
        await answer.wait()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await conn.wait_eof()

    b = await backends(handler)
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/cold"))
    await eventually(lambda: len(_held(ic)) == 1, what="request held")
    (exchange,) = _held(ic)
    assert PHASES[exchange.phase] == PHASES[HELD]

    ic.set_endpoints(APP_KEY, [b.endpoint])
    await asyncio.wait_for(reached.wait(), 5)
    assert PHASES[exchange.phase] == PHASES[STREAMING]
    assert not exchange.response_started

    answer.set()
    resp = await conn.read_response()
    assert (resp.status, resp.body) == (200, b"ok")
    assert PHASES[exchange.phase] == PHASES[FINISHED]


async def test_held_request_whose_client_leaves_is_finished(make_interceptor, clients):
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/cold"))
    await eventually(lambda: len(_held(ic)) == 1, what="request held")
    (exchange,) = _held(ic)
    await conn.aclose()
    await eventually(lambda: exchange.phase == FINISHED, what="exchange finished")
    assert _held(ic) == []
