"""The head scans in C (`_scan.c`) answer exactly as their Python references,
`scan.scan_response_head` and `scan.scan_request_head`, on valid heads, odd heads and heads
cut or mutated anywhere."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from httpscale.interceptor import scan, splice

from .c_scans import c_module

Scan = Callable[[bytes], "scan.ResponseScan | None"]
RequestScan = Callable[[bytes, int, int, int], "scan.RequestScan | None"]


@pytest.fixture(scope="module")
def native() -> Scan:
    scan: Scan = c_module().scan_response
    return scan


@pytest.fixture(scope="module")
def native_request() -> RequestScan:
    scan: RequestScan = c_module().scan_request
    return scan


STATUS_LINES = [
    b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 100 Continue", b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.0 200 OK",
    b"HTTP/1.1 200 ", b"HTTP/1.1 200", b"HTTP/1.1 2000OK", b"http/1.1 200 OK", b"",
    b"HTTP/1.1 9x9 Odd", b"HTTP/1.1 200 O",
]
FIELDS = [
    b"Server: nginx", b"Date: Mon, 23 Nov 2026 10:00:00 GMT", b"Content-Type: text/plain",
    b"Content-Length: 6", b"content-length: 6", b"CONTENT-LENGTH:6", b"Content-Length 6",
    b"Connection: keep-alive", b"Connection: close", b"connection: Keep-Alive",
    b"Connection:\t close \t", b"Connection: upgrade", b"Connection: keep-alive, X-Hop",
    b"Connection:", b"Connection", b"Connections: many", b"Keep-Alive: timeout=5",
    b"keep-alive:max=1", b"Keep-Alive", b"Keep-Alives: 2", b"Transfer-Encoding: chunked",
    b"TE: trailers", b"Trailer: X-T", b"Upgrade: h2c", b"Proxy-Connection: close",
    b"Proxy-Authenticate: Basic", b"proxy-authorization: x", b"Pragma: no-cache",
    b"Public-Key-Pins: x", b"Upgrade-Insecure-Requests: 1", b"Timing-Allow-Origin: *",
    b"te", b"u", b"p:", b"tE:", b"X-Spaced:   v  ", b"Set-Cookie: a=1", b"Cache-Control: x",
    b"X-Pad: " + b"p" * 2100, b"\r", b"\n", b":", b"c", b"k",
]

WELL_FORMED = [f for f in FIELDS[:12] if b"ength" not in f] + [
    b"Connection: keep-alive", b"Connection: close", b"Keep-Alive: timeout=5", b"X-Tab:\tv\t",
]


def _heads(rng: random.Random) -> Iterator[bytes]:
    for _ in range(3000):
        # Weighted towards heads that splice, so that both answers are compared often.
        fields = [rng.choice(FIELDS[:20] if rng.random() < 0.7 else FIELDS)
                  for _ in range(rng.randint(0, 7))]
        status = STATUS_LINES[0] if rng.random() < 0.5 else rng.choice(STATUS_LINES)
        head = status + b"".join(b"\r\n" + f for f in fields)
        if rng.random() < 0.3:  # well-formed, with the body its Content-Length announces
            body = rng.choice([b"", b"hello\n", b"\r\n\r\n", b"x" * 3000])
            fields = [rng.choice(WELL_FORMED) for _ in range(rng.randint(0, 5))]
            fields.insert(rng.randint(0, len(fields)), b"Content-Length: %d" % len(body))
            yield b"\r\n".join([status, *fields, b"", body])
            continue
        yield head + rng.choice([b"\r\n\r\n", b"\r\n\r\nhello\n", b"\r\n\r\n\r\n", b"\r\n", b""])


def _mutations(rng: random.Random, data: bytes) -> Iterator[bytes]:
    yield data
    for _ in range(3):
        at = rng.randrange(len(data) + 1)
        yield data[:at]  # a read that ends anywhere
        yield data[:at] + rng.choice([b"\r", b"\n", b"\r\n", b":", b" ", b"\t", b"\x00"]) + (
            data[at:]
        )
        if at < len(data):
            yield data[:at] + data[at + 1 :]


def test_c_scan_answers_as_the_python_scan(native: Scan) -> None:
    rng = random.Random(2026)
    compared = spliced = whole = 0
    for head in _heads(rng):
        for data in _mutations(rng, head):
            expected = scan.scan_response_head(data)
            assert native(data) == expected, data
            compared += 1
            spliced += expected is not None
            whole += expected is not None and expected[-1] >= 0
    # The generator must reach each answer often, or the comparison proves little.
    assert compared > 20_000 and compared * 0.05 < spliced < compared * 0.9, (compared, spliced)
    assert compared * 0.015 < whole < spliced * 0.9, (compared, whole)


def test_c_scan_of_every_prefix(native: Scan) -> None:
    raw = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 6\r\nConnection: keep-alive"
           b"\r\nKeep-Alive: timeout=5\r\n\r\nhello\n")
    for end in range(len(raw) + 1):
        assert native(raw[:end]) == scan.scan_response_head(raw[:end])
    connection, keep_alive = raw.index(b"Connection:"), raw.index(b"Keep-Alive:")
    assert native(raw) == (
        len(raw) - 8, 200, True, connection, keep_alive, keep_alive, raw.index(b"\r\n\r\n") + 2,
        False, len(raw) - 6,  # whole: the body starts after the blank line
    )


def test_c_scan_of_a_large_read(native: Scan) -> None:
    # Past 2048 bytes only the head is looked at (the Python side splits data[:end + 4]).
    head = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    for body in (b"x" * 3000, b"\r\nConnection: close\r\n" * 200):
        assert native(head + body) == scan.scan_response_head(head + body) == (
            len(head) - 2, 200, False, 17, 36, 0, 0, True, -1  # no Content-Length: not whole
        )
    framed = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n"
    for body, body_at in ((b"x" * 3000, len(framed)), (b"x" * 2999, -1), (b"x" * 3001, -1)):
        assert native(framed + body) == scan.scan_response_head(framed + body) == (
            len(framed) - 2, 200, True, 0, 0, 0, 0, False, body_at
        )
    assert native(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 500) is None  # no blank line


def test_c_scan_wants_bytes(native: Scan) -> None:
    with pytest.raises(TypeError, match="wants bytes, not bytearray"):
        native(bytearray(b"HTTP/1.1 200 OK\r\n\r\n"))  # type: ignore[arg-type]


def test_the_build_in_use_scans_with_c(native: Scan, native_request: RequestScan) -> None:
    # What splice_response and splice_request call: the C scans whenever they are importable
    # (the compiled build; tests/interceptor/test_dataplane.py checks the Python source's).
    assert splice._SCAN_RESPONSE is native
    assert splice._SCAN_REQUEST is native_request


def test_both_scans_answer_the_same_named_tuples(
    native: Scan, native_request: RequestScan
) -> None:
    # The splice path reads the results by name, whichever scan made them.
    request = b"GET /a HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    for found in (native_request(request, 8192, 65536, 100),
                  scan.scan_request_head(request, 8192, 65536, 100)):
        assert type(found) is scan.RequestScan
        assert (found.head_end, found.line_end) == (len(request), len(b"GET /a HTTP/1.1"))
        assert (found.host, found.method, found.keep_alive, found.length, found.whole) == (
            b"app.test", b"GET", False, -1, True
        )
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    for answer in (native(response), scan.scan_response_head(response)):
        assert type(answer) is scan.ResponseScan
        assert (answer.status, answer.content_length, answer.close) == (200, True, True)
        assert response[answer.cut1 : answer.cut1_end] == b"Connection: close\r\n"
        assert response[answer.body_at :] == b"hi"


# -- requests ----------------------------------------------------------------------------------

REQUEST_LINES = [
    b"GET / HTTP/1.1", b"GET /a/b?q=1 HTTP/1.1", b"HEAD / HTTP/1.1", b"POST /api HTTP/1.1",
    b"CONNECT a:443 HTTP/1.1", b"GET / HTTP/1.0", b"GET / HTTP/1.11", b" HTTP/1.1", b"",
    b"GET /" + b"l" * 120 + b" HTTP/1.1",
]
REQUEST_FIELDS = [
    b"Host: app.test", b"host:  App.Test:8080 ", b"Host:", b"Host: ", b"HOST:\ta.test \t",
    b"Host: \tx", b"Host: x\t", b"Hosts: y", b"User-Agent: wrk", b"user-agent: curl",
    b"Upgrade: websocket", b"Upgrade-Insecure-Requests: 1", b"Accept: */*",
    b"Connection: keep-alive", b"connection: Close", b"Connection:\tkeep-alive ",
    b"Connection: upgrade", b"Connection: close, X-Hop", b"Keep-Alive: 300", b"keep-alive:",
    b"X-Forwarded-For: 203.0.113.7, 10.0.0.1", b"x-forwarded-for:", b"X-Forwarded-For:  \t",
    b"x-forwarded-proto: https", b"X-FORWARDED-HOST: public.example", b"X-Forwarded-Hosts: n",
    b"Content-Length: 2", b"content-length: 0", b"Content-Length:  5 ", b"Content-Length: 1, 1",
    b"Content-Length: -1", b"Content-Length: 0x10", b"Content-Length:",
    b"Content-Length: 1234567890123456", b"Content-Length: 123456789012345",
    b"Transfer-Encoding: chunked", b"TE: trailers",
    b"Trailer: X", b"Expect: 100-continue", b"expect:", b"Proxy-Authorization: x",
    b"Pragma: no-cache", b"Priority: u=0", b"Early-Data: 1", b"Tracestate: a=b", b"t", b"e:",
    b"p", b"\r", b"\n", b":",
]
BODIES = [b"", b"hi", b"hello", b"\r\n\r\n", b"x" * 3000]


def _requests(rng: random.Random) -> Iterator[bytes]:
    for _ in range(3000):
        # Weighted towards requests that splice, so that both answers are compared often.
        fields = [rng.choice(REQUEST_FIELDS[:16] if rng.random() < 0.7 else REQUEST_FIELDS)
                  for _ in range(rng.randint(0, 7))]
        line = REQUEST_LINES[0] if rng.random() < 0.5 else rng.choice(REQUEST_LINES)
        head = line + b"".join(b"\r\n" + f for f in fields) + b"\r\n\r\n"
        body = rng.choice(BODIES) if rng.random() < 0.3 else b""
        if body and rng.random() < 0.8:
            head = head[:-2] + b"Content-Length: %d\r\n\r\n" % len(body)
        yield head + body


def test_c_request_scan_answers_as_the_python_scan(native_request: RequestScan) -> None:
    rng = random.Random(2027)
    compared = spliced = whole = 0
    for request in _requests(rng):
        for data in _mutations(rng, request):
            # Limits drawn so that each of them sometimes decides.
            limits = (rng.choice([8192, 40, 14]), rng.choice([65536, 200, 60]),
                      rng.choice([100, 3, 0]))
            expected = scan.scan_request_head(data, *limits)
            assert native_request(data, *limits) == expected, (data, limits)
            compared += 1
            spliced += expected is not None
            whole += expected is not None and expected[-1]
    assert compared > 20_000 and compared * 0.05 < spliced < compared * 0.9, (compared, spliced)
    assert compared * 0.015 < whole < spliced * 0.9, (compared, whole)


def test_c_request_scan_parts(native_request: RequestScan) -> None:
    raw = (b"POST /api HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive\r\n"
           b"X-Forwarded-For: 10.0.0.1 \r\nKeep-Alive: 300\r\nContent-Length: 2\r\n\r\nhi")
    found = native_request(raw, 8192, 65536, 100)
    assert found == scan.scan_request_head(raw, 8192, 65536, 100)
    assert found == (
        len(raw) - 2, 18,
        [b"POST /api HTTP/1.1\r\nHost: app.test\r\n", b"", b"", b"Content-Length: 2\r\n"],
        b"app.test", b"10.0.0.1", False, False, True, 2, b"POST", True,
    )


def test_c_request_scan_argument_errors(native_request: RequestScan) -> None:
    with pytest.raises(TypeError, match="wants bytes, not str"):
        native_request("GET / HTTP/1.1\r\n\r\n", 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes 4 arguments"):
        native_request(b"GET / HTTP/1.1\r\n\r\n", 1, 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        native_request(b"GET / HTTP/1.1\r\n\r\n", 1, 1, "1")  # type: ignore[arg-type]
