"""A byte-exact HTTP/1.1 client for black-box tests of the interceptor.

It writes exactly the bytes a test gives it and parses responses itself (status line, headers,
Content-Length / chunked / close-delimited bodies, trailers, 1xx interim responses), so that
tests can assert on framing the way a strict peer would see it. Every read is bounded by a
timeout so a proxy bug fails a test in seconds, not at the 120 s pytest-timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "READ_TIMEOUT",
    "Conn",
    "Response",
    "build_request",
    "get",
    "read_chunked",
    "read_head",
]

#: Seconds any single read in a test may take before the test fails.
READ_TIMEOUT = 5.0

HeaderList = list[tuple[str, str]]


class HeaderLookup:
    """Case-insensitive header access for a message with a `headers` list."""

    headers: HeaderList

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


@dataclass
class Response(HeaderLookup):
    version: str
    status: int
    reason: str
    headers: HeaderList
    body: bytes = b""
    trailers: HeaderList = field(default_factory=list)
    chunked: bool = False
    interim: list[Response] = field(default_factory=list)  # 1xx answers before this one


    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse_header_lines(lines: Sequence[bytes]) -> HeaderList:
    headers: HeaderList = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    return headers


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, HeaderList]:
    """One message head: (start line, headers). EOF before it raises IncompleteReadError."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].split(b"\r\n")
    return lines[0], parse_header_lines(lines[1:])


async def read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, HeaderList]:
    """Read a chunked body (after the head); returns (decoded body, trailers)."""
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            break
        parts.append(await reader.readexactly(size))
        crlf = await reader.readexactly(2)
        if crlf != b"\r\n":
            raise ValueError(f"chunk not followed by CRLF: {crlf!r}")
    trailer_lines: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        trailer_lines.append(line[:-2])
    return b"".join(parts), parse_header_lines(trailer_lines)


def _has_token(headers: HeaderList, name: str, token: str) -> bool:
    for k, v in headers:
        if k.lower() == name and token in (t.strip().lower() for t in v.split(",")):
            return True
    return False


def build_request(
    method: str = "GET",
    target: str = "/",
    *,
    host: str | None = "app.test",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """Exact request bytes. A body gets a Content-Length unless `headers` frame it already."""
    hdrs = list(headers)
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = {k.lower() for k, _ in hdrs}
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    lines.extend(f"{k}: {v}" for k, v in hdrs)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Conn:
    """One client connection to the proxy."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, address: tuple[str, int], *, rcvbuf: int | None = None, sndbuf: int | None = None
    ) -> Conn:
        if rcvbuf is None and sndbuf is None:
            reader, writer = await asyncio.open_connection(*address)
        else:
            # A small receive buffer set before connect (turns off autotuning), so that a
            # client that stops reading pushes back on the proxy within a few KiB.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if sndbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, address)
            except BaseException:
                sock.close()
                raise
            reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        *,
        host: str | None = "app.test",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        within: float = READ_TIMEOUT,
    ) -> Response:
        await self.send(build_request(method, target, host=host, headers=headers, body=body))
        return await self.read_response(method=method, within=within)

    async def read_response(self, *, method: str = "GET", within: float = READ_TIMEOUT) -> Response:
        """The next final response, with any 1xx before it in `.interim`."""
        interim: list[Response] = []
        async with asyncio.timeout(within):
            while True:
                resp = await self._read_one(method)
                if 100 <= resp.status < 200 and resp.status != 101:
                    interim.append(resp)
                    continue
                resp.interim = interim
                return resp

    async def read_interim_or_final(self, *, within: float = READ_TIMEOUT) -> Response:
        """The next response head and body, 1xx included (for Expect: 100-continue)."""
        async with asyncio.timeout(within):
            return await self._read_one("GET")

    async def _read_one(self, method: str) -> Response:
        start, headers = await read_head(self.reader)
        version, _, rest = start.decode("latin-1").partition(" ")
        status_s, _, reason = rest.partition(" ")
        resp = Response(version, int(status_s), reason, headers)
        if method == "HEAD" or 100 <= resp.status < 200 or resp.status in (204, 304):
            return resp
        if _has_token(headers, "transfer-encoding", "chunked"):
            resp.chunked = True
            resp.body, resp.trailers = await read_chunked(self.reader)
        elif (cl := resp.header("content-length")) is not None:
            resp.body = await self.reader.readexactly(int(cl))
        else:
            resp.body = await self.reader.read()  # close-delimited
        return resp

    async def read_until_eof(self, *, within: float = READ_TIMEOUT) -> bytes:
        """Everything until the proxy closes; fails the test if not within `within` s."""
        async with asyncio.timeout(within):
            chunks = []
            while True:
                try:
                    data = await self.reader.read(65536)
                except (ConnectionResetError, BrokenPipeError):
                    break
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks)

    async def is_closed_by_peer(self, *, within: float = READ_TIMEOUT) -> bool:
        """True once the proxy has closed (EOF or reset) and sent nothing more."""
        return await self.read_until_eof(within=within) == b""

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    def abort(self) -> None:
        """Close abruptly (RST), as a client that goes away does."""
        self.writer.transport.abort()


async def get(
    address: tuple[str, int],
    target: str = "/",
    *,
    host: str | None = "app.test",
    headers: Iterable[tuple[str, str]] = (),
    method: str = "GET",
    body: bytes | None = None,
    within: float = READ_TIMEOUT,
) -> Response:
    """One request on a fresh connection (closed afterwards)."""
    conn = await Conn.open(address)
    try:
        return await conn.request(
            method, target, host=host, headers=headers, body=body, within=within
        )
    finally:
        await conn.aclose()
