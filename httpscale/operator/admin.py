"""The operator's admin HTTP server (port 8081): /healthz, /readyz, /metrics, /status.

- `/healthz` (liveness): 200 while every owned task runs; 500 once one died (the process is
  about to exit non-zero anyway, this only makes the kubelet agree).
- `/readyz`: 200 once the caches are synced, on the leader and on standbys alike (a standby
  with warm caches takes over in one reconcile round); 503 before that and while stopping.
- `/metrics`: Prometheus text; per-watch and per-object gauges are refreshed at scrape time.
- `/status`: JSON for people: leadership, queue, watches, objects by Ready reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from httpscale.operator.metrics import OperatorMetrics

__all__ = ["OperatorAdmin"]


class OperatorAdmin:
    def __init__(
        self,
        metrics: OperatorMetrics,
        *,
        healthy: Callable[[], str | None],
        ready: Callable[[], str | None],
        status: Callable[[], Mapping[str, Any]],
        refresh: Callable[[], None],
    ) -> None:
        """`healthy`/`ready` return None when fine, else why not; `refresh` updates gauges."""
        self._metrics = metrics
        self._healthy = healthy
        self._ready = ready
        self._status = status
        self._refresh = refresh
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("admin server not started")
        return self._port

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_get("/readyz", self._handle_readyz)
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/status", self._handle_status)
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

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        problem = self._healthy()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(status=500, text=f"{problem}\n")

    async def _handle_readyz(self, request: web.Request) -> web.Response:
        problem = self._ready()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"{problem}\n")

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        self._refresh()
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _handle_status(self, request: web.Request) -> web.Response:
        self._refresh()
        return web.json_response(self._status())
