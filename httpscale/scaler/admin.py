"""The scaler's admin HTTP server: /metrics, /livez, /readyz and a human-oriented /status.

`/readyz` follows the gRPC health status (ready while at least one interceptor replica is
fresh), so a Kubernetes readiness probe and a gRPC health check never disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from httpscale.scaler.activity import ActivityBoard
from httpscale.scaler.collector import Collector
from httpscale.scaler.metrics import ScalerMetrics
from httpscale.scaler.routes import RouteTable

__all__ = ["AdminServer"]


class AdminServer:
    def __init__(
        self,
        metrics: ScalerMetrics,
        collector: Collector,
        board: ActivityBoard,
        table: RouteTable,
        ready: Callable[[], bool],
    ) -> None:
        self._metrics = metrics
        self._collector = collector
        self._board = board
        self._table = table
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("admin server not started")
        return self._port

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/livez", self._handle_livez)
        app.router.add_get("/readyz", self._handle_readyz)
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

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _handle_livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _handle_readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="no interceptor replica answered recently\n")

    async def _handle_status(self, request: web.Request) -> web.Response:
        replicas = [
            {
                "url": r.url,
                "failing": r.failing,
                "last_error": r.last_error,
                "wake_stream": r.wake_connected,
            }
            for r in self._collector.replicas
        ]
        routes = [
            {
                "key": route.key,
                "metric": route.metric_name,
                "kind": route.kind,
                "target": route.target,
                "concurrency": self._collector.concurrency(route.key),
                "rate": self._collector.rate(route.key),
                "active": self._board.is_active(route.key),
                "wake_hold": self._board.held(route.key),
            }
            for route in self._table.all()
        ]
        return web.json_response({"ready": self._ready(), "replicas": replicas, "routes": routes})
