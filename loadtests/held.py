"""Pieces of the held-requests benchmark: a timestamping backend and a many-connection client.

The question is "how long after an endpoint becomes ready does the first held request reach
it". nginx cannot stamp arrivals with a clock comparable to the harness's, so the backend here
is a small asyncio server that records `time.monotonic_ns()` when the first request after
`arm` arrives; CLOCK_MONOTONIC is one clock for every process on a Linux machine, so the
difference to the harness's stamp just before `set_endpoints` is the answer.

wrk cannot hold 10,000 connections with one request each open until release, so `HeldClient`
opens them itself: raw asyncio Protocols, one GET per connection, each response parsed just
enough to check `200` and the body length.

    python loadtests/held.py backend [--ports N]
        prints {"ports": [P, ...]} (N free ports on 127.0.0.1); stdin commands:
        `arm` -> {"armed": true}
        `first` -> {"t_ns": first arrival after arm or null, "requests": count after arm}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import cast

import uvloop

__all__ = ["HeldClient", "HeldResult", "raise_nofile"]

_BODY = b"hello\n"
_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\n" + _BODY


def raise_nofile() -> int:
    """10,000 connections need more descriptors than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- backend -------------------------------------------------------------------------------


class _Stamp:
    def __init__(self) -> None:
        self.first_ns: int | None = None
        self.requests = 0


class _BackendProtocol(asyncio.Protocol):
    """Answers every GET (no bodies in this benchmark) with "hello\\n", keep-alive."""

    def __init__(self, stamp: _Stamp) -> None:
        self._stamp = stamp
        self._transport: asyncio.Transport | None = None
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        stamp = self._stamp
        if stamp.first_ns is None:
            # Stamped before any parsing: the moment the bytes reached user space here.
            stamp.first_ns = time.monotonic_ns()
        buf = self._buf + data
        complete = buf.count(b"\r\n\r\n")
        if complete:
            buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
            stamp.requests += complete
            assert self._transport is not None
            self._transport.write(_RESPONSE * complete)
        self._buf = buf


async def _serve_backend(ports: int) -> None:
    raise_nofile()
    stamp = _Stamp()
    loop = asyncio.get_running_loop()
    # Several ports so that each release can name an endpoint the interceptor has never
    # connected to, like a freshly started pod: no pooled connection can hide the connect.
    servers = [
        await loop.create_server(lambda: _BackendProtocol(stamp), "127.0.0.1", 0, backlog=4096)
        for _ in range(ports)
    ]
    try:
        _reply({"ports": [s.sockets[0].getsockname()[1] for s in servers]})
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            cmd = line.decode().strip()
            if cmd == "arm":
                stamp.first_ns, stamp.requests = None, 0
                _reply({"armed": True})
            elif cmd == "first":
                _reply({"t_ns": stamp.first_ns, "requests": stamp.requests})
            elif cmd == "quit":
                break
            elif cmd:
                _reply({"error": f"unknown command {cmd!r}"})
    finally:
        for server in servers:
            server.close()


def _reply(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- client --------------------------------------------------------------------------------


class HeldResult:
    """Outcome of one held connection: HTTP status (0: no complete response) and arrival."""

    __slots__ = ("done_ns", "status")

    def __init__(self, status: int, done_ns: int) -> None:
        self.status = status
        self.done_ns = done_ns


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, request: bytes, done: asyncio.Future[HeldResult]) -> None:
        self._request = request
        self._done = done
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        head_end = self._buf.find(b"\r\n\r\n")
        if head_end == -1 or self._done.done():
            return
        head = self._buf[:head_end].decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self._buf) - head_end - 4 >= length:
            self._done.set_result(HeldResult(status, time.monotonic_ns()))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(HeldResult(0, time.monotonic_ns()))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class HeldClient:
    """Opens `count` connections to `addr`, each sending one GET for `host`, and keeps them."""

    def __init__(self, addr: tuple[str, int], host: str, count: int, batch: int = 500) -> None:
        self._addr = addr
        self._request = f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: held\r\n\r\n".encode()
        self._count = count
        # Connecting in batches keeps the SYN backlog (somaxconn, often 4096) from overflowing,
        # which would turn into one-second SYN retransmits and skew nothing but our patience.
        self._batch = batch
        self._protocols: list[_ClientProtocol] = []
        self.futures: list[asyncio.Future[HeldResult]] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self._addr
        for start in range(0, self._count, self._batch):
            n = min(self._batch, self._count - start)
            futures = [loop.create_future() for _ in range(n)]
            protocols = [_ClientProtocol(self._request, f) for f in futures]
            await asyncio.gather(
                *(loop.create_connection(_returns(p), host, port) for p in protocols)
            )
            self.futures.extend(futures)
            self._protocols.extend(protocols)

    async def wait_all(self, wait_s: float) -> list[HeldResult]:
        """Every result; connections without a response by `wait_s` count as status 0."""
        if self.futures:
            await asyncio.wait(self.futures, timeout=wait_s)
        now = time.monotonic_ns()
        return [f.result() if f.done() else HeldResult(0, now) for f in self.futures]

    def close(self) -> None:
        for p in self._protocols:
            p.close()
        for f in self.futures:
            if not f.done():
                f.cancel()


def _returns(protocol: _ClientProtocol) -> Callable[[], _ClientProtocol]:
    return lambda: protocol


def main() -> None:
    parser = argparse.ArgumentParser(description="timestamping backend for loadtests/bench.py")
    parser.add_argument("mode", choices=["backend"])
    parser.add_argument("--ports", type=int, default=1, help="listening ports to open")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_backend(args.ports))


if __name__ == "__main__":
    main()
