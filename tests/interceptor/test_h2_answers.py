"""HTTP/2 streams answered by the interceptor itself (placeholder, canned answer, timeouts),
and h2 over TLS chosen by ALPN (the listener of contract A, stood in for by a TLS server whose
protocol is `proxy.h2_protocol_factory`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import subprocess
from pathlib import Path

from httpscale.routing.spec import CannedResponse, Placeholder

from .backends import BackendConn, Request, http_app
from .h2client import H2Client
from .helpers import app_route, eventually, queue_entry


async def test_placeholder_and_canned_answers_as_http2(make_interceptor):
    ic = await make_interceptor(
        routes=[
            app_route(dynamic=True, placeholder=Placeholder(status=503, body="soon",
                                                            for_all=True)),
            app_route(key="default/static", hosts=("static.test",),
                      canned=CannedResponse(status=200, body=b"fixed",
                                            headers=(("X-Kind", "canned"),))),
        ]
    )
    c = await H2Client.open(ic.proxy_address)
    try:
        ph = await c.get("/", host="app.test")
        canned = await c.get("/", host="static.test")
    finally:
        await c.aclose()
    assert ph.status == 503 and bytes(ph.body) == b"soon"
    assert ph.header(b"x-httpscale-cold-start") == b"true"
    assert ph.header(b"connection") is None  # no connection-specific field in HTTP/2
    assert canned.status == 200 and bytes(canned.body) == b"fixed"
    assert canned.header(b"x-kind") == b"canned"


async def test_response_head_timeout_per_stream(backends, make_interceptor):
    async def silent(req: Request, conn: BackendConn) -> None:
        await conn.wait_eof()
        conn.close_after = True

    b = await backends(http_app(silent))
    ic = await make_interceptor(routes=[app_route(b.endpoint, response_header_timeout=0.3)])
    c = await H2Client.open(ic.proxy_address)
    try:
        r = await c.get("/")
    finally:
        await c.aclose()
    assert r.status == 504
    assert b"did not send a response head within 0.3s" in r.body
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_request_timeout_per_stream_while_held(make_interceptor):
    ic = await make_interceptor(routes=[app_route(dynamic=True, request_timeout=0.3)])
    c = await H2Client.open(ic.proxy_address)
    try:
        r = await c.get("/")
    finally:
        await c.aclose()
    assert r.status == 504 and b"did not answer within 0.3s" in r.body
    assert queue_entry(ic) == {"Concurrency": 0, "RequestCount": 1}


def _self_signed(tmp: Path, san: str = "DNS:app.test") -> tuple[Path, Path]:
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=app.test", "-addext", f"subjectAltName={san}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


async def test_h2_over_tls_by_alpn(backends, make_interceptor, tmp_path):
    b = await backends()
    ic = await make_interceptor(routes=[app_route(b.endpoint)])
    cert, key = await asyncio.to_thread(_self_signed, tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    factory = ic.proxy.h2_protocol_factory
    assert factory is not None
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--max-time", "20", "--http2", "--cacert", str(cert),
            "--resolve", f"app.test:{port}:127.0.0.1", "-w", "\n%{http_version}",
            f"https://app.test:{port}/secure",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    finally:
        server.close()
        await ic.shutdown()
        await server.wait_closed()
    assert proc.returncode == 0, err
    body, version = out.decode().rsplit("\n", 1)
    assert version == "2"
    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert headers["host"] == f"app.test:{port}"


async def test_https_upstream_verified_against_the_ca_file(make_interceptor, tmp_path):
    from httpscale.interceptor.settings import Tls
    from httpscale.routing.spec import Endpoint

    from .helpers import settings

    cert, key = await asyncio.to_thread(_self_signed, tmp_path, "IP:127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    s = dataclasses.replace(settings(), tls=Tls(upstream_ca_file=str(cert)))
    ic = await make_interceptor(
        routes=[app_route(Endpoint("127.0.0.1", port), upstream_scheme="https")], settings=s
    )
    c = await H2Client.open(ic.proxy_address)
    try:
        r = await c.get("/s")
    finally:
        await c.aclose()
        server.close()
        await server.wait_closed()
    assert r.status == 200 and bytes(r.body) == b"secret"
    assert seen and seen[0].startswith(b"GET /s HTTP/1.1\r\n")
