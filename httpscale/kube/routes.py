"""The interceptor's routes and endpoints, from the cluster: the Kubernetes route source.

Five watches feed it: HTTPScaledObjects and InterceptorRoutes (the routes), Services and
EndpointSlices (where each route's pods are), and ConfigMaps labelled
`http.keda.sh/response-body: "true"` (bodies of placeholders and static routes). Nothing is
pushed until all five have listed, so an interceptor's `/readyz` (which waits for the first
route list) stays 503 until it knows every route and endpoint. From then on every batch of
watch events is handled on the next turn of the event loop:

- an HTTPSO or IR that changed is mapped again (`to_route_spec`, `interceptor_route_specs`;
  every other object's routes are reused) and the whole route list is pushed: the interceptor
  swaps its table at once and keeps each route's counters, endpoints and held requests;
- a Service or slice that changed recomputes the endpoints of the routes pointing at that
  Service, and pushes those that differ (held requests are released by that push).

An InterceptorRoute wins over an HTTPScaledObject of the same namespace and name, as in KEDA.
Of two objects claiming the same host, path and headers, the older one keeps it (the route
table keeps the first claim; the list is ordered by creation time); the interceptor logs the
loser. An object that does not parse is reported by its watch and left out: it never breaks
the table for the others.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from httpscale.kube.api import Kube, Obj
from httpscale.kube.cache import Informer, Snapshot
from httpscale.kube.endpoints import (
    SERVICE_NAME_LABEL,
    ServicePort,
    compact_slice,
    ready_endpoints,
    service_port,
    upstream_scheme,
)
from httpscale.kube.resources import (
    ENDPOINTSLICES,
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    SERVICES,
    Resource,
)
from httpscale.kube.watch import WatchSettings
from httpscale.model import (
    HTTPScaledObject,
    InterceptorRoute,
    parse_httpso,
    parse_interceptor_route,
    to_route_spec,
)
from httpscale.model.routespecs import BODY_LABEL, Served, interceptor_route_specs, serving_order
from httpscale.routing.spec import Endpoint, RouteSpec

__all__ = ["CONFIGMAPS", "ClusterRouteSink", "ClusterRouteSource"]

log = logging.getLogger("httpscale.kube.routes")

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")


class ClusterRouteSink(Protocol):
    """What the source drives: the interceptor (`InterceptorControl` has all three)."""

    def set_routes(self, routes: Sequence[RouteSpec]) -> None: ...

    def set_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None: ...

    def set_fallback_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None: ...


@dataclass(frozen=True, slots=True)
class _ServiceRef:
    namespace: str
    name: str
    port: int | None
    port_name: str | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class _Route:
    """One route and the Services its endpoints come from."""

    spec: RouteSpec
    target: _ServiceRef | None
    fallback: _ServiceRef | None = None


@dataclass(slots=True)
class _Object:
    """The routes made from one HTTPSO or IR, remembered until it changes."""

    version: str
    created: str
    routes: list[_Route] = field(default_factory=list)
    config_maps: frozenset[str] = frozenset()  # "<ns>/<name>" its bodies come from


class ClusterRouteSource:
    def __init__(
        self, kube: Kube, *, namespace: str | None = None, settings: WatchSettings | None = None
    ) -> None:
        self.namespace = namespace
        self.httpsos: Informer[HTTPScaledObject] = Informer(
            kube, HTTPSCALEDOBJECTS, parse=parse_httpso, namespace=namespace, settings=settings
        )
        self.routes: Informer[InterceptorRoute] = Informer(
            kube, INTERCEPTORROUTES, parse=parse_interceptor_route, namespace=namespace,
            settings=settings,
        )
        self.services: Informer[Obj] = Informer(
            kube, SERVICES, namespace=namespace, settings=settings
        )
        self.slices: Informer[Obj] = Informer(
            kube, ENDPOINTSLICES, namespace=namespace, settings=settings, transform=compact_slice
        )
        self.config_maps: Informer[Obj] = Informer(
            kube, CONFIGMAPS, namespace=namespace, label_selector=f"{BODY_LABEL}=true",
            settings=settings,
        )
        self.synced = asyncio.Event()
        self.pushes = 0  # route lists pushed
        self._target: ClusterRouteSink | None = None
        self._objects: dict[tuple[str, str], _Object] = {}  # (kind, key) -> its routes
        self._table: dict[str, _Route] = {}  # route key -> the route now served
        self._by_service: dict[str, set[str]] = {}  # "<ns>/<svc>" -> route keys using it
        self._slices_by_service: dict[str, dict[str, Obj]] = {}
        self._slice_owner: dict[str, str] = {}  # slice key -> "<ns>/<svc>"
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}  # as last pushed
        self._fallbacks: dict[str, tuple[Endpoint, ...]] = {}
        self._problems: dict[str, str] = {}  # route key -> why it has no endpoints

    @property
    def informers(self) -> tuple[Informer[Any], ...]:
        return (self.httpsos, self.routes, self.services, self.slices, self.config_maps)

    async def run(self, target: ClusterRouteSink) -> None:
        """Push routes and endpoints into `target` now and on every change, until cancelled."""
        self._target = target
        async with asyncio.TaskGroup() as group:
            for informer in self.informers:
                group.create_task(informer.run(), name=f"watch {informer.name}")
            for informer in self.informers:
                await informer.wait_synced()
            self._start()
            self.synced.set()
            log.info("routes from the cluster: %d routes, %d invalid objects",
                     len(self._table), self.invalid_objects)

    # -- reporting ---------------------------------------------------------------------------

    @property
    def invalid_objects(self) -> int:
        return len(self.httpsos.snapshot().invalid) + len(self.routes.snapshot().invalid)

    def status(self) -> Mapping[str, object]:
        """For the interceptor's /status: what the cluster gave it, and what is wrong."""
        invalid = {
            f"HTTPScaledObject {k}": str(e) for k, e in self.httpsos.snapshot().invalid.items()
        } | {f"InterceptorRoute {k}": str(e) for k, e in self.routes.snapshot().invalid.items()}
        return {
            "synced": self.synced.is_set(),
            "routes": len(self._table),
            "invalid": invalid,
            "without_endpoints": dict(self._problems),
            "watches": {
                i.name: {"synced": i.synced, "connected": i.connected,
                         "relists": i.reflector.relists, "failures": i.reflector.failures,
                         "last_error": i.last_error}
                for i in self.informers
            },
        }

    # -- building ----------------------------------------------------------------------------

    def _start(self) -> None:
        for key in self.httpsos.snapshot().raw:
            self._map("HTTPScaledObject", key)
        for key in self.routes.snapshot().raw:
            self._map("InterceptorRoute", key)
        self._push_routes()
        self.httpsos.subscribe(self._objects_changed("HTTPScaledObject"))
        self.routes.subscribe(self._objects_changed("InterceptorRoute"))
        self.services.subscribe(self._services_changed)
        self.slices.subscribe(self._slices_changed)
        self.config_maps.subscribe(self._config_maps_changed)
        for key, obj in self.slices.snapshot().raw.items():
            self._index_slice(key, obj)
        for route_key in self._table:
            self._push_endpoints(route_key)

    def _objects_changed(self, kind: str) -> Any:
        def listener(snapshot: Snapshot[Any], changed: frozenset[str]) -> None:
            for key in changed:
                self._map(kind, key)
            self._rebuild()

        return listener

    def _map(self, kind: str, key: str) -> None:
        """(Re)make the routes of one object, or forget it."""
        informer: Informer[Any] = self.httpsos if kind == "HTTPScaledObject" else self.routes
        snapshot = informer.snapshot()
        raw = snapshot.raw.get(key)
        item = snapshot.items.get(key)
        if raw is None or item is None:  # deleted, or invalid (its watch reported why)
            self._objects.pop((kind, key), None)
            return
        meta = raw.get("metadata") or {}
        version = str(meta.get("resourceVersion"))
        known = self._objects.get((kind, key))
        if known is not None and known.version == version:
            return
        created = str(meta.get("creationTimestamp") or "")
        if isinstance(item, InterceptorRoute):
            self._objects[(kind, key)] = self._map_route(item, version, created)
        else:
            self._objects[(kind, key)] = self._map_httpso(item, version, created)

    def _map_httpso(self, httpso: HTTPScaledObject, version: str, created: str) -> _Object:
        spec = httpso.spec
        ref = spec.scale_target_ref
        assert ref is not None  # Kubernetes objects always have one
        failover = spec.cold_start_timeout_failover_ref
        fallback = None
        dns_fallback = None
        if failover is not None:
            fallback = _ServiceRef(httpso.namespace, failover.service, failover.port,
                                   failover.port_name)
            # The Service's name as a last resort when it has no ready endpoint listed (yet).
            port = self._service_port(fallback)
            if isinstance(port, ServicePort):
                dns_fallback = Endpoint(f"{failover.service}.{httpso.namespace}", port.port)
        route_spec = to_route_spec(httpso.key, spec, failover_endpoint=dns_fallback)
        target = _ServiceRef(httpso.namespace, ref.service, ref.port, ref.port_name)
        route_spec = self._upstream_protocol(route_spec, target)
        return _Object(version, created, [_Route(route_spec, target, fallback)])

    def _map_route(self, route: InterceptorRoute, version: str, created: str) -> _Object:
        spec = route.spec
        target = _ServiceRef(route.namespace, spec.target.service, spec.target.port,
                             spec.target.port_name)
        fallback = None
        if spec.cold_start is not None and spec.cold_start.fallback is not None:
            fb = spec.cold_start.fallback
            fallback = _ServiceRef(route.namespace, fb.name, fb.port, fb.port_name)
        used: set[str] = set()

        def body(namespace: str, name: str) -> Mapping[str, bytes] | None:
            used.add(f"{namespace}/{name}")
            return _config_map_data(self.config_maps.snapshot().raw.get(f"{namespace}/{name}"))

        specs = interceptor_route_specs(route, body)
        routes = [
            # A static route answers by itself, or (WhenUnavailable) forwards to the target.
            _Route(self._upstream_protocol(s, target), target,
                   fallback if s.key == route.key else None)
            for s in specs
        ]
        return _Object(version, created, routes, frozenset(used))

    def _upstream_protocol(self, spec: RouteSpec, target: _ServiceRef) -> RouteSpec:
        """`spec` speaking what the target Service port's `appProtocol` says (HTTP/1.1 in
        clear text while the Service is unknown: it is remapped when the Service arrives)."""
        scheme = self._scheme(target)
        # Over TLS the pod's certificate is checked against the Service's cluster DNS name, the
        # name a client inside the cluster would use (cert-manager and service meshes issue it).
        name = f"{target.name}.{target.namespace}.svc" if scheme in ("https", "h2") else ""
        if scheme == spec.upstream_scheme and name == spec.upstream_server_name:
            return spec
        return replace(spec, upstream_scheme=scheme, upstream_server_name=name)

    def _scheme(self, ref: _ServiceRef) -> str:
        port = self._service_port(ref)
        return upstream_scheme(port.app_protocol) if isinstance(port, ServicePort) else "http"

    def _rebuild(self) -> None:
        """Push the route list if it changed, and the endpoints of routes that changed."""
        before = self._table
        self._push_routes()
        for key, route in self._table.items():
            old = before.get(key)
            if old is None or old.target != route.target or old.fallback != route.fallback:
                self._push_endpoints(key)
        for key in before.keys() - self._table.keys():
            self._endpoints.pop(key, None)
            self._fallbacks.pop(key, None)
            self._problems.pop(key, None)

    def _push_routes(self) -> None:
        served = serving_order(
            Served(kind, key, obj.created, obj) for (kind, key), obj in self._objects.items()
        )
        table: dict[str, _Route] = {}
        for entry in served:
            obj = entry.value
            assert isinstance(obj, _Object)
            for route in obj.routes:
                table[route.spec.key] = route
        self._table = table
        by_service: dict[str, set[str]] = {}
        for key, route in table.items():
            for ref in (route.target, route.fallback):
                if ref is not None:
                    by_service.setdefault(ref.key, set()).add(key)
        self._by_service = by_service
        assert self._target is not None
        self._target.set_routes([r.spec for r in table.values()])
        self.pushes += 1
        log.debug("route list #%d pushed: %d routes", self.pushes, len(table))

    # -- endpoints ---------------------------------------------------------------------------

    def _service_port(self, ref: _ServiceRef) -> ServicePort | str:
        return service_port(self.services.snapshot().raw.get(ref.key), ref.port, ref.port_name)

    def _resolve(self, ref: _ServiceRef) -> tuple[tuple[Endpoint, ...], str]:
        port = self._service_port(ref)
        if isinstance(port, str):
            return (), f"Service {ref.key}: {port}"
        endpoints = ready_endpoints(self._slices_by_service.get(ref.key, {}).values(), port)
        return endpoints, "" if endpoints else f"Service {ref.key} has no ready endpoint"

    def _push_endpoints(self, route_key: str) -> None:
        route = self._table.get(route_key)
        if route is None or self._target is None:
            return
        if route.target is not None:
            endpoints, problem = self._resolve(route.target)
            if problem:
                self._problems[route_key] = problem
            else:
                self._problems.pop(route_key, None)
            if self._endpoints.get(route_key) != endpoints:
                self._endpoints[route_key] = endpoints
                self._target.set_endpoints(route_key, endpoints)
        if route.fallback is not None or route_key in self._fallbacks:
            fallback = self._resolve(route.fallback)[0] if route.fallback is not None else ()
            if self._fallbacks.get(route_key) != fallback:
                self._fallbacks[route_key] = fallback
                self._target.set_fallback_endpoints(route_key, fallback)

    def _services_changed(self, snapshot: Snapshot[Obj], changed: frozenset[str]) -> None:
        remap = False
        for service in changed:
            for route_key in self._by_service.get(service, ()):
                self._push_endpoints(route_key)
                route = self._table.get(route_key)
                if route is None:
                    continue
                # An HTTPSO's failover port may be named: its Service tells the number.
                if route.fallback is not None and route.fallback.key == service:
                    remap = True
                # The target port's appProtocol says how to talk to the pods.
                if route.target is not None and route.target.key == service and (
                    route.spec.upstream_scheme != self._scheme(route.target)
                ):
                    remap = True
        if remap:
            for (kind, key), obj in list(self._objects.items()):
                if any(self._stale(r, changed, kind) for r in obj.routes):
                    del self._objects[(kind, key)]
                    self._map(kind, key)
            self._rebuild()

    def _stale(self, route: _Route, changed: frozenset[str], kind: str) -> bool:
        """Whether a Service change alters what `route` was mapped to."""
        target = route.target
        if target is not None and target.key in changed and (
            route.spec.upstream_scheme != self._scheme(target)
        ):
            return True
        return kind == "HTTPScaledObject" and (
            route.fallback is not None and route.fallback.key in changed
        )

    def _index_slice(self, key: str, obj: Obj | None) -> set[str]:
        """Keep `_slices_by_service` current for one slice; the Services it was or is of."""
        touched: set[str] = set()
        old = self._slice_owner.pop(key, None)
        if old is not None:
            touched.add(old)
            slices = self._slices_by_service.get(old)
            if slices is not None:
                slices.pop(key, None)
                if not slices:
                    del self._slices_by_service[old]
        service = _slice_service(obj) if obj is not None else ""
        if obj is not None and service:
            self._slices_by_service.setdefault(service, {})[key] = obj
            self._slice_owner[key] = service
            touched.add(service)
        return touched

    def _slices_changed(self, snapshot: Snapshot[Obj], changed: frozenset[str]) -> None:
        services: set[str] = set()
        for key in changed:
            services |= self._index_slice(key, snapshot.raw.get(key))
        for service in services:
            for route_key in self._by_service.get(service, ()):
                self._push_endpoints(route_key)

    def _config_maps_changed(self, snapshot: Snapshot[Obj], changed: frozenset[str]) -> None:
        stale = [k for k, obj in self._objects.items() if obj.config_maps & changed]
        for kind, key in stale:
            del self._objects[(kind, key)]
            self._map(kind, key)
        if stale:
            self._rebuild()


def _slice_service(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{meta.get('namespace')}/{name}" if name else ""


def _config_map_data(obj: Obj | None) -> Mapping[str, bytes] | None:
    if obj is None:
        return None
    data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    for k, v in (obj.get("binaryData") or {}).items():
        data[k] = base64.b64decode(v)
    return data
