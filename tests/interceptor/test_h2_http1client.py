"""HTTP/2 streams to HTTP/1.1 backends through http1client.py: the request framing it chooses,
keep-alive reuse and its bound, and the response shapes an HTTP/1.1 app may send (HEAD with a
length, a body to the connection's end, trailing whitespace, interim answers, a cut response)."""

from __future__ import annotations

import json
from typing import Any

from httpscale.interceptor.settings import Limits

from .backends import BackendConn, Request, echo_app, http_app
from .h2client import H2Client


async def test_upload_without_length_is_chunked_and_whole_one_has_a_length(
    backends, make_interceptor
):
    from .helpers import app_route, eventually

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target != "/s":
            await conn.read_body(req)
            await echo_app(req, conn)
            return
        # Answer at once, so the client knows its upload is under way before it ends it.
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\ngo\r\n")
        await conn.read_body(req)
        got = f"{req.header('transfer-encoding')}:{req.body.decode()}".encode()
        await conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(got), got))

    b = await backends(_head_first(app))
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    c = await H2Client.open(ic.proxy_address)
    try:
        streamed = c.request("/s", method="POST", body=None, end=False)
        c.send(streamed, b"part one, ")
        await eventually(lambda: bytes(c.replies[streamed].body) == b"go", what="the answer")
        c.send(streamed, b"part two", end=True)
        whole = c.request("/w", method="POST", body=b"all at once")
        empty = c.request("/e", method="POST")
        rs, rw, re_ = (await c.reply(streamed), await c.reply(whole), await c.reply(empty))
    finally:
        await c.aclose()
    assert bytes(rs.body) == b"gochunked:part one, part two"
    w, e = (json.loads(bytes(r.body)) for r in (rw, re_))
    assert not w["chunked"] and w["body"] == "all at once"
    assert dict((k.lower(), v) for k, v in w["headers"])["content-length"] == "11"
    assert dict((k.lower(), v) for k, v in e["headers"])["content-length"] == "0"


def _head_first(app: Any) -> Any:
    """Like http_app, but the app reads the body itself (it answers before the upload ends)."""

    async def handler(conn: BackendConn) -> None:
        while (req := await conn.read_request_head()) is not None:
            await app(req, conn)

    return handler


async def test_connections_are_reused_and_bounded(proxied):
    ic, backend = await proxied(limits=Limits(pool_max_per_endpoint=2))
    c = await H2Client.open(ic.proxy_address)
    try:
        replies = [await c.reply(s) for s in [c.request(f"/{i}") for i in range(20)]]
        again = await c.get("/again")
    finally:
        await c.aclose()
    assert [r.status for r in replies] == [200] * 20 and again.status == 200
    # 20 streams at once over at most 2 connections, kept open for the next stream.
    assert backend.accepted <= 2
    assert json.loads(bytes(again.body))["conn"] <= 2


async def test_head_answer_with_a_length_ends_without_a_body(backends, make_interceptor):
    from .helpers import app_route

    async def app(req: Request, conn: BackendConn) -> None:
        # A HEAD answer announces the GET's length and sends no body.
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Pad: spaced \t \r\n\r\n"
        await conn.send(head if req.method == "HEAD" else head + b"hello")

    b = await backends(http_app(app))
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    c = await H2Client.open(ic.proxy_address)
    try:
        head = await c.get("/", method="HEAD")
        get = await c.get("/")  # on the same upstream connection: the HEAD left it clean
    finally:
        await c.aclose()
    assert head.status == 200 and bytes(head.body) == b""
    assert head.header(b"content-length") == b"5"
    assert head.header(b"x-pad") == b"spaced"  # HTTP/2 allows no trailing whitespace
    assert get.status == 200 and bytes(get.body) == b"hello"
    assert b.accepted == 1


async def test_interim_answer_skipped_and_body_to_close(backends, make_interceptor):
    from .helpers import app_route

    async def app(req: Request, conn: BackendConn) -> None:
        await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        await conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ")
        await conn.send(b"the end")
        conn.close_after = True

    b = await backends(http_app(app))
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    c = await H2Client.open(ic.proxy_address)
    try:
        r = await c.get("/")
    finally:
        await c.aclose()
    assert r.status == 200 and bytes(r.body) == b"until the end"
    assert r.header(b"link") is None


async def test_response_cut_short_resets_the_stream(backends, make_interceptor):
    from .helpers import app_route

    async def app(req: Request, conn: BackendConn) -> None:
        if req.target != "/cut":
            await conn.respond(200, b"whole")
            return
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        conn.reset()
        conn.close_after = True

    b = await backends(http_app(app))
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    c = await H2Client.open(ic.proxy_address)
    try:
        r = await c.get("/cut")
        after = await c.get("/next")  # same client connection, a fresh upstream one
    finally:
        await c.aclose()
    assert r.status == 200 and r.reset is not None  # told the response is incomplete
    assert after.status == 200 and bytes(after.body) == b"whole"
    assert b.accepted == 2
