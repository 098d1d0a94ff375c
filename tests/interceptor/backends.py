"""Upstream servers the tests control at the byte level, on 127.0.0.1 port 0.

`Backend` runs one coroutine per accepted connection (`Handler`) over asyncio streams, so a
test can answer with anything: 1xx, trailers, malformed framing, a reset, a slow head, an
upgrade echo. `http_app` turns a per-request coroutine into a keep-alive connection handler.
Everything a backend sees is recorded, and tests await what they need (`next_request`,
`wait_for`) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from httpscale.routing.spec import Endpoint

from .client import READ_TIMEOUT, HeaderList, HeaderLookup, parse_header_lines, read_chunked

__all__ = [
    "App",
    "Backend",
    "BackendConn",
    "Handler",
    "Request",
    "echo_app",
    "free_port",
    "http_app",
    "named_app",
    "start_backend",
]


@dataclass
class Request(HeaderLookup):
    method: str
    target: str
    version: str
    headers: HeaderList
    body: bytes = b""
    trailers: HeaderList = field(default_factory=list)
    chunked: bool = False


    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    def wants_close(self) -> bool:
        v = self.header("connection")
        return v is not None and "close" in v.lower()


class BackendConn:
    """The backend's side of one upstream connection the proxy opened."""

    def __init__(
        self, backend: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.backend = backend
        self.reader = reader
        self.writer = writer
        self.close_after = False  # set by an app to end the connection after its response
        self.index = backend.accepted  # 1-based number of this connection

    async def read_request_head(self) -> Request | None:
        """The next request head, body unread; None on EOF before any byte."""
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise
            return None
        lines = raw[:-4].split(b"\r\n")
        method, target, version = lines[0].decode("latin-1").split(" ", 2)
        return Request(method, target, version, parse_header_lines(lines[1:]))

    async def read_body(self, req: Request) -> None:
        te = req.header("transfer-encoding")
        if te is not None and "chunked" in te.lower():
            req.chunked = True
            req.body, req.trailers = await read_chunked(self.reader)
        elif (cl := req.header("content-length")) is not None:
            req.body = await self.reader.readexactly(int(cl))

    async def read_request(self) -> Request | None:
        """The next whole request (recorded on the backend); None on EOF between requests."""
        req = await self.read_request_head()
        if req is None:
            return None
        await self.read_body(req)
        await self.backend.record(req)
        return req

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def respond(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        reason: str = "OK",
        content_length: bool = True,
    ) -> None:
        hdrs = list(headers)
        if content_length and not any(
            k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs
        ):
            hdrs.append(("Content-Length", str(len(body))))
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
        await self.send(head.encode("latin-1") + b"\r\n" + body)

    async def wait_eof(self, within: float = READ_TIMEOUT) -> bytes:
        """Read until the proxy closes this connection; returns what came before the EOF."""
        chunks = []
        async with asyncio.timeout(within):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks)

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), as a crashing process does."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[BackendConn], Awaitable[None]]
App = Callable[[Request, BackendConn], Awaitable[None]]


class Backend:
    def __init__(
        self,
        handler: Handler,
        name: str = "backend",
        *,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
    ) -> None:
        self.handler = handler
        self._bufs = (rcvbuf, sndbuf)
        self.name = name
        self.accepted = 0  # connections accepted
        self.finished = 0  # connections whose handler ended (and were closed)
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.conns: list[BackendConn] = []
        self._queue: asyncio.Queue[Request] = asyncio.Queue()
        self._cond = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> Backend:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        # Accepted sockets inherit the listener's buffer sizes (small ones turn autotuning off,
        # so a backend that stops reading pushes back within a few KiB).
        rcvbuf, sndbuf = self._bufs
        for sock in self._server.sockets:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if sndbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    async def _changed(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def record(self, req: Request) -> None:
        self.requests.append(req)
        self._queue.put_nowait(req)
        await self._changed()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only `close()` cancels these tasks, and it awaits them. Ending normally keeps
            # asyncio's stream callback from logging the cancellation as an error.
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.accepted += 1
        conn = BackendConn(self, reader, writer)
        self.conns.append(conn)
        await self._changed()
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the proxy went away; what the test cares about is recorded elsewhere
        except Exception as e:  # surfaced by tests through `errors`
            self.errors.append(e)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await asyncio.shield(_wait_closed(writer))
            self.finished += 1
            self._tasks.discard(task)
            await self._changed()

    async def next_request(self, within: float = READ_TIMEOUT) -> Request:
        async with asyncio.timeout(within):
            return await self._queue.get()

    async def wait_for(self, predicate: Callable[[], bool], within: float = READ_TIMEOUT) -> None:
        async with asyncio.timeout(within), self._cond:
            await self._cond.wait_for(predicate)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


async def _wait_closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def http_app(app: App) -> Handler:
    """Serve requests on a keep-alive connection, one `app` call per request."""

    async def handler(conn: BackendConn) -> None:
        while True:
            req = await conn.read_request()
            if req is None:
                return
            await app(req, conn)
            if conn.close_after or req.wants_close():
                return

    return handler


async def echo_app(req: Request, conn: BackendConn) -> None:
    """200 with a JSON description of the request as the backend received it."""
    body = json.dumps(
        {
            "backend": conn.backend.name,
            "conn": conn.index,
            "method": req.method,
            "target": req.target,
            "version": req.version,
            "headers": req.headers,
            "body": req.body.decode("latin-1"),
            "trailers": req.trailers,
            "chunked": req.chunked,
        }
    ).encode()
    await conn.respond(200, body, [("Content-Type", "application/json")])


def named_app(text: str) -> App:
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.respond(200, text.encode(), [("Content-Type", "text/plain")])

    return app


async def start_backend(
    handler: Handler | None = None, name: str = "backend", **bufs: int | None
) -> Backend:
    return await Backend(handler or http_app(echo_app), name, **bufs).start()


def free_port() -> int:
    """A loopback port nothing listens on (bound then released), for "connection refused"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Blackhole:
    """A listening port whose accept queue is full, so a new TCP connect hangs (SYNs dropped).

    Used for the upstream connect timeout: nothing answers, nothing refuses.
    """

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._fillers: list[socket.socket] = []
        # With backlog 0 Linux queues one or two connections; a few more make sure it is full.
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self._fillers.append(s)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    def close(self) -> None:
        for s in self._fillers:
            s.close()
        self._listener.close()
