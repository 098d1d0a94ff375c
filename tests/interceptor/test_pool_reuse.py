"""Upstream connections stay near the requests in flight: a burst opens one connection per
concurrent request and no more, later requests reuse the most recently used one, and a
connection handed back while requests wait on connects of their own serves them at once (the
connects carry on for the pool, and the next request waits for one rather than opening
another). Checked on real loopback backends that count the connections they accepted; the
stalled connects are TLS handshakes the backend completes only when the test says."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import Coroutine
from typing import Any

import pytest
from tlskit import TestCA

from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.settings import Tls

from .backends import Backend, BackendConn, Request, echo_app, http_app
from .conftest import BackendFactory, ClientFactory, InterceptorFactory
from .helpers import app_route, eventually, settings

BURST = 12


def _conn_of(body: bytes) -> int:
    """The backend connection (1-based, in accept order) that answered an echo request."""
    return int(json.loads(body)["conn"])


async def test_a_burst_opens_one_connection_per_request_and_later_ones_reuse_the_latest(
    backends: BackendFactory, make_interceptor: InterceptorFactory, clients: ClientFactory
) -> None:
    arrived: dict[int, asyncio.Event] = {}  # backend connection -> its response's release
    all_in = asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/burst":
            gate = arrived[conn.index] = asyncio.Event()
            if len(arrived) == BURST:
                all_in.set()
            await gate.wait()
        await echo_app(req, conn)

    backend = await backends(http_app(app))
    ic = await make_interceptor(routes=[app_route(backend.endpoint)])
    users = [await clients(ic.proxy_address) for _ in range(BURST)]
    pending = {asyncio.create_task(u.request("GET", "/burst")) for u in users}
    await asyncio.wait_for(all_in.wait(), 5)
    assert backend.accepted == BURST, "one connection per request in flight"
    # Released one at a time, each answered before the next, in an order unlike the accept
    # order: the last one released is the most recently used connection.
    order = sorted(arrived, key=lambda i: (i * 7) % BURST)
    answered = []
    for index in order:
        arrived[index].set()
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1
        answered.append(_conn_of(done.pop().result().body))
    assert answered == order

    one = users[0]
    for _ in range(20):
        resp = await one.request("GET", "/")
        assert resp.status == 200
        assert _conn_of(resp.body) == order[-1], "the most recently used connection, every time"
    assert backend.accepted == BURST, "sequential requests after the burst open nothing"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"), "upstream CA")


class StalledTlsBackend(Backend):
    """An echo backend behind TLS that accepts at once but starts the TLS handshake of a
    connection only once `handshakes` is set: the proxy's connect stays under way meanwhile.
    (Its own accept loop: a stream server would read the ClientHello before TLS starts.)
    `tcp_accepted` counts connections as accepted; a request for /hold is answered once `hold`
    is set."""

    def __init__(self, ca: TestCA) -> None:
        self.handshakes = asyncio.Event()
        self.hold = asyncio.Event()
        self.tcp_accepted = 0
        self._context = ca.server_context(ca.issue("backend", ips=["127.0.0.1"]))
        self._listener = socket.socket()
        self._own: set[asyncio.Task[None]] = set()

        async def app(req: Request, conn: BackendConn) -> None:
            if req.target == "/hold":
                await self.hold.wait()
            await echo_app(req, conn)

        super().__init__(http_app(app), "stalled-tls")

    async def start(self) -> StalledTlsBackend:
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._listener.setblocking(False)
        self._spawn(self._accept())
        return self

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._own.add(task)
        task.add_done_callback(self._own.discard)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(self._listener)
            self.tcp_accepted += 1
            self._spawn(self._handshake(sock))

    async def _handshake(self, sock: socket.socket) -> None:
        try:
            await self.handshakes.wait()
        except asyncio.CancelledError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol, sock, ssl=self._context
        )
        await self._serve(reader, asyncio.StreamWriter(transport, protocol, reader, loop))

    async def close(self) -> None:
        for task in list(self._own):
            task.cancel()
        await asyncio.gather(*self._own, return_exceptions=True)
        self._listener.close()
        await super().close()


async def test_a_connection_handed_back_serves_a_request_whose_connect_is_under_way(
    ca: TestCA, make_interceptor: InterceptorFactory, clients: ClientFactory
) -> None:
    backend = await StalledTlsBackend(ca).start()
    try:
        ic = await make_interceptor(
            routes=[app_route(backend.endpoint, upstream_scheme="https")],
            # (A stalled connect must not time out while the test looks at it.)
            settings=dataclasses.replace(
                settings(upstream_connect=60.0), tls=Tls(upstream_ca_file=str(ca.cert))
            ),
        )
        backend.handshakes.set()
        first = await clients(ic.proxy_address)
        assert _conn_of((await first.request("GET", "/")).body) == 1
        backend.handshakes.clear()  # from now on, new connections stall in their handshake

        # Connection 1 busy: the request of `second` connects anew, and stalls.
        busy = asyncio.create_task(first.request("GET", "/hold"))
        await backend.wait_for(lambda: len(backend.requests) == 2)
        second = await clients(ic.proxy_address)
        asked = asyncio.create_task(second.request("GET", "/second"))
        await eventually(lambda: backend.tcp_accepted == 2, what="the second connect")
        # Connection 1 comes back: it serves `second` while connection 2 is still stalled.
        backend.hold.set()
        assert _conn_of((await busy).body) == 1
        resp = await asked
        assert (resp.status, _conn_of(resp.body)) == (200, 1)

        # Connection 1 busy again; the next request waits for the stalled connect rather
        # than opening a third connection.
        backend.hold.clear()
        busy = asyncio.create_task(first.request("GET", "/hold"))
        await backend.wait_for(lambda: len(backend.requests) == 4)
        third = await clients(ic.proxy_address)
        asked = asyncio.create_task(third.request("GET", "/third"))
        await eventually(lambda: _waiting(ic) == 1, what="the third request waiting")
        backend.handshakes.set()
        resp = await asked
        assert (resp.status, _conn_of(resp.body)) == (200, 2)
        backend.hold.set()
        assert _conn_of((await busy).body) == 1
        assert backend.tcp_accepted == 2, "never more connections than requests in flight"
    finally:
        await backend.close()


def _waiting(ic: Interceptor) -> int:
    return sum(pool.stats()["waiting"] for _, pool in ic.proxy.pools.items())
