"""The scaler on a cluster: routes from HTTPScaledObject and InterceptorRoute watches, and the
interceptor replicas from the EndpointSlices of the interceptor admin Service.

Both are informers of the shared watch layer (`httpscale.kube.cache`), which survives apiserver
restarts and relists on its own; every batch of watch events reaches the scaler on the next
turn of the event loop as a whole snapshot, from which the whole route list (or replica set) is
pushed again. The route table keeps open streams of routes that are still there, so an edit of
one object never disturbs KEDA's streams for the others.

- Routes: key `<namespace>/<name>`. An InterceptorRoute wins over an HTTPScaledObject of the
  same key, as in KEDA's add-on. An object that does not parse (the informer logs it) is left
  out and listed as invalid (`/status`, `httpscale_scaler_invalid_objects`); the table is built
  from the others. Nothing is pushed before both kinds are listed, so until then KEDA is told
  UNAVAILABLE (retry), never NOT_FOUND for a route that exists.
- Replicas: one label-selected watch (`kubernetes.io/service-name=<service>`) in the
  interceptor namespace; `discovery.admin_urls` turns the slices into admin URLs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from httpscale.kube.api import Kube, Obj
from httpscale.kube.cache import Informer, Snapshot
from httpscale.kube.config import KubeSettings
from httpscale.kube.endpoints import SERVICE_NAME_LABEL
from httpscale.kube.resources import ENDPOINTSLICES, HTTPSCALEDOBJECTS, INTERCEPTORROUTES
from httpscale.kube.watch import WatchSettings
from httpscale.model import HTTPScaledObject, InterceptorRoute, parse_httpso
from httpscale.model import parse_interceptor_route as parse_ir
from httpscale.scaler.discovery import InterceptorSink, admin_urls
from httpscale.scaler.routes import ScalerRoute, ScalerRouteSink, httpso_route, interceptor_route

__all__ = [
    "DEFAULT_INTERCEPTOR_SERVICE",
    "ClusterSettings",
    "EndpointSliceDiscovery",
    "ScalerRouteWatch",
    "build_routes",
]

log = logging.getLogger("httpscale.scaler.cluster")

DEFAULT_INTERCEPTOR_SERVICE = "httpscale-interceptor-admin"


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """Where the scaler finds routes and interceptors on a cluster."""

    kube: KubeSettings = field(default_factory=KubeSettings)
    watch_namespace: str | None = None  # HTTPSOs and IRs of this namespace only; None: all
    interceptor_service: str = DEFAULT_INTERCEPTOR_SERVICE  # the interceptor admin Service
    interceptor_namespace: str = "httpscale"  # ... and its namespace
    interceptor_admin_port: int | str = 9090  # the pods' admin port, or a port name
    # Seconds one request keeps an InterceptorRoute active (its ScaledObject's cooldownPeriod
    # is not known here); None: the route's request-rate window (1m unless it sets one).
    ir_activity_window: float | None = None
    watch: WatchSettings = field(default_factory=WatchSettings)


def build_routes(
    httpsos: Snapshot[HTTPScaledObject],
    irs: Snapshot[InterceptorRoute],
    *,
    ir_activity_window: float | None = None,
    cache: dict[str, tuple[object, ScalerRoute]] | None = None,
) -> tuple[list[ScalerRoute], dict[str, str]]:
    """The route list from both kinds' snapshots, and the objects left out ("<Kind> <key>":
    why). `cache` (key -> (parsed object, route)) spares rebuilding routes of unchanged
    objects: the informer hands out the same parsed object until the object changes."""
    memo = cache if cache is not None else {}
    chosen: dict[str, HTTPScaledObject | InterceptorRoute] = dict(httpsos.items)
    chosen.update(irs.items)  # the InterceptorRoute of a key wins over its HTTPScaledObject
    routes: list[ScalerRoute] = []
    for key, item in chosen.items():
        hit = memo.get(key)
        if hit is not None and hit[0] is item:
            routes.append(hit[1])
            continue
        route = _route_of(key, item, ir_activity_window)
        memo[key] = (item, route)
        routes.append(route)
    for key in memo.keys() - chosen.keys():
        del memo[key]
    invalid = {f"HTTPScaledObject {k}": str(e) for k, e in httpsos.invalid.items()}
    invalid.update({f"InterceptorRoute {k}": str(e) for k, e in irs.invalid.items()})
    return routes, invalid


def _route_of(
    key: str, item: HTTPScaledObject | InterceptorRoute, ir_activity_window: float | None
) -> ScalerRoute:
    if isinstance(item, InterceptorRoute):
        return interceptor_route(key, item.spec.scaling_metrics, active_for=ir_activity_window)
    spec = item.spec
    return httpso_route(
        key, spec.effective_scaling_metric(), scaledown_period=spec.scaledown_period
    )


class ScalerRouteWatch:
    """Routes from HTTPScaledObjects and InterceptorRoutes (a `ScalerRouteSource`)."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str | None = None,
        ir_activity_window: float | None = None,
        settings: WatchSettings | None = None,
    ) -> None:
        self.namespace = namespace
        self._ir_activity_window = ir_activity_window
        self.httpsos: Informer[HTTPScaledObject] = Informer(
            kube, HTTPSCALEDOBJECTS, parse=parse_httpso, namespace=namespace, settings=settings
        )
        self.irs: Informer[InterceptorRoute] = Informer(
            kube, INTERCEPTORROUTES, parse=parse_ir, namespace=namespace, settings=settings
        )
        self.synced = asyncio.Event()
        self.pushes = 0  # route lists pushed
        self.routes: list[ScalerRoute] = []  # as last pushed
        self.invalid: Mapping[str, str] = {}  # objects left out of it, and why
        self._sink: ScalerRouteSink | None = None
        self._cache: dict[str, tuple[object, ScalerRoute]] = {}

    @property
    def informers(self) -> tuple[Informer[Any], ...]:
        return (self.httpsos, self.irs)

    def status(self) -> Mapping[str, object]:
        """For /status: the watches behind the route table."""
        return {"synced": self.synced.is_set(), "pushes": self.pushes,
                "watches": [_watch_status(i) for i in self.informers]}

    async def run(self, sink: ScalerRouteSink) -> None:
        self._sink = sink
        async with asyncio.TaskGroup() as group:
            for informer in self.informers:
                group.create_task(informer.run(), name=f"watch {informer.name}")
            for informer in self.informers:
                await informer.wait_synced()
            for informer in self.informers:
                informer.subscribe(self._changed)
            self._push()
            self.synced.set()
            log.info("routes from the cluster (%s): %d routes, %d invalid objects",
                     self.namespace or "all namespaces", len(self.routes), len(self.invalid))

    def _changed(self, snapshot: Snapshot[Any], changed: frozenset[str]) -> None:
        self._push()

    def _push(self) -> None:
        assert self._sink is not None
        routes, invalid = build_routes(
            self.httpsos.snapshot(), self.irs.snapshot(),
            ir_activity_window=self._ir_activity_window, cache=self._cache,
        )
        self.routes, self.invalid = routes, invalid
        self._sink.set_routes(routes, invalid)
        self.pushes += 1


class EndpointSliceDiscovery:
    """Interceptor replicas from the EndpointSlices of their admin Service (an
    `InterceptorDiscovery`): every ready endpoint is one replica."""

    def __init__(
        self,
        kube: Kube,
        *,
        service: str,
        namespace: str,
        port: int | str = 9090,
        settings: WatchSettings | None = None,
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.port = port
        self.slices: Informer[Obj] = Informer(
            kube, ENDPOINTSLICES, namespace=namespace,
            label_selector=f"{SERVICE_NAME_LABEL}={service}", settings=settings,
        )
        self.urls: tuple[str, ...] | None = None  # as last pushed; None before the first list
        self._sink: InterceptorSink | None = None

    def status(self) -> Mapping[str, object]:
        """For /status: the watch behind the replica set."""
        return {"service": f"{self.namespace}/{self.service}", "port": self.port,
                "watches": [_watch_status(self.slices)]}

    async def run(self, sink: InterceptorSink) -> None:
        self._sink = sink
        self.slices.subscribe(self._changed)
        await self.slices.run()

    def _changed(self, snapshot: Snapshot[Obj], changed: frozenset[str]) -> None:
        urls = admin_urls(snapshot.raw.values(), self.port)
        if urls == self.urls:
            return
        if not urls:
            log.warning("interceptor admin Service %s/%s has no ready endpoint",
                        self.namespace, self.service)
        else:
            log.info("interceptor replicas of %s/%s: %s", self.namespace, self.service,
                     " ".join(urls))
        self.urls = urls
        assert self._sink is not None
        self._sink.set_interceptors(urls)


def _watch_status(informer: Informer[Any]) -> Mapping[str, object]:
    return {"name": informer.name, "synced": informer.synced, "connected": informer.connected,
            "relists": informer.reflector.relists, "failures": informer.reflector.failures,
            "last_error": informer.last_error}
