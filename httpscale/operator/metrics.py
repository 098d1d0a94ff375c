"""The operator's Prometheus metrics, in a registry per operator instance (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["OperatorMetrics"]

# A reconcile with nothing to write takes microseconds; one that writes, milliseconds; one
# against a struggling apiserver, seconds.
_RECONCILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconciles = Counter(
            "httpscale_operator_reconciles_total",
            "Reconciles by kind and result: ok, retry (will be retried with backoff), error "
            "(an API error; retried with backoff).",
            ["kind", "result"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "httpscale_operator_reconcile_duration_seconds",
            "Time to reconcile one object, API calls included.",
            ["kind"],
            buckets=_RECONCILE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "httpscale_operator_queue_depth",
            "Objects waiting to be reconciled (not counting those waiting out a retry delay).",
            registry=r,
        )
        self.writes = Counter(
            "httpscale_operator_api_writes_total",
            "Writes to the API server: ScaledObjects, statuses, finalizers.",
            registry=r,
        )
        self.leader = Gauge(
            "httpscale_operator_leader",
            "1 while this replica holds the leader lease and reconciles, else 0.",
            registry=r,
        )
        self.objects = Gauge(
            "httpscale_operator_objects",
            "Watched objects by kind and Ready reason (InvalidSpec, Reconciled, ...).",
            ["kind", "reason"],
            registry=r,
        )
        self.watch_synced = Gauge(
            "httpscale_operator_watch_synced",
            "1 once a watched resource's first list arrived.",
            ["resource"],
            registry=r,
        )
        self.watch_relists = Gauge(
            "httpscale_operator_watch_relists",
            "Lists after the first (the server had forgotten the watch's resourceVersion).",
            ["resource"],
            registry=r,
        )
        self.watch_failures = Gauge(
            "httpscale_operator_watch_failures",
            "Failed list or watch attempts (apiserver unreachable, forbidden, ...).",
            ["resource"],
            registry=r,
        )
        self.events_dropped = Gauge(
            "httpscale_operator_events_dropped",
            "Kubernetes Events not recorded because the event queue was full.",
            registry=r,
        )
