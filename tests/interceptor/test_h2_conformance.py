"""HTTP/2 conformance of the client side, checked by h2spec (RFC 7540/9113 and HPACK, 145
cases) over real sockets: h2c on the plain port and h2 over TLS chosen by ALPN.

h2spec is a Go program: built once from its Go module into the test cache (a Go toolchain is
needed the first time only)."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .helpers import app_route

H2SPEC = "github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible"
CACHE = Path(os.environ.get("HTTPSCALE_CACHE", Path.home() / ".cache" / "httpscale"))
# The plain port serves HTTP/1.1 and h2c: bytes that are no HTTP/2 preface are an HTTP/1.1
# request, answered 400 before the close (h2spec expects a bare close).
PLAIN_PORT_EXPECTED = {"Sends invalid connection preface"}


@pytest.fixture(scope="module")
def h2spec() -> Path:
    binary = CACHE / "bin" / "h2spec-v2.2.1"
    if binary.exists():
        return binary
    go = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists() and not shutil.which(go):
        pytest.skip("h2spec is built from its Go module: no Go toolchain")
    gobin = CACHE / "h2spec-build"
    env = {**os.environ, "GOPATH": str(CACHE / "gopath"),
           "GOMODCACHE": str(CACHE / "gopath" / "pkg" / "mod"),
           "GOCACHE": str(CACHE / "go-build"), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local",
           "GOWORK": "off", "GOBIN": str(gobin)}
    done = subprocess.run([go, "install", H2SPEC], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0 and "GOSUMDB" not in os.environ:
        # As scripts/testcluster: the checksum database is not reachable from every sandbox.
        done = subprocess.run([go, "install", H2SPEC], env={**env, "GOSUMDB": "off"},
                              capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(gobin / "h2spec", binary)
    return binary


async def _run(h2spec: Path, port: int, report: Path, *tls: str) -> tuple[int, set[str]]:
    proc = await asyncio.create_subprocess_exec(
        str(h2spec), "-h", "127.0.0.1", "-p", str(port), "-o", "5", "-j", str(report), *tls,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.wait_for(proc.wait(), 240)
    cases = ET.parse(report).getroot().iter("testcase")
    total, failed = 0, set()
    for case in cases:
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(case.get("classname", "?"))
    return total, failed


async def test_h2c_on_the_plain_port(h2spec, backends, make_interceptor, tmp_path):
    b = await backends()
    ic = await make_interceptor(routes=[app_route(b.endpoint, hosts=())])
    total, failed = await _run(h2spec, ic.proxy_address[1], tmp_path / "report.xml")
    assert total == 145
    assert failed == PLAIN_PORT_EXPECTED


async def test_h2_over_tls(h2spec, backends, make_interceptor, tmp_path):
    from .test_h2_answers import _self_signed

    b = await backends()
    ic = await make_interceptor(routes=[app_route(b.endpoint, hosts=())])
    cert, key = await asyncio.to_thread(_self_signed, tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    factory = ic.proxy.h2_protocol_factory
    assert factory is not None
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0, ssl=ctx)
    try:
        port = server.sockets[0].getsockname()[1]
        total, failed = await _run(h2spec, port, tmp_path / "report.xml", "-t", "-k")
    finally:
        server.close()
        await ic.shutdown()
        await server.wait_closed()
    assert total == 145
    assert failed == set()
