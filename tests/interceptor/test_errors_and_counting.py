"""Upstream failures map to 502/504 with short text bodies; clients that go away release their
upstream connection; per-route counters stay exact on every path, also under concurrency."""

from __future__ import annotations

import asyncio
import random

from httpscale.routing.spec import Endpoint

from .backends import BackendConn, Request, free_port, http_app
from .client import Conn, build_request, get, read_head
from .helpers import app_route, eventually, queue_entry


def _short_text(resp) -> None:
    assert resp.body, "error answers carry a body that says why"
    assert len(resp.body) < 1024
    ctype = resp.header("content-type") or ""
    assert ctype.startswith("text/plain"), ctype


async def test_404_names_host_and_path(proxied, clients):
    ic, backend = await proxied()
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/nowhere/x", host="unknown.test")
    assert resp.status == 404
    _short_text(resp)
    assert "unknown.test" in resp.text and "/nowhere/x" in resp.text
    assert backend.requests == []
    assert queue_entry(ic) == {"Concurrency": 0, "RequestCount": 0}
    # A 404 is an answer, not a reason to drop the connection.
    assert (await conn.request("GET", "/")).status == 200


async def test_upstream_refused_502(backends, make_interceptor, clients):
    ic = await make_interceptor(routes=[app_route(Endpoint("127.0.0.1", free_port()))])
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert resp.status == 502, (resp.status, resp.body)
    _short_text(resp)
    assert queue_entry(ic) == {"Concurrency": 0, "RequestCount": 1}
    assert (await conn.request("GET", "/")).status == 502, "connection still usable"


async def test_upstream_reset_before_response_502(proxied, clients):
    async def handler(conn: BackendConn) -> None:
        await conn.read_request()
        conn.reset()

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    resp = await conn.request("POST", "/", body=b"x" * 10)
    assert resp.status == 502, (resp.status, resp.body)
    _short_text(resp)
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_upstream_closes_without_response_502(proxied, clients):
    async def handler(conn: BackendConn) -> None:
        await conn.read_request()  # then return: a clean FIN with no answer

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert resp.status == 502
    _short_text(resp)


async def test_upstream_malformed_response_502(proxied, clients):
    async def handler(conn: BackendConn) -> None:
        await conn.read_request()
        await conn.send(b"NOT HTTP AT ALL\r\n\r\n")
        await conn.wait_eof()

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/")
    assert resp.status == 502
    _short_text(resp)


async def test_upstream_reset_mid_body_closes_client(proxied, clients):
    async def handler(conn: BackendConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"p" * 100)
        conn.reset()

    ic, _ = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/"))
    start, _ = await asyncio.wait_for(read_head(conn.reader), 5)
    assert b" 200 " in start  # the head was already sent: the status cannot change any more
    rest = await conn.read_until_eof()
    assert len(rest) <= 100, "the client must see a truncated body then a close, never more"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_stale_pooled_connection_is_not_a_502(proxied, clients):
    # The backend closes keep-alive connections after each answer without saying so.
    async def app(req: Request, conn: BackendConn) -> None:
        await conn.respond(200, b"ok")
        conn.close_after = True

    ic, backend = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    assert (await conn.request("GET", "/")).status == 200
    await backend.wait_for(lambda: backend.finished == 1)
    # The pooled connection is dead now; an idempotent GET must go out on a fresh one.
    resp = await conn.request("GET", "/")
    assert resp.status == 200, (resp.status, resp.body)


async def test_counters_during_and_after_a_request(proxied, clients):
    release = asyncio.Event()
    entered = asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        entered.set()
        await release.wait()
        await conn.respond(200, b"done")

    ic, _ = await proxied(http_app(app))
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/"))
    await asyncio.wait_for(entered.wait(), 5)
    assert queue_entry(ic) == {"Concurrency": 1, "RequestCount": 1}
    release.set()
    resp = await conn.read_response()
    assert resp.status == 200
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 1


async def test_client_disconnect_mid_request_body_releases_upstream(proxied, clients):
    head_seen = asyncio.Event()
    eof = asyncio.Event()
    got: list[bytes] = []

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request_head()
        if req is None:
            return
        head_seen.set()
        got.append(await conn.wait_eof())
        eof.set()

    ic, _backend = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\n")
    await conn.send(b"a" * 5000)
    await asyncio.wait_for(head_seen.wait(), 5)
    conn.abort()
    await asyncio.wait_for(eof.wait(), 5)  # the upstream connection was closed, not pooled
    assert len(got[0]) <= 5000
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 1


async def test_client_disconnect_mid_response_releases_upstream(proxied, clients):
    streaming = asyncio.Event()
    eof = asyncio.Event()

    async def handler(conn: BackendConn) -> None:
        req = await conn.read_request()
        if req is None:
            return
        if req.target == "/big":
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"d" * 1000)
            streaming.set()
            await conn.wait_eof()
            eof.set()
        else:
            await conn.respond(200, b"fresh")

    ic, backend = await proxied(handler)
    conn = await clients(ic.proxy_address)
    await conn.send(build_request("GET", "/big"))
    await asyncio.wait_for(read_head(conn.reader), 5)
    await asyncio.wait_for(streaming.wait(), 5)
    conn.abort()
    await asyncio.wait_for(eof.wait(), 5)
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    # A half-read upstream connection is never reused: the next request opens a new one.
    c2 = await clients(ic.proxy_address)
    resp = await c2.request("GET", "/again")
    assert (resp.status, resp.body) == (200, b"fresh")
    assert backend.accepted == 2
    assert queue_entry(ic)["RequestCount"] == 2


async def test_counters_exact_under_mixed_concurrent_error_paths(
    backends, make_interceptor, clients
):
    """Success, 404, 502, 504 and client aborts, all at once: the counters must come back to
    zero and RequestCount must equal the number of routed requests, per route."""

    async def ok(req: Request, conn: BackendConn) -> None:
        await asyncio.sleep(random.random() * 0.02)
        await conn.respond(200, b"ok")

    reached: dict[str, asyncio.Event] = {}

    async def hold_until_client_gone(conn: BackendConn) -> None:
        req = await conn.read_request()
        if req is not None:
            reached[req.target].set()
            await conn.wait_eof(within=10)

    async def silent(conn: BackendConn) -> None:
        await conn.read_request()
        await conn.wait_eof(within=10)

    b_ok = await backends(http_app(ok), "ok")
    b_abort = await backends(hold_until_client_gone, "abort")
    b_slow = await backends(silent, "slow")
    ic = await make_interceptor(
        routes=[
            app_route(b_ok.endpoint, key="t/ok", hosts=("ok.test",)),
            app_route(Endpoint("127.0.0.1", free_port()), key="t/refused", hosts=("refused.test",)),
            app_route(
                b_slow.endpoint, key="t/slow", hosts=("slow.test",), response_header_timeout=0.2
            ),
            app_route(b_abort.endpoint, key="t/abort", hosts=("abort.test",)),
        ]
    )
    addr = ic.proxy_address
    n = {"ok": 60, "refused": 30, "slow": 20, "abort": 20, "missing": 30}

    async def one(i: int, kind: str) -> int | None:
        if kind == "abort":
            target = f"/abort-{i}"
            reached[target] = asyncio.Event()
            c = await Conn.open(addr)
            try:
                await c.send(build_request("GET", target, host="abort.test"))
                await asyncio.wait_for(reached[target].wait(), 10)  # in flight upstream
            finally:
                c.abort()
            return None
        host = "nothing.test" if kind == "missing" else f"{kind}.test"
        return (await get(addr, "/", host=host, within=10)).status

    kinds = [k for k, count in n.items() for _ in range(count)]
    random.Random(7).shuffle(kinds)
    statuses = await asyncio.gather(*(one(i, k) for i, k in enumerate(kinds)))
    by_kind: dict[str, set] = {}
    for k, s in zip(kinds, statuses, strict=True):
        by_kind.setdefault(k, set()).add(s)
    assert by_kind == {
        "ok": {200},
        "refused": {502},
        "slow": {504},
        "abort": {None},
        "missing": {404},
    }

    def settled() -> bool:
        return all(v["Concurrency"] == 0 for v in ic.queue().values())

    await eventually(settled, within=5, what="all Concurrency back to 0")
    q = ic.queue()
    assert q["t/ok"] == {"Concurrency": 0, "RequestCount": n["ok"]}
    assert q["t/refused"] == {"Concurrency": 0, "RequestCount": n["refused"]}
    assert q["t/slow"] == {"Concurrency": 0, "RequestCount": n["slow"]}
    assert q["t/abort"] == {"Concurrency": 0, "RequestCount": n["abort"]}
    assert set(q) == {"t/ok", "t/refused", "t/slow", "t/abort"}
    # Upstream connections of aborted and timed-out requests were all closed.
    await b_abort.wait_for(lambda: b_abort.finished == b_abort.accepted)
    await b_slow.wait_for(lambda: b_slow.finished == b_slow.accepted)
