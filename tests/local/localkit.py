"""Helpers for local-mode tests (imported by name: `conftest` is not unique across tests/).

Every process a test starts carries `HTTPSCALE_TEST_MARK=<unique>` in its environment (children
inherit it), so that `marked_pids` finds whatever is left of it, grandchildren included.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from httpscale.routing.spec import Endpoint

MARK_VAR = "HTTPSCALE_TEST_MARK"


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


def hello_command(*args: str) -> tuple[str, ...]:
    return ("{python}", "-m", "httpscale.examples.hello", "--port", "{port}", *args)


class FakeSink:
    """Stands in for the interceptor's endpoint control in supervisor tests (in-process)."""

    def __init__(self) -> None:
        self.current: frozenset[Endpoint] = frozenset()
        self.log: list[tuple[str, object]] = []
        self._changed = asyncio.Condition()

    def publish(self, endpoints: frozenset[Endpoint]) -> None:
        self.current = endpoints
        self.log.append(("publish", endpoints))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def drain(self, endpoint: Endpoint) -> None:
        self.log.append(("drain", endpoint))

    async def wait_for(self, pred: Callable[[frozenset[Endpoint]], bool]) -> None:
        async with asyncio.timeout(15), self._changed:
            await self._changed.wait_for(lambda: pred(self.current))


async def eventually(pred: Callable[[], bool], within: float = 15.0) -> None:
    """Wait until `pred()` holds: for state outside this process (other processes' exits)."""
    async with asyncio.timeout(within):
        while not pred():  # noqa: ASYNC110 - no event to wait on for another process's state
            await asyncio.sleep(0.02)


async def http_get(
    endpoint: Endpoint, path: str = "/", host: str = "x"
) -> tuple[int, dict[str, str], bytes]:
    """One GET on loopback (`Connection: close`): to a replica directly, or through the proxy
    with the app's `host`."""
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body
