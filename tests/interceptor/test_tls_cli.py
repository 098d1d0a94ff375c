"""`httpscale interceptor --config FILE` takes the file's `tls` section, field by field, unless
a --tls-* option says otherwise; a TLS setting that cannot be used is a one-line error."""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import sys
from pathlib import Path

import pytest
from tlskit import TestCA, handshake

from .backends import Backend

LOOPBACK = ("--host", "127.0.0.1", "--port", "0", "--admin-host", "127.0.0.1", "--admin-port", "0")


async def test_the_file_tls_section_is_taken_and_an_option_wins(
    backends, tmp_path: Path
) -> None:
    b: Backend = await backends()
    ca = TestCA(tmp_path)
    leaf = ca.issue("site", dns=["app.test"])
    config = tmp_path / "routes.yaml"
    config.write_text(
        f"tls:\n  listen: 127.0.0.1:0\n  minVersion: '1.2'\n"
        f"  certificates: [{{cert: {leaf.cert}, key: {leaf.key}}}]\n"
        "apps:\n  - name: app\n    hosts: [app.test]\n"
        f"    run: {{upstream: 'http://127.0.0.1:{b.port}'}}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config), *LOOPBACK,
        "--readiness-delay", "0", "--tls-min-version", "1.3", stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "interceptor exited before listening"
                if m := re.search(r"TLS on ([\d.]+):(\d+)", line):
                    address = (m.group(1), int(m.group(2)))
                    break
        serial, _ = await asyncio.to_thread(handshake, address, ca.client_context(), "app.test")
        assert serial == leaf.serial_hex  # the file's certificate
        tls12 = ca.client_context()
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):  # --tls-min-version 1.3 won over the file's 1.2
            await asyncio.to_thread(handshake, address, tls12, "app.test")
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rc = await proc.wait()
    assert rc == 0


async def test_a_tls_setting_that_cannot_be_used_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("apps:\n  - name: app\n    run: {upstream: 'http://127.0.0.1:9'}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config), *LOOPBACK,
        "--tls-listen", "127.0.0.1:0", stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "Error: --tls-listen is set but no certificate is" in err.decode()
    assert "Traceback" not in err.decode()
