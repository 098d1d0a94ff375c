"""What one local app ran over time, for `GET /history` (cost reports read it).

Two series, both in wall-clock seconds (`time.time()`), both bounded to the last `MAX_POINTS`:

* `replicas`: [t, count] at the app's start and at every change of the number of running
  replica processes: spawned and not yet exited, whatever their state (starting, ready,
  draining, stopping), since each of those costs memory and CPU;
* `cold_starts`: [t, wait] per cold start: t is when the first request was held for the app at
  zero, wait how long it was held, until the first replica was ready and took it.

Pure: fed times and counts by the autoscaler; the wire shape is `HistoryJSON`.
"""

from __future__ import annotations

from collections import deque
from typing import TypedDict

__all__ = ["MAX_POINTS", "AppHistory", "HistoryJSON"]

MAX_POINTS = 10_000  # per series; the oldest points go first


class HistoryJSON(TypedDict):
    route: str
    min: int
    max: int
    replicas: list[list[float]]  # [[t, count], ...]
    cold_starts: list[list[float]]  # [[t, seconds held], ...]


class AppHistory:
    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self.replicas: deque[tuple[float, int]] = deque(maxlen=max_points)
        self.cold_starts: deque[tuple[float, float]] = deque(maxlen=max_points)

    def running(self, t: float, count: int) -> None:
        """The number of running processes is `count` as of `t`; a repeat adds no point."""
        if not self.replicas or self.replicas[-1][1] != count:
            self.replicas.append((t, count))

    def cold_start(self, t: float, waited: float) -> None:
        self.cold_starts.append((t, waited))

    def to_json(self, route: str, min_replicas: int, max_replicas: int) -> HistoryJSON:
        return {
            "route": route,
            "min": min_replicas,
            "max": max_replicas,
            "replicas": [[round(t, 3), n] for t, n in self.replicas],
            "cold_starts": [[round(t, 3), round(w, 3)] for t, w in self.cold_starts],
        }
