"""The training run of `scripts/compile`'s profile-guided build: traffic through the compiled
hot path while it counts which code runs.

    .venv/bin/python scripts/pgo_train.py [--requests N]

`scripts/compile` runs this against a build instrumented with `-fprofile-generate`; the counts
written at exit let the final build lay the hot path out contiguously and move error branches
out of the way, so it fits the instruction cache better (docs/benchmarks.md has the figures).
Only the proportions matter, so the mix follows real traffic: mostly keep-alive GETs, some
small POSTs, and a few of what takes the slower paths (a header only the full parser takes, a
chunked response, HEAD, an unknown host). Everything runs in this process on loopback: an
interceptor, a minimal backend and a few keep-alive clients. Exit status 0 when every answer
was the one expected, 1 otherwise (the profile is then not used), 2 when the compiled build is
not the one imported.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import cast

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from httpscale import dataplane  # (after the sys.path line: the checkout, not an install)
from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.settings import (
    InterceptorSettings,
    InterceptorShutdown,
    Listen,
)
from httpscale.routing.spec import Endpoint, RouteMatch, RouteSpec

CONNECTIONS = 16
HOST = "app.train"
# What a browser sends, and what an API client or a load tester sends.
GET = (
    b"GET /api/items?page=%d HTTP/1.1\r\nHost: app.train\r\nUser-Agent: Mozilla/5.0 (X11; "
    b"Linux x86_64) Gecko/20100101 Firefox/120.0\r\nAccept: text/html,application/xhtml+xml,"
    b"*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\nCookie: session=0123456789abcdef\r\n\r\n"
)
SHORT_GET = b"GET /items/%d HTTP/1.1\r\nHost: app.train\r\n\r\n"
POST = (
    b"POST /api/items HTTP/1.1\r\nHost: app.train\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%b"
)
# TE is hop-by-hop: only the full parser takes it.
FULL = b"GET /full HTTP/1.1\r\nHost: app.train\r\nTE: trailers\r\nConnection: TE\r\n\r\n"
CHUNKED = b"GET /chunked HTTP/1.1\r\nHost: app.train\r\n\r\n"
HEAD = b"HEAD /api/items HTTP/1.1\r\nHost: app.train\r\n\r\n"
UNKNOWN = b"GET / HTTP/1.1\r\nHost: nowhere.train\r\n\r\n"
#: One round of a client's requests, in the proportions of the mix.
ROUND = ("get", "short") * 17 + ("post",) * 3 + ("full", "chunked", "head", "unknown")

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: train\r\nDate: Mon, 23 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 16\r\nConnection: keep-alive\r\n\r\n"
    b'{"items": [1,2]}'
)
HEAD_RESPONSE = RESPONSE[: RESPONSE.index(b"\r\n\r\n") + 4]
CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)


class Backend(asyncio.Protocol):
    """Answers each request on a keep-alive connection; bodies are read by Content-Length."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[: end + 4]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line[15:])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            if head.startswith(b"HEAD "):
                self.transport.write(HEAD_RESPONSE)
            elif head.startswith(b"GET /chunked "):
                self.transport.write(CHUNKED_RESPONSE)
            else:
                self.transport.write(RESPONSE)


async def _status(reader: asyncio.StreamReader, head_only: bool) -> int:
    """Read one response; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if head_only:
        return status
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    at = lower.find(b"content-length:")
    if at >= 0:
        await reader.readexactly(int(lower[at + 15 : lower.index(b"\r\n", at)]))
    return status


async def _client(address: tuple[str, int], rounds: int, seed: int) -> int:
    """Send `rounds` rounds of the mix on one connection; how many answers were wrong."""
    reader, writer = await asyncio.open_connection(*address)
    wrong = 0
    try:
        for n in range(rounds):
            for i, kind in enumerate(ROUND):
                expected = 200
                if kind == "get":
                    writer.write(GET % (seed + n * len(ROUND) + i))
                elif kind == "short":
                    writer.write(SHORT_GET % i)
                elif kind == "post":
                    body = b'{"name": "item %d", "count": %d}' % (n, i)
                    writer.write(POST % (len(body), body))
                elif kind == "full":
                    writer.write(FULL)
                elif kind == "chunked":
                    writer.write(CHUNKED)
                elif kind == "head":
                    writer.write(HEAD)
                else:
                    writer.write(UNKNOWN)
                    expected = 404
                wrong += await _status(reader, kind == "head") != expected
    finally:
        writer.close()
    return wrong


async def _run(requests: int) -> int:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Backend, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    interceptor = Interceptor(
        InterceptorSettings(
            listen=Listen(host="127.0.0.1", port=0, admin_host="127.0.0.1", admin_port=0),
            shutdown=InterceptorShutdown(readiness_delay=0.0, drain_timeout=1.0),
        )
    )
    await interceptor.start()
    try:
        interceptor.set_routes([
            RouteSpec(
                key="train/app",
                match=RouteMatch(hosts=(HOST,)),
                static_endpoints=(Endpoint("127.0.0.1", port),),
            )
        ])
        rounds = max(1, requests // (CONNECTIONS * len(ROUND)))
        async with asyncio.timeout(300):
            wrong = await asyncio.gather(
                *(_client(interceptor.proxy_address, rounds, c) for c in range(CONNECTIONS))
            )
    finally:
        await interceptor.shutdown()
        server.close()
    return sum(wrong)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=24_000, help="requests in all")
    args = parser.parse_args()
    build = dataplane.active()
    if build.name != "compiled":
        print(f"pgo_train: the compiled build is not running ({build.reason})", file=sys.stderr)
        return 2
    wrong = uvloop.run(_run(args.requests))
    if wrong:
        print(f"pgo_train: {wrong} answers were not the expected status", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
