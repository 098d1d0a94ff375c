"""Host, as RFC 9112 §3.2 has it: an HTTP/1.1 request without one, or any request with two,
is refused with 400 before routing (a catch-all route would otherwise take it); an HTTP/1.0
request needs none and is routed with an empty host."""

from __future__ import annotations

import json

import pytest

from .helpers import queue_entry

CATCH_ALL = {"hosts": ()}  # the route takes any host, so only the Host check can refuse

REFUSED = {
    "no_host": b"GET /x HTTP/1.1\r\nUser-Agent: t\r\n\r\n",
    "no_host_post": b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    "no_host_absolute_form": b"GET http://app.test/x HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET /x HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
    "two_hosts_http10": b"GET /x HTTP/1.0\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
}


@pytest.mark.parametrize("split", [False, True], ids=["one_read", "byte_reads"])
@pytest.mark.parametrize("raw", REFUSED.values(), ids=REFUSED.keys())
async def test_request_without_one_host_is_400(proxied, clients, raw, split):
    ic, backend = await proxied(route_kw=CATCH_ALL)
    conn = await clients(ic.proxy_address)
    if split:  # the full pass, a read at a time, must refuse it too
        for i in range(len(raw)):
            await conn.send(raw[i : i + 1])
    else:
        await conn.send(raw)
    resp = await conn.read_response()
    assert resp.status == 400, (resp.status, resp.body)
    assert b"Host" in resp.body and len(resp.body) < 200
    assert await conn.read_until_eof() == b"", "the connection closes after the 400"
    assert backend.requests == []
    assert queue_entry(ic)["Concurrency"] == 0


async def test_missing_host_message_names_the_rule(proxied, clients):
    ic, _ = await proxied(route_kw=CATCH_ALL)
    conn = await clients(ic.proxy_address)
    await conn.send(REFUSED["no_host"])
    resp = await conn.read_response()
    assert resp.body == b"missing Host header (HTTP/1.1 requires one, RFC 9112 section 3.2)\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /x HTTP/1.0\r\n\r\n",  # HTTP/1.0 has no Host requirement
        b"GET /x HTTP/1.1\r\nHost:\r\n\r\n",  # empty: allowed (RFC 9110 §7.2), still one Host
    ],
    ids=["http10_without_host", "http11_empty_host"],
)
async def test_request_routed_without_a_host_name(proxied, clients, raw):
    ic, backend = await proxied(route_kw=CATCH_ALL)
    conn = await clients(ic.proxy_address)
    await conn.send(raw)
    resp = await conn.read_response()
    assert resp.status == 200, (resp.status, resp.body)
    assert json.loads(resp.body)["target"] == "/x"
    assert [r.target for r in backend.requests] == ["/x"]


async def test_http10_without_host_and_no_catch_all_is_404(proxied, clients):
    ic, backend = await proxied()
    conn = await clients(ic.proxy_address)
    await conn.send(b"GET /x HTTP/1.0\r\n\r\n")
    resp = await conn.read_response()
    assert resp.status == 404, (resp.status, resp.body)
    assert backend.requests == []
