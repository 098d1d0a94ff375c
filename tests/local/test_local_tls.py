"""`httpscale local -c FILE` with a `tls` section and an https:// upstream, end to end: curl
over TLS (SNI) to the interceptor, which verifies the upstream's certificate against the
file's CA and forwards with X-Forwarded-Proto: https."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import sys
from pathlib import Path

from localrun import communicate
from tlskit import TestCA, handshake


async def _tls_echo(context: ssl.SSLContext) -> asyncio.Server:
    """A TLS upstream answering each request with its head's fields as JSON."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:-2]
            fields = dict(line.split(": ", 1) for line in lines)
            body = json.dumps({k.lower(): v for k, v in fields.items()}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                         % len(body) + body)
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)


async def test_local_mode_serves_tls_and_reaches_an_https_upstream(
    mark: str, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path)
    site = ca.issue("site", dns=["app.test"])
    other = ca.issue("other", dns=["other.test"])
    upstream = await _tls_echo(ca.server_context(ca.issue("upstream", ips=["127.0.0.1"])))
    upstream_port = upstream.sockets[0].getsockname()[1]
    config = tmp_path / "local.yaml"
    for leaf in (site, other):  # relative paths, next to the file
        os.symlink(leaf.cert, tmp_path / leaf.cert.name)
        os.symlink(leaf.key, tmp_path / leaf.key.name)
    config.write_text(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n"
        "tls:\n  listen: 127.0.0.1:0\n  certificates:\n"
        f"    - {{cert: {site.cert.name}, key: {site.key.name}}}\n"
        f"    - {{cert: {other.cert.name}, key: {other.key.name}}}\n"
        f"  upstreamCA: {ca.cert}\n"
        "apps:\n  - name: app\n    hosts: [app.test]\n"
        f"    run: {{upstream: 'https://127.0.0.1:{upstream_port}'}}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "local", "-c", str(config),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "httpscale local exited before listening"
                if m := re.search(r"and https://([\d.]+):(\d+)", line):
                    host, port = m.group(1), int(m.group(2))
                    break
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--cacert", str(ca.cert), "--resolve", f"app.test:{port}:{host}",
            "-w", "\n%{http_code}", f"https://app.test:{port}/hello",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        rc, out, err = await communicate(curl, within=30)
        assert rc == 0, err
        body, _, status = out.decode().rpartition("\n")
        assert status == "200", body
        forwarded = json.loads(body)
        assert forwarded["x-forwarded-proto"] == "https"
        assert forwarded["host"] == f"app.test:{port}"
        # The second certificate is chosen by SNI.
        serial, _ = await asyncio.to_thread(
            handshake, (host, port), ca.client_context(), "other.test"
        )
        assert serial == other.serial_hex
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc, _, err = await communicate(proc, within=30)
        upstream.close()
        await upstream.wait_closed()
    assert rc == 0, err.decode()[-2000:]
