"""Whenever a head scan (Python or C) says a message is whole, llhttp accepts the same bytes and
reads them the same way: the proxy skips llhttp on whole messages and makes its callbacks itself."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httptools
import pytest

from httpscale.interceptor import scan

from .c_scans import c_module

RequestScan = Callable[[bytes, int, int, int], "tuple[Any, ...] | None"]
ResponseScan = Callable[[bytes], "tuple[Any, ...] | None"]

LIMITS = (8192, 65536, 100)
WHOLE_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")


@pytest.fixture(scope="module", params=["python", "c"])
def scan_request(request: pytest.FixtureRequest) -> RequestScan:
    found: RequestScan = (
        scan.scan_request_head if request.param == "python" else c_module().scan_request
    )
    return found


@pytest.fixture(scope="module", params=["python", "c"])
def scan_response(request: pytest.FixtureRequest) -> ResponseScan:
    found: ResponseScan = (
        scan.scan_response_head if request.param == "python" else c_module().scan_response
    )
    return found


# -- llhttp's reading ---------------------------------------------------------------------------


class _Reading:
    """What llhttp reports for the bytes fed to it: the callbacks, in order, and what the proxy
    asks the parser in on_headers_complete (method or status, keep-alive)."""

    def __init__(self, request: bool) -> None:
        self.events: list[str] = []
        self.url = bytearray()
        self.reason = bytearray()
        self.body = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.status = -1
        self.version = ""
        self.keep_alive: bool | None = None
        self.keep_alive_at_end: bool | None = None
        self.parser: Any = (
            httptools.HttpRequestParser(self) if request else httptools.HttpResponseParser(self)
        )
        self.request = request

    def _event(self, name: str) -> None:
        if not self.events or self.events[-1] != name or name == "header":
            self.events.append(name)

    def on_message_begin(self) -> None:
        self._event("begin")

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._event("url")

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        self._event("status")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self._event("header")

    def on_headers_complete(self) -> None:
        parser = self.parser
        if self.request:
            self.method = parser.get_method()
        else:
            self.status = parser.get_status_code()
        self.version = parser.get_http_version()
        self.keep_alive = parser.should_keep_alive()
        self._event("headers_complete")

    def on_body(self, body: bytes) -> None:
        self.body += body
        self._event("body")

    def on_message_complete(self) -> None:
        self.keep_alive_at_end = self.parser.should_keep_alive()
        self._event("complete")

    def feed(self, data: bytes) -> _Reading:
        self.parser.feed_data(data)
        return self


def _llhttp(data: bytes, *, request: bool) -> _Reading:
    try:
        return _Reading(request).feed(data)
    except Exception as exc:  # any parser error or upgrade is a disagreement
        raise AssertionError(f"the scan says whole, llhttp refuses {data!r}: {exc!r}") from exc


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The head's field lines split at the first colon, values without leading SP/HTAB: what
    llhttp reports (it strips the OWS before a value, not the OWS after it)."""
    found = []
    for line in head.split(b"\r\n")[1:-2]:
        name, colon, value = line.partition(b":")
        assert colon, (head, line)
        found.append((name, value.lstrip(b" \t")))
    return found


def _ends_there(data: bytes, *, request: bool) -> None:
    # One byte short, no message is complete: llhttp's message ends at the end of `data`, not
    # before it (bytes llhttp skips, as CRLFs between requests, would complete it here).
    try:
        short = _Reading(request).feed(data[:-1])
    except Exception as exc:
        raise AssertionError(f"llhttp refuses a prefix of {data!r}: {exc!r}") from exc
    assert "complete" not in short.events, data


def _request_whole(found: tuple[Any, ...] | None) -> bool:
    if found is None:
        return False
    assert len(found) == 11, f"the request scan returns {len(found)} items, the contract 11"
    whole = found[10]
    assert whole is True or whole is False, found
    return bool(whole)


def _response_whole(found: tuple[Any, ...] | None) -> bool:
    if found is None:
        return False
    assert len(found) == 9, f"the response scan returns {len(found)} items, the contract 9"
    body_at = found[8]
    assert isinstance(body_at, int) and body_at >= -1, found
    return body_at >= 0


def check_request(data: bytes, found: tuple[Any, ...]) -> None:
    """`data`, which the scan found whole, as llhttp reads it."""
    head_end, line_end, _parts, _host, _xff, _xfp, _xfh, keep_alive, length, method, whole = found
    assert whole is True
    assert method in WHOLE_METHODS, (data, found)
    assert data[head_end - 4 : head_end] == b"\r\n\r\n" and data.index(b"\r\n\r\n") + 4 == head_end
    assert data[:line_end].endswith(b" HTTP/1.1") and data[line_end : line_end + 2] == b"\r\n"
    reading = _llhttp(data, request=True)
    headers = _fields(data[:head_end])
    body = bytes(reading.body)
    assert reading.events == (
        ["begin", "url"] + ["header"] * len(headers) + ["headers_complete"]
        + (["body"] if body else []) + ["complete"]
    ), (data, reading.events)
    assert reading.method == method, (data, reading.method, method)
    assert bytes(reading.url) == data[len(method) + 1 : line_end - 9], data
    assert reading.version == "1.1", data
    assert reading.keep_alive is keep_alive is reading.keep_alive_at_end, (data, keep_alive)
    assert body == data[head_end:], data
    assert len(body) == max(length, 0), (data, length)
    assert reading.headers == headers, data
    _ends_there(data, request=True)


def check_response(data: bytes, found: tuple[Any, ...]) -> None:
    """`data`, which the scan found whole, as llhttp reads it."""
    end, status, content_length, _c1, _c1e, _c2, _c2e, close, body_at = found
    # `end`: where the blank line starts (the head the proxy forwards is data[:end]).
    assert body_at == data.index(b"\r\n\r\n") + 4 == end + 2, (data, found)
    assert content_length is True, (data, found)
    reading = _llhttp(data, request=False)
    headers = _fields(data[:body_at])
    body = bytes(reading.body)
    assert reading.events == (
        ["begin", "status"] + ["header"] * len(headers) + ["headers_complete"]
        + (["body"] if body else []) + ["complete"]
    ), (data, reading.events)
    assert reading.status == status, (data, status)
    status_line = data[: data.index(b"\r\n")]
    assert status_line[:9] == b"HTTP/1.1 " and bytes(reading.reason) == status_line[13:], data
    assert reading.version == "1.1", data
    assert reading.keep_alive is (not close) is reading.keep_alive_at_end, (data, close)
    assert body == data[body_at:], data
    assert reading.headers == headers, data
    _ends_there(data, request=False)


def _run_requests(scan: RequestScan, inputs: Iterable[bytes]) -> tuple[int, int]:
    whole = other = 0
    for data in inputs:
        found = scan(data, *LIMITS)
        if _request_whole(found):
            assert found is not None
            check_request(data, found)
            whole += 1
        else:
            other += 1
    return whole, other


def _run_responses(scan: ResponseScan, inputs: Iterable[bytes]) -> tuple[int, int]:
    whole = other = 0
    for data in inputs:
        found = scan(data)
        if _response_whole(found):
            assert found is not None
            check_response(data, found)
            whole += 1
        else:
            other += 1
    return whole, other


# -- generated requests -------------------------------------------------------------------------

PRINTABLE = bytes(range(0x21, 0x7F))
OTHER_METHODS = [
    b"PROPFIND", b"CONNECT", b"get", b"Get", b"TRACE", b"MKCOL", b"PURGE", b"SEARCH", b"GETS",
    b"GE", b"POSTS", b"PATCH2", b"", b"G\x80T",
]
TARGETS = [
    b"/", b"/index.html", b"/a/b?q=1&r=2", b"/p?x=1#frag", b"/#", b"/%20x%2F%zz", b"/?",
    b"/??#?#", b"//double//", b"/~user/.hidden", b"/" + PRINTABLE, b"/" + PRINTABLE[::-1],
    b"/a\"b<c>d\\e^f`g{h|i}", b"http://app.test/x", b"HTTP://app.test:8080/", b"*",
    b"app.test:443", b"", b"a/b", b"/a b", b"/\x80", b"/\x7f", b"/\t",
]
VERSIONS = [
    b" HTTP/1.0", b" HTTP/2.0", b" http/1.1", b"  HTTP/1.1", b" HTTP/1.1 ", b" HTTP/1.",
    b" HTTP/1.10", b"HTTP/1.1", b" HTTP/1.1\t",
]
HOSTS = [b"Host: app0.bench", b"host:app.test:8080", b"HOST: \tApp.Test \t", b"Host: [::1]:80"]
CONNECTIONS = [
    b"Connection: keep-alive", b"Connection: close", b"connection:Close",
    b"Connection: \tkeep-alive \t", b"CONNECTION:  close",
]
COMMON_REQUEST_FIELDS = [
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    b"user-agent: wrk", b"Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
    b"Accept-Language: en-US,en;q=0.5", b"Accept-Encoding: gzip, deflate, br, zstd",
    b"Keep-Alive: timeout=5, max=100", b"X-Forwarded-For: 203.0.113.7, 10.0.0.1",
    b"X-Forwarded-Proto: https", b"x-forwarded-host: public.example", b"Cookie: a=1; b=2",
    b"Cache-Control: no-cache", b"Referer: https://app.test/a?b#c", b"Sec-Fetch-Mode: navigate",
    b"Sec-CH-UA: \"Chromium\";v=\"128\"", b"Upgrade-Insecure-Requests: 1", b"DNT: 1",
    b"X-Empty:", b"X-Spaces:    ", b"X-Tab:\tv\t", b"X-Trailing: v  ", b"Priority: u=0, i",
    b"X-Odd: !#$%&'*+-.^_`|~\"(),/:;<=>?@[\\]{}", b"x!#$%&'*+-.^_`|~: token-name",
    b"X-Colons: a:b::c", b"Content-Type: application/json", b"Origin: https://app.test",
    b"X-Pad: " + b"p" * 2100,
]
ODD_REQUEST_FIELDS = [
    b"Connection: upgrade", b"Connection: close, X-Hop", b"Connection: keep-alive, close",
    b"Connection: Upgrade", b"Connection:", b"Upgrade: websocket", b"Expect: 100-continue",
    b"Transfer-Encoding: chunked", b"transfer-encoding: identity", b"TE: trailers",
    b"Trailer: X", b"Proxy-Connection: close", b"Proxy-Authorization: Basic eA==",
    b"Content-Length: 5", b"Content-Length: +1", b"Content-Length: 0x1", b"Content-Length: 1 1",
    b"Content-Length: 1,1", b"Content-Length: 1234567890123456", b"Content-Length: -1",
    b"Content-Length:", b"keep-alive:", b"x-forwarded-for:", b"X Space: v", b"X :v", b"X\t:v",
    b" Leading: v", b"\tFolded: v", b"NoColon", b":empty-name", b"X-Obs: caf\xc3\xa9",
    b"X-Del: a\x7fb", b"X-Bare-CR: a\rb", b"X-Bare-LF: a\nb", b"X-Nul: a\x00b", b"X-Ctl: a\x01b",
    b"Caf\xc3\xa9: v", b"X(y): v", b"Host: a", b"Host: b",
]
BODIES = [b"hi", b"hello", b"{}", b"\r\n", b"\r\n\r\n", b"x" * 3000, b"0\r\n\r\n"]
LENGTH_FIELDS = [
    b"Content-Length: %d", b"content-length:%d", b"CONTENT-LENGTH: \t%d \t",
    b"Content-Length: 00%d",
]


def _target(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(TARGETS[:13])
    if roll < 0.8:
        return b"/" + bytes(rng.choice(PRINTABLE) for _ in range(rng.randint(0, 40)))
    return rng.choice(TARGETS)


def _request(rng: random.Random) -> bytes:
    method = rng.choice(WHOLE_METHODS) if rng.random() < 0.85 else rng.choice(OTHER_METHODS)
    version = b" HTTP/1.1" if rng.random() < 0.9 else rng.choice(VERSIONS)
    fields = rng.sample(COMMON_REQUEST_FIELDS, rng.randint(0, 9))
    for extra, chance in ((HOSTS, 0.9), (CONNECTIONS, 0.4), (ODD_REQUEST_FIELDS, 0.15)):
        if rng.random() < chance:
            fields.insert(rng.randint(0, len(fields)), rng.choice(extra))
    body = b""
    if rng.random() < 0.35:
        body = (rng.choice(BODIES) if rng.random() < 0.5
                else bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))))
        length = len(body) if rng.random() < 0.85 else len(body) + rng.choice([-1, 1, 10])
        if length >= 0:
            fields.insert(rng.randint(0, len(fields)), rng.choice(LENGTH_FIELDS) % length)
    elif rng.random() < 0.1:
        fields.append(b"Content-Length: 0")
    head = method + b" " + _target(rng) + version + b"\r\n"
    return head + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def _mutations(rng: random.Random, data: bytes) -> Iterator[bytes]:
    yield data
    for _ in range(2):
        at = rng.randrange(len(data) + 1)
        yield data[:at]  # a read that ends anywhere
        byte = bytes([rng.randrange(256)])
        yield data[:at] + byte + data[at:]
        if at < len(data):
            yield data[:at] + byte + data[at + 1 :]
            yield data[:at] + data[at + 1 :]
    yield data + rng.choice([b"\r\n", b"x", data])  # more after the message


def test_generated_requests(scan_request: RequestScan) -> None:
    rng = random.Random(20260)
    inputs = (m for _ in range(3000) for m in _mutations(rng, _request(rng)))
    whole, other = _run_requests(scan_request, inputs)
    total = whole + other
    assert total > 25_000 and total * 0.15 < whole < total * 0.85, (whole, other)


# Every byte value, replacing and inserted, at every position of these requests (method,
# target, version, names, the byte before a colon, values, Content-Length digits, the body).
EVERY_BYTE_REQUESTS = [
    b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\nhello world!",
    b"GET /x#y HTTP/1.1\r\nhost:\tapp.test \r\nConnection: close\r\nX-A: b c\r\n\r\n",
    b"DELETE / HTTP/1.1\r\nKeep-Alive: 5\r\ncontent-length:  3\t\r\nX-F: /%z\r\n\r\nabc",
]


def _every_byte(data: bytes) -> Iterator[bytes]:
    for at in range(len(data) + 1):
        for value in range(256):
            byte = bytes([value])
            yield data[:at] + byte + data[at:]
            if at < len(data) and data[at] != value:
                yield data[:at] + byte + data[at + 1 :]
        yield data[:at]
        yield data[:at] + data[at + 1 :]


@pytest.mark.parametrize("base", EVERY_BYTE_REQUESTS)
def test_every_byte_at_every_position_of_a_request(scan_request: RequestScan, base: bytes) -> None:
    assert _request_whole(scan_request(base, *LIMITS))
    whole, other = _run_requests(scan_request, _every_byte(base))
    total = whole + other
    # Most bytes break most positions: about one input in seven stays whole.
    assert total > 25_000 and total * 0.08 < whole < total * 0.5, (whole, other)


def _host_misread(scan: RequestScan, data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """For a whole request: (data, the scan's host, llhttp's Host value without the OWS around
    it, as the full pass's route lookup takes it) when they differ."""
    found = scan(data, *LIMITS)
    if not _request_whole(found):
        return None
    assert found is not None
    hosts = [v for n, v in _llhttp(data, request=True).headers if n.lower() == b"host"]
    expected = hosts[0].strip(b" \t") if hosts else b""
    return None if found[3] == expected else (data, found[3], expected)


def test_the_host_of_a_whole_request_is_llhttps(scan_request: RequestScan) -> None:
    # The proxy routes whole requests by the scan's host and sends it on as X-Forwarded-Host:
    # it is llhttp's Host value, trimmed of SP and HTAB on both sides (a tab after the colon's
    # space is OWS too).
    rng = random.Random(20260)
    inputs = [m for _ in range(3000) for m in _mutations(rng, _request(rng))]
    inputs += [b"GET / HTTP/1.1\r\nHost: \tapp.test\r\n\r\n",
               b"GET / HTTP/1.1\r\nHost:\t app.test \r\n\r\n",
               b"GET / HTTP/1.1\r\nHost: app.test\t\r\n\r\n"]
    misread = [m for data in inputs if (m := _host_misread(scan_request, data)) is not None]
    assert not misread, (len(misread), misread[:3])


# -- generated responses ------------------------------------------------------------------------

STATUS_LINES = [
    b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 500 Internal Server Error",
    b"HTTP/1.1 302 Found", b"HTTP/1.1 201 Created", b"HTTP/1.1 599 x", b"HTTP/1.1 200 \tOK\t",
    b"HTTP/1.1 200 a  b", b"HTTP/1.1 301 Moved Permanently", b"HTTP/1.1 200 :;<=>?@[\\]^_`{|}~",
    # odd: no body by status, interim, out of range, other versions, no or bad reason
    b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 199 x",
    b"HTTP/1.1 999 Odd", b"HTTP/1.1 600 x", b"HTTP/1.1 099 x", b"HTTP/1.1 000 x",
    b"HTTP/1.0 200 OK", b"http/1.1 200 OK", b"HTTP/1.1 200 ", b"HTTP/1.1 200", b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 20 OK", b"HTTP/1.1  200 OK", b"HTTP/2 200 OK", b"HTTP/1.1 200 caf\xc3\xa9",
    b"HTTP/1.1 200 O\x7fK", b"HTTP/1.1 2x0 OK", b"HTTP/1.1 200\tOK", b"HTTP/1.1 200 \x00",
]
RESPONSE_CONNECTIONS = [
    b"Connection: keep-alive", b"Connection: close", b"connection:Close",
    b"Connection: \tclose\t ", b"CONNECTION: keep-alive", b"Keep-Alive: timeout=5, max=100",
]
COMMON_RESPONSE_FIELDS = [
    b"Server: nginx/1.27.0", b"Date: Mon, 23 Nov 2026 10:00:00 GMT",
    b"Content-Type: text/html; charset=utf-8", b"Cache-Control: max-age=0, private",
    b"Set-Cookie: id=1; Path=/; HttpOnly", b"ETag: \"abc\"", b"Vary: Accept-Encoding",
    b"X-Empty:", b"X-Spaced:   v  ", b"X-Odd: !#$%&'*+-.^_`|~\"(),/:;<=>?@[\\]{}",
    b"Access-Control-Allow-Origin: *", b"Strict-Transport-Security: max-age=63072000",
    b"Last-Modified: Mon, 23 Nov 2026 09:00:00 GMT", b"x!#$%&'*+-.^_`|~: token-name",
    b"X-Pad: " + b"p" * 2100,  # a head longer than the reads the response scan splits whole
]
ODD_RESPONSE_FIELDS = [
    b"Connection: upgrade", b"Connection: close, X-Hop", b"Connection: keep-alive, close",
    b"Connection:", b"Connection: close", b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: identity", b"Upgrade: h2c", b"Proxy-Connection: close", b"Trailer: X",
    b"TE: trailers", b"Keep-Alive: 1", b"keep-alive:", b"X Space: v", b"X :v", b" Leading: v",
    b"NoColon", b":empty-name", b"X-Obs: caf\xc3\xa9", b"X-Del: a\x7fb", b"X-Bare-CR: a\rb",
    b"X-Bare-LF: a\nb", b"X-Nul: a\x00b", b"Caf\xc3\xa9: v",
]
BAD_LENGTHS = [
    b"+5", b"0x5", b"5 5", b"5,5", b"5, 5", b"1234567890123456", b"-5", b"", b" ", b"5.0",
    b"\xd9\xa5",
]
RESPONSE_BODIES = [
    b"", b"hello\n", b"{}", b"\r\n", b"\r\n\r\n", b"x" * 3000, b"HTTP/1.1 200 OK\r\n",
]


def _response(rng: random.Random) -> bytes:
    status = rng.choice(STATUS_LINES[:10]) if rng.random() < 0.85 else rng.choice(STATUS_LINES)
    fields = rng.sample(COMMON_RESPONSE_FIELDS, rng.randint(0, 8))
    for extra, chance in ((RESPONSE_CONNECTIONS, 0.5), (ODD_RESPONSE_FIELDS, 0.15)):
        if rng.random() < chance:
            fields.insert(rng.randint(0, len(fields)), rng.choice(extra))
    body = (rng.choice(RESPONSE_BODIES) if rng.random() < 0.6
            else bytes(rng.randrange(256) for _ in range(rng.randint(0, 60))))
    roll = rng.random()
    if roll < 0.8:  # one Content-Length, mostly the body's
        length = b"%d" % (len(body) if rng.random() < 0.85 else len(body) + rng.choice([-1, 1, 9]))
        if rng.random() < 0.1:
            length = rng.choice([b" ", b"\t", b"  "]) + length + rng.choice([b"", b" ", b"\t"])
        fields.insert(rng.randint(0, len(fields)), rng.choice(LENGTH_FIELDS) % int(length)
                      if rng.random() < 0.7 else b"Content-Length:" + length)
    elif roll < 0.88:  # two of them
        fields += [b"Content-Length: %d" % len(body), b"content-length: %d" % len(body)]
    elif roll < 0.95:
        fields.append(b"Content-Length: " + rng.choice(BAD_LENGTHS))
    return status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def test_generated_responses(scan_response: ResponseScan) -> None:
    rng = random.Random(20261)
    inputs = (m for _ in range(3000) for m in _mutations(rng, _response(rng)))
    whole, other = _run_responses(scan_response, inputs)
    total = whole + other
    assert total > 25_000 and total * 0.15 < whole < total * 0.85, (whole, other)


EVERY_BYTE_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello world!",
    b"HTTP/1.1 404 Not Found\r\nserver:\tx \r\ncontent-length:  3\t\r\nKeep-Alive: 5\r\n\r\nabc",
]


@pytest.mark.parametrize("base", EVERY_BYTE_RESPONSES)
def test_every_byte_at_every_position_of_a_response(
    scan_response: ResponseScan, base: bytes
) -> None:
    assert _response_whole(scan_response(base))
    whole, other = _run_responses(scan_response, _every_byte(base))
    total = whole + other
    assert total > 25_000 and total * 0.08 < whole < total * 0.5, (whole, other)


# -- one byte in one slot -----------------------------------------------------------------------

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                  b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
VCHAR = frozenset(range(0x21, 0x7F))
FIELD_VALUE = VCHAR | {0x20, 0x09}
DIGITS = frozenset(b"0123456789")


def _with_length(prefix: bytes, value: bytes) -> bytes:
    # A Content-Length field with `value`, and the body it announces when it is a number.
    stripped = value.strip(b" \t")
    n = int(stripped) if stripped.isdigit() and stripped.isascii() else 3
    return prefix + b"Content-Length: " + value + b"\r\n\r\n" + b"x" * n


def _request_slots() -> dict[str, tuple[Callable[[bytes], bytes], frozenset[int]]]:
    """Each slot: the request with one byte there, and the bytes with which the contract's
    grammar makes it whole."""
    end = b"\r\nHost: app.test\r\nAccept: */*\r\n\r\n"
    return {
        "method char": (lambda b: b"G" + b + b"T /a HTTP/1.1" + end, frozenset(b"E")),
        "method end": (lambda b: b"GET" + b + b" /a HTTP/1.1" + end, frozenset()),
        "target char": (lambda b: b"GET /a" + b + b"b HTTP/1.1" + end, frozenset(VCHAR)),
        "target start": (lambda b: b"GET " + b + b"a HTTP/1.1" + end, frozenset(b"/")),
        "version char": (lambda b: b"GET /a HTTP/1" + b + b"1" + end, frozenset(b".")),
        "field-name char": (
            lambda b: b"GET / HTTP/1.1\r\nHost: h\r\nX-N" + b + b"me: v\r\n\r\n",
            TCHAR | {ord(":")},
        ),
        "before colon": (
            lambda b: b"GET / HTTP/1.1\r\nHost: h\r\nX-Name" + b + b": v\r\n\r\n",
            TCHAR | {ord(":")},
        ),
        "field-value char": (
            lambda b: b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: a" + b + b"b\r\n\r\n", FIELD_VALUE
        ),
        "field-value start": (
            lambda b: b"GET / HTTP/1.1\r\nX-Name:" + b + b"v\r\nHost: h\r\n\r\n", FIELD_VALUE
        ),
        "field-value end": (
            lambda b: b"GET / HTTP/1.1\r\nX-Name: v" + b + b"\r\nHost: h\r\n\r\n", FIELD_VALUE
        ),
        "content-length digit": (
            lambda b: _with_length(b"POST / HTTP/1.1\r\nHost: h\r\n", b"1" + b),
            DIGITS | {0x20, 0x09},
        ),
        "body byte": (
            lambda b: b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\na" + b + b"b",
            frozenset(range(256)),
        ),
    }


def _response_slots() -> dict[str, tuple[Callable[[bytes], bytes], frozenset[int]]]:
    fields = b"\r\nServer: x\r\nContent-Length: 2\r\n\r\nok"
    return {
        "status first digit": (
            lambda b: b"HTTP/1.1 " + b + b"00 OK" + fields, frozenset(b"2345")
        ),
        "status digit": (lambda b: b"HTTP/1.1 2" + b + b"0 OK" + fields, DIGITS),
        "version char": (lambda b: b"HTTP/1" + b + b"1 200 OK" + fields, frozenset(b".")),
        "reason char": (lambda b: b"HTTP/1.1 200 O" + b + b"K" + fields, FIELD_VALUE),
        "reason start": (lambda b: b"HTTP/1.1 200 " + b + b"OK" + fields, FIELD_VALUE),
        "field-name char": (
            lambda b: b"HTTP/1.1 200 OK\r\nX-N" + b + b"me: v" + fields,
            TCHAR | {ord(":")},
        ),
        "before colon": (
            lambda b: b"HTTP/1.1 200 OK\r\nX-Name" + b + b": v" + fields, TCHAR | {ord(":")}
        ),
        "field-value char": (
            lambda b: b"HTTP/1.1 200 OK\r\nX-Name: a" + b + b"b" + fields, FIELD_VALUE
        ),
        "content-length digit": (
            lambda b: _with_length(b"HTTP/1.1 200 OK\r\nServer: x\r\n", b"1" + b),
            DIGITS | {0x20, 0x09},
        ),
        "content-length start": (
            lambda b: _with_length(b"HTTP/1.1 200 OK\r\nServer: x\r\n", b + b"2"),
            DIGITS | {0x20, 0x09},
        ),
        "body byte": (
            lambda b: b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na" + b + b"b",
            frozenset(range(256)),
        ),
    }


def _slot_wholes(scan: Callable[[bytes], bool], build: Callable[[bytes], bytes]) -> set[int]:
    return {value for value in range(256) if scan(build(bytes([value])))}


def test_one_byte_in_each_request_slot(scan_request: RequestScan) -> None:
    for slot, (build, _grammar) in _request_slots().items():
        for value in range(256):
            data = build(bytes([value]))
            found = scan_request(data, *LIMITS)
            if _request_whole(found):
                assert found is not None
                try:
                    check_request(data, found)
                except AssertionError as exc:
                    raise AssertionError(f"slot {slot}, byte {value:#04x}: {exc}") from exc


def test_one_byte_in_each_response_slot(scan_response: ResponseScan) -> None:
    for slot, (build, _grammar) in _response_slots().items():
        for value in range(256):
            data = build(bytes([value]))
            found = scan_response(data)
            if _response_whole(found):
                assert found is not None
                try:
                    check_response(data, found)
                except AssertionError as exc:
                    raise AssertionError(f"slot {slot}, byte {value:#04x}: {exc}") from exc


def test_the_request_grammar_is_whole_where_the_contract_says(scan_request: RequestScan) -> None:
    # Not a matter of safety (a scan may be more careful than llhttp), but of the contract: the
    # grammar's bytes are whole, and no other; the slot tests above are not vacuous.
    def whole(data: bytes) -> bool:
        return _request_whole(scan_request(data, *LIMITS))

    for slot, (build, grammar) in _request_slots().items():
        assert _slot_wholes(whole, build) == grammar, slot


def test_the_response_grammar_is_whole_where_the_contract_says(
    scan_response: ResponseScan,
) -> None:
    def whole(data: bytes) -> bool:
        return _response_whole(scan_response(data))

    for slot, (build, grammar) in _response_slots().items():
        assert _slot_wholes(whole, build) == grammar, slot


# -- pinned examples ----------------------------------------------------------------------------

BROWSER_GET = (
    b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux "
    b"x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\nAccept-Language: en-US,"
    b"en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nReferer: https://app.test/\r\n"
    b"Connection: keep-alive\r\nCookie: session=abc123; theme=dark\r\nSec-Fetch-Dest: script\r\n"
    b"Sec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\nPriority: u=2\r\n"
    b"Pragma: no-cache\r\nCache-Control: no-cache\r\n\r\n"
)


def test_pinned_requests(scan_request: RequestScan) -> None:
    def scan(data: bytes) -> tuple[Any, ...] | None:
        return scan_request(data, *LIMITS)

    wrk = b"GET / HTTP/1.1\r\nHost: app0.bench\r\n\r\n"
    found = scan(wrk)
    assert found is not None and _request_whole(found)
    assert (found[0], found[1], found[3], found[7], found[8], found[9]) == (
        len(wrk), 14, b"app0.bench", True, -1, b"GET"
    )
    check_request(wrk, found)

    found = scan(BROWSER_GET)
    assert found is not None and _request_whole(found) and found[9] == b"GET"
    check_request(BROWSER_GET, found)

    post = b"POST /api HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi"
    found = scan(post)
    assert found is not None and _request_whole(found)
    assert (found[0], found[8], found[9]) == (len(post) - 2, 2, b"POST")
    check_request(post, found)
    assert scan(post[:-1]) is None  # one body byte of two

    close = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    found = scan(close)
    assert found is not None and _request_whole(found) and found[7] is False
    check_request(close, found)

    obs_text = scan(b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9\r\n\r\n")
    assert not _request_whole(obs_text)  # may still splice, with llhttp's reading

    absolute = scan(b"GET http://app.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert not _request_whole(absolute)

    propfind = scan(b"PROPFIND /d HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert propfind is not None and propfind[9] == b"" and not _request_whole(propfind)


def test_pinned_responses(scan_response: ResponseScan) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"
    head = len(ok) - 6
    found = scan_response(ok)
    assert found is not None and found[8] == head and found[1] == 200 and found[7] is False
    check_response(ok, found)

    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 6\r\n\r\nhello\n"
    found = scan_response(close)
    assert found is not None and found[7] is True and found[8] == len(close) - 6
    check_response(close, found)

    for data in (
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n",  # no Content-Length: read to the close
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nh",  # the body is not all here
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi!",  # or more than it follows
    ):
        found = scan_response(data)
        assert found is None or found[8] == -1, data
