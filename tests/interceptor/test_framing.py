"""Message framing through the proxy: Content-Length, chunked with trailers, 100-continue,
HEAD, 1xx, 204/304, keep-alive, pipelining and `Connection: close` from either side."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct

import pytest

from httpscale.routing.spec import Endpoint

from .backends import BackendConn, Request, free_port, http_app
from .client import build_request, read_head
from .helpers import admin_get, app_route


async def test_content_length_both_ways(proxied, clients):
    ic, _backend = await proxied()
    conn = await clients(ic.proxy_address)
    body = bytes(range(256)) * 40
    resp = await conn.request("POST", "/api/upload?x=1", body=body)
    assert resp.status == 200
    assert resp.header("content-length") == str(len(resp.body))
    seen = json.loads(resp.body)
    assert seen["method"] == "POST"
    assert seen["target"] == "/api/upload?x=1"
    assert seen["body"].encode("latin-1") == body
    assert resp.header("x-httpscale-cold-start") == "false"


def _data_segments_in(conn: BackendConn) -> int:
    """Segments carrying data that this socket received (Linux `tcp_info.tcpi_data_segs_in`,
    at byte 152 since Linux 4.6): how many writes the proxy's side made, on loopback."""
    sock = conn.writer.get_extra_info("socket")
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    return int(struct.unpack_from("I", info, 152)[0])


async def test_small_post_reaches_the_upstream_in_one_segment(proxied, clients):
    """A POST whose body came in the read with its head goes upstream in one write (one
    segment), like a GET, rather than a head write and a body write."""
    seen: list[int] = []

    async def app(req: Request, conn: BackendConn) -> None:
        seen.append(_data_segments_in(conn))
        await conn.respond(200, req.body)

    ic, backend = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    assert (await conn.request("GET", "/warm")).status == 200  # the upstream connection exists
    for n in range(3):
        body = b'{"n": %d}' % n
        resp = await conn.request("POST", "/api", body=body,
                                  headers=[("Content-Type", "application/json")])
        assert (resp.status, resp.body) == (200, body)
    assert backend.accepted == 1
    assert [b - a for a, b in itertools.pairwise(seen)] == [1, 1, 1], seen


async def test_chunked_request_with_trailers_reaches_backend(proxied, clients):
    ic, backend = await proxied()
    conn = await clients(ic.proxy_address)
    await conn.send(
        b"POST /c HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
        b"Trailer: X-Sum\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Sum: 42\r\n\r\n"
    )
    resp = await conn.read_response()
    assert resp.status == 200
    req = backend.requests[0]
    assert req.body == b"hello world!"
    assert req.chunked, "a chunked request body of unknown length must stay chunked upstream"
    assert ("X-Sum", "42") in [(k.title(), v) for k, v in req.trailers]


async def test_chunked_response_with_trailers_reaches_client(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n"
            b"3\r\nabc\r\n"
            b"A\r\n0123456789\r\n"
            b"0\r\nX-Digest: sha-256=xyz\r\n\r\n"
        )

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert resp.status == 200
    assert resp.chunked
    assert resp.body == b"abc0123456789"
    assert [(k.lower(), v) for k, v in resp.trailers] == [("x-digest", "sha-256=xyz")]
    # The connection is still usable: the chunked body was framed exactly.
    again = await conn.request("GET", "/")
    assert again.status == 200 and again.body == b"abc0123456789"


async def test_close_delimited_response_is_forwarded_whole(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 100_000)
        conn.close_after = True

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert resp.status == 200
    assert resp.body == b"x" * 100_000


async def test_expect_100_continue(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.respond(200, req.body[::-1])

    async def handler(conn: BackendConn) -> None:
        while True:
            req = await conn.read_request_head()
            if req is None:
                return
            if (req.header("expect") or "").lower() == "100-continue":
                await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await conn.read_body(req)
            await conn.backend.record(req)
            await app(req, conn)

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(
        b"PUT /e HTTP/1.1\r\nHost: app.test\r\nContent-Length: 6\r\nExpect: 100-continue\r\n\r\n"
    )
    # The client holds its body until it sees 100 Continue (from the proxy or the backend).
    first = await conn.read_interim_or_final(within=3)
    assert first.status == 100
    await conn.send(b"abcdef")
    resp = await conn.read_response()
    assert resp.status == 200
    assert resp.body == b"fedcba"
    assert all(r.status == 100 for r in resp.interim)


async def test_head_response_has_no_body(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        if req.method == "HEAD":
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        else:
            await conn.respond(200, b"after-head")

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    resp = await conn.request("HEAD", "/h")
    assert resp.status == 200
    assert resp.header("content-length") == "1000"
    # If the proxy waited for (or invented) 1000 body bytes, this next answer would be wrong.
    nxt = await conn.request("GET", "/h")
    assert nxt.status == 200 and nxt.body == b"after-head"


async def test_1xx_interim_forwarded_then_final(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        await conn.respond(200, b"final")

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert resp.status == 200 and resp.body == b"final"
    assert [r.status for r in resp.interim] == [103]
    assert resp.interim[0].header("link") == "</s.css>; rel=preload"
    nxt = await conn.request("GET", "/")
    assert nxt.status == 200 and nxt.body == b"final"


async def test_204_and_304_have_no_body(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/204":
            await conn.send(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
        elif req.target == "/304":
            # A 304 may carry the Content-Length of the representation, but never a body.
            await conn.send(
                b'HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: "e"\r\n\r\n'
            )
        else:
            await conn.respond(200, b"ok")

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    r204 = await conn.request("GET", "/204")
    assert r204.status == 204
    assert r204.header("transfer-encoding") is None
    r304 = await conn.request("GET", "/304", headers=[("If-None-Match", '"e"')])
    assert r304.status == 304
    assert r304.header("etag") == '"e"'
    # Nothing stray is left on the connection after either bodiless answer.
    r200 = await conn.request("GET", "/ok")
    assert r200.status == 200 and r200.body == b"ok"
    await conn.send(build_request("GET", "/ok", headers=[("Connection", "close")]))
    assert (await conn.read_response()).body == b"ok"
    assert await conn.read_until_eof() == b""


async def test_keepalive_reuses_client_and_upstream_connection(proxied, clients):
    ic, backend = await proxied()
    conn = await clients(ic.proxy_address)
    for i in range(5):
        resp = await conn.request("GET", f"/k{i}")
        assert resp.status == 200
        assert json.loads(resp.body)["target"] == f"/k{i}"
    assert backend.accepted == 1, "sequential requests should reuse one pooled upstream connection"


async def test_pipelined_requests_answered_in_order(proxied, clients):
    first_seen = asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/slow":
            first_seen.set()
            await asyncio.sleep(0.05)  # the first answer is the slowest: order must still hold
        await conn.respond(200, req.target.encode())

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    await conn.send(
        build_request("GET", "/slow")
        + build_request("POST", "/b", body=b"12345")
        + build_request("GET", "/c")
    )
    bodies = [(await conn.read_response()).body for _ in range(3)]
    assert bodies == [b"/slow", b"/b", b"/c"]
    assert first_seen.is_set()


async def test_connection_close_from_client(proxied, clients):
    ic, _ = await proxied()
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/", headers=[("Connection", "close")])
    assert resp.status == 200
    assert await conn.read_until_eof() == b"", "proxy must close after Connection: close"


async def test_connection_close_from_backend_keeps_client_connection(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.respond(200, f"conn{conn.index}".encode(), [("Connection", "close")])
        conn.close_after = True

    ic, backend = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    one = await conn.request("GET", "/")
    two = await conn.request("GET", "/")
    assert (one.status, one.body) == (200, b"conn1")
    assert (two.status, two.body) == (200, b"conn2"), "closed upstream must not be reused"
    assert backend.accepted == 2


@pytest.mark.parametrize("size", [5, 300_000])  # one read (no parser run) / many (llhttp)
@pytest.mark.parametrize("close", [True, False])
async def test_upstream_connection_reused_exactly_when_its_response_allows(
    proxied, clients, size, close
):
    """Keep-alive is read from the response head (by the scan when the response arrives
    whole, by llhttp otherwise): `Connection: close` ends the upstream connection even if
    the upstream leaves it open, and without it the connection is reused."""
    seen: list[BackendConn] = []

    async def app(req: Request, conn: BackendConn) -> None:
        seen.append(conn)
        # Only the header says close: the backend itself keeps the socket open.
        await conn.respond(200, b"x" * size, [("Connection", "close")] if close else [])

    ic, backend = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    for _ in range(2):
        resp = await conn.request("GET", "/")
        assert (resp.status, len(resp.body)) == (200, size)
    assert backend.accepted == (2 if close else 1)
    if close:
        assert await seen[0].wait_eof() == b"", "the proxy closes what the upstream closed"


async def test_http10_client_gets_close(proxied, clients):
    ic, _ = await proxied()
    conn = await clients(ic.proxy_address)
    await conn.send(b"GET /old HTTP/1.0\r\nHost: app.test\r\n\r\n")
    start, _headers = await asyncio.wait_for(read_head(conn.reader), 5)
    assert start.split(b" ")[1] == b"200"
    rest = await conn.read_until_eof()
    assert b'"/old"' in rest


def _http10(target: str, *, host: str = "app.test", keep_alive: bool = True) -> bytes:
    connection = "Connection: keep-alive\r\n" if keep_alive else ""
    return f"GET {target} HTTP/1.0\r\nHost: {host}\r\n{connection}\r\n".encode()


async def test_http10_keep_alive_is_announced_on_every_kind_of_answer(proxied, clients):
    """An HTTP/1.0 client keeps a connection only when the response says `keep-alive`
    (ApacheBench `-k` otherwise waits for the close that never comes): a spliced head, a head
    from the full parser and the proxy's own 404 all say it, and the connection is reused."""

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/full":  # a field named in Connection is dropped: the full pass
            await conn.respond(200, b"full", [("Connection", "x-hop"), ("X-Hop", "1")])
        else:
            await conn.respond(200, b"spliced")

    ic, backend = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    got = []
    for request in (_http10("/"), _http10("/full"), _http10("/x", host="nowhere.test")):
        await conn.send(request)
        resp = await conn.read_response()
        got.append((resp.status, resp.header("connection"), resp.header("x-hop")))
    assert got == [(200, "keep-alive", None), (200, "keep-alive", None),
                   (404, "keep-alive", None)]
    await conn.send(_http10("/last", keep_alive=False))
    last = await conn.read_response()
    assert (last.status, last.header("connection"), last.body) == (200, "close", b"spliced")
    assert await conn.is_closed_by_peer()
    assert backend.accepted == 1


async def test_http11_client_is_not_told_keep_alive(proxied, clients):
    ic, _ = await proxied()
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert resp.status == 200
    assert not resp.has_header("connection"), "HTTP/1.1 connections persist by default"


async def test_pipelined_order_holds_across_error_answers(backends, make_interceptor, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await asyncio.sleep(0.03)  # slower than the proxy's own 404 / 502
        await conn.respond(200, req.target.encode())

    b = await backends(http_app(app))
    ic = await make_interceptor(
        routes=[
            app_route(b.endpoint),
            app_route(Endpoint("127.0.0.1", free_port()), key="default/down", hosts=("down.test",)),
        ]
    )
    conn = await clients(ic.proxy_address)
    await conn.send(
        build_request("GET", "/one")
        + build_request("GET", "/missing", host="nowhere.test")
        + build_request("GET", "/two")
        + build_request("GET", "/down", host="down.test")
        + build_request("GET", "/three")
    )
    got = []
    for _ in range(5):
        r = await conn.read_response()
        got.append((r.status, r.body if r.status == 200 else b""))
    assert got == [(200, b"/one"), (404, b""), (200, b"/two"), (502, b""), (200, b"/three")]


async def test_chunked_response_to_http10_client_is_close_delimited(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
        )

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    await conn.send(b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n")
    _, headers = await asyncio.wait_for(read_head(conn.reader), 5)
    names = {k.lower(): v for k, v in headers}
    assert "transfer-encoding" not in names, "HTTP/1.0 clients do not understand chunked"
    body = await conn.read_until_eof()
    if "content-length" in names:
        assert int(names["content-length"]) == len(body)
    assert body == b"abcdefg"


async def test_head_with_chunked_response_header(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        if req.method == "HEAD":
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            await conn.respond(200, b"body")

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    resp = await conn.request("HEAD", "/")
    assert resp.status == 200 and resp.body == b""
    nxt = await conn.request("GET", "/")
    assert (nxt.status, nxt.body) == (200, b"body")


async def test_expect_100_continue_refused_by_backend(proxied, clients):
    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request_head()
        if req is None:
            return
        await conn.backend.record(req)
        # Refuse without reading the body; the client must get the final answer.
        await conn.respond(413, b"too big", [("Connection", "close")])

    ic, backend = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(
        b"PUT /e HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    resp = await conn.read_response()
    assert resp.status == 413 and resp.body == b"too big"
    assert len(backend.requests) == 1


async def test_extra_bytes_after_response_body_are_not_the_next_response(proxied, clients):
    """Bytes past Content-Length must never reach the client nor be taken as the answer to
    the next request (response queue poisoning): that upstream connection is not reusable."""

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/poison":
            await conn.send(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"
            )
        else:
            await conn.respond(200, b"honest " + req.target.encode())

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    first = await conn.request("GET", "/poison")
    assert (first.status, first.body) == (200, b"ok")
    second = await conn.request("GET", "/next")
    assert second.status in (200, 502), second.status
    assert second.body != b"poisoned"
    if second.status == 200:
        assert second.body == b"honest /next"


async def test_early_response_before_request_body_finished(proxied, clients):
    """A backend may answer (401, 413...) before reading the body: the client gets that
    answer at once, not after uploading everything."""

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request_head()
        if req is None:
            return
        await conn.backend.record(req)
        await conn.respond(401, b"no", [("Connection", "close")])
        await conn.wait_eof()

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000\r\n\r\n")
    await conn.send(b"x" * 1000)
    resp = await conn.read_response(within=3)
    assert (resp.status, resp.body) == (401, b"no")


async def test_connection_close_stops_pipeline(proxied, clients):
    ic, backend = await proxied()
    conn = await clients(ic.proxy_address)
    await conn.send(
        build_request("GET", "/a", headers=[("Connection", "close")]) + build_request("GET", "/b")
    )
    resp = await conn.read_response()
    assert resp.status == 200, (resp.status, resp.headers, resp.body)
    assert json.loads(resp.body)["target"] == "/a"
    assert await conn.read_until_eof() == b"", "nothing after the response to Connection: close"
    assert [r.target for r in backend.requests] == ["/a"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_request_after_connection_close_in_a_later_read_is_ignored(
    proxied, clients, method
):
    # The next request arrives in its own read while the first (Connection: close) is still
    # answered: it is neither forwarded nor answered nor counted, as RFC 9112 §9.6 asks.
    # (GET and POST: requests with and without a body are parsed differently.)
    release = asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        await release.wait()
        await conn.respond(200, req.target.encode())

    ic, backend = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/a", headers=[("Connection", "close")]))
    await backend.next_request()
    await conn.send(build_request(method, "/b", body=b"x" if method == "POST" else None))
    # The second read is handled before the backend answers: poll the proxy's loop once
    # through the admin port, then let the first response go.
    await admin_get(ic.admin_address, "/livez")
    release.set()
    resp = await conn.read_response()
    assert (resp.status, resp.body) == (200, b"/a")
    assert await conn.read_until_eof() == b""
    assert [r.target for r in backend.requests] == ["/a"]
    assert ic.proxy.metrics.requests_by_status() == {200: 1}


async def test_parsers_switch_per_message_on_both_sides(proxied, clients):
    # Each side has a splice parser and a full one, chosen by the read that starts a message.
    # One client connection and one upstream connection carry messages of both kinds in turn:
    # a head split across reads, a body, a chunked body, pipelined requests, plain ones.
    admin: list[tuple[str, int]] = []

    async def turn() -> None:
        # The proxy shares this loop: an admin round trip lets it read what is buffered.
        await admin_get(admin[0], "/livez")

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target == "/split":  # the head in two reads: the full parser
            await conn.send(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Le")
            await turn()
            await conn.send(b"ngth: 5\r\nX-A: 1\r\n\r\nsplit")
        elif req.target == "/chunked":  # chunked, with a trailer: the full parser
            await conn.send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\n\r\n"
                b"7\r\nchunked\r\n0\r\nX-T: 1\r\n\r\n"
            )
        else:  # spliced
            await conn.respond(200, req.body or b"plain", [("Keep-Alive", "timeout=5"),
                                                           ("Connection", "keep-alive")])

    ic, backend = await proxied(http_app(app))
    admin.append(ic.admin_address)
    conn = await clients(ic.proxy_address)
    results = []
    results.append(await conn.request("GET", "/split"))  # spliced request, full response
    results.append(await conn.request("POST", "/plain", body=b"posted"))  # spliced with body
    upload = build_request("POST", "/plain", body=b"uploaded")
    await conn.send(upload[:-3])  # the body not all in the first read: the full parser
    await turn()
    await conn.send(upload[-3:])
    results.append(await conn.read_response())
    head = build_request("GET", "/chunked")
    await conn.send(head[:20])  # a request head split across reads: the full parser
    await turn()
    await conn.send(head[20:])
    results.append(await conn.read_response())
    results.append(await conn.request("GET", "/plain"))  # spliced both ways
    await conn.send(build_request("GET", "/plain") + build_request("GET", "/split"))  # pipelined
    results.append(await conn.read_response())
    results.append(await conn.read_response())
    assert [(r.status, r.body) for r in results] == [
        (200, b"split"), (200, b"posted"), (200, b"uploaded"), (200, b"chunked"), (200, b"plain"),
        (200, b"plain"), (200, b"split"),
    ]
    assert results[3].trailers == [("X-T", "1")]
    for resp in results:
        assert resp.header("connection") is None and resp.header("keep-alive") is None
        assert resp.header("x-httpscale-cold-start") == "false"
    assert results[0].header("x-a") == "1"
    assert [r.target for r in backend.requests] == [
        "/split", "/plain", "/plain", "/chunked", "/plain", "/plain", "/split"
    ]
    for req in backend.requests:
        assert req.header("x-forwarded-for") == "127.0.0.1"
        assert req.header("x-forwarded-host") == "app.test"
    assert backend.accepted == 1, "one upstream connection carried every response"
