"""The operator's admin HTTP server (port 8081): /healthz, /readyz, /metrics, /status.

- `/healthz` (liveness): 200 while every owned task runs; 500 once one died (the process is
  about to exit non-zero anyway, this only makes the kubelet agree).
- `/readyz`: 200 once the caches are synced, on the leader and on standbys alike (a standby
  with warm caches takes over in one reconcile round); 503 before that and while stopping.
- `/metrics`: Prometheus text; per-watch and per-object gauges are refreshed at scrape time.
- `/status`: JSON for people: leadership, queue, watches, objects by Ready reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from httpscale.adminsite import AdminSite
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
        self._site = AdminSite([
            ("/healthz", self._handle_healthz),
            ("/readyz", self._handle_readyz),
            ("/metrics", self._handle_metrics),
            ("/status", self._handle_status),
        ])

    @property
    def port(self) -> int:
        return self._site.port

    async def start(self, host: str, port: int) -> None:
        await self._site.start(host, port)

    async def stop(self, grace: float) -> None:
        await self._site.stop(grace)

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
