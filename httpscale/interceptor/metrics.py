"""Interceptor metrics, exposed with prometheus-client but counted without it on the hot path.

prometheus-client's labelled children cost a lock and a dict walk per call; at tens of
thousands of requests a second that shows. So the request path bumps native fields of its
route's own counters (`counters.RouteRequests`, why there), and a custom collector turns them
into metric families only when /metrics is scraped.
Gauges (concurrency, held, per-endpoint in flight) are read from the route states at scrape
time, so they can never drift from the counters the autoscaler sees.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from httpscale.interceptor.counters import HELD_BUCKETS, METHOD_NAMES, Histogram, RouteRequests
from httpscale.interceptor.routes import RouteState

__all__ = ["InterceptorMetrics"]

class InterceptorMetrics(Collector):
    def __init__(self, routes: Callable[[], Iterable[RouteState]],
                 connections: Callable[[], int]) -> None:
        self._routes = routes
        self._connections = connections
        # Every route key ever served -> its counts; a route holds its own (`RouteState.stats`,
        # given by `route_stats`), so a request never looks its route up here. Kept after the
        # route goes: Prometheus counters must not reset, nor restart if it comes back.
        self._requests: dict[str, RouteRequests] = {}
        self.unrouted = self.route_stats("")  # requests no route took (404, 400, ...)
        self._held: dict[str, Histogram] = {}
        self._upstream_errors: dict[tuple[str, str], int] = defaultdict(int)
        self._cold_starts: dict[str, int] = defaultdict(int)
        self._overflows: dict[str, int] = defaultdict(int)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def route_stats(self, route: str) -> RouteRequests:
        """The counts of route key `route`, made at its first use."""
        stats = self._requests.get(route)
        if stats is None:
            stats = self._requests[route] = RouteRequests()
        return stats

    # -- hot path ----------------------------------------------------------------------------

    def request(self, stats: RouteRequests | None, method: bytes, status: int,
                seconds: float) -> None:
        """A request ended: counted on its route's `stats` (None: no route took it)."""
        (stats if stats is not None else self.unrouted).add(method, status, seconds)

    def upstream_error(self, route: str, kind: str) -> None:
        self._upstream_errors[(route, kind)] += 1

    def cold_start(self, route: str) -> None:
        self._cold_starts[route] += 1

    def hold_overflow(self, route: str) -> None:
        self._overflows[route] += 1

    def held(self, route: str, seconds: float) -> None:
        hist = self._held.get(route)
        if hist is None:
            hist = self._held[route] = Histogram(HELD_BUCKETS)
        hist.observe(seconds)

    def requests_by_status(self) -> dict[int, int]:
        out: dict[int, int] = defaultdict(int)
        for stats in self._requests.values():
            for key, n in stats.counts().items():
                out[key // 16] += n
        return dict(out)

    # -- scrape ------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "httpscale_requests", "Requests answered, by route, method and status",
            labels=["route", "method", "status"],
        )
        # Routes that never answered a request are left out (a route has its counts from its
        # first update on, not its first request: 10,000 idle routes expose nothing).
        by_route = [(route, stats) for route, stats in list(self._requests.items())
                    if stats.count()]
        for route, stats in by_route:
            for key, n in stats.counts().items():
                requests.add_metric([route, METHOD_NAMES[key % 16], str(key // 16)], n)
        yield requests
        yield _histograms("httpscale_request_duration_seconds",
                          "Time from request head to response end",
                          dict(by_route))
        yield _histograms("httpscale_held_seconds",
                          "Time requests waited for a ready endpoint", self._held)
        errors = CounterMetricFamily("httpscale_upstream_errors", "Upstream failures by kind",
                                     labels=["route", "kind"])
        for (route, kind), n in list(self._upstream_errors.items()):
            errors.add_metric([route, kind], n)
        yield errors
        yield _counter("httpscale_cold_starts", "Requests that arrived while at zero",
                       self._cold_starts)
        yield _counter("httpscale_hold_overflows", "Requests refused: hold queue full",
                       self._overflows)
        concurrency = GaugeMetricFamily("httpscale_concurrency",
                                        "Requests in flight or held", labels=["route"])
        held = GaugeMetricFamily("httpscale_held_requests", "Requests held now", labels=["route"])
        endpoints = GaugeMetricFamily("httpscale_ready_endpoints", "Ready endpoints",
                                      labels=["route"])
        per_endpoint = GaugeMetricFamily("httpscale_endpoint_in_flight",
                                         "Requests in flight per endpoint",
                                         labels=["route", "endpoint"])
        for state in self._routes():
            concurrency.add_metric([state.key], state.concurrency)
            held.add_metric([state.key], state.held)
            endpoints.add_metric([state.key], len(state.endpoints))
            for slots in (state.endpoints, state.draining):
                for ep, slot in slots.items():
                    per_endpoint.add_metric([state.key, str(ep)], slot.in_flight)
        yield concurrency
        yield held
        yield endpoints
        yield per_endpoint
        yield GaugeMetricFamily("httpscale_client_connections", "Open client connections",
                                value=self._connections())


def _counter(name: str, doc: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["route"])
    for route, n in list(values.items()):
        family.add_metric([route], n)
    return family


def _histograms(name: str, doc: str, hists: Mapping[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["route"])
    for route, hist in list(hists.items()):
        family.add_metric([route], hist.buckets(), hist.total)
    return family
