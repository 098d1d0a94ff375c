"""Bodies stream through the proxy both ways and are never held whole; when one side stops
reading, the proxy stops reading the other side (backpressure), so memory stays flat.

The backpressure tests stop one peer completely and watch the other's progress stall: without
backpressure the proxy would soak up the whole body (hundreds of MB) into its buffers.
What may sit in between is bounded by socket buffers (the test's own sockets are small, the
proxy's are the kernel's autotuned ones) plus the proxy's high-water marks.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib

import pytest

from .backends import BackendConn
from .client import Conn, read_chunked, read_head
from .helpers import app_route, eventually, queue_entry, rss_bytes

MiB = 1 << 20
BLOCK = os.urandom(256 * 1024)
#: What may be in flight between the two peers when one stops reading (see module doc).
STALL_BOUND = 64 * MiB
#: Growth of this whole process (client, backend and proxy) allowed during a transfer.
RSS_BOUND = 64 * MiB
SMALL_BUF = 64 * 1024


def expected_crc(total: int) -> int:
    crc = 0
    for _ in range(total // len(BLOCK)):
        crc = zlib.crc32(BLOCK, crc)
    return crc


async def wait_stalled(progress, *, quiet: float = 0.3, within: float = 10.0) -> int:
    """Wait until `progress()` stops moving for `quiet` seconds; return where it stopped.

    Sleeping is the point here: the test asserts that nothing happens for a while.
    """
    deadline = time.monotonic() + within
    last = progress()
    while True:
        await asyncio.sleep(quiet)
        now = progress()
        if now == last and now > 0:
            return now
        last = now
        if time.monotonic() > deadline:
            raise AssertionError(f"still moving after {within}s: {now} bytes; no backpressure")


class Sampler:
    """Track peak RSS while a transfer runs (sampled on the caller's schedule)."""

    def __init__(self) -> None:
        self.base = rss_bytes()
        self.peak = self.base

    def sample(self) -> None:
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.base


async def _download(backends, make_interceptor, clients, total: int) -> None:
    state = {"sent": 0}

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request()
        if req is None:
            return
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // len(BLOCK)):
            conn.writer.write(BLOCK)
            await conn.writer.drain()
            state["sent"] += len(BLOCK)
        await conn.wait_eof(within=60)

    backend = await backends(handler, sndbuf=SMALL_BUF)
    ic = await make_interceptor(routes=[app_route(backend.endpoint)])
    conn: Conn = await clients(ic.proxy_address, rcvbuf=SMALL_BUF)
    sampler = Sampler()
    await conn.send(b"GET /download HTTP/1.1\r\nHost: app.test\r\n\r\n")
    start, _ = await asyncio.wait_for(read_head(conn.reader), 5)
    assert b" 200 " in start

    # The client reads nothing now: the backend must be stopped by backpressure.
    stalled_at = await wait_stalled(lambda: state["sent"])
    sampler.sample()
    assert stalled_at < STALL_BOUND, f"backend pushed {stalled_at / MiB:.0f} MiB into the proxy"
    assert queue_entry(ic)["Concurrency"] == 1

    got = 0
    crc = 0
    next_sample = 0
    async with asyncio.timeout(max(30.0, total / (20 * MiB))):
        while got < total:
            data = await conn.reader.read(MiB)
            assert data, f"EOF after {got} of {total} bytes"
            crc = zlib.crc32(data, crc)
            got += len(data)
            if got >= next_sample:
                sampler.sample()
                next_sample += 8 * MiB
    assert got == total
    assert crc == expected_crc(total), "body bytes changed on the way"
    assert sampler.growth < RSS_BOUND, f"RSS grew {sampler.growth / MiB:.0f} MiB"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def _upload(backends, make_interceptor, clients, total: int) -> None:
    head_seen = asyncio.Event()
    go = asyncio.Event()

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request_head()
        if req is None:
            return
        head_seen.set()
        await go.wait()
        remaining = int(req.header("content-length") or 0)
        crc = 0
        n = 0
        while remaining:
            data = await conn.reader.read(min(remaining, MiB))
            if not data:
                break
            crc = zlib.crc32(data, crc)
            n += len(data)
            remaining -= len(data)
        await conn.respond(200, b"%d %d" % (n, crc))

    backend = await backends(handler, rcvbuf=SMALL_BUF)
    ic = await make_interceptor(routes=[app_route(backend.endpoint)])
    conn: Conn = await clients(ic.proxy_address, sndbuf=SMALL_BUF)
    sampler = Sampler()
    state = {"sent": 0}

    async def send_body() -> None:
        for _ in range(total // len(BLOCK)):
            conn.writer.write(BLOCK)
            await conn.writer.drain()
            state["sent"] += len(BLOCK)
            if state["sent"] % (8 * MiB) == 0:
                sampler.sample()

    await conn.send(b"PUT /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % total)
    sender = asyncio.create_task(send_body())
    try:
        await asyncio.wait_for(head_seen.wait(), 5)
        # The backend reads nothing now: the client must be stopped by backpressure.
        stalled_at = await wait_stalled(lambda: state["sent"])
        sampler.sample()
        assert stalled_at < STALL_BOUND, f"client pushed {stalled_at / MiB:.0f} MiB into the proxy"
        go.set()
        await asyncio.wait_for(asyncio.shield(sender), max(30.0, total / (20 * MiB)))
    finally:
        if not sender.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    resp = await conn.read_response(within=30)
    assert resp.status == 200
    n, crc = (int(x) for x in resp.body.split())
    assert n == total
    assert crc == expected_crc(total), "body bytes changed on the way"
    sampler.sample()
    assert sampler.growth < RSS_BOUND, f"RSS grew {sampler.growth / MiB:.0f} MiB"


@pytest.mark.parametrize("transfer", [_download, _upload], ids=["download", "upload"])
@pytest.mark.parametrize(
    "total", [256 * MiB, pytest.param(1024 * MiB, marks=pytest.mark.slow)], ids=["256mib", "1gib"]
)
async def test_backpressure(backends, make_interceptor, clients, transfer, total):
    await transfer(backends, make_interceptor, clients, total)


async def test_response_streams_before_backend_finishes(proxied, clients):
    """The client gets the first chunk while the backend still holds the rest."""
    client_got_first = asyncio.Event()

    async def handler(conn: BackendConn) -> None:
        if await conn.read_request() is None:
            return
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await client_got_first.wait()
        await conn.send(b"6\r\nsecond\r\n0\r\n\r\n")

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    _, headers = await asyncio.wait_for(read_head(conn.reader), 5)
    assert ("transfer-encoding", "chunked") in [(k.lower(), v.lower()) for k, v in headers]
    size = await asyncio.wait_for(conn.reader.readuntil(b"\r\n"), 5)
    assert int(size.split(b";")[0], 16) == 5
    assert await asyncio.wait_for(conn.reader.readexactly(7), 5) == b"first\r\n"
    client_got_first.set()
    body, _ = await asyncio.wait_for(read_chunked(conn.reader), 5)
    assert body == b"second"


async def test_request_streams_before_client_finishes(proxied, clients):
    """The backend gets the first part of the body while the client still holds the rest."""
    backend_got_first = asyncio.Event()

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request_head()
        if req is None:
            return
        first = await conn.reader.readexactly(1000)
        backend_got_first.set()
        rest = await conn.reader.readexactly(1000)
        await conn.respond(200, b"%d" % len(first + rest))

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2000\r\n\r\n")
    await conn.send(b"a" * 1000)
    await asyncio.wait_for(backend_got_first.wait(), 5)
    await conn.send(b"b" * 1000)
    resp = await conn.read_response()
    assert (resp.status, resp.body) == (200, b"2000")


async def test_chunked_request_streams_before_client_finishes(proxied, clients):
    backend_got_first = asyncio.Event()
    client_sent_last = asyncio.Event()

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request_head()
        if req is None:
            return
        data = b""
        while b"first" not in data:
            chunk = await conn.reader.read(4096)
            assert chunk
            data += chunk
        assert not client_sent_last.is_set()
        backend_got_first.set()
        while not data.endswith(b"0\r\n\r\n"):
            chunk = await conn.reader.read(4096)
            assert chunk
            data += chunk
        await conn.respond(200, b"ok")

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
    )
    await asyncio.wait_for(backend_got_first.wait(), 5)
    client_sent_last.set()
    await conn.send(b"4\r\nlast\r\n0\r\n\r\n")
    resp = await conn.read_response()
    assert (resp.status, resp.body) == (200, b"ok")
