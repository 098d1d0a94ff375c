"""A backend with a known capacity: at most `--concurrency` requests served at once, each
taking `--latency` seconds; the rest wait their turn (a worker pool in small). So its true
knee is concurrency / latency requests per second with `--concurrency` in flight.

`python tests/capacity/limited_backend.py --port N [--concurrency 8] [--latency 0.05]`.
`/healthz` answers at once, outside the limit, so readiness probes never queue. Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    slots = asyncio.Semaphore(args.concurrency)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                if target != b"/healthz":
                    async with slots:
                        await asyncio.sleep(args.latency)  # the work: a fixed service time
                body = b"ok\n"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    with contextlib.suppress(Exception):
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
