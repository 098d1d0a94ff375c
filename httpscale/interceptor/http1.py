"""Pure HTTP/1.1 helpers for the proxy: header rewriting, heads, chunk framing, error answers.

No I/O here. httptools (llhttp) does the parsing and already refuses the classic smuggling
shapes (Content-Length with Transfer-Encoding, duplicate Content-Length, a Transfer-Encoding
whose last coding is not chunked); `RequestInfo` re-checks them so that a parser leniency can
never turn into a desync between us and the upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

__all__ = [
    "HOP_BY_HOP",
    "FramingError",
    "Headers",
    "RequestInfo",
    "ResponseInfo",
    "chunk",
    "error_response",
    "last_chunk",
    "reason_phrase",
    "response_head",

]

Headers = list[tuple[bytes, bytes]]

#: Headers that belong to one connection (RFC 9110 §7.6.1) and never cross the proxy.
HOP_BY_HOP = frozenset(
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

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class FramingError(ValueError):
    """The request's message framing is ambiguous or invalid: answer 400 and close."""


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


# Header names the request pass looks at; everything else is copied as it came.
_REQ_SPECIAL = HOP_BY_HOP | {
    b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"
}
# Connection header values that need no token parsing (nearly every message has one of them).
_COMMON_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})
# Connection tokens that never name an end-to-end header.
_PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade"}) | HOP_BY_HOP


class RequestInfo:
    """What one pass over a request's headers found, and its forwardable header block.

    One pass, one `lower()` per header: this runs for every request on the proxy's hot path.
    """

    __slots__ = (
        "block", "chunked", "connection", "content_length", "host", "upgrade", "xff", "xfh", "xfp"
    )

    def __init__(self, headers: Headers) -> None:
        parts: list[bytes] = []
        lengths: list[bytes] = []
        codings: list[bytes] = []
        tokens: list[bytes] = []
        self.host = b""
        self.upgrade: bytes | None = None
        self.xff: bytes | None = None
        self.xfp = self.xfh = False
        self.connection = False  # a Connection header was sent
        for name, value in headers:
            lname = name.lower()
            if lname not in _REQ_SPECIAL:
                parts.append(name + b": " + value + b"\r\n")
            elif lname == b"host":
                self.host = value
                parts.append(name + b": " + value + b"\r\n")
            elif lname == b"content-length":
                lengths.append(value.strip())
                parts.append(name + b": " + value + b"\r\n")
            elif lname == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
            elif lname == b"connection":
                self.connection = True
                lvalue = value.lower()
                if lvalue not in _COMMON_CONNECTION:  # "keep-alive"/"close": nothing to parse
                    tokens.extend(t.strip() for t in lvalue.split(b","))
                elif lvalue == b"upgrade":
                    tokens.append(lvalue)
            elif lname == b"upgrade":
                self.upgrade = value
            elif lname == b"x-forwarded-for":
                # Appended to below; several headers are one comma-separated list.
                self.xff = value if self.xff is None else self.xff + b", " + value
            else:
                if lname == b"x-forwarded-proto":
                    self.xfp = True
                elif lname == b"x-forwarded-host":
                    self.xfh = True
                else:
                    continue  # hop-by-hop: dropped
                parts.append(name + b": " + value + b"\r\n")
        if lengths and codings:
            raise FramingError("Content-Length together with Transfer-Encoding")
        if len(lengths) > 1:
            raise FramingError("duplicate Content-Length")
        if lengths and not lengths[0].isdigit():
            raise FramingError("invalid Content-Length")
        if codings and codings[-1] != b"chunked":
            raise FramingError("Transfer-Encoding is not chunked-last")
        if codings.count(b"chunked") > 1:
            raise FramingError("chunked applied twice")
        self.chunked = bool(codings)
        self.content_length = int(lengths[0]) if lengths else 0
        if self.upgrade is not None and b"upgrade" not in tokens:
            self.upgrade = None  # Upgrade without "Connection: upgrade" is no upgrade request
        # (The comprehension runs only when there are tokens: in CPython 3.11 each one builds a
        # function object, measurable per request.)
        extra = [t for t in tokens if t and t not in _PLAIN_TOKENS] if tokens else None
        if extra:
            # Headers the client marked hop-by-hop through Connection (rare): copy again
            # without them (the loop above keeps no per-header names, to stay cheap).
            parts = [
                n + b": " + v + b"\r\n"
                for n, v in headers
                if (ln := n.lower()) not in HOP_BY_HOP and ln != b"x-forwarded-for"
                and ln not in extra
            ]
        self.block = b"".join(parts)

    def head(self, method: bytes, target: bytes, client_ip: str) -> bytes:
        """The head sent upstream: hop-by-hop headers dropped, X-Forwarded-* added, Host kept."""
        ip = client_ip.encode()
        parts = [method, b" ", target, b" HTTP/1.1\r\n", self.block]
        parts.append(b"X-Forwarded-For: " + (ip if self.xff is None else self.xff + b", " + ip))
        parts.append(b"\r\n")
        if not self.xfp:
            parts.append(b"X-Forwarded-Proto: http\r\n")
        if not self.xfh and self.host:
            parts.append(b"X-Forwarded-Host: " + self.host + b"\r\n")
        if self.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if self.upgrade is not None:
            parts.append(b"Connection: upgrade\r\nUpgrade: " + self.upgrade + b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)


class ResponseInfo:
    """One pass over a response's headers: framing facts and the forwardable block."""

    __slots__ = ("block", "chunked", "content_length")

    def __init__(self, headers: Headers) -> None:
        parts: list[bytes] = []
        tokens: list[bytes] = []
        self.chunked = self.content_length = False
        for name, value in headers:
            lname = name.lower()
            if lname not in HOP_BY_HOP:
                if lname == b"content-length":
                    self.content_length = True
                parts.append(name + b": " + value + b"\r\n")
            elif lname == b"transfer-encoding":
                self.chunked = True
            elif lname == b"connection":
                lvalue = value.lower()
                if lvalue not in _COMMON_CONNECTION:
                    tokens.extend(t.strip() for t in lvalue.split(b","))
        extra = [t for t in tokens if t and t not in _PLAIN_TOKENS] if tokens else None
        if extra:
            parts = [
                n + b": " + v + b"\r\n"
                for n, v in headers
                if (ln := n.lower()) not in HOP_BY_HOP and ln not in extra
            ]
        self.block = b"".join(parts)


def response_head(
    status: int,
    reason: bytes,
    block: bytes,
    *,
    chunked: bool,
    keep_alive: bool,
    cold_start: bool,
    upgrade: bytes | None = None,
) -> bytes:
    """The head sent to the client. `chunked` re-frames a body whose length is not known."""
    parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason or reason_phrase(status)), block]
    if status >= 200 or status == 101:
        parts.append(b"X-HTTPScale-Cold-Start: true\r\n" if cold_start else
                     b"X-HTTPScale-Cold-Start: false\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        parts.append(b"Connection: upgrade\r\nUpgrade: " + upgrade + b"\r\n")
    elif status >= 200 and not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


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


def error_response(
    status: int,
    message: str,
    *,
    close: bool,
    extra: Headers | None = None,
    head_only: bool = False,
) -> bytes:
    """A short text answer the proxy writes itself: it says why, in one line."""
    body = message.encode("utf-8", "replace") + b"\n"
    parts = [
        b"HTTP/1.1 %d %b\r\n" % (status, reason_phrase(status)),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"X-HTTPScale-Cold-Start: false\r\n",
    ]
    for name, value in extra or ():
        parts += (name, b": ", value, b"\r\n")
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)
