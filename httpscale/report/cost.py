"""What scaling actually cost, per route, against keeping replicas always on. Pure arithmetic.

The input is a timeline per route: replica counts as a step function (each point's count
holds from its time until the next point, the last one until the end of the period), the
cold starts seen (time, and the wait when known), the route's min and max replicas, and what
one replica requests (CPU cores, GiB of memory). The output is, over a period [start, end]:

* replica-seconds used: the step function integrated over the period;
* two baselines over the same time: "always on at min" (max(min, 1) replicas: with min 0
  the honest alternative to scaling to zero is one replica that never stops, not nothing)
  and "always on at max" (no autoscaling at all, sized for the peak);
* each turned into CPU-core-hours and GiB-hours from the per-replica requests, and into money
  at a price per core-hour and per GiB-hour;
* cold starts in the period: their count, and p50/p99 of their waits (nearest rank: a
  percentile is always a wait that happened).

Time before a route's first point is unknown, not zero: the period is cut to start at the
first point (`observed_from`), and the baselines use the same cut, so they compare like
with like.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PRICES",
    "ColdStarts",
    "CostReport",
    "Prices",
    "Requests",
    "RouteCost",
    "RouteTimeline",
    "Usage",
    "WaitSummary",
    "cold_starts",
    "cost_report",
    "percentile",
    "replica_seconds",
    "route_cost",
]

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Requests:
    """What one replica reserves: resource requests, the unit a cluster bills by."""

    cpu_cores: float
    memory_gib: float
    source: str = ""  # where the figures came from, for the report ("pod template", ...)


@dataclass(frozen=True, slots=True)
class Prices:
    """Money per CPU-core-hour and per GiB-hour, in `currency`.

    The defaults are an example, not a quote: on-demand list prices of general-purpose VMs
    of a major cloud (GCP N2, us-central1, 2024: $0.031611 per vCPU-hour, $0.004237 per
    GiB-hour). Set your own.
    """

    cpu_core_hour: float = 0.031611
    gib_hour: float = 0.004237
    currency: str = "USD"


DEFAULT_PRICES = Prices()


@dataclass(frozen=True, slots=True)
class WaitSummary:
    """Wait percentiles measured elsewhere (a Prometheus histogram), when no per-cold-start
    waits exist; `basis` says what was measured."""

    p50: float | None
    p99: float | None
    basis: str


@dataclass(frozen=True, slots=True)
class RouteTimeline:
    name: str  # what a person calls it: the app, or namespace/workload
    route: str  # the route key
    min_replicas: int
    max_replicas: int
    replicas: Sequence[Point]  # (unix time, running replicas), in time order
    cold_starts: Sequence[tuple[float, float | None]] = ()  # (unix time, wait s or None)
    requests: Requests = Requests(0.0, 0.0)
    waits: WaitSummary | None = None  # overrides the per-cold-start waits when set


@dataclass(frozen=True, slots=True)
class Usage:
    replica_seconds: float
    cpu_core_hours: float
    gib_hours: float
    cost: float

    @classmethod
    def of(cls, replica_seconds: float, requests: Requests, prices: Prices) -> Usage:
        hours = replica_seconds / 3600.0
        cpu = hours * requests.cpu_cores
        mem = hours * requests.memory_gib
        return cls(replica_seconds, cpu, mem, cpu * prices.cpu_core_hour + mem * prices.gib_hour)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.replica_seconds + other.replica_seconds,
            self.cpu_core_hours + other.cpu_core_hours,
            self.gib_hours + other.gib_hours,
            self.cost + other.cost,
        )


ZERO = Usage(0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class ColdStarts:
    count: int
    p50: float | None  # seconds; None when no wait is known
    p99: float | None
    basis: str  # what the waits measure


@dataclass(frozen=True, slots=True)
class RouteCost:
    timeline: RouteTimeline
    observed_from: float  # the period, cut to the first point of the timeline
    observed_to: float
    used: Usage
    at_min: Usage  # max(min, 1) replicas always on
    at_max: Usage  # max replicas always on
    cold_starts: ColdStarts

    @property
    def observed_seconds(self) -> float:
        return max(self.observed_to - self.observed_from, 0.0)

    @property
    def mean_replicas(self) -> float:
        seconds = self.observed_seconds
        return self.used.replica_seconds / seconds if seconds else 0.0


@dataclass(frozen=True, slots=True)
class CostReport:
    start: float
    end: float
    prices: Prices
    routes: Sequence[RouteCost]
    source: str  # where the timelines came from, for the report's heading

    @property
    def total_used(self) -> Usage:
        return sum((r.used for r in self.routes), ZERO)

    @property
    def total_at_min(self) -> Usage:
        return sum((r.at_min for r in self.routes), ZERO)

    @property
    def total_at_max(self) -> Usage:
        return sum((r.at_max for r in self.routes), ZERO)


def replica_seconds(points: Sequence[Point], start: float, end: float) -> tuple[float, float]:
    """The step function `points` integrated over [start, end], and where coverage starts
    (the later of `start` and the first point; `end` when nothing is covered)."""
    if not points or end <= start:
        return 0.0, end
    covered_from = max(start, points[0][0])
    if covered_from >= end:
        return 0.0, end
    total = 0.0
    for i, (t, count) in enumerate(points):
        seg_end = points[i + 1][0] if i + 1 < len(points) else end
        lo, hi = max(t, covered_from), min(seg_end, end)
        if hi > lo:
            total += count * (hi - lo)
    return total, covered_from


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100): the smallest value with at least p % of the
    values at or below it. None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(p / 100.0 * len(ordered)), 1)
    return ordered[rank - 1]


def cold_starts(timeline: RouteTimeline, start: float, end: float) -> ColdStarts:
    """Cold starts with start <= t < end, and their wait percentiles."""
    events = [(t, w) for t, w in timeline.cold_starts if start <= t < end]
    if timeline.waits is not None:
        w = timeline.waits
        return ColdStarts(len(events), w.p50, w.p99, w.basis)
    waits = [w for _, w in events if w is not None]
    return ColdStarts(
        len(events), percentile(waits, 50), percentile(waits, 99), "time to first ready replica"
    )


def route_cost(timeline: RouteTimeline, start: float, end: float, prices: Prices) -> RouteCost:
    used, covered_from = replica_seconds(timeline.replicas, start, end)
    seconds = max(end - covered_from, 0.0)
    req = timeline.requests
    return RouteCost(
        timeline=timeline,
        observed_from=covered_from,
        observed_to=end,
        used=Usage.of(used, req, prices),
        at_min=Usage.of(max(timeline.min_replicas, 1) * seconds, req, prices),
        at_max=Usage.of(timeline.max_replicas * seconds, req, prices),
        cold_starts=cold_starts(timeline, covered_from, end),
    )


def cost_report(
    timelines: Iterable[RouteTimeline],
    start: float,
    end: float,
    prices: Prices = DEFAULT_PRICES,
    source: str = "",
) -> CostReport:
    routes = [route_cost(t, start, end, prices) for t in timelines]
    return CostReport(start, end, prices, routes, source)
