"""The interceptor on a cluster: the Kubernetes route source wired to it, and its metrics.

`ClusterRouteSource` (httpscale/kube/routes.py) does the work; this adds what an operator of
the interceptor looks at: `/status` gets a `cluster` section (watches, invalid objects, routes
without endpoints), and `/metrics` gets

    httpscale_interceptor_cluster_synced                    1 once every watch has listed
    httpscale_interceptor_cluster_routes                    routes served from the cluster
    httpscale_interceptor_cluster_invalid_objects{kind}     HTTPSOs / IRs left out (invalid)
    httpscale_interceptor_cluster_route_conflicts           host+path+headers claimed twice
    httpscale_interceptor_cluster_routes_without_endpoints  routes whose Service has none
    httpscale_interceptor_cluster_watch_failures{resource}  failed lists/watches so far
    httpscale_interceptor_cluster_watch_relists{resource}   relists after 410 Gone
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from httpscale.interceptor.app import Interceptor
from httpscale.kube.routes import ClusterRouteSource

__all__ = ["attach"]


class _SourceMetrics(Collector):
    def __init__(self, source: ClusterRouteSource, interceptor: Interceptor) -> None:
        self._source = source
        self._interceptor = interceptor

    def collect(self) -> Iterator[Metric]:
        s = self._source
        prefix = "httpscale_interceptor_cluster_"
        yield GaugeMetricFamily(prefix + "synced", "1 once every watch has listed.",
                                value=1 if s.synced.is_set() else 0)
        status = s.status()
        yield GaugeMetricFamily(prefix + "routes", "Routes served from the cluster.",
                                value=float(status["routes"]))  # type: ignore[arg-type]
        invalid = GaugeMetricFamily(prefix + "invalid_objects",
                                    "HTTPScaledObjects / InterceptorRoutes left out: invalid.",
                                    labels=["kind"])
        invalid.add_metric(["HTTPScaledObject"], len(s.httpsos.snapshot().invalid))
        invalid.add_metric(["InterceptorRoute"], len(s.routes.snapshot().invalid))
        yield invalid
        conflicts = len(self._interceptor.proxy.registry.table.conflicts)
        yield GaugeMetricFamily(prefix + "route_conflicts",
                                "Host + path + headers claimed by two routes (the older keeps it).",
                                value=conflicts)
        without = status["without_endpoints"]
        yield GaugeMetricFamily(prefix + "routes_without_endpoints",
                                "Routes whose Service has no ready endpoint (or no such port).",
                                value=len(without))  # type: ignore[arg-type]
        failures = CounterMetricFamily(prefix + "watch_failures",
                                       "Failed lists or watches, by resource.", labels=["resource"])
        relists = CounterMetricFamily(prefix + "watch_relists",
                                      "Lists after 410 Gone, by resource.", labels=["resource"])
        for informer in s.informers:
            failures.add_metric([informer.resource.plural], informer.reflector.failures)
            relists.add_metric([informer.resource.plural], informer.reflector.relists)
        yield failures
        yield relists


def attach(interceptor: Interceptor, source: ClusterRouteSource) -> None:
    """Show `source` in the interceptor's /status and /metrics (call after `start()`)."""
    interceptor.add_status_provider("cluster", source.status)
    interceptor.proxy.metrics.registry.register(_SourceMetrics(source, interceptor))
