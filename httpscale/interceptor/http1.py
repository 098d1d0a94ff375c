"""HTTP/1.1 wire helpers shared by the proxy's two sides: the header vocabulary, chunk framing,
and the short answers the proxy writes itself.

The proxy's HTTP/1.1 code, by job (no I/O in any of them):
- `http1` (here): names and framing every other module uses;
- `heads`: the full header pass (`RequestInfo`, `ResponseInfo`) and the tables it reads;
- `splice`: the splice path, which forwards a head as received minus its hop-by-hop lines;
- `scan`: the splice path's head scans in Python, twins of the C ones in `_scan.c`.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Final

__all__ = [
    "HOP_BY_HOP",
    "FramingError",
    "Headers",
    "chunk",
    "connection_field",
    "error_response",
    "last_chunk",
    "reason_phrase",
]

Headers = list[tuple[bytes, bytes]]

#: Headers that belong to one connection (RFC 9110 §7.6.1) and never cross the proxy.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

_REASONS: Final = {s.value: s.phrase.encode() for s in HTTPStatus}


class FramingError(ValueError):
    """The request's head is ambiguous or invalid (its framing, its Host): answer 400 and
    close."""


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Sequence[tuple[bytes, bytes]]) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    lines = [b"0\r\n"]
    for name, value in trailers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def connection_field(*, keep_alive: bool, http10: bool) -> bytes:
    """The Connection line of a final response the proxy writes: `close` when the connection
    ends after it; `keep-alive` when it stays open for an HTTP/1.0 client, which would
    otherwise take the response to end the connection (RFC 9112 §9.3); else none."""
    if not keep_alive:
        return b"Connection: close\r\n"
    return b"Connection: keep-alive\r\n" if http10 else b""


def error_response(
    status: int,
    message: str,
    *,
    close: bool,
    extra: Headers | None = None,
    head_only: bool = False,
    http10: bool = False,
) -> bytes:
    """A short text answer the proxy writes itself: it says why, in one line.

    `http10`: the client spoke HTTP/1.0; a connection kept open is announced, as in
    `ResponseInfo.prepare`.
    """
    body = message.encode("utf-8", "replace") + b"\n"
    parts = [
        b"HTTP/1.1 %d %b\r\n" % (status, reason_phrase(status)),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"X-HTTPScale-Cold-Start: false\r\n",
    ]
    for name, value in extra or ():
        parts += (name, b": ", value, b"\r\n")
    parts += (connection_field(keep_alive=not close, http10=http10), b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)
