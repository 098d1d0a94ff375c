"""The TLS listener: certificates chosen by SNI (exact, wildcard, default), ALPN, HTTP/1.1
through it with X-Forwarded-Proto: https (Python's ssl and curl as clients), the version
policy, and the errors a bad setting gets at start."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
from tlskit import Leaf, TestCA, handshake, secret_dir

from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.settings import InterceptorShutdown, Tls
from httpscale.interceptor.tls import TlsConfigError, TlsListener

from .backends import Backend, BackendConn, Request, http_app
from .client import Conn, build_request, get
from .conftest import BackendFactory, InterceptorFactory
from .helpers import app_route, settings, wait_refused


@dataclasses.dataclass
class Pki:
    ca: TestCA
    default: Leaf  # default.test
    site_a: Leaf  # a.test, www.a.test
    wild: Leaf  # *.wild.test
    exact_in_wild: Leaf  # exact.wild.test: beats the wildcard
    secret: Leaf  # secret.test, served from a Secret-style directory


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = TestCA(tmp_path_factory.mktemp("pki"))
    return Pki(
        ca,
        ca.issue("default", dns=["default.test"], serial=0xD1),
        ca.issue("site-a", dns=["a.test", "www.a.test"], serial=0xA1),
        ca.issue("wild", dns=["*.wild.test"], serial=0xB1),
        ca.issue("exact", dns=["exact.wild.test"], serial=0xE1),
        ca.issue("secret", dns=["secret.test"], serial=0x51),
    )


def tls_settings(**tls: Any) -> Any:
    tls.setdefault("listen", "127.0.0.1:0")
    return dataclasses.replace(settings(), tls=Tls(**tls))


def cert_dir(tmp_path: Path, pki: Pki) -> Path:
    """NAME.crt + NAME.key files, and one Secret-style NAME/ directory."""
    d = tmp_path / "certs"
    d.mkdir()
    pairs = (("b-site-a", pki.site_a), ("c-wild", pki.wild), ("d-exact", pki.exact_in_wild))
    for name, leaf in pairs:
        shutil.copy(leaf.cert, d / f"{name}.crt")
        shutil.copy(leaf.key, d / f"{name}.key")
    secret_dir(d / "e-secret", pki.secret)
    return d


async def served_serial(
    address: tuple[str, int], pki: Pki, server_name: str | None, alpn: tuple[str, ...] = ()
) -> tuple[str, str | None]:
    ctx = pki.ca.client_context(alpn=alpn)
    return await asyncio.to_thread(handshake, address, ctx, server_name)


async def tls_conn(address: tuple[str, int], pki: Pki, sni: str = "default.test") -> Conn:
    """A verified TLS connection (requests on it say `Host: app.test`)."""
    reader, writer = await asyncio.open_connection(
        *address, ssl=pki.ca.client_context(), server_hostname=sni
    )
    return Conn(reader, writer)


async def test_sni_chooses_exact_then_wildcard_then_the_default(
    make_interceptor: InterceptorFactory, pki: Pki, tmp_path: Path
) -> None:
    ic = await make_interceptor(
        settings=tls_settings(
            cert=str(pki.default.cert), key=str(pki.default.key),
            cert_dir=str(cert_dir(tmp_path, pki)),
        )
    )
    assert ic.tls_address is not None
    cases = {
        "a.test": pki.site_a,
        "WWW.A.test": pki.site_a,  # host names are case-insensitive
        "x.wild.test": pki.wild,
        "exact.wild.test": pki.exact_in_wild,  # exact beats wildcard
        "secret.test": pki.secret,  # NAME/tls.crt through the ..data symlink
        "default.test": pki.default,
        "unknown.test": pki.default,
        "deeper.x.wild.test": pki.default,  # a wildcard covers one label only
    }
    for name, leaf in cases.items():
        serial, alpn = await served_serial(ic.tls_address, pki, name)
        assert serial == leaf.serial_hex, name
        assert alpn is None  # the client offered none
    # No SNI at all: the default certificate.
    serial, _ = await served_serial(ic.tls_address, pki, None)
    assert serial == pki.default.serial_hex


async def test_without_a_default_the_first_of_the_directory_is_it(
    make_interceptor: InterceptorFactory, pki: Pki, tmp_path: Path
) -> None:
    ic = await make_interceptor(settings=tls_settings(cert_dir=str(cert_dir(tmp_path, pki))))
    assert ic.tls_address is not None
    serial, _ = await served_serial(ic.tls_address, pki, "nothing.test")
    assert serial == pki.site_a.serial_hex  # b-site-a sorts first
    serial, _ = await served_serial(ic.tls_address, pki, None)
    assert serial == pki.site_a.serial_hex


async def test_alpn_offers_h2_only_when_http2_is_on(
    make_interceptor: InterceptorFactory, pki: Pki
) -> None:
    s = tls_settings(cert=str(pki.default.cert), key=str(pki.default.key))
    off = dataclasses.replace(s, http2=dataclasses.replace(s.http2, enabled=False))
    ic = await make_interceptor(settings=off)
    assert ic.tls_address is not None
    _, alpn = await served_serial(ic.tls_address, pki, "default.test", ("h2", "http/1.1"))
    assert alpn == "http/1.1"

    ic = await make_interceptor(settings=s)
    assert ic.tls_address is not None
    _, alpn = await served_serial(ic.tls_address, pki, "default.test", ("h2", "http/1.1"))
    assert alpn == "h2"
    # A client that offers only http/1.1 gets HTTP/1.1 from the same listener.
    _, alpn = await served_serial(ic.tls_address, pki, "default.test", ("http/1.1",))
    assert alpn == "http/1.1"

    # The protocol ALPN chose gets the transport after the handshake, over TLS.
    class StandIn(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            over_tls = transport.get_extra_info("ssl_object") is not None
            transport.write(b"h2 protocol, over TLS: %d" % over_tls)  # type: ignore[attr-defined]
            transport.close()

    proxy: Any = ic.proxy
    proxy.h2_protocol_factory = StandIn
    listener = TlsListener(proxy, s)
    address = await listener.start()
    try:
        reader, writer = await asyncio.open_connection(
            *address, ssl=pki.ca.client_context(alpn=("h2",)), server_hostname="default.test"
        )
        async with asyncio.timeout(10):
            assert await reader.read() == b"h2 protocol, over TLS: 1"
        writer.close()
    finally:
        listener.close()


async def test_http11_over_tls_reaches_a_plain_backend_with_x_forwarded_proto_https(
    backends: BackendFactory, make_interceptor: InterceptorFactory, pki: Pki
) -> None:
    backend: Backend = await backends()
    ic = await make_interceptor(
        routes=[app_route(backend.endpoint)],
        settings=tls_settings(cert=str(pki.default.cert), key=str(pki.default.key),
                              extra_certs=f"{pki.site_a.cert},{pki.site_a.key}"),
    )
    assert ic.tls_address is not None
    conn = await tls_conn(ic.tls_address, pki)
    try:
        spliced = await conn.request("GET", "/one")  # the splice path
        full = await conn.request(  # the full header pass (a chunked body)
            "POST", "/two", headers=[("Transfer-Encoding", "chunked")],
            body=b"5\r\nhello\r\n0\r\n\r\n",
        )
        kept = await conn.request("GET", "/three", headers=[("X-Forwarded-Proto", "wss")])
    finally:
        await conn.aclose()
    for resp in (spliced, full, kept):
        assert resp.status == 200
    seen = [json.loads(r.body) for r in (spliced, full, kept)]
    assert seen[0]["conn"] == seen[1]["conn"]  # one keep-alive connection upstream too
    for req in backend.requests[:2]:
        assert req.header_all("x-forwarded-proto") == ["https"]
        assert req.header("x-forwarded-for") == "127.0.0.1"
        assert req.header("x-forwarded-host") == "app.test"
    assert backend.requests[1].body == b"hello"
    assert backend.requests[2].header_all("x-forwarded-proto") == ["wss"]  # as clear text does
    # The same request in clear text says http.
    plain = await get(ic.proxy_address, "/four")
    assert plain.status == 200
    assert backend.requests[3].header_all("x-forwarded-proto") == ["http"]

    # curl, with SNI: the certificate for a.test (an extra certificate) verifies for it.
    host, port = ic.tls_address
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--http1.1", "--cacert", str(pki.ca.cert),
        "--resolve", f"a.test:{port}:{host}", "-H", "Host: app.test",
        "-w", "\n%{http_code} %{ssl_verify_result}", f"https://a.test:{port}/curl",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err
    body, _, status = out.decode().rpartition("\n")
    assert status == "200 0"
    assert json.loads(body)["target"] == "/curl"
    assert backend.requests[4].header_all("x-forwarded-proto") == ["https"]


async def test_min_version_13_refuses_a_tls12_client(
    make_interceptor: InterceptorFactory, pki: Pki
) -> None:
    ic = await make_interceptor(
        settings=tls_settings(cert=str(pki.default.cert), key=str(pki.default.key),
                              min_version="1.3")
    )
    assert ic.tls_address is not None
    old = pki.ca.client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(handshake, ic.tls_address, old, "default.test")
    serial, _ = await served_serial(ic.tls_address, pki, "default.test")  # 1.3 is served
    assert serial == pki.default.serial_hex
    # openssl s_client forced to 1.2 is refused too.
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-tls1_2", "-connect", "{}:{}".format(*ic.tls_address),
        "-servername", "default.test", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode != 0
    # Refused in the handshake (the loop's SSL transport closes without flushing the alert).
    assert b"Cipher is (NONE)" in out


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({}, "--tls-listen is set but no certificate is"),
        ({"cert": "CERT"}, "--tls-key: needed"),
        ({"min_version": "1.1", "cert": "CERT", "key": "KEY"},
         "--tls-min-version: expected 1.2 or 1.3"),
        ({"ciphers": "NOPE", "cert": "CERT", "key": "KEY"},
         "--tls-ciphers: OpenSSL accepts no cipher"),
        ({"cert": "CERT", "key": "OTHER_KEY"},
         "--tls-cert: .*not a usable PEM certificate and matching key"),
        ({"cert": "/nonexistent.crt", "key": "KEY"}, "--tls-cert: /nonexistent.crt: No such file"),
        ({"cert_dir": "/nonexistent"}, "--tls-cert-dir: /nonexistent does not exist"),
        ({"listen": "nope", "cert": "CERT", "key": "KEY"}, "--tls-listen: expected HOST:PORT"),
        ({"cert": "CERT", "key": "KEY", "upstream_ca_file": "/nonexistent.pem"},
         "--tls-upstream-ca-file: cannot load /nonexistent.pem"),
    ],
)
async def test_bad_tls_settings_fail_the_start_naming_the_setting(
    pki: Pki, tls: dict[str, str], message: str
) -> None:
    files = {"CERT": str(pki.default.cert), "KEY": str(pki.default.key),
             "OTHER_KEY": str(pki.site_a.key)}
    tls = {k: files.get(v, v) for k, v in tls.items()}
    ic = Interceptor(tls_settings(**tls))
    with pytest.raises(TlsConfigError, match=message):
        await ic.start()


async def test_shutdown_stops_the_tls_listener_and_drains_its_connections(
    backends: BackendFactory, make_interceptor: InterceptorFactory, pki: Pki
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def holding(req: Request, conn: BackendConn) -> None:
        if req.target == "/hold":
            entered.set()
            await release.wait()
        await conn.respond(200, b"done " + req.target.encode())

    backend = await backends(http_app(holding))
    s = tls_settings(cert=str(pki.default.cert), key=str(pki.default.key))
    s = dataclasses.replace(s, shutdown=InterceptorShutdown(readiness_delay=0.0, drain_timeout=10))
    ic = await make_interceptor(routes=[app_route(backend.endpoint)], settings=s)
    assert ic.tls_address is not None
    idle = await tls_conn(ic.tls_address, pki)
    busy = await tls_conn(ic.tls_address, pki)
    try:
        assert (await idle.request("GET", "/")).status == 200
        await busy.send(build_request("GET", "/hold"))
        await asyncio.wait_for(entered.wait(), 10)
        stopping = asyncio.create_task(ic.shutdown())
        try:
            await wait_refused(ic.tls_address)  # stopped accepting TLS too
            assert await idle.read_until_eof() == b""  # the idle one is closed at once
            assert not stopping.done(), "shutdown must wait for the in-flight TLS request"
            release.set()
            resp = await busy.read_response()
            assert (resp.status, resp.body) == (200, b"done /hold")
            await asyncio.wait_for(asyncio.shield(stopping), 10)
        finally:
            await stopping
    finally:
        await idle.aclose()
        await busy.aclose()


async def test_a_client_that_never_finishes_the_handshake_is_closed_after_the_head_timeout(
    make_interceptor: InterceptorFactory, pki: Pki
) -> None:
    s = tls_settings(cert=str(pki.default.cert), key=str(pki.default.key))
    s = dataclasses.replace(s, timeouts=dataclasses.replace(s.timeouts, request_head=0.5))
    ic = await make_interceptor(settings=s)
    assert ic.tls_address is not None
    reader, writer = await asyncio.open_connection(*ic.tls_address)  # TCP only, no ClientHello
    try:
        async with asyncio.timeout(10):  # closed by the 0.5 s handshake timeout, not by this
            assert await reader.read() == b""
    finally:
        writer.close()
    assert not ic.proxy.connections  # it never became a client connection
