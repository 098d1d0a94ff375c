"""The scaler's admin HTTP server: /metrics, /livez, /readyz and a human-oriented /status.

`/readyz` follows the gRPC health status (ready while at least one interceptor replica is
fresh), so a Kubernetes readiness probe and a gRPC health check never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from httpscale.adminsite import AdminSite
from httpscale.scaler.activity import ActivityBoard
from httpscale.scaler.collector import Collector
from httpscale.scaler.metrics import ScalerMetrics
from httpscale.scaler.routes import ScalerRouteTable

__all__ = ["AdminServer"]


class AdminServer:
    def __init__(
        self,
        metrics: ScalerMetrics,
        collector: Collector,
        board: ActivityBoard,
        table: ScalerRouteTable,
        ready: Callable[[], bool],
        sources: Callable[[], Mapping[str, object]] = dict,
    ) -> None:
        self._metrics = metrics
        self._collector = collector
        self._board = board
        self._table = table
        self._ready = ready
        self._sources = sources  # what the route source and the discovery report, if anything
        self._site = AdminSite([
            ("/metrics", self._handle_metrics),
            ("/livez", self._handle_livez),
            ("/readyz", self._handle_readyz),
            ("/status", self._handle_status),
        ])

    @property
    def port(self) -> int:
        return self._site.port

    async def start(self, host: str, port: int) -> None:
        await self._site.start(host, port)

    async def stop(self, grace: float) -> None:
        await self._site.stop(grace)

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
        routes = []
        for route in self._table.all():
            last_used = self._collector.last_used(route.key)
            routes.append({
                "key": route.key,
                "origin": route.origin,
                "metrics": [
                    {"name": m.name, "kind": m.kind, "target": m.target} for m in route.metrics
                ],
                "concurrency": self._collector.concurrency(route.key),
                "rate": self._collector.rate(route.key),
                "active": self._board.is_active(route.key),
                "activity_window": route.activity_window,
                "last_used_seconds_ago": None if last_used is None else round(last_used, 3),
                "wake_hold": self._board.held(route.key),
            })
        invalid = dict(self._table.invalid)
        return web.json_response({
            "ready": self._ready(),
            "replicas": replicas,
            "routes": routes,
            "invalid": invalid,
            "sources": self._sources(),
        })
