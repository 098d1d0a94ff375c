"""Helpers for the capacity tests (imported by name: `conftest` is not unique across tests/).

Every process a test starts carries `HTTPSCALE_TEST_MARK=<unique>` in its environment
(children inherit it), so that `marked_pids` finds whatever is left of it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
from localrun import communicate

LIMITED_BACKEND = Path(__file__).resolve().parent / "limited_backend.py"
# The command as the lead wires it (`httpscale capacity`), without depending on that wiring.
CAPACITY = (
    "import sys; from httpscale.capacity.cli import capacity_command; "
    "capacity_command(prog_name='httpscale capacity')"
)


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
    status, out, err = await communicate(proc, 90)
    return status, out.decode(), err.decode()
