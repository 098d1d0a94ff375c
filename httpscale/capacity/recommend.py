"""From the knee to `scalingMetric` targets: the arithmetic, with every term shown.

Per replica, at the knee, the app served `rps` requests/s with `concurrency` requests in
flight (Little's law). The autoscaler should add a replica *before* a replica gets there, so
each target leaves `headroom` of it unused:

    target = knee / replicas x (1 - headroom), rounded to the nearest whole number, at least 1

Rounding to the nearest (not down) keeps the target within half a unit of the stated
headroom; the *effective* headroom after rounding, 1 - target / knee, is shown next to it, so a
small knee (2.4 in flight -> 2) does not hide that the headroom really used is 17 %, not 25 %.
Both targets are whole numbers because KEDA's `targetValue` is an integer.
"""

from __future__ import annotations

from dataclasses import dataclass

from httpscale.capacity.core import StepStats

__all__ = ["DEFAULT_HEADROOM", "Recommendation", "RecommendedTarget", "recommend"]

DEFAULT_HEADROOM = 0.25


@dataclass(frozen=True, slots=True)
class RecommendedTarget:
    metric: str  # "concurrency" or "requestRate"
    unit: str  # for the arithmetic text
    measured: float  # at the knee, all replicas together
    replicas: int
    headroom: float

    @property
    def per_replica(self) -> float:
        return self.measured / self.replicas

    @property
    def exact(self) -> float:
        return self.per_replica * (1.0 - self.headroom)

    @property
    def value(self) -> int:
        return max(1, round(self.exact))

    @property
    def effective_headroom(self) -> float:
        return 1.0 - self.value / self.per_replica if self.per_replica > 0 else 0.0

    def arithmetic(self) -> str:
        """E.g. `157.9 requests/s / 2 replicas = 78.95 x (1 - 0.25) = 59.21 -> 59`."""
        text = f"{_num(self.measured)} {self.unit}"
        if self.replicas != 1:
            text += f" / {self.replicas} replicas = {_num(self.per_replica)}"
        return (
            f"{text} x (1 - {self.headroom:g}) = {_num(self.exact)} -> {self.value}"
            f" (headroom used: {self.effective_headroom * 100:.1f}%)"
        )


@dataclass(frozen=True, slots=True)
class Recommendation:
    concurrency: RecommendedTarget
    request_rate: RecommendedTarget

    def yaml(self, indent: str = "") -> str:
        """Both choices, ready to paste into an HTTPScaledObject's spec (one of them)."""
        lines = [
            "scalingMetric:",
            "  concurrency:",
            f"    targetValue: {self.concurrency.value}",
            "# or",
            "scalingMetric:",
            "  requestRate:",
            f"    targetValue: {self.request_rate.value}",
            "    window: 1m",
            "    granularity: 1s",
        ]
        return "\n".join(indent + line for line in lines)


def recommend(knee: StepStats, replicas: int, headroom: float = DEFAULT_HEADROOM) -> Recommendation:
    if replicas < 1:
        raise ValueError("the knee was measured with at least one replica")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be within [0, 1), not {headroom}")
    return Recommendation(
        concurrency=RecommendedTarget(
            "concurrency", "in flight", knee.concurrency, replicas, headroom
        ),
        request_rate=RecommendedTarget("requestRate", "requests/s", knee.rps, replicas, headroom),
    )


def _num(x: float) -> str:
    return f"{x:.4g}" if x < 1000 else f"{x:.0f}"
