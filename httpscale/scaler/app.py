"""The scaler process: gRPC server, admin server, collector and sources, with ordered shutdown.

Every long-lived task is owned here (a `TaskSupervisor`), named, and watched: if one dies,
`wait()` raises so the command exits non-zero instead of serving stale numbers.

gRPC health, for Kubernetes `grpc:` probes and KEDA: `liveness` and `""` (a probe that names
no service) are SERVING from start to shutdown (a task that dies ends the process, through
`wait()`): an unreachable interceptor must never get the scaler restarted
(kedacore/http-add-on #978, #1667).
`readiness` and `externalscaler.ExternalScaler` are SERVING while at least one interceptor
replica is fresh, as `/readyz`. Shutdown, in order: health and
/readyz turn NOT_SERVING; streams end (KEDA reconnects elsewhere); the gRPC server stops
accepting and gives unary calls `grpc_grace`; then polls, wake streams and sources are
cancelled; spans still queued are exported (tracing on, bounded); the admin server goes last so
/metrics stays scrapeable to the end.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from httpscale.runtime import TaskSupervisor
from httpscale.scaler.activity import ActivityBoard
from httpscale.scaler.admin import AdminServer
from httpscale.scaler.collector import Collector
from httpscale.scaler.discovery import InterceptorDiscovery
from httpscale.scaler.metrics import ScalerMetrics
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.proto import externalscaler_pb2_grpc as pb_grpc
from httpscale.scaler.routes import ScalerRouteSource, ScalerRouteTable
from httpscale.scaler.service import ExternalScalerService
from httpscale.scaler.settings import ScalerSettings
from httpscale.scaler.tracing import interceptors
from httpscale.tracing import FLUSH_GRACE, Tracing, tracing_from_environment

__all__ = ["LIVENESS", "READINESS", "SERVICE_NAME", "Scaler"]

log = logging.getLogger("httpscale.scaler")

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name
# Health service names KEDA's add-on's manifests probe.
LIVENESS = "liveness"
READINESS = "readiness"
_LIVE_SERVICES = ("", LIVENESS)
_READY_SERVICES = (SERVICE_NAME, READINESS)

# Dead KEDA connections must not keep streams (and their watches) forever; KEDA's own
# client pings, so allow pings without calls.
_GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Scaler:
    def __init__(
        self,
        settings: ScalerSettings,
        routes: ScalerRouteSource,
        discovery: InterceptorDiscovery,
    ) -> None:
        self.settings = settings
        self._route_source = routes
        self._discovery = discovery
        self._tasks = TaskSupervisor(log)
        self._server: grpc.aio.Server | None = None
        self._grpc_port: int | None = None
        self._stopping = False
        self._started = False
        self._tracing: Tracing | None = None

    @property
    def grpc_port(self) -> int:
        if self._grpc_port is None:
            raise RuntimeError("scaler not started")
        return self._grpc_port

    @property
    def admin_port(self) -> int:
        return self.admin.port

    @property
    def ready(self) -> bool:
        return self._started and not self._stopping and self.collector.healthy

    async def start(self) -> None:
        listen = self.settings.listen
        self.metrics = ScalerMetrics()
        self.table = ScalerRouteTable()
        self.board = ActivityBoard(self.settings.wake.hold)
        self.table.add_removal_listener(self.board.drop)
        self.table.add_change_listener(self._routes_changed)
        self.collector = Collector(self.settings, self.board, self.table, self.metrics)
        self.service = ExternalScalerService(self.table, self.board, self.collector, self.metrics)
        self.health = health.aio.HealthServicer()
        await self._set_health(_LIVE_SERVICES, serving=True)
        await self._set_health(_READY_SERVICES, serving=False)
        self.admin = AdminServer(
            self.metrics, self.collector, self.board, self.table, lambda: self.ready,
            self._sources_status,
        )

        self._tracing = tracing_from_environment("httpscale.scaler", "httpscale-scaler")
        server = grpc.aio.server(options=_GRPC_OPTIONS, interceptors=interceptors(self._tracing))
        pb_grpc.add_ExternalScalerServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        self._grpc_port = server.add_insecure_port(_hostport(listen.host, listen.grpc_port))
        await server.start()
        self._server = server
        try:
            await self.admin.start(listen.host, listen.admin_port)
        except BaseException:
            await server.stop(None)
            raise
        # Shutdown cancels them in reverse: the health sync and the sources before the collector.
        self._tasks.spawn(self.collector.run(), "collector")
        self._tasks.spawn(self._route_source.run(self.table), "route source")
        self._tasks.spawn(self._discovery.run(self.collector), "interceptor discovery")
        self._tasks.spawn(self._sync_health(), "health sync")
        self._started = True
        log.info(
            "scaler serving gRPC on %s, admin on %s",
            _hostport(listen.host, self.grpc_port),
            _hostport(listen.host, self.admin_port),
        )

    async def wait(self) -> None:
        """Return never; raise if an owned task dies (the caller then stops the scaler)."""
        await self._tasks.wait()

    async def stop(self) -> None:
        if self._stopping or not self._started:
            return
        self._stopping = True
        self._tasks.begin_shutdown()
        shutdown = self.settings.shutdown
        await self.health.enter_graceful_shutdown()
        self.service.close()
        self.board.close()
        self.table.close()
        if self._server is not None:
            await self._server.stop(shutdown.grpc_grace)
        # Calls the client cancelled may still be unwinding in grpc's tasks after stop().
        try:
            async with asyncio.timeout(shutdown.grpc_grace):
                await self.service.calls_ended()
        except TimeoutError:
            log.warning(
                "%d gRPC call(s) still running after shutdown", self.service.calls_in_progress
            )
        await self._tasks.close()
        if self._tracing is not None:  # every call has ended: export their spans (bounded)
            await self._tracing.close(FLUSH_GRACE)
        await self.admin.stop(shutdown.admin_grace)
        log.info("scaler stopped")

    # -- internals ---------------------------------------------------------------------------

    def _sources_status(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name, source in (("routes", self._route_source), ("interceptors", self._discovery)):
            status = getattr(source, "status", None)
            if callable(status):
                out[name] = status()
        return out

    def _routes_changed(self) -> None:
        m = self.metrics
        routes = self.table.all()
        for origin in ("HTTPScaledObject", "InterceptorRoute"):
            m.routes.labels(origin).set(sum(1 for r in routes if r.origin == origin))
            m.invalid_objects.labels(origin).set(
                sum(1 for k in self.table.invalid if k.startswith(origin + " "))
            )

    async def _set_health(self, services: tuple[str, ...], serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in services:
            await self.health.set(service, status)

    async def _sync_health(self) -> None:
        serving = False
        while True:
            await self.collector.wait_health_changed(serving)
            serving = self.collector.healthy
            log.info("readiness: %s", "SERVING" if serving else "NOT_SERVING")
            await self._set_health(_READY_SERVICES, serving)
