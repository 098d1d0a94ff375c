"""Request rate from monotonic per-source request counters, averaged over a sliding window.

Pure arithmetic, no clock and no I/O: the caller passes `now` (seconds, any monotonic origin).
Used by the external scaler (one source per interceptor replica) and by local mode's
autoscaler (one source per local interceptor), so both compute the same number.

Rules, in the order `observe` applies them:
- A source seen for the first time sets a baseline and adds nothing. Its counter holds the
  whole history of that replica; counting it would show a burst that never happened now.
- A counter that went down means the source restarted: everything it counted since the
  restart (its current value) is new. Never a negative rate (Prometheus `rate()` does the same).
- Otherwise the increase since the previous observation is added to the bucket of `now`.

The rate is the sum of the buckets that overlap the last `window` seconds divided by `window`:
history the caller has not seen (before the first observation) counts as zero requests, so the
figure ramps up after a start instead of jumping on the first few samples.
Buckets are `granularity` seconds wide and only non-empty ones are stored, so memory is bounded
by min(window / granularity, observations in the window) whatever the parameters.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["RequestRate", "counter_delta"]


def counter_delta(previous: int, current: int) -> int:
    """Requests counted between two readings of one monotonic counter (a reset restarts it)."""
    if current >= previous:
        return current - previous
    # The counter restarted from zero at some point between the readings.
    return max(current, 0)


class RequestRate:
    """Requests per second over a sliding window, fed with per-source counter readings."""

    __slots__ = ("_buckets", "_granularity", "_last", "_latest_bucket", "_window")

    def __init__(self, window: float, granularity: float) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be positive seconds, got {window!r}")
        if not (granularity > 0 and math.isfinite(granularity)):
            raise ValueError(f"granularity must be positive seconds, got {granularity!r}")
        if granularity > window:
            raise ValueError(f"granularity {granularity} is larger than window {window}")
        self._window = float(window)
        self._granularity = float(granularity)
        self._last: dict[str, int] = {}
        # (bucket index, requests); indexes strictly increase from left to right.
        self._buckets: deque[tuple[int, int]] = deque()
        self._latest_bucket: int | None = None

    @property
    def window(self) -> float:
        return self._window

    @property
    def granularity(self) -> float:
        return self._granularity

    @property
    def sources(self) -> frozenset[str]:
        return frozenset(self._last)

    def observe(self, source: str, request_count: int, now: float) -> None:
        """Record a reading of `source`'s monotonic request counter taken at `now`."""
        previous = self._last.get(source)
        self._last[source] = request_count
        if previous is None:
            return
        delta = counter_delta(previous, request_count)
        if delta:
            self._add(delta, now)

    def forget(self, source: str) -> None:
        """Drop a source's baseline; requests it already contributed stay in the window.

        The next reading of a forgotten source is a first sight again (no burst).
        """
        self._last.pop(source, None)

    def rate(self, now: float) -> float:
        """Requests per second averaged over the `window` seconds up to `now`."""
        self._expire(now)
        total = sum(count for _, count in self._buckets)
        return total / self._window

    def total(self, now: float) -> int:
        """Requests counted in the window (what `rate` divides)."""
        self._expire(now)
        return sum(count for _, count in self._buckets)

    # -- internals ---------------------------------------------------------------------------

    def _index(self, now: float) -> int:
        return math.floor(now / self._granularity)

    def _oldest_kept(self, now: float) -> int:
        # Buckets that overlap (now - window, now]; with window a multiple of granularity that
        # is window/granularity buckets, the current partial one included.
        return self._index(now) - math.ceil(self._window / self._granularity) + 1

    def _add(self, delta: int, now: float) -> None:
        index = self._index(now)
        if self._latest_bucket is not None and index < self._latest_bucket:
            # A reading stamped before the newest bucket (clock skew between callers): put it
            # in the newest bucket rather than reorder the deque.
            index = self._latest_bucket
        if self._buckets and self._buckets[-1][0] == index:
            _, count = self._buckets[-1]
            self._buckets[-1] = (index, count + delta)
        else:
            self._buckets.append((index, delta))
        self._latest_bucket = index
        self._expire(now)

    def _expire(self, now: float) -> None:
        oldest = self._oldest_kept(now)
        buckets = self._buckets
        while buckets and buckets[0][0] < oldest:
            buckets.popleft()
