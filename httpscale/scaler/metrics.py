"""The scaler's own Prometheus metrics, in a registry per scaler instance.

A registry per instance (not the process-global one) lets tests run several scalers in one
process and keeps the admin `/metrics` page to what this scaler measured.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ScalerMetrics"]

# Poll rounds on loopback take ~1 ms; a timeout is seconds. Buckets span both.
_POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ScalerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.poll_duration = Histogram(
            "httpscale_scaler_poll_duration_seconds",
            "Duration of one GET /queue on one interceptor replica, failures included.",
            buckets=_POLL_BUCKETS,
            registry=r,
        )
        self.poll_errors = Counter(
            "httpscale_scaler_poll_errors_total",
            "Failed GET /queue polls, by interceptor replica admin URL.",
            ["replica"],
            registry=r,
        )
        self.replicas = Gauge(
            "httpscale_scaler_interceptor_replicas",
            "Interceptor replicas the scaler knows of.",
            registry=r,
        )
        self.unreachable = Gauge(
            "httpscale_scaler_unreachable_replicas",
            "Interceptor replicas whose last poll failed.",
            registry=r,
        )
        self.open_streams = Gauge(
            "httpscale_scaler_open_streams",
            "Open StreamIsActive and StreamMetricSpec streams.",
            ["rpc"],
            registry=r,
        )
        self.wake_events = Counter(
            "httpscale_scaler_wake_events_total",
            "Wake events received from interceptors over /wake.",
            registry=r,
        )
        self.wake_streams = Gauge(
            "httpscale_scaler_wake_streams_connected",
            "Interceptor replicas with a connected /wake stream.",
            registry=r,
        )
        self.rpcs = Counter(
            "httpscale_scaler_rpcs_total",
            "External scaler RPCs answered, by method and gRPC status code.",
            ["method", "code"],
            registry=r,
        )
        self.routes = Gauge(
            "httpscale_scaler_routes",
            "Routes the scaler serves, by the kind of object they come from.",
            ["origin"],
            registry=r,
        )
        self.invalid_objects = Gauge(
            "httpscale_scaler_invalid_objects",
            "Objects left out of the route table because they do not parse, by kind.",
            ["kind"],
            registry=r,
        )
        self.route_concurrency = Gauge(
            "httpscale_scaler_route_concurrency",
            "Concurrency summed over interceptor replicas, by route.",
            ["route"],
            registry=r,
        )
        self.route_rate = Gauge(
            "httpscale_scaler_route_request_rate",
            "Requests per second over the route's window, by route.",
            ["route"],
            registry=r,
        )
