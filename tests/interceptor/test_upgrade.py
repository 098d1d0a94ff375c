"""`Upgrade` (WebSocket): after the 101 the proxy is a byte pipe both ways, counted in flight
until either side closes."""

from __future__ import annotations

import asyncio
import os

from .backends import BackendConn
from .client import read_head
from .helpers import eventually, queue_entry

UPGRADE_REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def upgrade_echo(seen: dict, closed_by_proxy: asyncio.Event, *, server_closes: bool = False):
    """Answer 101, greet, then echo raw bytes until EOF (or close after the greeting)."""

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request_head()
        assert req is not None
        await conn.backend.record(req)
        seen["upgrade"] = req.header("upgrade")
        seen["connection"] = req.header("connection")
        seen["key"] = req.header("sec-websocket-key")
        await conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello-from-server"
        )
        if server_closes:
            return
        while True:
            data = await conn.reader.read(65536)
            if not data:
                closed_by_proxy.set()
                return
            await conn.send(data)

    return handler


async def _open_tunnel(ic, clients):
    conn = await clients(ic.proxy_address)
    await conn.send(UPGRADE_REQUEST)
    start, headers = await asyncio.wait_for(read_head(conn.reader), 5)
    assert start.split(b" ")[1] == b"101", start
    names = {k.lower(): v for k, v in headers}
    assert names.get("upgrade", "").lower() == "websocket"
    assert "upgrade" in names.get("connection", "").lower()
    greeting = await asyncio.wait_for(conn.reader.readexactly(len(b"hello-from-server")), 5)
    assert greeting == b"hello-from-server"
    return conn


async def test_upgrade_tunnels_raw_bytes_both_ways(proxied, clients):
    seen: dict = {}
    closed = asyncio.Event()
    ic, _backend = await proxied(upgrade_echo(seen, closed))
    conn = await _open_tunnel(ic, clients)
    assert seen["upgrade"].lower() == "websocket", "Upgrade must reach the backend"
    assert "upgrade" in seen["connection"].lower()
    assert seen["key"] == "dGhlIHNhbXBsZSBub25jZQ=="

    # Not HTTP any more: bytes that would be a malformed request go through untouched.
    for payload in (b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", b"GET / HTTP/1.1\r\n\r\n\x00"):
        await conn.send(payload)
        assert await asyncio.wait_for(conn.reader.readexactly(len(payload)), 5) == payload

    big = os.urandom(1 << 20)
    sender = asyncio.create_task(conn.send(big))
    echoed = await asyncio.wait_for(conn.reader.readexactly(len(big)), 10)
    await sender
    assert echoed == big

    entry = queue_entry(ic)
    assert entry["Concurrency"] == 1, "an open tunnel is a request in flight"
    assert entry["RequestCount"] == 1

    await conn.aclose()
    await asyncio.wait_for(closed.wait(), 5)  # client close reached the backend
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0, what="tunnel released")
    assert queue_entry(ic)["RequestCount"] == 1


async def test_upgrade_closed_by_backend_closes_client(proxied, clients):
    seen: dict = {}
    ic, _ = await proxied(upgrade_echo(seen, asyncio.Event(), server_closes=True))
    conn = await _open_tunnel(ic, clients)
    assert await conn.read_until_eof() == b""
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0, what="tunnel released")
    assert queue_entry(ic)["RequestCount"] == 1


async def test_upgrade_refused_by_backend_stays_http(proxied, clients):
    async def handler(conn: BackendConn) -> None:
        while (req := await conn.read_request()) is not None:
            await conn.respond(200, f"plain {req.target}".encode())

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(UPGRADE_REQUEST)
    resp = await conn.read_response()
    assert resp.status == 200 and resp.body == b"plain /ws"
    # After a refused upgrade the proxy may close (bytes the client sent after the request
    # may not be HTTP), but then it must say so; otherwise the connection stays usable.
    if "close" in (resp.header("connection") or "").lower():
        assert await conn.read_until_eof() == b""
    else:
        again = await conn.request("GET", "/next")
        assert again.status == 200 and again.body == b"plain /next"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0, what="requests done")
