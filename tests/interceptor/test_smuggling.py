"""Requests whose framing two parties could read differently are refused: 400 and close, and
nothing reaches the backend. Over-long request lines and headers get 414 / 431."""

from __future__ import annotations

import contextlib
import json

import pytest

from httpscale.interceptor.settings import Limits

from .backends import BackendConn
from .helpers import queue_entry

H = b"Host: app.test\r\n"

SMUGGLING = {
    "cl_and_te": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    "duplicate_cl_same": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "duplicate_cl_conflicting": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl_list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl_not_a_number": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n",
    "cl_negative": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "cl_plus_sign": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
    "te_chunked_not_last": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te_identity": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n",
    "te_unknown_token": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_space_before_colon": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te_obs_fold": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
}

MALFORMED = {
    "garbage_request_line": b"GARBAGE\r\n\r\n",
    "bad_version": b"GET / HTTP/9.9x\r\n" + H + b"\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "nul_in_header_value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "header_without_colon": b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n",
    "chunk_size_overflow": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    "bad_chunk_size": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
}


async def _expect_400_and_close(ic, backend, clients, raw: bytes, *, nothing_upstream=True):
    conn = await clients(ic.proxy_address)
    # A valid request smuggled behind the bad one must never be answered or forwarded.
    await conn.send(raw + b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n")
    resp = await conn.read_response()
    assert resp.status == 400, (resp.status, resp.body)
    assert resp.body, "error answers carry a short text body"
    assert len(resp.body) < 1024
    assert await conn.read_until_eof() == b"", "the connection must be closed after a 400"
    assert all(r.target != "/smuggled" for r in backend.requests)
    if nothing_upstream:
        assert backend.requests == []
    assert queue_entry(ic)["Concurrency"] == 0


@pytest.mark.parametrize("raw", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_smuggling_refused(proxied, clients, raw):
    ic, backend = await proxied()
    await _expect_400_and_close(ic, backend, clients, raw)


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_refused(proxied, clients, raw):
    ic, backend = await proxied()
    # A bad chunk size is only seen after the head went upstream; the backend may have the head.
    await _expect_400_and_close(ic, backend, clients, raw, nothing_upstream=False)


async def test_valid_request_after_refused_one_on_new_connection(proxied, clients):
    ic, backend = await proxied()
    await _expect_400_and_close(ic, backend, clients, SMUGGLING["cl_and_te"])
    conn = await clients(ic.proxy_address)
    assert (await conn.request("GET", "/fine")).status == 200


async def test_request_line_too_long_414(proxied, clients):
    ic, backend = await proxied(limits=Limits(max_request_line=1024))
    conn = await clients(ic.proxy_address)
    ok = await conn.request("GET", "/" + "a" * 900)
    assert ok.status == 200
    conn2 = await clients(ic.proxy_address)
    await conn2.send(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: app.test\r\n\r\n")
    resp = await conn2.read_response()
    assert resp.status == 414, (resp.status, resp.body)
    assert await conn2.read_until_eof() == b""
    assert len(backend.requests) == 1


async def test_request_line_too_long_414_without_line_end(proxied, clients):
    # The limit applies while the line is still arriving, not only once it is complete.
    ic, backend = await proxied(limits=Limits(max_request_line=1024))
    conn = await clients(ic.proxy_address)
    await conn.send(b"GET /" + b"a" * 4000)
    resp = await conn.read_response()
    assert resp.status == 414
    assert await conn.read_until_eof() == b""
    assert backend.requests == []


async def test_headers_too_large_431(proxied, clients):
    ic, backend = await proxied(limits=Limits(max_header_bytes=4096))
    conn = await clients(ic.proxy_address)
    ok = await conn.request("GET", "/", headers=[("X-Big", "b" * 3000)])
    assert ok.status == 200
    conn2 = await clients(ic.proxy_address)
    await conn2.send(
        b"GET / HTTP/1.1\r\nHost: app.test\r\n" + b"X-Big: " + b"b" * 8000 + b"\r\n\r\n"
    )
    resp = await conn2.read_response()
    assert resp.status == 431, (resp.status, resp.body)
    assert await conn2.read_until_eof() == b""
    assert len(backend.requests) == 1


async def test_too_many_headers_431(proxied, clients):
    ic, backend = await proxied(limits=Limits(max_headers=20))
    conn = await clients(ic.proxy_address)
    hdrs = b"".join(b"X-H%d: v\r\n" % i for i in range(40))
    await conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n" + hdrs + b"\r\n")
    resp = await conn.read_response()
    assert resp.status == 431, (resp.status, resp.body)
    assert await conn.read_until_eof() == b""
    assert backend.requests == []


async def test_body_of_unrouted_request_is_not_parsed_as_a_request(proxied, clients):
    """A 404'd request's body must be skipped (or the connection closed), never read as the
    next request: that is how a request hidden in a body reaches the backend."""
    ic, backend = await proxied()
    conn = await clients(ic.proxy_address)
    hidden = b"GET /hidden HTTP/1.1\r\nHost: app.test\r\n\r\n"
    await conn.send(
        b"POST /x HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: %d\r\n\r\n" % len(hidden)
        + hidden
        + b"GET /visible HTTP/1.1\r\nHost: app.test\r\n\r\n"
    )
    first = await conn.read_response()
    assert first.status == 404
    if "close" in (first.header("connection") or "").lower():
        assert await conn.read_until_eof() == b"", "nothing after a closing 404"
    else:
        second = await conn.read_response()
        assert second.status == 200
        assert json.loads(second.body)["target"] == "/visible"
    assert [r.target for r in backend.requests] in ([], ["/visible"])


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
    ],
    ids=["cl_and_te", "conflicting_cl", "negative_cl"],
)
async def test_ambiguous_upstream_response_is_502(proxied, clients, head):
    async def handler(conn: BackendConn) -> None:
        if await conn.read_request() is None:
            return
        await conn.send(head + b"0\r\n\r\nhello!")
        await conn.wait_eof()

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert resp.status == 502, (resp.status, resp.body)


async def test_oversized_upstream_response_head_is_502(proxied, clients):
    """The response head is bounded like the request head: a backend streaming an endless
    header gets a 502 promptly, not a proxy that buffers until the head timeout."""

    async def handler(conn: BackendConn) -> None:
        if await conn.read_request() is None:
            return
        await conn.send(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(64):
                await conn.send(b"a" * 65536)  # 4 MiB of one header value
        await conn.wait_eof()

    ic, _ = await proxied(handler, upstream_response_header=10.0)
    conn = await clients(ic.proxy_address)
    # Answered before the 10 s response-header timeout: the size limit cut it, not the clock.
    resp = await conn.request("GET", "/", within=8)
    assert resp.status == 502, (resp.status, resp.body[:100])
