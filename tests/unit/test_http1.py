"""The header passes (`heads`, `splice`) against a plain reference implementation.

The passes classify a name as it came and lower-case it only when the tables do not know that
spelling, and rule names out by length first; whatever the spelling, the result must be what
a straightforward lower-case comparison gives.
"""

from __future__ import annotations

import itertools
import random

import httptools
import pytest

from httpscale.interceptor.heads import read_request, read_response
from httpscale.interceptor.http1 import HOP_BY_HOP, FramingError
from httpscale.interceptor.splice import SplicedResponse, splice_request, splice_response

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
    head = read_response(headers).head(200, b"OK", chunked=False, keep_alive=True,
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
    hosts = [v for n, v in headers if n.lower() == b"host"]
    if len(hosts) > 1:
        with pytest.raises(FramingError, match="more than one Host"):
            read_request(headers)
        return
    info = read_request(headers)
    head = info.head(b"GET", b"/x", b"10.0.0.1")
    block = head.split(b"\r\n", 1)[1]
    assert block.startswith(_request_reference(headers))
    xffs = [v for n, v in headers if n.lower() == b"x-forwarded-for"]
    assert b"X-Forwarded-For: " + b", ".join([*xffs, b"10.0.0.1"]) + b"\r\n" in block
    assert (info.host, info.has_host) == (hosts[0], True) if hosts else (b"", False)


def test_framing_headers_found_in_any_spelling() -> None:
    for name in (b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"cOnTeNt-LeNgTh"):
        assert read_request([(name, b"5")]).content_length == 5
        assert read_response([(name, b"5")]).content_length
    for name in (b"Transfer-Encoding", b"TRANSFER-ENCODING", b"tRaNsFeR-eNcOdInG"):
        assert read_request([(name, b"chunked")]).chunked
        assert read_response([(name, b"chunked")]).chunked


def test_connection_tokens_drop_named_headers() -> None:
    headers = [(b"X-Secret", b"1"), (b"CONNECTION", b"keep-alive, X-Secret"), (b"Date", b"d")]
    head = read_response(headers).head(204, b"", chunked=False, keep_alive=False,
                                      cold_start=True)
    assert head == (b"HTTP/1.1 204 No Content\r\nDate: d\r\n"
                    b"X-HTTPScale-Cold-Start: true\r\nConnection: close\r\n\r\n")


def test_request_head_is_built_once() -> None:
    # A retry on a fresh upstream connection sends the head again: it must be the same bytes.
    info = read_request([(b"Host", b"a.test"), (b"Accept", b"*/*")])
    first = info.head(b"POST", b"/p?q=1", b"127.0.0.1")
    assert info.head(b"POST", b"/p?q=1", b"127.0.0.1") == first
    assert first == (b"POST /p?q=1 HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n"
                     b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                     b"X-Forwarded-Host: a.test\r\n\r\n")


def test_status_lines() -> None:
    defaults = {100: b"Continue", 101: b"Switching Protocols", 200: b"OK",
                204: b"No Content", 404: b"Not Found", 599: b"Unknown", 999: b"Unknown"}
    for status, reason in itertools.product(defaults, (b"", b"Why")):
        head = read_response([]).head(status, reason, chunked=False, keep_alive=True,
                                     cold_start=False)
        assert head.split(b"\r\n", 1)[0] == b"HTTP/1.1 %d %b" % (status, reason or defaults[status])


# -- the splice path for response heads --------------------------------------------------------

def _parse_response(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Status and header fields of a response head, as a strict client (llhttp) reads them."""
    class Sink:
        def __init__(self) -> None:
            self.headers: list[tuple[bytes, bytes]] = []
            self.done = False

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value.strip(b" \t")))

        def on_headers_complete(self) -> None:
            self.done = True

    sink = Sink()
    parser = httptools.HttpResponseParser(sink)
    parser.feed_data(raw)
    assert sink.done, raw
    return parser.get_status_code(), sink.headers


def _full_pass(raw: bytes, **kw: bool) -> bytes:
    # What the proxy sends without the splice: every header through ResponseInfo.
    status, _ = _parse_response(raw)
    sink: list[tuple[bytes, bytes]] = []

    class Collect:
        def on_header(self, name: bytes, value: bytes) -> None:
            sink.append((name, value))

    httptools.HttpResponseParser(Collect()).feed_data(raw)
    reason = raw.split(b"\r\n", 1)[0].split(b" ", 2)[2]
    return read_response(sink).head(status, reason, **kw)  # type: ignore[arg-type]


_SPLICEABLE_FIELDS = [
    b"Server: nginx", b"Date: Mon, 23 Nov 2026 10:00:00 GMT", b"Content-Type: text/plain",
    b"Content-Length: 2", b"content-length: 2", b"Connection: keep-alive", b"connection: close",
    b"CONNECTION:  Keep-Alive ", b"Keep-Alive: timeout=5", b"keep-alive: max=100",
    b"Timing-Allow-Origin: *", b"Pragma: no-cache", b"Upgrade-Insecure-Requests: 1",
    b"Cache-Control: no-store", b"Content-Encoding: gzip", b"X-Spaced:   v  ",
    b"Set-Cookie: a=1", b"Set-Cookie: b=2", b"Trace-Id: 7", b"Public-Key-Pins: x",
]


@pytest.mark.parametrize("seed", range(40))
def test_spliced_head_reads_as_the_full_pass(seed: int) -> None:
    rng = random.Random(seed)
    fields = rng.sample(_SPLICEABLE_FIELDS, rng.randint(0, 8))
    if b"content-length: 2" in fields and b"Content-Length: 2" in fields:
        fields.remove(b"content-length: 2")  # a duplicate Content-Length is a parse error
    if seed % 2:
        fields.insert(rng.randint(0, len(fields)), b"X-Pad: " + b"p" * 3000)  # a large read
    raw = b"HTTP/1.1 200 OK\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\nok"
    spliced = splice_response(raw)
    connections = sum(f.lower().startswith(b"connection:") for f in fields)
    alives = sum(f.lower().startswith(b"keep-alive:") for f in fields)
    if connections > 1 or alives > 1:
        assert spliced is None  # several of one hop-by-hop field: the full pass
        return
    assert spliced is not None, raw
    assert spliced.content_length == any(f.lower().startswith(b"content-length") for f in fields)
    assert spliced.status == 200
    # (The exchange re-frames as chunked only a body without a Content-Length.)
    chunked = not spliced.content_length
    for kw in ({"chunked": False, "keep_alive": True, "cold_start": False},
               {"chunked": chunked, "keep_alive": False, "cold_start": True}):
        out = SplicedResponse(list(spliced.parts), spliced.content_length, 200).head(
            200, b"", **kw
        )
        assert _parse_response(out) == _parse_response(_full_pass(raw, **kw))
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",  # chunked: trailers possible
        b"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTE: trailers\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nProxy-Authenticate: Basic\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\n",  # no reason phrase: the full pass adds one
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",  # head not whole in this read
        b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 3000 + b"\r\n",
        b"\r\nHTTP/1.1 200 OK\r\n\r\n",
    ],
)
def test_responses_that_take_the_full_pass(raw: bytes) -> None:
    assert splice_response(raw) is None


def test_splice_keeps_lines_byte_exact_and_cuts_only_hop_by_hop() -> None:
    raw = (b"HTTP/1.1 404 Nope\r\nServer: x\r\nConnection: keep-alive\r\nX-Spaced:   v  \r\n"
           b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nno")
    spliced = splice_response(raw)
    assert spliced is not None and spliced.content_length
    assert spliced.head(404, b"", chunked=False, keep_alive=True, cold_start=False) == (
        b"HTTP/1.1 404 Nope\r\nServer: x\r\nX-Spaced:   v  \r\nContent-Length: 2\r\n"
        b"X-HTTPScale-Cold-Start: false\r\n\r\n"
    )


# -- the splice path for request heads ---------------------------------------------------------

def _parse_request(raw: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """Method, target and header fields of a request head, as llhttp reads them."""
    class Sink:
        def __init__(self) -> None:
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []
            self.done = False

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_message_complete(self) -> None:
            self.done = True

    sink = Sink()
    parser = httptools.HttpRequestParser(sink)
    parser.feed_data(raw)
    assert sink.done, raw
    return parser.get_method(), sink.url, sink.headers


def _keep_alive(raw: bytes) -> bool:
    """llhttp's keep-alive verdict, asked when the head is complete (as the proxy asks it)."""
    verdict: list[bool] = []

    class Sink:
        def on_headers_complete(self) -> None:
            verdict.append(bool(parser.should_keep_alive()))

    parser = httptools.HttpRequestParser(Sink())
    parser.feed_data(raw)
    return verdict[0]


def _normal(raw: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    method, url, headers = _parse_request(raw)
    return method, url, [(n.lower(), v.strip(b" \t")) for n, v in headers]


_SPLICEABLE_REQUEST_FIELDS = [
    b"Host: app.test", b"host:  App.Test:8080 ", b"User-Agent: wrk", b"Accept: */*",
    b"Connection: keep-alive", b"connection: Close", b"Keep-Alive: 300", b"Cookie: a=1",
    b"X-Forwarded-For: 203.0.113.7, 10.0.0.1", b"x-forwarded-proto: https",
    b"X-FORWARDED-HOST: public.example", b"Upgrade-Insecure-Requests: 1", b"Pragma: no-cache",
    b"Priority: u=0, i", b"Sec-Fetch-Mode: navigate", b"Authorization: Bearer x",
    b"Accept-Encoding: gzip", b"Tracestate: a=b", b"Early-Data: 1", b"X-Real-IP: 1.2.3.4",
]


@pytest.mark.parametrize("seed", range(60))
def test_spliced_request_reads_as_the_full_pass(seed: int) -> None:
    rng = random.Random(seed)
    fields = rng.sample(_SPLICEABLE_REQUEST_FIELDS, rng.randint(0, 10))
    method = rng.choice([b"GET", b"HEAD", b"DELETE", b"OPTIONS"])
    target = rng.choice([b"/", b"/a/b?q=1&r=%20", b"http://app.test/x", b"*"])
    raw = method + b" " + target + b" HTTP/1.1\r\n" + b"".join(f + b"\r\n" for f in fields)
    raw += b"\r\n"
    spliced = splice_request(raw, 8192, 65536, 100)
    hosts = sum(f.lower().startswith(b"host:") for f in fields)
    if hosts != 1 or sum(f.lower().startswith(b"connection:") for f in fields) > 1:
        # No Host, several Host or several Connection fields: the full pass decides.
        assert spliced is None
        return
    assert spliced is not None, raw
    parsed_method, url, headers = _parse_request(raw)
    assert spliced.method in (parsed_method, b"")
    assert spliced.keep_alive == _keep_alive(raw)
    assert spliced.target(method) == url
    full = read_request(headers)
    # (llhttp keeps trailing whitespace in a value; the splice drops it, as RFC 9110 does.)
    assert (spliced.host, spliced.xff) == (full.host.rstrip(b" \t"), full.xff)
    assert spliced.fields() == [(n, v.strip(b" \t")) for n, v in headers]
    out = spliced.head(method, url, b"127.0.0.1")
    assert out == spliced.head(method, url, b"127.0.0.1"), "built once"
    assert _normal(out) == _normal(full.head(method, url, b"127.0.0.1"))


@pytest.mark.parametrize("body", [b"", b"x", b"{\"a\": 1}\r\n\r\n", b"\r\n\r\n", b"b" * 5000])
@pytest.mark.parametrize("name", [b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
def test_spliced_request_with_its_whole_body(body: bytes, name: bytes) -> None:
    head = (b"POST /api HTTP/1.1\r\nHost: app.test\r\n" + name + b": %d\r\n"
            b"Connection: keep-alive\r\nContent-Type: application/json\r\n\r\n" % len(body))
    spliced = splice_request(head + body, 8192, 65536, 100)
    if body.endswith(b"\r\n\r\n"):
        # The read ends like a bodiless one; the blank lines inside send it the full way.
        assert spliced is None
        return
    assert spliced is not None
    assert spliced.content_length == len(body)
    _, url, headers = _parse_request(head + body)
    full = read_request(headers)
    assert full.content_length == spliced.content_length
    out = spliced.head(b"POST", url, b"127.0.0.1")
    assert out.endswith(b"\r\n\r\n"), "the head, without body bytes"
    assert _normal(out + body) == _normal(full.head(b"POST", url, b"127.0.0.1") + body)


def test_spliced_request_host_in_any_form() -> None:
    for line, host in [(b"Host: a.test", b"a.test"), (b"host:a.test", b"a.test"),
                       (b"HOST:\ta.test \t", b"a.test"), (b"Host:  x", b"x"), (b"Host: x", b"x")]:
        spliced = splice_request(b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n", 8192, 65536, 100)
        assert spliced is not None and spliced.host == host, line
    # An empty Host (allowed for a target without authority) is left to the full pass.
    for line in (b"Host:", b"Host: ", b"Host: \t"):
        assert splice_request(b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n", 8192, 65536, 100) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",  # body in a later read
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nh",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nh",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nextra",  # bytes after a bodiless request
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Authorization: Basic x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: refused by the full pass (RFC 9112 §3.2)
        b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # split across reads
        b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",  # over the line limit: 414
        b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n",  # over the field count: 431
    ],
)
def test_requests_that_take_the_full_pass(raw: bytes) -> None:
    assert splice_request(raw, 8192, 65536, 100) is None


def test_host_is_noted_and_a_second_one_refused() -> None:
    assert read_request([(b"Accept", b"*/*")]).has_host is False
    empty = read_request([(b"Host", b"")])
    assert (empty.has_host, empty.host) == (True, b"")
    with pytest.raises(FramingError, match="more than one Host"):
        read_request([(b"Host", b"a.test"), (b"host", b"a.test")])
