"""`httpscale interceptor` as a real process: routes from a file, SIGTERM drains and exits 0,
the file's listen/admin addresses unless an option (or its variable) is given, and a bad file
is refused naming the file and the key."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from .backends import Backend, free_port
from .client import get

LOOPBACK_OPTIONS = (
    "--host", "127.0.0.1", "--port", "0", "--admin-host", "127.0.0.1", "--admin-port", "0",
)


async def _start(
    config: Path, *options: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, tuple[str, int], tuple[str, int]]:
    """Run `httpscale interceptor --config FILE *options`; the proxy's and the admin server's
    addresses as it reports them once listening."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config),
        *options, "--readiness-delay", "0",
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, "interceptor exited before listening"
            if m := re.search(r"proxy on ([\d.]+):(\d+), admin on ([\d.]+):(\d+)", line):
                proxy = (m.group(1), int(m.group(2)))
                return proc, proxy, (m.group(3), int(m.group(4)))


async def _stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        return await proc.wait()


def _routes(port: int, addresses: str = "") -> str:
    return (
        f"{addresses}apps:\n  - name: app\n    hosts: [app.test]\n"
        f"    run: {{upstream: 'http://127.0.0.1:{port}'}}\n"
    )


async def test_interceptor_command_serves_routes_from_a_file_and_drains_on_sigterm(
    backends, tmp_path: Path
) -> None:
    b: Backend = await backends()
    config = tmp_path / "routes.yaml"
    config.write_text(_routes(b.port))
    proc, address, _ = await _start(config, *LOOPBACK_OPTIONS)
    try:
        resp = await get(address, "/hello")
        assert resp.status == 200
        assert b.requests[0].target == "/hello"
        missing = await get(address, "/", host="other.test")
        assert missing.status == 404
    finally:
        rc = await _stop(proc)
    assert rc == 0


async def test_the_file_listen_and_admin_addresses_are_taken(backends, tmp_path: Path) -> None:
    b: Backend = await backends()
    proxy_port, admin_port = free_port(), free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(
        _routes(b.port, f"listen: 127.0.0.1:{proxy_port}\nadmin: 127.0.0.1:{admin_port}\n")
    )
    proc, proxy, admin = await _start(config)  # no address option: the file's
    try:
        assert (proxy, admin) == (("127.0.0.1", proxy_port), ("127.0.0.1", admin_port))
        assert (await get(proxy, "/via-file")).status == 200
        assert b.requests[0].target == "/via-file"
        assert (await get(admin, "/livez", host="localhost")).status == 200
    finally:
        assert await _stop(proc) == 0


async def test_options_and_their_variables_win_over_the_file(backends, tmp_path: Path) -> None:
    """Each of the four is taken on its own: here the port from the command line and the
    admin port from the environment, the hosts still from the file."""
    b: Backend = await backends()
    proxy_port, admin_port = free_port(), free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(
        _routes(b.port, f"listen: 127.0.0.1:{proxy_port}\nadmin: 127.0.0.1:{admin_port}\n")
    )
    proc, proxy, admin = await _start(config, "--port", "0", env={"HTTPSCALE_ADMIN_PORT": "0"})
    try:
        assert proxy[0] == admin[0] == "127.0.0.1"
        assert proxy[1] not in (0, proxy_port) and admin[1] not in (0, admin_port)
        assert (await get(proxy, "/")).status == 200
        assert (await get(admin, "/livez", host="localhost")).status == 200
    finally:
        assert await _stop(proc) == 0


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
    assert err.decode().strip() == (
        f"Error: {config}: apps[0].hostz: unknown key (did you mean 'host'?)"
    ), err
