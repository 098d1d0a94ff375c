"""What the scaler knows about a route, and where that knowledge comes from.

A `ScalerRoute` is the part of an HTTPScaledObject or an InterceptorRoute the scaler needs: the
key, the metrics KEDA scales it on (one for an HTTPScaledObject; one or two, concurrency first,
for an InterceptorRoute), the request-rate window, and how long a request keeps it active.
Sources push whole route lists into a sink (a static list, the local config file, the cluster's
watches), never polled.

Metric names are part of the contract with KEDA, which echoes them back in GetMetrics:
- an HTTPScaledObject's: `http-<namespace>-<name>-concurrency|rate` (httpscale's spelling);
- an InterceptorRoute's: `http_<name>_concurrency` and `http_<name>_rate`, KEDA's add-on's own
  names (`scaler/naming.go`), so a ScaledObject written for it sees the same HPA metrics.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Protocol

from httpscale.model.httpso import (
    DEFAULT_RATE_GRANULARITY,
    DEFAULT_RATE_WINDOW,
    MetricKind,
    ScalingMetric,
)

__all__ = [
    "RouteMetric",
    "RouteOrigin",
    "ScalerRoute",
    "ScalerRouteSink",
    "ScalerRouteSource",
    "ScalerRouteTable",
    "StaticRouteSource",
    "fleet_metric_name",
    "httpso_route",
    "interceptor_route",
    "ir_metric_name",
    "metric_name",
    "route_from_metric",
    "routes_from_local_config",
]

RouteOrigin = Literal["HTTPScaledObject", "InterceptorRoute"]

# Kubernetes metric names (HPA external metrics) are DNS-subdomain-like; KEDA prefixes "sN-".
_UNSAFE = re.compile(r"[^a-z0-9-]+")
_MAX_METRIC_NAME = 200  # leaves room for KEDA's "s<index>-" prefix under 253


@dataclass(frozen=True, slots=True)
class RouteMetric:
    """One metric KEDA scales a route on: its name (GetMetricSpec, GetMetrics) and HPA target
    per replica (concurrent requests, or requests/s)."""

    name: str
    kind: MetricKind
    target: float


@dataclass(frozen=True, slots=True)
class ScalerRoute:
    """One route as the scaler sees it. Durations in seconds."""

    key: str  # "<namespace>/<name>"
    metrics: tuple[RouteMetric, ...]  # at least one; concurrency first
    window: float = DEFAULT_RATE_WINDOW  # request-rate averaging window
    granularity: float = DEFAULT_RATE_GRANULARITY  # request-rate bucket width
    # How long one request keeps the route active (docs/scaler.md, "Activity"); None: `window`.
    active_for: float | None = None
    origin: RouteOrigin = "HTTPScaledObject"

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError(f"route {self.key}: no metric")
        if self.active_for is not None and not (
            self.active_for >= 0 and math.isfinite(self.active_for)
        ):
            raise ValueError(f"route {self.key}: active_for must be >= 0, got {self.active_for}")

    @property
    def activity_window(self) -> float:
        return self.window if self.active_for is None else self.active_for

    @property
    def primary(self) -> RouteMetric:
        return self.metrics[0]

    def metric(self, name: str) -> RouteMetric | None:
        return next((m for m in self.metrics if m.name == name), None)

    @property
    def name(self) -> str:
        """The object's name (the key without its namespace)."""
        return self.key.partition("/")[2]


def _sanitize(text: str) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-")


def metric_name(route_key: str, kind: MetricKind) -> str:
    """`http-<namespace>-<name>-concurrency|rate`: stable for a route and valid for the HPA.

    Two routes may in theory sanitize to the same name; that is harmless because KEDA scopes
    every metric to its own ScaledObject, and the scaler answers by the ref, not by the name.
    """
    suffix = "concurrency" if kind == "concurrency" else "rate"
    body = _sanitize(route_key.replace("/", "-"))[: _MAX_METRIC_NAME - 6 - len(suffix)]
    return f"http-{body.strip('-')}-{suffix}"


def ir_metric_name(name: str, kind: MetricKind) -> str:
    """KEDA's add-on's name for an InterceptorRoute's metric: `http_<name>_concurrency|rate`."""
    return f"http_{name}_{'concurrency' if kind == 'concurrency' else 'rate'}"


def fleet_metric_name(namespace: str) -> str:
    """Metric of the trigger that scales the interceptor fleet on total concurrency."""
    return f"http-interceptor-{_sanitize(namespace) or 'fleet'}-concurrency"


def httpso_route(
    key: str, metric: ScalingMetric, *, scaledown_period: float | None = None
) -> ScalerRoute:
    """The scaler's view of an HTTPScaledObject whose effective metric is `metric`.

    `scaledown_period` (its `spec.scaledownPeriod`, KEDA's cooldownPeriod) is how long a
    request keeps the route active; None leaves that to the rate window.
    """
    return ScalerRoute(
        key=key,
        metrics=(RouteMetric(metric_name(key, metric.kind), metric.kind,
                             float(metric.target_value)),),
        window=float(metric.window),
        granularity=float(metric.granularity),
        active_for=scaledown_period,
    )


route_from_metric = httpso_route  # the name standalone callers used first


def interceptor_route(
    key: str, metrics: Sequence[ScalingMetric], *, active_for: float | None = None
) -> ScalerRoute:
    """The scaler's view of an InterceptorRoute: one metric per one it configures.

    Its rate window comes from `requestRate` (1m/1s when it has none: the rate is still
    measured, for activity). `active_for` None: a request keeps it active for that window.
    """
    name = key.partition("/")[2]
    rate = next((m for m in metrics if m.kind == "requestRate"), None)
    ordered = sorted(metrics, key=lambda m: m.kind != "concurrency")
    return ScalerRoute(
        key=key,
        metrics=tuple(
            RouteMetric(ir_metric_name(name, m.kind), m.kind, float(m.target_value))
            for m in ordered
        ),
        window=float(rate.window) if rate is not None else DEFAULT_RATE_WINDOW,
        granularity=float(rate.granularity) if rate is not None else DEFAULT_RATE_GRANULARITY,
        active_for=active_for,
        origin="InterceptorRoute",
    )


class ScalerRouteSink(Protocol):
    def set_routes(
        self, routes: Sequence[ScalerRoute], invalid: Mapping[str, str] | None = None
    ) -> None:
        """Replace the whole route list at once; `invalid`: objects left out, and why."""


class ScalerRouteSource(Protocol):
    async def run(self, sink: ScalerRouteSink) -> None:
        """Push the route list into `sink` now and on every change, until cancelled."""


class StaticRouteSource:
    """A fixed route list (standalone mode and tests)."""

    def __init__(self, routes: Iterable[ScalerRoute]) -> None:
        self._routes = tuple(routes)

    async def run(self, sink: ScalerRouteSink) -> None:
        sink.set_routes(self._routes)
        # Nothing will ever change: park until cancelled at shutdown.
        await asyncio.get_running_loop().create_future()


class ScalerRouteTable:
    """The current routes by key, with a change signal for long-lived RPCs (StreamMetricSpec)."""

    def __init__(self) -> None:
        self._routes: dict[str, ScalerRoute] = {}
        self._invalid: Mapping[str, str] = MappingProxyType({})
        self._changed = asyncio.Event()
        self._loaded = asyncio.Event()
        self._closed = False
        self._removal_listeners: list[Callable[[frozenset[str]], None]] = []
        self._change_listeners: list[Callable[[], None]] = []

    def add_removal_listener(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call `listener(keys)` synchronously whenever routes leave the table."""
        self._removal_listeners.append(listener)

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` synchronously after every `set_routes`."""
        self._change_listeners.append(listener)

    def set_routes(
        self, routes: Sequence[ScalerRoute], invalid: Mapping[str, str] | None = None
    ) -> None:
        previous = self._routes
        self._routes = {r.key: r for r in routes}
        self._invalid = MappingProxyType(dict(invalid or {}))
        self._loaded.set()
        removed = frozenset(previous.keys() - self._routes.keys())
        if removed:
            for listener in self._removal_listeners:
                listener(removed)
        for change_listener in self._change_listeners:
            change_listener()
        # Wake every waiter, then hand the next ones a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def get(self, key: str) -> ScalerRoute | None:
        return self._routes.get(key)

    def all(self) -> tuple[ScalerRoute, ...]:
        return tuple(self._routes.values())

    @property
    def invalid(self) -> Mapping[str, str]:
        """Objects the source left out, "<Kind> <namespace>/<name>" -> why (read-only)."""
        return self._invalid

    @property
    def loaded(self) -> bool:
        """True once a source pushed a list (until then every route is unknown)."""
        return self._loaded.is_set()

    async def wait_loaded(self) -> None:
        await self._loaded.wait()

    async def wait_changed(self) -> None:
        """Return after the next `set_routes`, or at once when the table is closed."""
        if not self._closed:
            await self._changed.wait()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Shutdown: release every waiter for good."""
        self._closed = True
        self._changed.set()


def routes_from_local_config(path: str | Path) -> tuple[ScalerRoute, ...]:
    """Routes of every app in a local-mode config file (keys `local/<name>`)."""
    # Imported here, not above: reading the file validates it with the proxy's route table,
    # part of the compiled hot path, whose import decides which build of it runs
    # (httpscale/dataplane.py). Only a standalone scaler reads a file; on a cluster the scaler
    # imports none of the data plane.
    from httpscale.config.local_file import load_local_config

    config = load_local_config(path)
    return tuple(
        httpso_route(
            app.route.key,
            app.spec.effective_scaling_metric(),
            scaledown_period=app.spec.scaledown_period,
        )
        for app in config.apps
    )
