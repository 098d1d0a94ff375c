"""A tiny HTTP app for local mode's example and tests: `python -m httpscale.examples.hello`.

It says which process answered (pid and port, also as `X-Hello-Pid`/`X-Hello-Port` headers) so
that scaling out and load spreading are visible from curl. `--startup-delay` mimics a slow-starting
app (a heavy web UI): the port is not even bound until the delay has passed, so readiness probes
of both kinds fail meanwhile. `--crash-after` makes it exit with status 3 after N requests, which
the local autoscaler must notice and restart. Stdlib only, so it starts in a few milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]

_REASONS = {200: "OK", 404: "Not Found", 400: "Bad Request"}


class _Hello:
    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.args = args
        self.port = port
        self.pid = os.getpid()
        self.served = 0
        self.started = time.monotonic()
        self.stop = asyncio.Event()
        self.crash = False
        # Open connections and whether each is inside a request, for a clean shutdown.
        self.connections: dict[asyncio.StreamWriter, bool] = {}
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections[writer] = False
        try:
            while not self.stop.is_set():
                head = await reader.readuntil(b"\r\n\r\n")
                self.connections[writer] = True
                method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                headers = _parse_headers(head)
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                status, body = await self.respond(method, target)
                keep_alive = version == "HTTP/1.1" and headers.get("connection") != "close"
                writer.write(
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
                    f"Content-Type: text/plain; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"X-Hello-Pid: {self.pid}\r\nX-Hello-Port: {self.port}\r\n"
                    f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                if self.crash:
                    # Exit abruptly after answering, like a process that hits a fatal error.
                    os._exit(3)
                self.connections[writer] = False
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            del self.connections[writer]
            if not self.connections:
                self.closed.set()

    async def shut_down(self, grace: float) -> None:
        """Close idle keep-alive connections now, let requests in progress finish (bounded),
        then abort what is left, so that no handler is cancelled mid-way."""
        for writer, busy in list(self.connections.items()):
            if not busy:
                writer.close()
        if self.connections:
            self.closed.clear()
            try:
                await asyncio.wait_for(self.closed.wait(), grace)
            except TimeoutError:
                for writer in list(self.connections):
                    writer.transport.abort()
        # Let the handlers run their `finally` blocks before the loop goes away.
        await asyncio.sleep(0)

    async def respond(self, method: str, target: str) -> tuple[int, bytes]:
        path = target.split("?", 1)[0]
        if path == "/healthz":
            return 200, b"ok\n"
        delay = self.args.response_delay
        if delay > 0:
            await asyncio.sleep(delay)
        self.served += 1
        if self.args.crash_after and self.served >= self.args.crash_after:
            self.crash = True
        text = f"{self.args.message} from pid {self.pid} on port {self.port} ({method} {path})\n"
        return 200, text.encode()


def _parse_headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return headers


async def _serve(args: argparse.Namespace) -> None:
    port = args.port if args.port is not None else int(os.environ.get("PORT", "8000"))
    hello = _Hello(args, port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, hello.stop.set)
    if args.startup_delay > 0:
        print(f"hello: starting slowly ({args.startup_delay}s)", file=sys.stderr, flush=True)
        try:
            await asyncio.wait_for(hello.stop.wait(), args.startup_delay)
            return  # stopped while still starting
        except TimeoutError:
            pass
    server = await asyncio.start_server(hello.handle, args.host, port)
    print(f"hello: pid {hello.pid} listening on {args.host}:{port}", file=sys.stderr, flush=True)
    async with server:
        await hello.stop.wait()
        server.close()
        await hello.shut_down(args.shutdown_timeout)
    print(
        f"hello: pid {hello.pid} stopped after {hello.served} requests", file=sys.stderr, flush=True
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hello", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: $PORT, else 8000")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds before binding")
    parser.add_argument("--response-delay", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--crash-after", type=int, default=0, help="exit(3) after N requests")
    parser.add_argument("--message", default="hello")
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
