"""Closed connections are freed by reference counting, not left to the cyclic GC.

A connection's transport holds its protocol, and its parsers hold the protocol's methods, so
every closed connection used to be a reference cycle. A cold start's release closes thousands
at once; the cyclic GC's full collections that followed stopped the event loop for 50-150 ms
(measured in the held-requests benchmark). The interceptor breaks those cycles when a
connection closes, on both sides.
"""

from __future__ import annotations

import gc

from httpscale.interceptor.deadline import Deadline
from httpscale.interceptor.downstream import ClientConnection
from httpscale.interceptor.exchange import Exchange
from httpscale.interceptor.upstream import UpstreamConnection

from .backends import BackendConn, Request, http_app
from .helpers import eventually

OURS = (ClientConnection, UpstreamConnection, Exchange, Deadline)


async def test_closed_connections_leave_no_cyclic_garbage(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/close":  # the upstream ends its connection after this one
            conn.close_after = True
            await conn.respond(200, b"bye", [("Connection", "close")])
        else:
            await conn.respond(200, b"ok")

    ic, backend = await proxied(http_app(app))
    gc.collect()
    gc.disable()
    try:
        for i in range(20):
            conn = await clients(ic.proxy_address)
            target = "/close" if i % 2 else "/keep"
            resp = await conn.request("GET", target, headers=[("Connection", "close")])
            assert resp.status == 200
            assert await conn.is_closed_by_peer()
        await eventually(lambda: not ic.proxy.connections, what="client connections closed")
        await eventually(lambda: backend.accepted >= 10, what="upstream connections replaced")
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [type(o).__name__ for o in gc.garbage if isinstance(o, OURS)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == [], f"closed connections left for the cyclic GC: {ours}"
