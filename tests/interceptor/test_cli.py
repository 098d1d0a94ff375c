"""`httpscale interceptor` as a real process: routes from a file, SIGTERM drains and exits 0,
and a bad file is refused naming the file and the key."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from .backends import Backend
from .client import get


async def _start(config: Path) -> tuple[asyncio.subprocess.Process, tuple[str, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config),
        "--host", "127.0.0.1", "--port", "0", "--admin-host", "127.0.0.1", "--admin-port", "0",
        "--readiness-delay", "0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, "interceptor exited before listening"
            if m := re.search(r"proxy on ([\d.]+):(\d+)", line):
                return proc, (m.group(1), int(m.group(2)))


async def test_interceptor_command_serves_routes_from_a_file_and_drains_on_sigterm(
    backends, tmp_path: Path
) -> None:
    b: Backend = await backends()
    config = tmp_path / "routes.yaml"
    config.write_text(
        "apps:\n  - name: app\n    hosts: [app.test]\n"
        f"    run: {{upstream: 'http://127.0.0.1:{b.port}'}}\n"
    )
    proc, address = await _start(config)
    try:
        resp = await get(address, "/hello")
        assert resp.status == 200
        assert b.requests[0].target == "/hello"
        missing = await get(address, "/", host="other.test")
        assert missing.status == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rc = await proc.wait()
    assert rc == 0


async def test_interceptor_command_refuses_a_bad_file(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("apps:\n  - name: app\n    hostz: [app.test]\n    run: {upstream: x}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config),
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    assert proc.returncode != 0
    assert str(config) in err.decode() and "apps[0].hostz" in err.decode(), err
