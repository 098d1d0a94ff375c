"""Helpers for local-mode tests (imported by name: `conftest` is not unique across tests/).

Every process a test starts carries `HTTPSCALE_TEST_MARK=<unique>` in its environment (children
inherit it), so that `marked_pids` finds whatever is left of it, grandchildren included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from httpscale.routing.spec import Endpoint


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
