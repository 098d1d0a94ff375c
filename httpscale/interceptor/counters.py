"""Per-route request counters, bumped on the hot path and read by `metrics.py` at scrape time.

Why their own objects, held by each route (`RouteState.stats`): with traffic spread over many
routes (an Ingress in front of thousands of hosts) every request touches the state of a route
that is no longer in the CPU's caches, and each object or dict probe on the way is one more
cache miss. So one route's counts live in one object, reached from the route by one attribute,
and the common case changes only native fields inside it: no dict probe by route key, no list
element, no integer boxed per request. (10,000 routes: loadtests/instructions.sh, CACHE=1.)

Counts by key fold in lazily: a run of requests with the same key (nearly all GET answered
200) or the same duration bucket is a native counter, added to the dict or list when the key
changes and whenever counts are read. Readers use `counts()`, `buckets()` and `total`.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "DURATION_BUCKETS",
    "HELD_BUCKETS",
    "METHOD_NAMES",
    "Histogram",
    "RouteRequests",
    "method_index",
]

# Typed as variable-length tuples on purpose: compiled, a fixed-length tuple of floats is a
# native struct, boxed into a new tuple of new floats wherever a `tuple[float, ...]` is wanted,
# so every histogram would hold its own copy (cold in the caches, found with CACHE=1).
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)
HELD_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0
)
METHOD_NAMES = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "other")
_METHOD_INDEX: Final = {m.encode(): i for i, m in enumerate(METHOD_NAMES[:-1])}
_OTHER_METHOD: Final = len(METHOD_NAMES) - 1


def method_index(method: bytes) -> int:
    """The method's index in METHOD_NAMES (unknown methods: "other")."""
    # Compared in order of frequency: cheaper than hashing a fresh bytes object per request.
    if method == b"GET":
        return 0
    if method == b"HEAD":
        return 1
    if method == b"POST":
        return 2
    return _METHOD_INDEX.get(method, _OTHER_METHOD)


class Histogram:
    """Cumulative-bucket histogram (Prometheus's shape) of non-negative values."""

    __slots__ = ("_counts", "_hot_bucket", "_hot_bucket_count", "_hot_high", "_hot_low", "bounds",
                 "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.total = 0.0
        # The bucket of the latest value, its range (native floats) and how many in a row fell
        # in it: a value in the same bucket as the last costs two comparisons, and neither the
        # bounds (boxed floats) nor the list element (a boxed integer) is read.
        self._hot_low = math.inf  # (an empty range: the first value looks its bucket up)
        self._hot_high = -math.inf
        self._hot_bucket = 0
        self._hot_bucket_count = 0
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)

    def observe(self, value: float) -> None:
        self.total += value
        if self._hot_low < value <= self._hot_high:
            self._hot_bucket_count += 1
            return
        # A linear scan, not bisect: nearly every value falls in the first buckets, and
        # compiled this is a few comparisons rather than a call.
        bounds = self.bounds
        i = 0
        for bound in bounds:
            if value <= bound:
                break
            i += 1
        if self._hot_bucket_count:
            self._counts[self._hot_bucket] += self._hot_bucket_count
        self._hot_bucket = i
        self._hot_bucket_count = 1
        self._hot_low = bounds[i - 1] if i > 0 else -math.inf
        self._hot_high = bounds[i] if i < len(bounds) else math.inf

    def bucket_counts(self) -> list[int]:
        """Observations per bucket (not cumulative), the last one above every bound."""
        out = list(self._counts)
        out[self._hot_bucket] += self._hot_bucket_count
        return out

    def count(self) -> int:
        """Values observed so far."""
        return sum(self._counts) + self._hot_bucket_count

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as Prometheus exposes them; "+Inf" last."""
        out: list[tuple[str, float]] = []
        running = 0
        counts = self.bucket_counts()
        for bound, count in zip(self.bounds, counts, strict=False):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + counts[-1]))
        return out


class RouteRequests(Histogram):
    """One route's requests: counts by (status, method) and the duration histogram."""

    __slots__ = ("_counts_by_key", "_hot_count", "_hot_key")

    def __init__(self) -> None:
        super().__init__(DURATION_BUCKETS)
        self._hot_key = -1
        self._hot_count = 0
        self._counts_by_key: dict[int, int] = {}  # status * 16 + method index -> requests

    def add(self, method: bytes, status: int, seconds: float) -> None:
        key = status * 16 + method_index(method)
        if key == self._hot_key:
            self._hot_count += 1
        else:
            if self._hot_count:
                counts = self._counts_by_key
                counts[self._hot_key] = counts.get(self._hot_key, 0) + self._hot_count
            self._hot_key = key
            self._hot_count = 1
        self.observe(seconds)

    def counts(self) -> dict[int, int]:
        """Requests by `status * 16 + method index` (METHOD_NAMES)."""
        out = dict(self._counts_by_key)
        if self._hot_count:
            out[self._hot_key] = out.get(self._hot_key, 0) + self._hot_count
        return out
