"""Header handling: hop-by-hop removal, X-Forwarded-*, Host pass-through, duplicates kept."""

from __future__ import annotations

import json

from .backends import BackendConn, Request, http_app


def _seen(resp) -> dict:
    assert resp.status == 200, (resp.status, resp.body)
    data = json.loads(resp.body)
    data["names"] = [k.lower() for k, _ in data["headers"]]
    data["h"] = {}
    for k, v in data["headers"]:
        data["h"].setdefault(k.lower(), []).append(v)
    return data


async def test_request_hop_by_hop_headers_dropped(proxied, clients):
    ic, _ = await proxied()
    conn = await clients(ic.proxy_address)
    resp = await conn.request(
        "GET",
        "/",
        headers=[
            ("Connection", "keep-alive, X-Private-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Private-Hop", "secret"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-End-To-End", "kept"),
        ],
    )
    seen = _seen(resp)
    for name in ("keep-alive", "x-private-hop", "proxy-connection", "te", "proxy-authorization"):
        assert name not in seen["names"], f"{name} must not cross the proxy"
    for v in seen["h"].get("connection", []):
        assert "x-private-hop" not in v.lower()
    assert seen["h"]["x-end-to-end"] == ["kept"]


async def test_response_hop_by_hop_headers_dropped(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.respond(
            200,
            b"ok",
            [
                ("Connection", "X-Resp-Hop"),
                ("X-Resp-Hop", "1"),
                ("Keep-Alive", "timeout=1"),
                ("Proxy-Authenticate", "Basic"),
                ("X-Keep", "yes"),
            ],
        )

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert resp.status == 200 and resp.body == b"ok"
    assert resp.header("x-resp-hop") is None
    assert resp.header("keep-alive") is None
    assert resp.header("proxy-authenticate") is None
    assert "x-resp-hop" not in (resp.header("connection") or "").lower()
    assert resp.header("x-keep") == "yes"
    # The backend's Connection header is hop-by-hop: it must not close the client connection.
    assert (await conn.request("GET", "/")).status == 200


async def test_x_forwarded_headers_set_when_absent(proxied, clients):
    ic, _ = await proxied()
    conn = await clients(ic.proxy_address)
    seen = _seen(await conn.request("GET", "/", host="App.Test:8080"))
    assert seen["h"]["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["h"]["x-forwarded-proto"] == ["http"]
    assert seen["h"]["x-forwarded-host"] == ["App.Test:8080"]
    assert seen["h"]["host"] == ["App.Test:8080"], "Host passes through unchanged"


async def test_x_forwarded_for_appended_and_others_kept(proxied, clients):
    ic, _ = await proxied()
    conn = await clients(ic.proxy_address)
    seen = _seen(
        await conn.request(
            "GET",
            "/",
            headers=[
                ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "public.example"),
            ],
        )
    )
    xff = ", ".join(seen["h"]["x-forwarded-for"])
    assert [p.strip() for p in xff.split(",")] == ["203.0.113.7", "10.0.0.1", "127.0.0.1"]
    assert seen["h"]["x-forwarded-proto"] == ["https"]
    assert seen["h"]["x-forwarded-host"] == ["public.example"]
    assert seen["h"]["host"] == ["app.test"]


async def test_repeated_headers_kept_in_order_both_ways(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        got = ",".join(req.header_all("x-multi")).encode()
        await conn.respond(
            200, got, [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2"), ("Vary", "Accept")]
        )

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/", headers=[("X-Multi", "one"), ("X-Multi", "two")])
    assert resp.body == b"one,two"
    assert resp.header_all("set-cookie") == ["a=1; Path=/", "b=2"]
    assert resp.header("vary") == "Accept"


async def test_path_and_query_forwarded_byte_exact(proxied, clients):
    ic, _ = await proxied()
    conn = await clients(ic.proxy_address)
    target = "/a%2Fb/../c;p=1?q=%20x&y=%E2%9C%93#"
    seen = _seen(await conn.request("GET", target[:-1]))
    assert seen["target"] == target[:-1]


async def test_cold_start_header_false_when_warm(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.respond(204, b"", content_length=False)

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    resp = await conn.request("DELETE", "/x")
    assert resp.status == 204
    assert resp.header("x-httpscale-cold-start") == "false"


async def test_keep_alive_response_spliced_in_any_spelling(proxied, clients):
    # The usual keep-alive response (Connection and Keep-Alive, any spelling, plus fields
    # that merely start like hop-by-hop names) is forwarded line for line without them, and
    # both connections stay open.
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.respond(
            200,
            b"ok",
            [
                ("connection", "Keep-Alive"),
                ("KEEP-ALIVE", "timeout=5, max=100"),
                ("Timing-Allow-Origin", "*"),
                ("Pragma", "no-cache"),
                ("Upgrade-Insecure-Requests", "1"),
                ("X-Spaced", "  v"),
            ],
        )

    ic, backend = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    for _ in range(3):
        resp = await conn.request("GET", "/")
        assert resp.status == 200 and resp.body == b"ok"
        assert resp.header("connection") is None and resp.header("keep-alive") is None
        assert resp.header("timing-allow-origin") == "*"
        assert resp.header("pragma") == "no-cache"
        assert resp.header("upgrade-insecure-requests") == "1"
        assert resp.header("x-spaced") == "v"
        assert resp.header("x-httpscale-cold-start") == "false"
    assert backend.accepted == 1, "the upstream connection is reused"


async def test_upstream_connection_close_stays_with_the_upstream(proxied, clients):
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.respond(200, b"bye", [("Connection", "close")])
        conn.close_after = True

    ic, backend = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    for _ in range(2):
        resp = await conn.request("GET", "/")
        assert resp.status == 200 and resp.body == b"bye"
        assert resp.header("connection") is None, "the client connection stays open"
    assert backend.accepted == 2, "a connection the upstream closes is not reused"
