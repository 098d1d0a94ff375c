"""Pure HTTP/1.1 helpers for the proxy: header rewriting, heads, chunk framing, error answers.

No I/O here. httptools (llhttp) does the parsing and already refuses the classic smuggling
shapes (Content-Length with Transfer-Encoding, duplicate Content-Length, a Transfer-Encoding
whose last coding is not chunked); `RequestInfo` re-checks them so that a parser leniency can
never turn into a desync between us and the upstream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Final

__all__ = [
    "HOP_BY_HOP",
    "FramingError",
    "Headers",
    "RequestInfo",
    "ResponseInfo",
    "SplicedRequest",
    "SplicedResponse",
    "chunk",
    "connection_field",
    "error_response",
    "last_chunk",
    "reason_phrase",
    "splice_request",
    "splice_response",
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
    """The request's message framing is ambiguous or invalid: answer 400 and close."""


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


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
# Status codes as bytes, for status lines built without %-formatting.
_STATUS_BYTES: Final = tuple(b"%d" % n for n in range(1000))


class RequestInfo:
    """What one pass over a request's headers found, and its forwardable header block.

    One pass, no per-header allocation in the common case: this runs for every request.
    """

    __slots__ = (
        "_fields", "_head", "body_in_read", "chunked", "connection", "content_length", "host",
        "parts", "upgrade", "xff", "xfh", "xfp",
    )

    def __init__(self, headers: Headers) -> None:
        self._fields = headers
        # The whole body came in the read that held the head, so the parser hands it over
        # before this read is done (set by `splice_request` only).
        self.body_in_read = False
        # The head sent upstream is one join: four slots for the request line, then headers.
        parts: list[bytes] = [b"", b" ", b"", b" HTTP/1.1\r\n"]
        lengths: list[bytes] = []
        codings: list[bytes] = []
        tokens: list[bytes] = []
        self.host = b""
        self.upgrade: bytes | None = None
        self.xff: bytes | None = None
        self.xfp = self.xfh = False
        self.connection = False  # a Connection header was sent
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
                self.host = value
            elif kind == _LENGTH:
                lengths.append(value.strip())
            elif kind == _CODING:
                codings.extend(c.strip().lower() for c in value.split(b","))
                continue
            elif kind == _CONNECTION:
                self.connection = True
                lvalue = value.lower()
                if lvalue not in _COMMON_CONNECTION:  # "keep-alive"/"close": nothing to parse
                    tokens.extend(t.strip() for t in lvalue.split(b","))
                elif lvalue == b"upgrade":
                    tokens.append(lvalue)
                continue
            elif kind == _UPGRADE:
                self.upgrade = value
                continue
            elif kind == _XFF:
                # Appended to below; several headers are one comma-separated list.
                self.xff = value if self.xff is None else self.xff + b", " + value
                continue
            elif kind == _XFP:
                self.xfp = True
            elif kind == _XFH:
                self.xfh = True
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
            parts = parts[:4] + [
                n + b": " + v + b"\r\n"
                for n, v in headers
                if (ln := n.lower()) not in HOP_BY_HOP and ln != b"x-forwarded-for"
                and ln not in extra
            ]
        self.parts = parts
        self._head: bytes | None = None

    def fields(self) -> Headers:
        """The request's header fields as received (header routing, the placeholder)."""
        return self._fields

    def head(self, method: bytes, target: bytes, client_ip: bytes) -> bytes:
        """The head sent upstream: hop-by-hop headers dropped, X-Forwarded-* added, Host kept.

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
            parts.append(b"X-Forwarded-Proto: http\r\n")
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


class SplicedRequest(RequestInfo):
    """A request head passed on as the client wrote it, minus its hop-by-hop lines, plus the
    X-Forwarded-* fields. Made by `splice_request` before the parser runs (see there)."""

    __slots__ = ("_data", "_line", "keep_alive", "method", "whole")

    def __init__(
        self, data: bytes, line: bytes, parts: list[bytes], host: bytes, xff: bytes | None,
        xfp: bool, xfh: bool, keep_alive: bool, method: bytes, whole: bool,
    ) -> None:
        self._data = data  # the whole head as read (held requests keep one object, not lines)
        self._line = line  # the request line
        # Known from the lines, so the parser need not be asked (each ask is a Python call):
        # HTTP/1.1 is keep-alive unless Connection says close; the method, when it is one
        # of the usual seven (b"": ask the parser).
        self.keep_alive = keep_alive
        self.method = method
        # Checked byte by byte and all in this read: llhttp is not run on it (see
        # ClientConnection.data_received).
        self.whole = whole
        self.parts = parts
        self.host = host
        self.xff = xff
        self.xfp = xfp
        self.xfh = xfh
        self.chunked = False
        self.content_length = 0
        self.body_in_read = False
        self.upgrade = None
        self.connection = False
        self._head = None

    def fields(self) -> Headers:
        # Parsed only when asked for (rare: header routing is off the splice path; a
        # placeholder page looks at Accept).
        out: Headers = []
        for line in self._data.split(b"\r\n")[1:-2]:
            colon = line.find(b":")
            out.append((line[:colon], line[colon + 1 :].strip(b" \t")))
        return out

    def target(self, method: bytes) -> bytes:
        """The request target, once llhttp accepted `method SP target SP HTTP/1.1`."""
        return self._line[len(method) + 1 : -9]

    def head(self, method: bytes, target: bytes, client_ip: bytes) -> bytes:
        """The head sent upstream: the request line and fields as received, then ours."""
        if self._head is not None:
            return self._head
        parts = self.parts
        if self.xff is None:
            parts.append(b"X-Forwarded-For: ")
        else:
            parts.append(b"X-Forwarded-For: " + self.xff + b", ")
        parts.append(client_ip)
        if self.xfp:
            parts.append(b"\r\n")
        else:
            parts.append(b"\r\nX-Forwarded-Proto: http\r\n")
        if not self.xfh and self.host:
            parts.append(b"X-Forwarded-Host: ")
            parts.append(self.host)
            parts.append(b"\r\n\r\n")
        else:
            parts.append(b"\r\n")
        head = self._head = b"".join(parts)
        self.parts = []
        return head


# Request fields that keep a request off the splice path: chunked framing, upgrades,
# expectations and hop-by-hop fields other than Connection and Keep-Alive.
_UNSPLICED_REQUEST_FIELDS: Final = (HOP_BY_HOP - {b"connection", b"keep-alive"}) | {b"expect"}


def splice_request(
    data: bytes, max_line: int, max_fields_bytes: int, max_fields: int
) -> SplicedRequest | None:
    """The request that `data` holds, ready to splice; None when it needs the full pass.

    Spliced: `data` is exactly one whole HTTP/1.1 request: a head, and the body its one
    Content-Length announces if any (no Transfer-Encoding), not CONNECT, not an upgrade, no
    Expect, within the limits, with one Host and at most one X-Forwarded-For, and no
    hop-by-hop field but one Connection (keep-alive or close) and Keep-Alive. That is a
    browser's GET or an API client's small POST on a keep-alive connection; anything else
    (chunked or larger bodies, pipelined or split reads, odd fields) takes the full pass, whose
    answers for refusals (400, 414, 431) stay the only ones.

    As with responses, the result is used only after llhttp accepted the head: then the line
    structure found here is the one llhttp parsed (CRLF only, no folding, no space before a
    colon), and the request line is `method SP target SP HTTP/1.1`. Except when it is
    `whole`: the scan checked every byte against a grammar stricter than llhttp's, and the
    proxy runs its parser callbacks itself (one pass over the head instead of two).
    """
    found = _SCAN_REQUEST(data, max_line, max_fields_bytes, max_fields)
    if found is None:
        return None
    head_end, line_end, parts, host, xff, xfp, xfh, keep_alive, length, method, whole = found
    head = data if head_end == len(data) else data[:head_end]
    spliced = SplicedRequest(
        head, data[:line_end], parts, host, xff, xfp, xfh, keep_alive, method, whole
    )
    if length > 0:
        spliced.content_length = length
        spliced.body_in_read = True
    return spliced


#: What `scan_request_head` finds: where the head ends (its blank line included) and where
#: its request line ends, the head's bytes without the lines cut (Connection, Keep-Alive,
#: X-Forwarded-For), the Host value, the X-Forwarded-For value if one came, whether
#: X-Forwarded-Proto and -Host came, keep-alive, the Content-Length (-1: none), the method
#: when it is one of _CHECKED_METHODS (else b""), and whether the request is whole: checked
#: byte by byte against a strict grammar, so that the proxy need not run llhttp on it.
RequestScan = tuple[
    int, int, list[bytes], bytes, bytes | None, bool, bool, bool, int, bytes, bool
]

# -- The strict check of a whole message (as in _scan.c) ----------------------------------------
# A message found whole (its head and the body its one Content-Length announces, all in one
# read) and checked here skips llhttp: the proxy calls its own parser callbacks. The grammar
# is a strict subset of what llhttp accepts (RFC 9110 tokens for names, printable ASCII for
# values, CRLF only), so a checked message is one llhttp reads the same way
# (tests/unit/test_whole.py holds both scans to that). Anything else still goes through llhttp.

_CHECKED_METHODS: Final = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}
)
#: An origin-form target and the version: what follows the method's space.
_CHECKED_TARGET: Final = re.compile(rb"/[\x21-\x7e]* HTTP/1\.1")
#: The field lines and the blank line of a head.
_CHECKED_FIELDS: Final = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n)*\r\n")
#: A status line a checked body may follow (after "HTTP/1.1 ").
_CHECKED_STATUS: Final = re.compile(rb"[2-5][0-9][0-9] [\t\x20-\x7e]+")


def scan_request_head(
    data: bytes, max_line: int, max_fields_bytes: int, max_fields: int
) -> RequestScan | None:
    """`splice_request`'s look at the head, in Python: the reference for, and the fallback
    of, the same scan in C (`_scan.c`), which the compiled build uses."""
    if data.endswith(b"\r\n\r\n"):
        head = data  # a bodiless request (or several, which the loop below turns away)
    else:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = data[: end + 4]  # the rest must be the body its Content-Length announces
    if len(head) > max_fields_bytes:
        return None
    lines = _split(head, b"\r\n")  # ends with the blank line and b""
    count = len(lines) - 2
    line = lines[0]
    if (
        len(line) > max_line
        or count > max_fields + 1
        or not line.endswith(b" HTTP/1.1")
        or line.startswith(b"CONNECT ")
    ):
        return None
    host = b""
    xff: bytes | None = None
    xfp = xfh = False
    keep_alive = True
    length = -1  # the Content-Length, if one was sent
    connection = False  # a Connection field was seen
    parts: list[bytes] = []  # the head without the lines cut, as slices of `data`
    kept = 0  # where the bytes not yet in `parts` start
    at = len(line) + 2  # where the current line starts
    for i in range(1, count):
        line = lines[i]
        n = len(line)
        if n == 0:
            return None  # more than one request in this read: the full pass
        cut = False
        first = line[0] | 32  # the name's first letter, lower-cased
        if first == 104:  # h
            if line.startswith(b"Host:") or _named(line, b"host"):
                if host:
                    return None
                last = line[n - 1]
                if (
                    n > 6 and line[5] == 32 and line[6] != 32 and line[6] != 9 and last != 32
                    and last != 9
                ):
                    host = line[6:]  # "Host: value", as nearly every client sends it
                else:
                    host = line[5:].strip(b" \t")
        elif first == 120:  # x
            if _named(line, b"x-forwarded-for"):
                if xff is not None:
                    return None
                xff = line[16:].strip(b" \t")
                cut = True  # sent again below, with the client's address appended
            elif _named(line, b"x-forwarded-proto"):
                xfp = True
            elif _named(line, b"x-forwarded-host"):
                xfh = True
        elif first == 99:  # c
            if line == b"Connection: keep-alive" or _named(line, b"connection"):
                if connection:
                    return None  # several Connection fields: llhttp's reading decides
                connection = cut = True
                token = _connection_token(line)
                if token == b"close":
                    keep_alive = False
                elif token != b"keep-alive":
                    return None  # upgrade, or fields named hop-by-hop: the full pass
            elif line.startswith(b"Content-Length:") or _named(line, b"content-length"):
                if length >= 0:
                    return None  # several: the full pass
                length = _plain_length(line)
                if length < 0:
                    return None  # not a plain number: the full pass refuses it
        elif first == 107:  # k
            cut = _named(line, b"keep-alive")
        elif first == 116 or first == 112 or first == 101 or (
            first == 117 and not line.startswith(b"User-Agent:")
        ):  # t, p, e, u
            if line[: line.find(b":")].lower() in _UNSPLICED_REQUEST_FIELDS:
                return None
        if cut:
            parts.append(data[kept:at])
            kept = at + n + 2
        at += n + 2
    if len(data) != len(head) + max(length, 0):
        return None  # the body is not all here, or more follows it: the full pass
    parts.append(head[kept:at] if kept else head[:-2])
    request_line = lines[0]
    space = request_line.find(b" ")
    method = request_line[:space]
    if method not in _CHECKED_METHODS:
        method = b""
    # Whole: checked byte by byte, so llhttp need not read it (see _CHECKED_FIELDS).
    whole = bool(method) and _CHECKED_TARGET.fullmatch(request_line, space + 1) is not None and (
        _CHECKED_FIELDS.fullmatch(head, len(request_line) + 2) is not None
    )
    return (
        len(head), len(request_line), parts, host, xff, xfp, xfh, keep_alive, length, method,
        whole,
    )


class ResponseInfo:
    """One pass over a response's headers: framing facts, then the client's head (`head`)."""

    __slots__ = ("chunked", "content_length", "parts", "status_slots")

    def __init__(self, headers: Headers) -> None:
        self.status_slots = True  # parts[1] and parts[3] wait for the status and reason
        # One join builds the head: five slots for the status line, then the headers.
        parts: list[bytes] = [b"HTTP/1.1 ", b"", b" ", b"", b"\r\n"]
        tokens: list[bytes] = []
        self.chunked = self.content_length = False
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
                    self.content_length = True
                parts.append(name)
                parts.append(b": ")
                parts.append(value)
                parts.append(b"\r\n")
            elif kind == _CODING:
                self.chunked = True
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
        self.parts = parts

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


class SplicedResponse(ResponseInfo):
    """A response head passed on as the upstream wrote it, minus its hop-by-hop lines.

    Made by `splice_response` from the read that starts a response, before the parser runs;
    the parser then only validates and frames it (no per-header callbacks). Cutting one or
    two lines out of the received bytes costs a fraction of turning every header into Python
    objects and joining them again.
    """

    __slots__ = ("body_at", "keep_alive", "status")

    def __init__(self, parts: list[bytes], content_length: bool, status: int) -> None:
        self.parts = parts
        self.status_slots = False
        self.chunked = False
        self.content_length = content_length
        self.status = status  # from the status line's three digits (llhttp checks them)
        # Where the body starts when the response is whole (checked byte by byte, its body
        # all in this read): llhttp is not run on it (UpstreamConnection.data_received).
        self.body_at = -1
        self.keep_alive = True  # the upstream may reuse the connection (whole responses)


def splice_response(data: bytes) -> SplicedResponse | None:
    """The head of the response that `data` starts with, ready to splice; None when it needs
    the full header pass (ResponseInfo).

    Spliced: an HTTP/1.1 final response with a reason phrase whose head is whole in `data`,
    with no hop-by-hop field but at most one Connection (keep-alive or close) and any
    Keep-Alive, and no Transfer-Encoding. That is nearly every response of a keep-alive
    upstream; anything else (interim or 101, chunked, trailers announced, Connection naming
    other fields, a head split across reads) takes the full pass.

    `data` is not validated yet: the result is used only once llhttp accepted the head, and
    llhttp is strict (CRLF only, no folding, no space before a colon), so then the first
    CRLFCRLF is the end of the head and every CRLF in it ends a header line. Except when
    `body_at` is set: the response is whole and was checked byte by byte (see
    `scan_response_head`), and the proxy runs its parser callbacks itself.
    """
    found = _SCAN_RESPONSE(data)
    if found is None:
        return None
    end, status, content_length, cut1, cut1_end, cut2, cut2_end, close, body_at = found
    spliced = _spliced_response(
        data, end, status, content_length, cut1, cut1_end, cut2, cut2_end
    )
    if body_at >= 0:
        spliced.body_at = body_at
        spliced.keep_alive = not close
    return spliced


#: What `scan_response_head` finds: the head's end (where its blank line starts), the status,
#: whether a Content-Length was seen, the Connection and Keep-Alive lines to cut (offsets
#: in `data`, each with its CRLF; 0 and 0 when absent), whether Connection said close, and
#: where the body starts when the response is whole (checked byte by byte and all in this
#: read, so that the proxy need not run llhttp on it; else -1).
ResponseScan = tuple[int, int, bool, int, int, int, int, bool, int]


def scan_response_head(data: bytes) -> ResponseScan | None:
    """`splice_response`'s look at the head, in Python: the reference for, and the fallback
    of, the same scan in C (`_scan.c`), which the compiled build uses."""
    # One split, then a look at each line's first letter (every `bytes.find` is a scan of the
    # whole head, and a dozen of them cost more than the callbacks saved). A small read is
    # split whole, its body too: one call instead of a search for the head's end and a split.
    if len(data) <= _SPLIT_WHOLE:
        lines = _split(data, b"\r\n")
    else:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = _split(data[: end + 4], b"\r\n")  # ends with the empty line and b""
    status_line = lines[0]
    if (
        len(status_line) <= 13  # "HTTP/1.1 200 " and a reason phrase, or the full pass
        or not status_line.startswith(b"HTTP/1.1 ")
        or status_line[9] == 49  # "1xx": interim or switching protocols
        or status_line[12] != 32
    ):
        return None
    content_length = close = False
    length = -1  # the one Content-Length's value; -2: several, or not a plain number
    # Offsets in `data` of the Connection and Keep-Alive lines to cut, each with its CRLF.
    cut1 = cut1_end = cut2 = cut2_end = 0
    at = len(status_line) + 2  # where the current line starts
    for i in range(1, len(lines)):
        line = lines[i]
        n = len(line)
        if n == 0:
            if i + 1 == len(lines):
                return None  # data ends with a CRLF, not with a blank line: head unfinished
            # The blank line: the end of the head.
            status = (status_line[9] - 48) * 100 + (status_line[10] - 48) * 10 + (
                status_line[11] - 48
            )
            # Whole: the body its Content-Length announces is the rest of this read, and
            # every byte of the head is checked (a status a body may follow, a printable
            # reason, strict fields).
            body_at = -1
            if (
                length >= 0
                and len(data) - (at + 2) == length
                and status != 204
                and status != 304
                and _CHECKED_STATUS.fullmatch(status_line, 9) is not None
                and _CHECKED_FIELDS.fullmatch(data, len(status_line) + 2, at + 2) is not None
            ):
                body_at = at + 2
            return at, status, content_length, cut1, cut1_end, cut2, cut2_end, close, body_at
        first = line[0] | 32  # the name's first letter, lower-cased
        if first == 99:  # c
            if line.startswith(b"Content-Length:") or _named(line, b"content-length"):
                content_length = True
                value = _plain_length(line)
                length = value if length == -1 and value >= 0 else -2
            elif line == b"Connection: keep-alive" or line == b"Connection: close" or (
                _named(line, b"connection")
                and _connection_token(line) in (b"keep-alive", b"close")
            ):
                if cut1:
                    return None  # two Connection fields: the full pass sorts them out
                close = _connection_token(line) == b"close"
                cut1, cut1_end = at, at + n + 2
            elif _named(line, b"connection"):
                return None  # upgrade, or fields named hop-by-hop: the full pass
        elif first == 107:  # k
            if line.startswith(b"Keep-Alive:") or _named(line, b"keep-alive"):
                if cut2:
                    return None
                cut2, cut2_end = at, at + n + 2
        elif first == 112 or first == 116 or first == 117:  # p, t, u
            if line[: line.find(b":")].lower() in HOP_BY_HOP:
                return None
        at += n + 2
    return None  # the head does not end in this read


#: `bytes.split` itself: calling it skips the method lookup by name that `data.split(...)`
#: costs per call in compiled code (mypyc has no native `bytes.split`).
_split: Final = bytes.split

# Reads up to this size are split whole by `scan_response_head` (SPLIT_WHOLE in _scan.c).
_SPLIT_WHOLE: Final = 2048


def _scanners() -> tuple[
    Callable[[bytes], ResponseScan | None], Callable[[bytes, int, int, int], RequestScan | None]
]:
    """The C scans when the compiled build is in use (they are built with it), else Python's."""
    try:
        from httpscale.interceptor import _scan
    except ImportError:  # not built, or the Python source was asked for (httpscale.dataplane)
        return scan_response_head, scan_request_head
    return _scan.scan_response, _scan.scan_request


_SCANNERS: Final = _scanners()
_SCAN_RESPONSE: Final = _SCANNERS[0]
_SCAN_REQUEST: Final = _SCANNERS[1]


def _spliced_response(
    data: bytes, end: int, status: int, content_length: bool, cut1: int, cut1_end: int,
    cut2: int, cut2_end: int,
) -> SplicedResponse:
    # The head is data[:end]; the cut lines are left out by slicing around them (the slices
    # go into the one join that builds the head, with what the proxy adds).
    if not cut1 and not cut2:
        return SplicedResponse([data[:end]], content_length, status)
    if not cut2:
        return SplicedResponse([data[:cut1], data[cut1_end:end]], content_length, status)
    if not cut1:
        return SplicedResponse([data[:cut2], data[cut2_end:end]], content_length, status)
    if cut2 < cut1:
        cut1, cut1_end, cut2, cut2_end = cut2, cut2_end, cut1, cut1_end
    return SplicedResponse(
        [data[:cut1], data[cut1_end:cut2], data[cut2_end:end]], content_length, status
    )


def _plain_length(line: bytes) -> int:
    """A Content-Length line's value when it is a plain number (1 to 15 digits, spaces and
    tabs around it), else -1: anything else, llhttp's refusals included, is left to it."""
    value = line[15:].strip(b" \t")
    return int(value) if value.isdigit() and len(value) <= 15 else -1


def _connection_token(line: bytes) -> bytes:
    return line[11:].strip(b" \t").lower()


def _named(line: bytes, name: bytes) -> bool:
    """Whether a header line is the field `name` (lower-case), in any spelling."""
    n = len(name)
    return len(line) > n and line[n] == 58 and line[:n].lower() == name


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
