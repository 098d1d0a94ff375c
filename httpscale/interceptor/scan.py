"""The splice path's head scans in Python: the twins of, and the reference for, `_scan.c`.

The compiled build uses the C scans (`splice.py` picks them); these run whenever the hot
modules run from source, and tests/unit/test_scan.py holds both to the same answers on
generated and mutated heads. Each scan finds whether a head can be spliced (forwarded as
received, minus a few lines cut) and where those lines are; it also says whether the message
is whole and checked byte by byte, in which case the proxy does not run llhttp on it.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from httpscale.interceptor.http1 import HOP_BY_HOP

__all__ = ["RequestScan", "ResponseScan", "scan_request_head", "scan_response_head"]


class RequestScan(NamedTuple):
    """What `scan_request_head` (or `_scan.scan_request`) finds in a request it can splice."""

    head_end: int  # where the head ends, its blank line included
    line_end: int  # where the request line ends
    parts: list[bytes]  # the head's bytes without the lines cut (Connection, Keep-Alive, XFF)
    host: bytes  # the Host value (b"": no Host field, or an empty one)
    xff: bytes | None  # the X-Forwarded-For value, if one came
    xfp: bool  # an X-Forwarded-Proto came
    xfh: bool  # an X-Forwarded-Host came
    keep_alive: bool  # no "Connection: close"
    length: int  # the Content-Length; -1: none
    method: bytes  # the method when it is one of _CHECKED_METHODS, else b""
    whole: bool  # checked byte by byte against a strict grammar: llhttp need not read it


class ResponseScan(NamedTuple):
    """What `scan_response_head` (or `_scan.scan_response`) finds in a response it can splice."""

    end: int  # where the head's blank line starts
    status: int
    content_length: bool  # a Content-Length field came
    # The Connection and Keep-Alive lines to cut: offsets in `data`, each with its CRLF
    # (0 and 0 when absent).
    cut1: int
    cut1_end: int
    cut2: int
    cut2_end: int
    close: bool  # Connection said close
    # Where the body starts when the response is whole (checked byte by byte, its body all
    # in this read, so that the proxy need not run llhttp on it); else -1.
    body_at: int


#: `bytes.split` itself: calling it skips the method lookup by name that `data.split(...)`
#: costs per call in compiled code (mypyc has no native `bytes.split`).
_split: Final = bytes.split

# Reads up to this size are split whole by `scan_response_head` (SPLIT_WHOLE in _scan.c).
_SPLIT_WHOLE: Final = 2048

# Request fields that keep a request off the splice path: chunked framing, upgrades,
# expectations and hop-by-hop fields other than Connection and Keep-Alive.
_UNSPLICED_REQUEST_FIELDS: Final = (HOP_BY_HOP - {b"connection", b"keep-alive"}) | {b"expect"}

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
    return RequestScan(
        len(head), len(request_line), parts, host, xff, xfp, xfh, keep_alive, length, method,
        whole,
    )



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
            return ResponseScan(
                at, status, content_length, cut1, cut1_end, cut2, cut2_end, close, body_at
            )
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

