"""HTTP/2 flow control and backpressure, both ways, through to an HTTP/1.1 backend: a client
that does not read holds the backend back, and a backend that does not read holds the client
back, with the interceptor's buffers bounded (asserted on its state, not on time)."""

from __future__ import annotations

import asyncio
import dataclasses

from httpscale.interceptor.settings import Http2, Limits

from .backends import BackendConn, Request, http_app
from .h2client import H2Client
from .helpers import app_route, eventually, settings

MIB = 1 << 20


def _stream(ic):
    (conn,) = ic.proxy.h2_connections
    (stream,) = conn.streams.values()
    return stream


async def test_slow_reader_holds_the_backend_back(backends, make_interceptor):
    total = 16 * MIB
    sent = 0
    chunk = b"d" * 65536

    async def app(req: Request, conn: BackendConn) -> None:
        nonlocal sent
        conn.writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        while sent < total:
            await conn.send(chunk)
            sent += len(chunk)

    b = await backends(http_app(app), rcvbuf=8192, sndbuf=8192)
    limits = Limits(write_high_water=256 * 1024, write_low_water=64 * 1024)
    ic = await make_interceptor(routes=[app_route(b.endpoint)], limits=limits)
    c = await H2Client.open(ic.proxy_address, auto_ack=False)
    try:
        sid = c.request("/big")
        # The client never acknowledges: 65,535 bytes reach it, the rest waits upstream.
        await eventually(lambda: len(c.replies[sid].body) == 65535, within=10,
                         what="the client's window filled")
        await eventually(lambda: _stream(ic).up._read_paused, within=10,
                         what="the upstream connection paused for the client")
        stream = _stream(ic)
        # Reading stops once over the high-water mark, so at most one read more is queued:
        # asyncio reads 64 KiB at a time, uvloop 256 KiB.
        assert stream.out_size <= limits.write_high_water + 256 * 1024
        assert sent < total // 2  # the backend is held back, not read into memory
        c.auto_ack = True
        c.ack(sid, len(c.replies[sid].body))
        r = await c.reply(sid, within=60)
    finally:
        await c.aclose()
    assert r.status == 200 and len(r.body) == total


async def test_slow_backend_holds_the_client_back(backends, make_interceptor):
    total = 8 * MIB
    go = asyncio.Event()
    got = 0

    async def app(req: Request, conn: BackendConn) -> None:
        nonlocal got
        await go.wait()
        remaining = int(req.header("content-length") or 0)
        while remaining:
            data = await conn.reader.read(min(remaining, 65536))
            got += len(data)
            remaining -= len(data)
        await conn.respond(200, str(got).encode(), [])

    async def app_head(conn: BackendConn) -> None:
        req = await conn.read_request_head()
        assert req is not None
        await app(req, conn)

    b = await backends(app_head, rcvbuf=8192, sndbuf=8192)
    window = 256 * 1024
    s = dataclasses.replace(settings(), http2=Http2(initial_window_size=window))
    ic = await make_interceptor(routes=[app_route(b.endpoint)], settings=s)
    c = await H2Client.open(ic.proxy_address)
    try:
        sid = c.request("/up", method="POST", headers=[("content-length", str(total))],
                        end=False)
        upload = asyncio.ensure_future(c.upload(sid, b"u" * total))
        # The client stops when its window is spent; the interceptor keeps at most a window.
        await eventually(lambda: c.h2.local_flow_control_window(sid) == 0, within=10,
                         what="the client's window spent")
        stream = _stream(ic)
        assert sum(len(d) for d in stream.body) <= window
        assert not upload.done()
        go.set()
        await asyncio.wait_for(upload, 60)
        r = await c.reply(sid, within=60)
    finally:
        await c.aclose()
    assert r.status == 200 and int(bytes(r.body)) == total
