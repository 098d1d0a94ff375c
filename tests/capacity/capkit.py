"""Helpers for the capacity tests (imported by name: `conftest` is not unique across tests/).

Every process a test starts carries `HTTPSCALE_TEST_MARK=<unique>` in its environment
(children inherit it), so that `marked_pids` finds whatever is left of it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

MARK_VAR = "HTTPSCALE_TEST_MARK"
LIMITED_BACKEND = Path(__file__).resolve().parent / "limited_backend.py"
# The command as the lead wires it (`httpscale capacity`), without depending on that wiring.
CAPACITY = (
    "import sys; from httpscale.capacity.cli import capacity_command; "
    "capacity_command(prog_name='httpscale capacity')"
)


def marked_pids(mark: str) -> list[int]:
    needle = f"{MARK_VAR}={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def wait_gone(mark: str, timeout: float = 10.0) -> list[int]:
    """Pids with `mark` still alive after `timeout` (the test process's own are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in marked_pids(mark) if p != os.getpid()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def limited_app(
    name: str, concurrency: int = 8, latency: float = 0.05, **fields: Any
) -> dict[str, Any]:
    """A local-mode app running the backend of known capacity."""
    run = {
        "command": ["{python}", str(LIMITED_BACKEND), "--port", "{port}",
                    "--concurrency", str(concurrency), "--latency", str(latency)],
        "readiness": {"httpGet": {"path": "/healthz"}},
        "stopGracePeriod": 5,
    }
    return {"name": name, "hosts": [f"{name}.localhost"], "run": run, **fields}


async def admin(address: tuple[str, int], method: str, path: str,
                body: object = None) -> tuple[int, Any]:
    """One request to the admin server; (status, decoded JSON)."""
    url = f"http://{address[0]}:{address[1]}{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.request(method, url, json=body) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def capacity(*args: str) -> tuple[int, str, str]:
    """`httpscale capacity ARGS` as a process of its own: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CAPACITY, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
