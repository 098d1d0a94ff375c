"""Pure scaling decisions for local mode: KEDA's 0 <-> 1 activation plus HPA's 1 <-> N arithmetic.

Fed numbers and times, never touches a clock or a process, so it is tested without an event loop.
The rules, in the order `evaluate` applies them:

* **Activation** (KEDA): the interceptor's wake signal takes an app from zero to max(min, 1) at
  once. A sample that shows activity while at zero does the same (a missed wake is not fatal).
* **To zero** (KEDA `cooldownPeriod` = `scaledownPeriod`): only when min is 0 and nothing was in
  flight and no new request arrived for `scaledown_period` seconds.
* **While active** (HPA): desired = ceil(metric / target) clamped to [max(min, 1), max]. Within
  `tolerance` of the current ratio nothing changes (HPA's 10 % dead band against flapping).
  Scaling up is immediate; scaling down takes the highest recommendation seen during the last
  `stabilization_window` seconds (HPA's downscale stabilization), so a short lull does not
  kill replicas that the next burst needs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from httpscale.model.httpso import (
    DEFAULT_REPLICAS_MIN,
    DEFAULT_SCALEDOWN_PERIOD,
    DEFAULT_TARGET_VALUE,
)

__all__ = ["Policy", "ScaleDecision", "ScalingParams"]


@dataclass(frozen=True, slots=True)
class ScalingParams:
    min_replicas: int = DEFAULT_REPLICAS_MIN
    max_replicas: int = 1
    target: float = DEFAULT_TARGET_VALUE  # per replica (requests in flight, or requests/s)
    scaledown_period: float = DEFAULT_SCALEDOWN_PERIOD  # seconds idle before going to zero
    # Seconds of history a scale-down must agree with (local mode: scaledownPeriod again).
    stabilization_window: float = DEFAULT_SCALEDOWN_PERIOD
    tolerance: float = 0.1  # relative dead band around the current replica count
    metric_name: str = "metric"  # for the reasons given with each decision

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(f"bad replica bounds: min {self.min_replicas} max {self.max_replicas}")
        if self.target <= 0:
            raise ValueError(f"target must be positive, not {self.target}")

    @property
    def floor(self) -> int:
        """Fewest replicas while active."""
        return max(self.min_replicas, 1)


class ScaleDecision(NamedTuple):
    desired: int
    reason: str


class Policy:
    """Decides the desired replica count of one app; `current` is the count last decided."""

    def __init__(self, params: ScalingParams, now: float) -> None:
        self.params = params
        # Starting counts as activity, so an app with min 0 is not torn down before its first
        # request had a chance (and one with min > 0 starts at min).
        self.last_active = now
        self._history: deque[tuple[float, int]] = deque()

    def wake(self, now: float, current: int) -> ScaleDecision | None:
        """A request is held for an app at zero: activate now. None when already active."""
        self.last_active = now
        if current > 0:
            return None
        floor = self.params.floor
        self._record(now, floor)
        return ScaleDecision(floor, "request while at zero")

    def evaluate(self, now: float, current: int, metric: float, active: bool) -> ScaleDecision:
        """One periodic sample. `active`: something in flight or a new request since last time."""
        p = self.params
        if active:
            self.last_active = now
        idle_for = now - self.last_active
        if current == 0:
            if active:
                self._record(now, p.floor)
                return ScaleDecision(p.floor, "activity while at zero")
            if p.min_replicas > 0:
                self._record(now, p.min_replicas)
                return ScaleDecision(p.min_replicas, f"min replicas {p.min_replicas}")
            return ScaleDecision(0, "idle")
        if p.min_replicas == 0 and not active and idle_for >= p.scaledown_period:
            self._history.clear()
            return ScaleDecision(0, f"no traffic for {idle_for:.1f}s")

        raw = self._raw(current, metric)
        self._record(now, raw)
        if raw > current:
            return ScaleDecision(raw, f"{p.metric_name} {_fmt(metric)} / target {_fmt(p.target)}")
        stabilized = min(current, max(r for _, r in self._history))
        if stabilized < current:
            return ScaleDecision(
                stabilized,
                f"{p.metric_name} {_fmt(metric)} / target {_fmt(p.target)}, "
                f"stable for {p.stabilization_window:g}s",
            )
        if current < p.floor or current > p.max_replicas:
            # Bounds changed under us (or a caller set something odd): bring it back in range.
            return ScaleDecision(max(p.floor, min(current, p.max_replicas)), "replica bounds")
        return ScaleDecision(current, "steady")

    def _raw(self, current: int, metric: float) -> int:
        p = self.params
        ratio = metric / (p.target * current)
        if abs(ratio - 1.0) <= p.tolerance:
            wanted = current
        else:
            wanted = math.ceil(metric / p.target - 1e-9)
        return max(p.floor, min(wanted, p.max_replicas))

    def _record(self, now: float, recommendation: int) -> None:
        self._history.append((now, recommendation))
        horizon = now - self.params.stabilization_window
        while self._history and self._history[0][0] < horizon:
            self._history.popleft()


def _fmt(value: float) -> str:
    return f"{value:.3g}"
