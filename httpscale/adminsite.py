"""The small aiohttp server each component serves its admin endpoints on (health, metrics,
status), started on a port (0: a free one) and stopped within a bound."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

__all__ = ["AdminSite", "Handler"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminSite:
    def __init__(self, routes: Iterable[tuple[str, Handler]]) -> None:
        """`routes`: (path, GET handler) pairs."""
        self._routes = tuple(routes)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("admin server not started")
        return self._port

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        for path, handler in self._routes:
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self._port = int(addresses[0][1]) if addresses else port

    async def stop(self, grace: float) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            # Bounded: a client holding a connection open must not stall shutdown.
            async with asyncio.timeout(grace + 1.0):
                await runner.shutdown()
                await runner.cleanup()
