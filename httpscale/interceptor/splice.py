"""The splice path: a head forwarded as received, minus its hop-by-hop lines.

Nearly every request and response is spliced: a scan of the raw head (`_scan.c` in the
compiled build, its twin in `scan.py` otherwise) finds the few lines to cut and the facts the
proxy needs, and the head goes on as slices of the bytes read, with what the proxy adds.
Cutting one or two lines out of the received bytes costs a fraction of turning every header
into Python objects and joining them again (the full pass, `heads.py`). Anything unusual is
left to the full pass, whose answers for refusals (400, 414, 431) stay the only ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from httpscale.interceptor.heads import RequestInfo, ResponseInfo, without_fields
from httpscale.interceptor.http1 import Headers
from httpscale.interceptor.scan import (
    RequestScan,
    ResponseScan,
    scan_request_head,
    scan_response_head,
)

__all__ = ["SplicedRequest", "SplicedResponse", "splice_request", "splice_response"]

_NO_FIELDS: Final[Headers] = []  # shared, never modified: a spliced request parses its own


class SplicedRequest(RequestInfo):
    """A request head passed on as the client wrote it, minus its hop-by-hop lines, plus the
    X-Forwarded-* fields. Made by `splice_request` before the parser runs (see there)."""

    __slots__ = ("_data", "_line", "keep_alive", "method", "whole")

    def __init__(self, data: bytes, found: RequestScan) -> None:
        length = found.length
        super().__init__(
            _NO_FIELDS, found.parts, found.host, True, found.xff, found.xfp, found.xfh, False,
            False, length if length > 0 else 0, None,
        )
        # The whole body is in this read: the parser hands it over before the read is done.
        self.body_in_read = length > 0
        head_end = found.head_end
        # The whole head as read (held requests keep one object, not lines).
        self._data = data if head_end == len(data) else data[:head_end]
        self._line = data[: found.line_end]  # the request line
        # Known from the lines, so the parser need not be asked (each ask is a Python call):
        # HTTP/1.1 is keep-alive unless Connection says close; the method, when it is one
        # of the usual seven (b"": ask the parser).
        self.keep_alive = found.keep_alive
        self.method = found.method
        # Checked byte by byte and all in this read: llhttp is not run on it (see
        # ClientConnection.data_received).
        self.whole = found.whole

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

    def replace_fields(self, names: frozenset[bytes], fields: Headers) -> None:
        # Traced requests only: the request line, then the received lines minus `names`.
        block = b"".join(self.parts)
        line_end = block.find(b"\r\n") + 2
        self.parts = [block[:line_end], *without_fields(block[line_end:], names, fields)]

    def head(self, method: bytes, target: bytes, client_ip: bytes, https: bool = False) -> bytes:
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
        elif https:
            parts.append(b"\r\nX-Forwarded-Proto: https\r\n")
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


def splice_request(
    data: bytes, max_line: int, max_fields_bytes: int, max_fields: int
) -> SplicedRequest | None:
    """The request that `data` holds, ready to splice; None when it needs the full pass.

    Spliced: `data` is exactly one whole HTTP/1.1 request: a head, and the body its one
    Content-Length announces if any (no Transfer-Encoding), not CONNECT, not an upgrade, no
    Expect, within the limits, with one non-empty Host and at most one X-Forwarded-For, and no
    hop-by-hop field but one Connection (keep-alive or close) and Keep-Alive. That is a
    browser's GET or an API client's small POST on a keep-alive connection; anything else
    (chunked or larger bodies, pipelined or split reads, odd fields, no Host) takes the full
    pass.

    As with responses, the result is used only after llhttp accepted the head: then the line
    structure found here is the one llhttp parsed (CRLF only, no folding, no space before a
    colon), and the request line is `method SP target SP HTTP/1.1`. Except when it is
    `whole`: the scan checked every byte against a grammar stricter than llhttp's, and the
    proxy runs its parser callbacks itself (one pass over the head instead of two).
    """
    found = _SCAN_REQUEST(data, max_line, max_fields_bytes, max_fields)
    # Without a Host (or with an empty one) the full pass decides: an HTTP/1.1 request
    # without one is refused there (RFC 9112 §3.2).
    if found is None or not found.host:
        return None
    return SplicedRequest(data, found)


class SplicedResponse(ResponseInfo):
    """A response head passed on as the upstream wrote it, minus its hop-by-hop lines.

    Made by `splice_response` from the read that starts a response, before the parser runs;
    the parser then only validates and frames it (no per-header callbacks).
    """

    __slots__ = ("body_at", "keep_alive", "status")

    def __init__(self, parts: list[bytes], content_length: bool, status: int) -> None:
        super().__init__(parts, False, content_length, False)
        self.status = status  # from the status line's three digits (llhttp checks them)
        # Where the body starts when the response is whole (checked byte by byte, its body
        # all in this read): llhttp is not run on it (UpstreamConnection.data_received).
        self.body_at = -1
        self.keep_alive = True  # the upstream may reuse the connection (whole responses)


def splice_response(data: bytes) -> SplicedResponse | None:
    """The head of the response that `data` starts with, ready to splice; None when it needs
    the full header pass (`heads.read_response`).

    Spliced: an HTTP/1.1 final response with a reason phrase whose head is whole in `data`,
    with no hop-by-hop field but at most one Connection (keep-alive or close) and any
    Keep-Alive, and no Transfer-Encoding. That is nearly every response of a keep-alive
    upstream; anything else (interim or 101, chunked, trailers announced, Connection naming
    other fields, a head split across reads) takes the full pass.

    `data` is not validated yet: the result is used only once llhttp accepted the head, and
    llhttp is strict (CRLF only, no folding, no space before a colon), so then the first
    CRLFCRLF is the end of the head and every CRLF in it ends a header line. Except when
    `body_at` is set: the response is whole and was checked byte by byte (see
    `scan.scan_response_head`), and the proxy runs its parser callbacks itself.
    """
    found = _SCAN_RESPONSE(data)
    if found is None:
        return None
    spliced = _spliced_response(data, found)
    if found.body_at >= 0:
        spliced.body_at = found.body_at
        spliced.keep_alive = not found.close
    return spliced


def _spliced_response(data: bytes, found: ResponseScan) -> SplicedResponse:
    # The head is data[:end]; the cut lines are left out by slicing around them (the slices
    # go into the one join that builds the head, with what the proxy adds).
    end = found.end
    cut1 = found.cut1
    cut2 = found.cut2
    if not cut1 and not cut2:
        parts = [data[:end]]
    elif not cut2:
        parts = [data[:cut1], data[found.cut1_end : end]]
    elif not cut1:
        parts = [data[:cut2], data[found.cut2_end : end]]
    elif cut1 < cut2:
        parts = [data[:cut1], data[found.cut1_end : cut2], data[found.cut2_end : end]]
    else:
        parts = [data[:cut2], data[found.cut2_end : cut1], data[found.cut1_end : end]]
    return SplicedResponse(parts, found.content_length, found.status)


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
