"""Interceptor metrics, exposed with prometheus-client but counted without it on the hot path.

prometheus-client's labelled children cost a lock and a dict walk per call; at tens of
thousands of requests a second that shows. So the request path bumps plain dicts and lists,
and a custom collector turns them into metric families only when /metrics is scraped.
Gauges (concurrency, held, per-endpoint in flight) are read from the route states at scrape
time, so they can never drift from the counters the autoscaler sees.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from httpscale.interceptor.routes import RouteState

__all__ = ["InterceptorMetrics"]

_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)
_HELD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_METHOD_NAMES = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "other")
_METHOD_INDEX: Final = {m.encode(): i for i, m in enumerate(_METHOD_NAMES[:-1])}
_OTHER_METHOD: Final = len(_METHOD_NAMES) - 1


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # A linear scan, not bisect: nearly every value falls in the first buckets, and
        # compiled this is a few comparisons rather than a call.
        i = 0
        for bound in self.bounds:
            if value <= bound:
                break
            i += 1
        self.counts[i] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class _RouteRequests:
    """One route's request counts (by method and status) and duration histogram."""

    __slots__ = ("_counts", "_hot_count", "_hot_key", "durations")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}  # status * 16 + method index -> requests
        # The key of the latest request and how many in a row had it: nearly every request
        # of a route is a GET answered 200, and compiled this is a native integer, where each
        # dict update would box and look up two.
        self._hot_key = -1
        self._hot_count = 0
        self.durations = _Histogram(_DURATION_BUCKETS)

    def add(self, key: int) -> None:
        if key == self._hot_key:
            self._hot_count += 1
            return
        if self._hot_count:
            self._counts[self._hot_key] = self._counts.get(self._hot_key, 0) + self._hot_count
        self._hot_key = key
        self._hot_count = 1

    def counts(self) -> dict[int, int]:
        out = dict(self._counts)
        if self._hot_count:
            out[self._hot_key] = out.get(self._hot_key, 0) + self._hot_count
        return out


def _method_index(method: bytes) -> int:
    # Compared in order of frequency: cheaper than hashing a fresh bytes object per request.
    if method == b"GET":
        return 0
    if method == b"HEAD":
        return 1
    if method == b"POST":
        return 2
    return _METHOD_INDEX.get(method, _OTHER_METHOD)


class InterceptorMetrics(Collector):
    def __init__(self, routes: Callable[[], Iterable[RouteState]],
                 connections: Callable[[], int]) -> None:
        self._routes = routes
        self._connections = connections
        self._requests: dict[str, _RouteRequests] = {}
        self._last_route = ""  # the route of the latest request, and its counts
        self._last_stats: _RouteRequests | None = None
        self._held: dict[str, _Histogram] = {}
        self._upstream_errors: dict[tuple[str, str], int] = defaultdict(int)
        self._cold_starts: dict[str, int] = defaultdict(int)
        self._overflows: dict[str, int] = defaultdict(int)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- hot path ----------------------------------------------------------------------------

    def request(self, route: str, method: bytes, status: int, seconds: float) -> None:
        stats = self._last_stats
        if stats is None or route is not self._last_route:  # route keys are shared strings
            stats = self._requests.get(route)
            if stats is None:
                stats = self._requests[route] = _RouteRequests()
            self._last_route = route
            self._last_stats = stats
        stats.add(status * 16 + _method_index(method))
        stats.durations.observe(seconds)

    def upstream_error(self, route: str, kind: str) -> None:
        self._upstream_errors[(route, kind)] += 1

    def cold_start(self, route: str) -> None:
        self._cold_starts[route] += 1

    def hold_overflow(self, route: str) -> None:
        self._overflows[route] += 1

    def held(self, route: str, seconds: float) -> None:
        hist = self._held.get(route)
        if hist is None:
            hist = self._held[route] = _Histogram(_HELD_BUCKETS)
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
        by_route = list(self._requests.items())
        for route, stats in by_route:
            for key, n in stats.counts().items():
                requests.add_metric([route, _METHOD_NAMES[key % 16], str(key // 16)], n)
        yield requests
        yield _histograms("httpscale_request_duration_seconds",
                          "Time from request head to response end",
                          {route: stats.durations for route, stats in by_route})
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


def _histograms(name: str, doc: str, hists: dict[str, _Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["route"])
    for route, hist in list(hists.items()):
        family.add_metric([route], hist.buckets(), hist.total)
    return family
