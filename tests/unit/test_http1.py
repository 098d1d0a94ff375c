"""The header passes of http1 against a plain reference implementation.

The passes classify a name as it came and lower-case it only when the tables do not know that
spelling, and rule names out by length first; whatever the spelling, the result must be what
a straightforward lower-case comparison gives.
"""

from __future__ import annotations

import itertools
import random

import pytest

from httpscale.interceptor.http1 import HOP_BY_HOP, RequestInfo, ResponseInfo

_SPECIAL = [
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"content-length", b"host",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
]
_PLAIN = [b"server", b"date", b"content-type", b"x-custom", b"tee", b"upgrade-insecure-requests",
          b"connections", b"x-forwarded", b"accept", b"a" * 40]


def _spellings(name: bytes, rng: random.Random) -> list[bytes]:
    mixed = bytes(c - 32 if 97 <= c <= 122 and rng.random() < 0.5 else c for c in name)
    return [name, name.upper(), name.title(), mixed]


def _response_reference(headers: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(n + b": " + v + b"\r\n" for n, v in headers if n.lower() not in HOP_BY_HOP)


def _request_reference(headers: list[tuple[bytes, bytes]]) -> bytes:
    dropped = HOP_BY_HOP | {b"x-forwarded-for"}
    return b"".join(n + b": " + v + b"\r\n" for n, v in headers if n.lower() not in dropped)


@pytest.mark.parametrize("seed", range(20))
def test_response_pass_matches_reference_for_any_spelling(seed: int) -> None:
    rng = random.Random(seed)
    names = [s for n in _SPECIAL + _PLAIN for s in _spellings(n, rng)
             if n not in (b"transfer-encoding", b"content-length", b"host")]
    headers = [(n, b"v%d" % i) for i, n in enumerate(rng.sample(names, 12))]
    headers = [(n, b"keep-alive" if n.lower() == b"connection" else v) for n, v in headers]
    head = ResponseInfo(headers).head(200, b"OK", chunked=False, keep_alive=True,
                                      cold_start=False)
    assert head == (b"HTTP/1.1 200 OK\r\n" + _response_reference(headers)
                    + b"X-HTTPScale-Cold-Start: false\r\n\r\n")


@pytest.mark.parametrize("seed", range(20))
def test_request_pass_matches_reference_for_any_spelling(seed: int) -> None:
    rng = random.Random(seed)
    names = [s for n in _SPECIAL + _PLAIN for s in _spellings(n, rng)
             if n not in (b"transfer-encoding", b"content-length", b"upgrade", b"connection",
                          b"x-forwarded-proto", b"x-forwarded-host")]
    headers = [(n, b"v%d" % i) for i, n in enumerate(rng.sample(names, 12))]
    info = RequestInfo(headers)
    head = info.head(b"GET", b"/x", b"10.0.0.1")
    block = head.split(b"\r\n", 1)[1]
    assert block.startswith(_request_reference(headers))
    xffs = [v for n, v in headers if n.lower() == b"x-forwarded-for"]
    assert b"X-Forwarded-For: " + b", ".join([*xffs, b"10.0.0.1"]) + b"\r\n" in block
    hosts = [v for n, v in headers if n.lower() == b"host"]
    assert info.host == (hosts[-1] if hosts else b"")


def test_framing_headers_found_in_any_spelling() -> None:
    for name in (b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"cOnTeNt-LeNgTh"):
        assert RequestInfo([(name, b"5")]).content_length == 5
        assert ResponseInfo([(name, b"5")]).content_length
    for name in (b"Transfer-Encoding", b"TRANSFER-ENCODING", b"tRaNsFeR-eNcOdInG"):
        assert RequestInfo([(name, b"chunked")]).chunked
        assert ResponseInfo([(name, b"chunked")]).chunked


def test_connection_tokens_drop_named_headers() -> None:
    headers = [(b"X-Secret", b"1"), (b"CONNECTION", b"keep-alive, X-Secret"), (b"Date", b"d")]
    head = ResponseInfo(headers).head(204, b"", chunked=False, keep_alive=False,
                                      cold_start=True)
    assert head == (b"HTTP/1.1 204 No Content\r\nDate: d\r\n"
                    b"X-HTTPScale-Cold-Start: true\r\nConnection: close\r\n\r\n")


def test_request_head_is_built_once() -> None:
    # A retry on a fresh upstream connection sends the head again: it must be the same bytes.
    info = RequestInfo([(b"Host", b"a.test"), (b"Accept", b"*/*")])
    first = info.head(b"POST", b"/p?q=1", b"127.0.0.1")
    assert info.head(b"POST", b"/p?q=1", b"127.0.0.1") == first
    assert first == (b"POST /p?q=1 HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n"
                     b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                     b"X-Forwarded-Host: a.test\r\n\r\n")


def test_status_lines() -> None:
    defaults = {100: b"Continue", 101: b"Switching Protocols", 200: b"OK",
                204: b"No Content", 404: b"Not Found", 599: b"Unknown", 999: b"Unknown"}
    for status, reason in itertools.product(defaults, (b"", b"Why")):
        head = ResponseInfo([]).head(status, reason, chunked=False, keep_alive=True,
                                     cold_start=False)
        assert head.split(b"\r\n", 1)[0] == b"HTTP/1.1 %d %b" % (status, reason or defaults[status])
