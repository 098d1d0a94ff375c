"""The HTTP/2 upstream client against real peers: gRPC calls to a grpcio server, h2 over TLS
(verification, ALPN), and connecting: failures, timeouts, waiters, shutdown under way."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from httpscale.interceptor.h2.upstream import UpstreamStream
from httpscale.routing.spec import Endpoint

from . import h2servers
from .grpcapp import GRPC_STALE_LOOP
from .h2servers import (
    Recorder,
    ServerFactory,
    UpstreamsFactory,
    hold,
    open_stream,
    request,
    respond,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.expected_errors(GRPC_STALE_LOOP)]
# The shared fixtures, by the names tests ask for (`upstreams`, `h2server`).
upstreams_fixture = h2servers.upstreams_fixture
h2server_fixture = h2servers.h2server_fixture


# -- gRPC against grpcio ------------------------------------------------------------------------


def _frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _messages(body: bytes) -> list[bytes]:
    out = []
    while body:
        n = int.from_bytes(body[1:5], "big")
        out.append(body[5 : 5 + n])
        body = body[5 + n :]
    return out


def _grpc_request(method: str) -> list[tuple[bytes, bytes]]:
    return [
        *request(f"/test.Echo/{method}", b"POST"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"),
    ]


@pytest.fixture
async def grpc_port() -> AsyncIterator[int]:
    async def unary(message: bytes, context: Any) -> bytes:
        return b"echo:" + message

    async def server_stream(message: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(3):
            yield message + b"#%d" % i

    async def bidi(messages: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for message in messages:
            yield message.upper()

    async def fail(message: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("abort returned")

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    })
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


async def test_grpc_unary_server_streaming_and_bidi(
    upstreams: UpstreamsFactory, grpc_port: int
) -> None:
    up = upstreams()
    ep = Endpoint("127.0.0.1", grpc_port)

    async def call(method: str, sink: Recorder) -> UpstreamStream:
        stream = await up.open_stream(
            ep, tls=False, server_name="", headers=_grpc_request(method), end_stream=False,
            sink=sink,
        )
        sink.stream = stream
        return stream

    unary = Recorder()
    stream = await call("Unary", unary)
    assert stream.send_data(_frame(b"hi"), end_stream=True)
    await unary.ended.wait()
    assert unary.status() == 200
    assert _messages(bytes(unary.body)) == [b"echo:hi"]
    assert unary.trailers is not None and dict(unary.trailers)[b"grpc-status"] == b"0"

    streaming = Recorder()
    stream = await call("Stream", streaming)
    stream.send_data(_frame(b"n"))
    stream.end()
    await streaming.ended.wait()
    assert _messages(bytes(streaming.body)) == [b"n#0", b"n#1", b"n#2"]
    assert streaming.trailers is not None and dict(streaming.trailers)[b"grpc-status"] == b"0"

    # Bidi: each answer arrives before the next message goes: the stream really is two-way.
    bidi = Recorder()
    stream = await call("Bidi", bidi)
    for i, word in enumerate([b"one", b"two", b"three"]):
        stream.send_data(_frame(word))
        await bidi.until(lambda i=i: len(_messages(bytes(bidi.body))) == i + 1)
    stream.end()
    await bidi.ended.wait()
    assert _messages(bytes(bidi.body)) == [b"ONE", b"TWO", b"THREE"]
    assert bidi.trailers is not None and dict(bidi.trailers)[b"grpc-status"] == b"0"
    # All three calls shared one connection.
    assert up.stats()[str(ep)]["connections"] == 1


async def test_grpc_error_status_arrives(upstreams: UpstreamsFactory, grpc_port: int) -> None:
    up = upstreams()
    sink = Recorder()
    stream = await up.open_stream(
        Endpoint("127.0.0.1", grpc_port), tls=False, server_name="",
        headers=_grpc_request("Fail"), end_stream=False, sink=sink,
    )
    sink.stream = stream
    stream.send_data(_frame(b"x"), end_stream=True)
    await sink.ended.wait()
    # grpcio answers an error with trailers only: one HEADERS frame that ends the stream.
    fields = dict(sink.trailers or sink.headers[-1])
    assert fields[b"grpc-status"] == b"5"
    assert fields[b"grpc-message"] == b"no such thing"
    assert sink.reset is None


# -- connect failures and TLS -------------------------------------------------------------------


async def test_connect_failures(upstreams: UpstreamsFactory) -> None:
    up = upstreams(connect=0.3)
    sink = Recorder()

    async def serve_http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        writer.close()

    silent: list[asyncio.Transport] = []

    class Silent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            silent.append(transport)  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    http1 = await asyncio.start_server(serve_http1, "127.0.0.1", 0)
    mute = await loop.create_server(Silent, "127.0.0.1", 0)
    try:
        http1_ep = Endpoint("127.0.0.1", http1.sockets[0].getsockname()[1])
        with pytest.raises(OSError, match="not HTTP/2"):
            await up.open_stream(http1_ep, tls=False, server_name="", headers=request(),
                                 end_stream=True, sink=sink)
        mute_ep = Endpoint("127.0.0.1", mute.sockets[0].getsockname()[1])
        with pytest.raises(TimeoutError, match="timed out"):
            await up.open_stream(mute_ep, tls=False, server_name="", headers=request(),
                                 end_stream=True, sink=sink)
        mute.close()
        await mute.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await up.open_stream(mute_ep, tls=False, server_name="", headers=request(),
                                 end_stream=True, sink=sink)
    finally:
        http1.close()
        mute.close()
        for t in silent:
            t.abort()
        await http1.wait_closed()
        await mute.wait_closed()
    assert sink.events == []
    assert up.stats() == {}


async def test_waiters_share_a_failed_connect(upstreams: UpstreamsFactory) -> None:
    up = upstreams(connect=0.3)
    loop = asyncio.get_running_loop()
    mute = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    ep = Endpoint("127.0.0.1", mute.sockets[0].getsockname()[1])
    try:
        results = await asyncio.gather(
            *(up.open_stream(ep, tls=False, server_name="", headers=request(), end_stream=True,
                             sink=Recorder()) for _ in range(5)),
            return_exceptions=True,
        )
    finally:
        mute.close()
    assert all(isinstance(r, TimeoutError) for r in results), results
    assert up.stats() == {}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d,
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate it signed (upstream.test and 127.0.0.1), and another CA."""
    d = tmp_path_factory.mktemp("h2certs")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=upstream.test", cwd=d,
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:upstream.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d,
    )
    return d


def _server_context(certs: Path, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.crt", certs / "server.key")
    context.set_alpn_protocols(alpn)
    return context


async def test_h2_over_tls_verified(
    upstreams: UpstreamsFactory, h2server: ServerFactory, certs: Path
) -> None:
    server = await h2server(
        lambda s: respond(s, s.headers[b":scheme"]), ssl_context=_server_context(certs, ["h2"])
    )
    up = upstreams(ca_file=str(certs / "ca.crt"))
    for name in ("upstream.test", ""):  # "" checks the endpoint's IP against the certificate
        _, sink = await open_stream(up, server, headers=request(scheme=b"https"), tls=True,
                                    server_name=name)
        await sink.ended.wait()
        assert bytes(sink.body) == b"https"
    # One connection per server name: the name is part of what was verified.
    assert len(server.conns) == 2
    assert up.stats()[f"127.0.0.1:{server.port} tls"]["connections"] == 2


async def test_tls_verification_failure_and_missing_alpn(
    upstreams: UpstreamsFactory, h2server: ServerFactory, certs: Path
) -> None:
    server = await h2server(hold, ssl_context=_server_context(certs, ["h2"]))
    wrong_ca = upstreams(ca_file=str(certs / "other-ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        await open_stream(wrong_ca, server, tls=True, server_name="upstream.test")
    right_ca = upstreams(ca_file=str(certs / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        await open_stream(right_ca, server, tls=True, server_name="elsewhere.test")
    http1_only = await h2server(hold, ssl_context=_server_context(certs, ["http/1.1"]))
    with pytest.raises(OSError, match="did not select h2 in ALPN"):
        await open_stream(right_ca, http1_only, tls=True, server_name="upstream.test")
    assert not server.requests and not http1_only.requests


async def test_a_cancelled_connect_lets_a_waiter_try_again(upstreams: UpstreamsFactory) -> None:
    up = upstreams(connect=0.5)
    accepted = 0

    class Mute(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            nonlocal accepted
            accepted += 1

    mute = await asyncio.get_running_loop().create_server(Mute, "127.0.0.1", 0)
    ep = Endpoint("127.0.0.1", mute.sockets[0].getsockname()[1])

    def attempt() -> asyncio.Task[UpstreamStream]:
        return asyncio.ensure_future(up.open_stream(
            ep, tls=False, server_name="", headers=request(), end_stream=True, sink=Recorder()
        ))

    try:
        first = attempt()
        second = attempt()
        await asyncio.sleep(0)  # both started: the first connects, the second waits for it
        assert up.stats()[str(ep)] == {
            "connections": 0, "streams": 0, "connecting": 1, "waiting": 1
        }
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(TimeoutError):
            await second
        assert accepted == 2
    finally:
        mute.close()
        await mute.wait_closed()
    assert up.stats() == {}


async def test_close_cuts_a_connect_under_way(upstreams: UpstreamsFactory) -> None:
    up = upstreams(connect=30.0)
    connected = asyncio.Event()

    class Mute(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            connected.set()

    mute = await asyncio.get_running_loop().create_server(Mute, "127.0.0.1", 0)
    ep = Endpoint("127.0.0.1", mute.sockets[0].getsockname()[1])
    try:
        attempt = asyncio.ensure_future(up.open_stream(
            ep, tls=False, server_name="", headers=request(), end_stream=True, sink=Recorder()
        ))
        await connected.wait()
        await up.close()
        # Not the 30 s connect timeout: the attempt fails as soon as close() cut it.
        with pytest.raises(ConnectionResetError, match="before HTTP/2 was set up"):
            await attempt
    finally:
        mute.close()
        await mute.wait_closed()
    assert up.stats() == {}
