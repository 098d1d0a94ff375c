"""Pure HTTP/1.1 helpers for the proxy: header rewriting, heads, chunk framing, error answers.

No I/O here. httptools (llhttp) does the parsing and already refuses the classic smuggling
shapes (Content-Length with Transfer-Encoding, duplicate Content-Length, a Transfer-Encoding
whose last coding is not chunked); `check_request_framing` re-checks them so that a parser
leniency can never turn into a desync between us and the upstream.
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = [
    "HOP_BY_HOP",
    "FramingError",
    "Headers",
    "check_request_framing",
    "chunk",
    "connection_tokens",
    "error_response",
    "last_chunk",
    "reason_phrase",
    "request_head",
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


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Lower-cased tokens of every Connection header (they name more hop-by-hop headers)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    tokens.discard(b"")
    return frozenset(tokens)


def check_request_framing(headers: Headers) -> None:
    """Raise FramingError for a request whose body length two parties could read differently."""
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            lengths.append(value.strip())
        elif lname == b"transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(b","))
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


def _forwardable(headers: Headers, extra_hop: frozenset[bytes]) -> Headers:
    return [
        (n, v) for n, v in headers if (ln := n.lower()) not in HOP_BY_HOP and ln not in extra_hop
    ]


def request_head(
    method: bytes,
    target: bytes,
    headers: Headers,
    *,
    client_ip: str,
    chunked: bool,
    upgrade: bytes | None,
) -> bytes:
    """The head sent upstream: hop-by-hop headers dropped, X-Forwarded-* added, Host kept."""
    conn_tokens = connection_tokens(headers)
    out = _forwardable(headers, conn_tokens)
    xff_index = -1
    has_proto = has_host = False
    for i, (name, _value) in enumerate(out):
        lname = name.lower()
        if lname == b"x-forwarded-for":
            xff_index = i
        elif lname == b"x-forwarded-proto":
            has_proto = True
        elif lname == b"x-forwarded-host":
            has_host = True
    ip = client_ip.encode()
    if xff_index >= 0:
        # Append to the last X-Forwarded-For (a list header); earlier hops stay as they were.
        name, value = out[xff_index]
        out[xff_index] = (name, value + b", " + ip)
    else:
        out.append((b"X-Forwarded-For", ip))
    if not has_proto:
        out.append((b"X-Forwarded-Proto", b"http"))
    if not has_host:
        host = next((v for n, v in headers if n.lower() == b"host"), None)
        if host is not None:
            out.append((b"X-Forwarded-Host", host))
    if chunked:
        out.append((b"Transfer-Encoding", b"chunked"))
    if upgrade is not None:
        out.append((b"Connection", b"upgrade"))
        out.append((b"Upgrade", upgrade))
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in out:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def response_head(
    status: int,
    reason: bytes,
    headers: Headers,
    *,
    chunked: bool,
    keep_alive: bool,
    cold_start: bool,
    upgrade: bytes | None = None,
) -> bytes:
    """The head sent to the client. `chunked` re-frames a body whose length is not known."""
    out = _forwardable(headers, connection_tokens(headers))
    parts = [b"HTTP/1.1 ", str(status).encode(), b" ", reason or reason_phrase(status), b"\r\n"]
    for name, value in out:
        parts += (name, b": ", value, b"\r\n")
    if status >= 200 or status == 101:
        parts.append(b"X-HTTPScale-Cold-Start: true\r\n" if cold_start else
                     b"X-HTTPScale-Cold-Start: false\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        parts += (b"Connection: upgrade\r\nUpgrade: ", upgrade, b"\r\n")
    elif status >= 200 and not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Headers) -> bytes:
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
