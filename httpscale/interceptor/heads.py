"""The full header pass: what a message's head says, and the head the proxy sends on.

`read_request` and `read_response` walk every header field once (this runs for each message
that does not take the splice path, `splice.py`): they note the framing and the fields the
proxy acts on, refuse ambiguous framing, and gather the forwardable fields for the one join
that builds the head sent on. httptools (llhttp) does the parsing and already refuses the
classic smuggling shapes (Content-Length with Transfer-Encoding, duplicate Content-Length, a
Transfer-Encoding whose last coding is not chunked); `read_request` re-checks them so that a
parser leniency can never turn into a desync between us and the upstream.

`RequestInfo` and `ResponseInfo` hold the result; the splice path's `SplicedRequest` and
`SplicedResponse` are the same objects filled from a scan of the raw head instead.
"""

from __future__ import annotations

from typing import Final

from httpscale.interceptor.http1 import (
    HOP_BY_HOP,
    FramingError,
    Headers,
    connection_field,
    reason_phrase,
)

__all__ = ["RequestInfo", "ResponseInfo", "read_request", "read_response", "without_fields"]

# What each header pass does with a header, by name. Both passes run for every proxied
# message, so the name is looked up as it came (the usual spellings are all in the tables,
# with common end-to-end names), and lower-cased only when it is not found.
# (Final: mypyc compiles these to constants; a plain module global is a dict lookup per use.)
_COPY: Final = 0
_DROP: Final = 1
_HOST: Final = 2
_LENGTH: Final = 3
_CODING: Final = 4
_CONNECTION: Final = 5
_UPGRADE: Final = 6
_XFF: Final = 7
_XFP: Final = 8
_XFH: Final = 9

_COMMON_END_TO_END: Final = (
    b"accept", b"accept-encoding", b"accept-language", b"accept-ranges", b"age",
    b"authorization", b"cache-control", b"content-encoding", b"content-language",
    b"content-type", b"cookie", b"date", b"etag", b"expires", b"last-modified", b"location",
    b"origin", b"referer", b"server", b"set-cookie", b"user-agent", b"vary", b"x-request-id",
)


def _by_spelling(kinds: dict[bytes, int]) -> dict[bytes, int]:
    table: dict[bytes, int] = {}
    for name, kind in kinds.items():
        for spelling in (name, name.title(), name.upper()):
            table[spelling] = kind
    return table


_REQUEST_KINDS: Final = _by_spelling(
    dict.fromkeys(_COMMON_END_TO_END, _COPY)
    | dict.fromkeys(HOP_BY_HOP, _DROP)
    | {
        b"host": _HOST,
        b"content-length": _LENGTH,
        b"transfer-encoding": _CODING,
        b"connection": _CONNECTION,
        b"upgrade": _UPGRADE,
        b"x-forwarded-for": _XFF,
        b"x-forwarded-proto": _XFP,
        b"x-forwarded-host": _XFH,
    }
)
_RESPONSE_KINDS: Final = _by_spelling(
    dict.fromkeys(_COMMON_END_TO_END, _COPY)
    | dict.fromkeys(HOP_BY_HOP, _DROP)
    | {b"content-length": _LENGTH, b"transfer-encoding": _CODING, b"connection": _CONNECTION}
)
# Connection header values that need no token parsing (nearly every message has one of them).
_COMMON_CONNECTION: Final = frozenset({b"keep-alive", b"close", b"upgrade"})
# Connection tokens that never name an end-to-end header.
_PLAIN_TOKENS: Final = frozenset({b"close", b"keep-alive", b"upgrade"}) | HOP_BY_HOP


def _special_lengths(kinds: dict[bytes, int]) -> tuple[bool, ...]:
    lengths = {len(name) for name, kind in kinds.items() if kind != _COPY}
    return tuple(n in lengths for n in range(max(lengths) + 1))


# By name length, whether a header may need more than copying: most names are ruled out by
# their length alone, before any hashing (Server, Date, Content-Type, Accept, Cookie, ...).
_REQUEST_SPECIAL_LENGTH: Final = _special_lengths(_REQUEST_KINDS)
_RESPONSE_SPECIAL_LENGTH: Final = _special_lengths(_RESPONSE_KINDS)
# The X-Forwarded-Proto line added when the client sent none, by how it came.
_XFP_HTTP: Final = b"X-Forwarded-Proto: http\r\n"
_XFP_HTTPS: Final = b"X-Forwarded-Proto: https\r\n"
# Status codes as bytes, for status lines built without %-formatting.
_STATUS_BYTES: Final = tuple(b"%d" % n for n in range(1000))


class RequestInfo:
    """What the proxy knows of a request's head, and the head it sends upstream (`head`).

    Made by `read_request` (the full pass) or, as a `splice.SplicedRequest`, by the splice
    path. `parts` holds the forwardable fields as pieces of the head's one join; here, four
    slots for the request line first.
    """

    __slots__ = (
        "_fields", "_head", "body_in_read", "chunked", "connection", "content_length", "has_host",
        "host", "parts", "upgrade", "xff", "xfh", "xfp",
    )

    def __init__(
        self, fields: Headers, parts: list[bytes], host: bytes, has_host: bool,
        xff: bytes | None, xfp: bool, xfh: bool, connection: bool, chunked: bool,
        content_length: int, upgrade: bytes | None,
    ) -> None:
        self._fields = fields
        self.parts = parts
        self.host = host
        self.has_host = has_host  # a Host field came (it may be empty, RFC 9110 §7.2)
        self.xff = xff  # the X-Forwarded-For value received, the client's address goes after
        self.xfp = xfp  # an X-Forwarded-Proto came: kept, none added
        self.xfh = xfh  # likewise X-Forwarded-Host
        self.connection = connection  # a Connection header was sent
        self.chunked = chunked
        self.content_length = content_length
        self.upgrade = upgrade  # the protocol asked for, with "Connection: upgrade" only
        # The whole body came in the read that held the head, so the parser hands it over
        # before this read is done (splice path only).
        self.body_in_read = False
        self._head: bytes | None = None

    def fields(self) -> Headers:
        """The request's header fields as received (header routing, the placeholder)."""
        return self._fields

    def head(self, method: bytes, target: bytes, client_ip: bytes, https: bool = False) -> bytes:
        """The head sent upstream: hop-by-hop headers dropped, X-Forwarded-* added, Host kept.
        `https`: the client came through the TLS listener.

        Built once (a retry on another connection sends the same head).
        """
        if self._head is not None:
            return self._head
        parts = self.parts
        parts[0] = method
        parts[2] = target
        parts.append(b"X-Forwarded-For: ")
        if self.xff is not None:
            parts.append(self.xff)
            parts.append(b", ")
        parts.append(client_ip)
        parts.append(b"\r\n")
        if not self.xfp:
            parts.append(_XFP_HTTPS if https else _XFP_HTTP)
        if not self.xfh and self.host:
            parts.append(b"X-Forwarded-Host: ")
            parts.append(self.host)
            parts.append(b"\r\n")
        if self.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if self.upgrade is not None:
            parts.append(b"Connection: upgrade\r\nUpgrade: " + self.upgrade + b"\r\n")
        parts.append(b"\r\n")
        head = self._head = b"".join(parts)
        self.parts = []
        return head

    def replace_fields(self, names: frozenset[bytes], fields: Headers) -> None:
        """Traced requests only (`exchange_spans.start`): the head sent upstream carries
        `fields` instead of any received field named in `names` (lower-case): the trace
        context fields, so that the upstream's spans are children of the proxy's. Called
        before `head`."""
        parts = self.parts
        self.parts = parts[:4] + without_fields(b"".join(parts[4:]), names, fields)


def without_fields(lines: bytes, names: frozenset[bytes], fields: Headers) -> list[bytes]:
    """Header lines (each CRLF-ended) without those named in `names`, then `fields`'."""
    out = [
        line + b"\r\n"
        for line in lines.split(b"\r\n")[:-1]
        if line[: line.find(b":")].strip().lower() not in names
    ]
    out += [name + b": " + value + b"\r\n" for name, value in fields]
    return out


def read_request(headers: Headers) -> RequestInfo:
    """One pass over a request's header fields; FramingError when the head is ambiguous.

    No per-header allocation in the common case: this runs for every request off the splice
    path.
    """
    # The head sent upstream is one join: four slots for the request line, then headers.
    parts: list[bytes] = [b"", b" ", b"", b" HTTP/1.1\r\n"]
    lengths: list[bytes] = []
    codings: list[bytes] = []
    tokens: list[bytes] = []
    host: bytes | None = None
    upgrade: bytes | None = None
    xff: bytes | None = None
    xfp = xfh = connection = False
    for name, value in headers:
        n = len(name)
        if n >= len(_REQUEST_SPECIAL_LENGTH) or not _REQUEST_SPECIAL_LENGTH[n]:
            kind = _COPY
        else:
            kind = _REQUEST_KINDS.get(name, -1)
            if kind < 0:
                kind = _REQUEST_KINDS.get(name.lower(), _COPY)
        if kind == _COPY:
            pass
        elif kind == _HOST:
            if host is not None:
                # Two Hosts may route here and there (RFC 9112 §3.2: 400, whatever the version).
                raise FramingError("more than one Host header")
            host = value
        elif kind == _LENGTH:
            lengths.append(value.strip())
        elif kind == _CODING:
            codings.extend(c.strip().lower() for c in value.split(b","))
            continue
        elif kind == _CONNECTION:
            connection = True
            lvalue = value.lower()
            if lvalue not in _COMMON_CONNECTION:  # "keep-alive"/"close": nothing to parse
                tokens.extend(t.strip() for t in lvalue.split(b","))
            elif lvalue == b"upgrade":
                tokens.append(lvalue)
            continue
        elif kind == _UPGRADE:
            upgrade = value
            continue
        elif kind == _XFF:
            # Appended to in `head`; several headers are one comma-separated list.
            xff = value if xff is None else xff + b", " + value
            continue
        elif kind == _XFP:
            xfp = True
        elif kind == _XFH:
            xfh = True
        else:
            continue  # hop-by-hop: dropped
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
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
    if upgrade is not None and b"upgrade" not in tokens:
        upgrade = None  # Upgrade without "Connection: upgrade" is no upgrade request
    # (The comprehension runs only when there are tokens: in CPython 3.11 each one builds a
    # function object, measurable per request.)
    extra = [t for t in tokens if t and t not in _PLAIN_TOKENS] if tokens else None
    if extra:
        # Headers the client marked hop-by-hop through Connection (rare): copy again
        # without them (the loop above keeps no per-header names, to stay cheap).
        parts = parts[:4] + [
            n + b": " + v + b"\r\n"
            for n, v in headers
            if (ln := n.lower()) not in HOP_BY_HOP and ln != b"x-forwarded-for"
            and ln not in extra
        ]
    return RequestInfo(
        headers, parts, b"" if host is None else host, host is not None, xff, xfp, xfh,
        connection, bool(codings), int(lengths[0]) if lengths else 0, upgrade,
    )


class ResponseInfo:
    """What the proxy knows of a response's head, and the head it sends the client.

    Made by `read_response` (the full pass) or, as a `splice.SplicedResponse`, by the splice
    path. The head is completed by `prepare` and joined with the first body bytes by
    `finish`, or both at once by `head`.
    """

    __slots__ = ("chunked", "content_length", "parts", "status_slots")

    def __init__(
        self, parts: list[bytes], chunked: bool, content_length: bool, status_slots: bool
    ) -> None:
        self.parts = parts
        self.chunked = chunked
        self.content_length = content_length  # a Content-Length field came
        # parts[1] and parts[3] wait for the status and reason (a spliced head has its own)
        self.status_slots = status_slots

    def head(
        self,
        status: int,
        reason: bytes,
        *,
        chunked: bool,
        keep_alive: bool,
        cold_start: bool,
        upgrade: bytes | None = None,
    ) -> bytes:
        """The head sent to the client (once). `chunked` re-frames a body of unknown length."""
        self.prepare(status, reason, chunked=chunked, keep_alive=keep_alive,
                     cold_start=cold_start, upgrade=upgrade)
        return self.finish(b"")

    def prepare(
        self,
        status: int,
        reason: bytes,
        *,
        chunked: bool,
        keep_alive: bool,
        cold_start: bool,
        upgrade: bytes | None = None,
        http10: bool = False,
    ) -> None:
        """Complete the head's parts; `finish` joins them with the first body bytes.

        `http10`: the client spoke HTTP/1.0, whose connections close unless the response
        says `Connection: keep-alive` (RFC 9112 §9.3): a kept one is announced.
        """
        parts = self.parts
        if self.status_slots:  # a spliced head carries the upstream's own status line
            parts[1] = _STATUS_BYTES[status] if 0 <= status < 1000 else b"%d" % status
            parts[3] = reason or reason_phrase(status)
        # What the proxy adds to every response head it forwards, then the blank line.
        if status >= 200 or status == 101:
            parts.append(b"X-HTTPScale-Cold-Start: true\r\n" if cold_start else
                         b"X-HTTPScale-Cold-Start: false\r\n")
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if upgrade is not None:
            parts.append(b"Connection: upgrade\r\nUpgrade: " + upgrade + b"\r\n")
        elif status >= 200 and (http10 or not keep_alive):
            parts.append(connection_field(keep_alive=keep_alive, http10=http10))
        parts.append(b"\r\n")

    def finish(self, body: bytes) -> bytes:
        """The prepared head, and `body` after it: a small response leaves in one write, made
        with one join (once)."""
        parts, self.parts = self.parts, []
        if body:
            parts.append(body)
        return b"".join(parts)


def read_response(headers: Headers) -> ResponseInfo:
    """One pass over a response's header fields: its framing, and the fields sent on."""
    # One join builds the head: five slots for the status line, then the headers.
    parts: list[bytes] = [b"HTTP/1.1 ", b"", b" ", b"", b"\r\n"]
    tokens: list[bytes] = []
    chunked = content_length = False
    for name, value in headers:
        n = len(name)
        if n >= len(_RESPONSE_SPECIAL_LENGTH) or not _RESPONSE_SPECIAL_LENGTH[n]:
            kind = _COPY
        else:
            kind = _RESPONSE_KINDS.get(name, -1)
            if kind < 0:
                kind = _RESPONSE_KINDS.get(name.lower(), _COPY)
        if kind == _COPY or kind == _LENGTH:
            if kind == _LENGTH:
                content_length = True
            parts.append(name)
            parts.append(b": ")
            parts.append(value)
            parts.append(b"\r\n")
        elif kind == _CODING:
            chunked = True
        elif kind == _CONNECTION:
            lvalue = value.lower()
            if lvalue not in _COMMON_CONNECTION:
                tokens.extend(t.strip() for t in lvalue.split(b","))
    extra = [t for t in tokens if t and t not in _PLAIN_TOKENS] if tokens else None
    if extra:
        parts = parts[:5] + [
            n + b": " + v + b"\r\n"
            for n, v in headers
            if (ln := n.lower()) not in HOP_BY_HOP and ln not in extra
        ]
    return ResponseInfo(parts, chunked, content_length, True)
