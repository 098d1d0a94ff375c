"""What the scaler knows about a route, and where that knowledge comes from.

A `ScalerRoute` is the part of an HTTPScaledObject the scaler needs: the key, which metric drives
the HPA and its target, and the request-rate window. Sources push whole route lists into a sink
(static lists and the local config file now, a Kubernetes watch later), never polled.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from httpscale.model.httpso import ScalingMetric

__all__ = [
    "MetricKind",
    "RouteTable",
    "ScalerRoute",
    "ScalerRouteSink",
    "ScalerRouteSource",
    "StaticRouteSource",
    "fleet_metric_name",
    "metric_name",
    "route_from_metric",
    "routes_from_local_config",
]

MetricKind = Literal["concurrency", "requestRate"]

# Kubernetes metric names (HPA external metrics) are DNS-subdomain-like; KEDA prefixes "sN-".
_UNSAFE = re.compile(r"[^a-z0-9-]+")
_MAX_METRIC_NAME = 200  # leaves room for KEDA's "s<index>-" prefix under 253


@dataclass(frozen=True, slots=True)
class ScalerRoute:
    """One route as the scaler sees it. Durations in seconds."""

    key: str  # "<namespace>/<name>"
    kind: MetricKind = "concurrency"
    target: float = 100.0  # HPA target per replica: concurrent requests, or requests/s
    window: float = 60.0  # request-rate averaging window
    granularity: float = 1.0  # request-rate bucket width

    @property
    def metric_name(self) -> str:
        return metric_name(self.key, self.kind)


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


def fleet_metric_name(namespace: str) -> str:
    """Metric of the trigger that scales the interceptor fleet on total concurrency."""
    return f"http-interceptor-{_sanitize(namespace) or 'fleet'}-concurrency"


class ScalerRouteSink(Protocol):
    def set_routes(self, routes: Sequence[ScalerRoute]) -> None:
        """Replace the whole route list at once."""


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


class RouteTable:
    """The current routes by key, with a change signal for long-lived RPCs (StreamMetricSpec)."""

    def __init__(self) -> None:
        self._routes: dict[str, ScalerRoute] = {}
        self._changed = asyncio.Event()
        self._loaded = asyncio.Event()
        self._closed = False
        self._removal_listeners: list[Callable[[frozenset[str]], None]] = []

    def add_removal_listener(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call `listener(keys)` synchronously whenever routes leave the table."""
        self._removal_listeners.append(listener)

    def set_routes(self, routes: Sequence[ScalerRoute]) -> None:
        previous = self._routes
        self._routes = {r.key: r for r in routes}
        self._loaded.set()
        removed = frozenset(previous.keys() - self._routes.keys())
        if removed:
            for listener in self._removal_listeners:
                listener(removed)
        # Wake every waiter, then hand the next ones a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def get(self, key: str) -> ScalerRoute | None:
        return self._routes.get(key)

    def all(self) -> tuple[ScalerRoute, ...]:
        return tuple(self._routes.values())

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
    # Imported here: the config layer is heavier and only the standalone command needs it.
    from httpscale.config.local_file import load_local_config

    config = load_local_config(path)
    return tuple(
        route_from_metric(app.route.key, app.spec.effective_scaling_metric()) for app in config.apps
    )


def route_from_metric(key: str, metric: ScalingMetric) -> ScalerRoute:
    """The scaler's view of an HTTPScaledObject whose effective metric is `metric`."""
    return ScalerRoute(
        key=key,
        kind=metric.kind,
        target=float(metric.target_value),
        window=float(metric.window),
        granularity=float(metric.granularity),
    )
