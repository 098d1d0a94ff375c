"""KEDA's `externalscaler.ExternalScaler` service, answered from the collector and the board.

Which route a call is about: `ScaledObjectRef.namespace` plus one scaler metadata key, as in
KEDA's add-on:
- `interceptorRoute: <name>`: the InterceptorRoute of that name (an HTTPScaledObject of the same
  key does not answer it);
- `interceptorTargetPendingRequests: <n>`: the trigger that scales the interceptor fleet on the
  concurrency summed over all routes; always active, so the fleet never scales to zero;
- `httpScaledObject: <name>` (or, without any key, the ref's own name, as older add-on
  ScaledObjects have it): the route of that key, whichever kind it came from (an
  InterceptorRoute wins over an HTTPScaledObject of the same key).

The route decides the metrics: one for an HTTPScaledObject, one per metric an InterceptorRoute
configures (concurrency, request rate), each with its own name. GetMetrics answers the metric
KEDA names (KEDA strips its "sN-" prefix first), every metric when it names none.

Both int and float fields are filled: KEDA reads the float ones when they are non-zero and the
deprecated int ones otherwise. Ints are rounded up so that a small non-zero value (0.3 req/s)
never reads as zero, and a target is at least 1.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from httpscale.scaler.activity import ActivityBoard
from httpscale.scaler.collector import Collector
from httpscale.scaler.metrics import ScalerMetrics
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.proto import externalscaler_pb2_grpc as pb_grpc
from httpscale.scaler.routes import RouteMetric, ScalerRoute, ScalerRouteTable, fleet_metric_name

__all__ = [
    "KEY_FLEET_TARGET",
    "KEY_HTTPSO",
    "KEY_INTERCEPTOR_ROUTE",
    "ExternalScalerService",
    "FleetTarget",
    "RefError",
    "RouteTarget",
    "resolve_ref",
]

log = logging.getLogger("httpscale.scaler.service")

KEY_HTTPSO = "httpScaledObject"
KEY_INTERCEPTOR_ROUTE = "interceptorRoute"
KEY_FLEET_TARGET = "interceptorTargetPendingRequests"

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class RouteTarget:
    route: ScalerRoute


@dataclass(frozen=True, slots=True)
class FleetTarget:
    namespace: str
    target: float


class RefError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _fleet_target(ref: pb.ScaledObjectRef, raw: str) -> FleetTarget:
    try:
        target = float(raw)
    except ValueError:
        target = math.nan
    if not (math.isfinite(target) and target > 0):
        raise RefError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"scaler metadata {KEY_FLEET_TARGET}={raw!r} is not a positive number",
        )
    return FleetTarget(ref.namespace, target)


def resolve_ref(ref: pb.ScaledObjectRef, table: ScalerRouteTable) -> RouteTarget | FleetTarget:
    """The route (or the fleet trigger) a ref names; RefError with the gRPC status otherwise."""
    metadata = ref.scalerMetadata
    if KEY_INTERCEPTOR_ROUTE in metadata:
        kind, meta_key = "InterceptorRoute", KEY_INTERCEPTOR_ROUTE
        name = metadata[KEY_INTERCEPTOR_ROUTE]
    elif KEY_FLEET_TARGET in metadata:
        return _fleet_target(ref, metadata[KEY_FLEET_TARGET])
    else:
        kind, meta_key = "HTTPScaledObject", KEY_HTTPSO
        name = metadata[KEY_HTTPSO] if KEY_HTTPSO in metadata else ref.name
    namespace = ref.namespace
    if not _NAMESPACE.match(namespace):
        raise RefError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"ScaledObjectRef.namespace {namespace!r} is not a Kubernetes namespace name",
        )
    if not _NAME.match(name):
        raise RefError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"scaler metadata {meta_key}={name!r} is not an {kind} name",
        )
    key = f"{namespace}/{name}"
    route = table.get(key)
    if route is not None and kind == "InterceptorRoute" and route.origin != kind:
        raise RefError(
            grpc.StatusCode.NOT_FOUND,
            f"InterceptorRoute {key} is not known (an HTTPScaledObject of that name is: "
            f"name it with {KEY_HTTPSO})",
        )
    if route is None:
        if not table.loaded:
            raise RefError(grpc.StatusCode.UNAVAILABLE, "the route list is not loaded yet")
        raise RefError(grpc.StatusCode.NOT_FOUND, f"{kind} {key} is not known")
    return RouteTarget(route)


def _select(route: ScalerRoute, wanted: str) -> tuple[RouteMetric, ...]:
    """The metrics GetMetrics answers: the one KEDA names, or all when it names none."""
    if not wanted:
        return route.metrics
    metric = route.metric(wanted)
    if metric is None:
        have = ", ".join(m.name for m in route.metrics)
        raise RefError(
            grpc.StatusCode.NOT_FOUND,
            f"{route.origin} {route.key} has no metric {wanted!r} (it has {have})",
        )
    return (metric,)


def _int_up(value: float) -> int:
    return math.ceil(value) if value > 0 else 0


class ExternalScalerService(pb_grpc.ExternalScalerServicer):
    def __init__(
        self,
        table: ScalerRouteTable,
        board: ActivityBoard,
        collector: Collector,
        metrics: ScalerMetrics,
    ) -> None:
        self._table = table
        self._board = board
        self._collector = collector
        self._metrics = metrics
        self._closing = asyncio.Event()
        # The grpc task of every call in progress. grpc's server.stop() returns once the core has
        # finished its calls, which for a call the client cancelled can be before grpc has resumed
        # the Python task to unwind it: shutdown waits on these so no handler outlives the scaler.
        self._calls: set[asyncio.Task[Any]] = set()

    def close(self) -> None:
        """Shutdown: end every stream (the board and table close too, at the scaler's call)."""
        self._closing.set()

    @property
    def calls_in_progress(self) -> int:
        return len(self._calls)

    async def calls_ended(self) -> None:
        """Return once no call is in progress (the caller bounds the wait)."""
        while self._calls:
            await asyncio.wait(set(self._calls))

    def _track_call(self) -> None:
        task = asyncio.current_task()
        if task is not None and task not in self._calls:
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    # -- helpers -----------------------------------------------------------------------------

    async def _resolve(
        self, method: str, ref: pb.ScaledObjectRef, context: Any
    ) -> RouteTarget | FleetTarget:
        self._track_call()  # every handler resolves its ref first
        try:
            return resolve_ref(ref, self._table)
        except RefError as exc:
            await self._refuse(method, context, exc)
            raise  # abort raises; this keeps the type checker and readers sure of it

    async def _refuse(self, method: str, context: Any, exc: RefError) -> None:
        self._metrics.rpcs.labels(method, exc.code.name).inc()
        log.debug("%s: %s", method, exc.message)
        await context.abort(exc.code, exc.message)

    def _ok(self, method: str) -> None:
        self._metrics.rpcs.labels(method, "OK").inc()

    def _spec(self, target: RouteTarget | FleetTarget) -> pb.GetMetricSpecResponse:
        if isinstance(target, FleetTarget):
            named = [(fleet_metric_name(target.namespace), target.target)]
        else:
            named = [(m.name, m.target) for m in target.route.metrics]
        return pb.GetMetricSpecResponse(
            metricSpecs=[
                pb.MetricSpec(
                    metricName=name,
                    targetSize=max(1, math.floor(value + 0.5)),
                    targetSizeFloat=value,
                )
                for name, value in named
            ]
        )

    def _value(self, route: ScalerRoute, metric: RouteMetric) -> float:
        if metric.kind == "concurrency":
            return float(self._collector.concurrency(route.key))
        return self._collector.rate(route.key)

    # -- RPCs --------------------------------------------------------------------------------

    async def IsActive(self, request: pb.ScaledObjectRef, context: Any) -> pb.IsActiveResponse:
        target = await self._resolve("IsActive", request, context)
        self._ok("IsActive")
        if isinstance(target, FleetTarget):
            return pb.IsActiveResponse(result=True)
        return pb.IsActiveResponse(result=self._board.is_active(target.route.key))

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: Any
    ) -> AsyncIterator[pb.IsActiveResponse]:
        target = await self._resolve("StreamIsActive", request, context)
        gauge = self._metrics.open_streams.labels("StreamIsActive")
        gauge.inc()
        try:
            if isinstance(target, FleetTarget):
                yield pb.IsActiveResponse(result=True)
                await self._closing.wait()
            else:
                with self._board.watch(target.route.key) as watch:
                    async for active in watch.changes():
                        yield pb.IsActiveResponse(result=active)
                if not self._closing.is_set():
                    # The watch ended because the route was deleted: NOT_FOUND, like a new call.
                    await self._resolve("StreamIsActive", request, context)
            self._ok("StreamIsActive")
        finally:
            gauge.dec()

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: Any
    ) -> pb.GetMetricSpecResponse:
        target = await self._resolve("GetMetricSpec", request, context)
        self._ok("GetMetricSpec")
        return self._spec(target)

    async def StreamMetricSpec(
        self, request: pb.ScaledObjectRef, context: Any
    ) -> AsyncIterator[pb.GetMetricSpecResponse]:
        target = await self._resolve("StreamMetricSpec", request, context)
        gauge = self._metrics.open_streams.labels("StreamMetricSpec")
        gauge.inc()
        try:
            sent = self._spec(target)
            yield sent
            while True:
                await self._table.wait_changed()
                if self._closing.is_set() or self._table.closed:
                    break
                target = await self._resolve("StreamMetricSpec", request, context)
                spec = self._spec(target)
                if spec != sent:
                    sent = spec
                    yield spec
            self._ok("StreamMetricSpec")
        finally:
            gauge.dec()

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: Any
    ) -> pb.GetMetricsResponse:
        target = await self._resolve("GetMetrics", request.scaledObjectRef, context)
        wanted = request.metricName
        values: list[tuple[str, float]]
        if isinstance(target, FleetTarget):
            # Echo KEDA's name when it sent one: it matches values to specs by name.
            name = wanted or fleet_metric_name(target.namespace)
            values = [(name, float(self._collector.total_concurrency()))]
        elif target.route.origin == "HTTPScaledObject":
            # One metric: whatever name KEDA asks by is this one (older ScaledObjects, specs
            # fetched before a rename), as KEDA's add-on answers an HTTPSO trigger.
            route = target.route
            values = [(wanted or route.primary.name, self._value(route, route.primary))]
        else:
            route = target.route
            try:
                metrics = _select(route, wanted)
            except RefError as exc:
                await self._refuse("GetMetrics", context, exc)
                raise
            values = [(m.name, self._value(route, m)) for m in metrics]
        self._ok("GetMetrics")
        return pb.GetMetricsResponse(
            metricValues=[
                pb.MetricValue(metricName=name, metricValue=_int_up(value), metricValueFloat=value)
                for name, value in values
            ]
        )
