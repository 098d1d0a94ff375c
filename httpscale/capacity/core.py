"""The capacity finder's decisions as pure code: which load to try next, whether a step is past
the knee, and where the knee is. Fed per-step numbers; never touches a clock, a socket or
locust, so it runs unchanged inside the load generator and in tests without one.

Load is a number of closed-loop users: each sends its next request the moment the previous one
is answered, so N users offer N requests at once, whatever the app's latency.

Rules, in the order `judge` applies them (the first that holds names the verdict):

* **empty**: not one request completed in the window (everything hung or the step was cut);
* **errors**: failures / requests above the error budget;
* **slo**: p99 latency above the SLO;
* **generator**: the load generator itself used more than `max_generator_cpu` of a core, so
  the throughput it measured may be its own limit, not the app's. This stops the search
  without a knee: the numbers are then a lower bound;
* **flat**: throughput no longer rising. Against the last good step, the *efficiency* of the
  added users is (rps / rps_good - 1) / (users / users_good - 1): 1 when throughput grows in
  proportion, 0 when it does not grow at all. Below `min_efficiency` (0.5) the step is flat.
  With throughput = min(users / latency, capacity), a step is flat exactly when it is past the
  midpoint between the last good step and the saturation point, so bisection converges on the
  point where users = capacity x latency.

Search: climb from `start_users`, multiplying by `growth` (at least +1 user), until a step is
bad; that step and the last good one bracket the knee. Then bisect the bracket until it is at
most `resolution` of the good step's users (or one user) wide. The knee is the good step with
the most users; `limit` the bad step that bounded it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "Finder",
    "Judged",
    "KneeRules",
    "StepPlan",
    "StepStats",
    "Verdict",
    "judge",
    "knee_of",
]


@dataclass(frozen=True, slots=True)
class StepStats:
    """What one step's measurement window saw. Latencies in seconds, as the client saw them."""

    users: int
    seconds: float  # length of the measurement window
    requests: int  # completed in the window, failed or not
    failures: int
    mean: float
    p50: float
    p99: float
    cpu: float = 0.0  # the load generator's CPU time / window length (1.0 = one core)
    error: str | None = None  # the most frequent failure in the window, for the reason text

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def concurrency(self) -> float:
        """Requests in flight on average (Little's law: throughput x mean time in the system)."""
        return self.rps * self.mean


class Verdict(enum.Enum):
    OK = "ok"
    EMPTY = "empty"
    ERRORS = "errors"
    SLO = "slo"
    GENERATOR = "generator"
    FLAT = "flat"


@dataclass(frozen=True, slots=True)
class KneeRules:
    slo_p99: float | None = 1.0  # seconds; None: no latency rule
    error_budget: float = 0.01  # failures / requests that still count as serving
    min_efficiency: float = 0.5  # see the module docstring ("flat")
    max_generator_cpu: float = 0.9  # fraction of one core


@dataclass(frozen=True, slots=True)
class StepPlan:
    start_users: int = 1
    growth: float = 1.5  # users multiply by this while climbing (at least +1)
    max_users: int = 200
    max_steps: int = 30
    resolution: float = 0.15  # stop bisecting when the bracket is this narrow (relative)

    def __post_init__(self) -> None:
        if not 1 <= self.start_users <= self.max_users:
            raise ValueError(f"start users {self.start_users} not in 1..{self.max_users}")
        if self.growth <= 1.0:
            raise ValueError(f"growth must be above 1, not {self.growth}")
        if self.max_steps < 1:
            raise ValueError("at least one step")


@dataclass(frozen=True, slots=True)
class Judged:
    index: int  # 1-based, in the order the steps ran
    stats: StepStats
    verdict: Verdict
    reason: str

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK


def judge(stats: StepStats, good: StepStats | None, rules: KneeRules) -> tuple[Verdict, str]:
    """The verdict on one step, against the rules and the last good step (None at first)."""
    if stats.requests == 0:
        return Verdict.EMPTY, "no request completed in the window"
    if stats.error_rate > rules.error_budget:
        what = f" ({stats.error})" if stats.error else ""
        return Verdict.ERRORS, (
            f"errors {_pct(stats.error_rate)} above the budget {_pct(rules.error_budget)}{what}"
        )
    if rules.slo_p99 is not None and stats.p99 > rules.slo_p99:
        return Verdict.SLO, f"p99 {_ms(stats.p99)} above the SLO {_ms(rules.slo_p99)}"
    if stats.cpu > rules.max_generator_cpu:
        return Verdict.GENERATOR, (
            f"the load generator used {_pct(stats.cpu)} of a CPU core: its own limit, not the "
            "app's, may cap this throughput"
        )
    if good is not None and stats.users > good.users and good.rps > 0:
        added = stats.users / good.users - 1.0
        gained = stats.rps / good.rps - 1.0
        efficiency = gained / added
        if efficiency < rules.min_efficiency:
            return Verdict.FLAT, (
                f"throughput no longer rising: {good.users} -> {stats.users} users "
                f"({_signed_pct(added)}) gave {_signed_pct(gained)} requests/s"
            )
    return Verdict.OK, "ok"


def knee_of(steps: Sequence[Judged]) -> tuple[Judged | None, Judged | None]:
    """(knee, limit): the good step with the most users, and the bad step with the fewest users
    above it (None when no bad step bounded the search: the knee was not reached)."""
    good = [s for s in steps if s.ok]
    knee = max(good, key=lambda s: s.stats.users) if good else None
    floor = knee.stats.users if knee is not None else 0
    bad = [
        s
        for s in steps
        if not s.ok and s.verdict is not Verdict.GENERATOR and s.stats.users > floor
    ]
    limit = min(bad, key=lambda s: s.stats.users) if bad else None
    return knee, limit


@dataclass
class Finder:
    """The search as a state machine: `next_users()`, run that step, `record()` it, repeat
    until `next_users()` is None; `stopped` then says why."""

    plan: StepPlan = field(default_factory=StepPlan)
    rules: KneeRules = field(default_factory=KneeRules)
    steps: list[Judged] = field(default_factory=list)
    stopped: str | None = None

    def next_users(self) -> int | None:
        if self.stopped is None:
            users, why = self._next()
            if users is not None:
                return users
            self.stopped = why
        return None

    def _next(self) -> tuple[int | None, str]:
        knee, limit = knee_of(self.steps)
        plan = self.plan
        if len(self.steps) >= plan.max_steps:
            return None, "max steps"
        if knee is None:
            if limit is None:
                return plan.start_users, ""
            return None, "no step met the rules"
        users = knee.stats.users
        if limit is None:
            if users >= plan.max_users:
                return None, "max users"
            return min(plan.max_users, max(users + 1, math.ceil(users * plan.growth))), ""
        if limit.stats.users - users <= max(1, int(users * plan.resolution)):
            return None, "knee"
        return (users + limit.stats.users) // 2, ""

    def record(self, stats: StepStats) -> Judged:
        knee, _ = knee_of(self.steps)
        verdict, reason = judge(stats, knee.stats if knee else None, self.rules)
        step = Judged(len(self.steps) + 1, stats, verdict, reason)
        self.steps.append(step)
        if verdict is Verdict.GENERATOR:
            self.stop("load generator saturated")
        return step

    def stop(self, reason: str) -> None:
        """End the search from outside (time or request budget, interruption)."""
        if self.stopped is None:
            self.stopped = reason


def _pct(x: float) -> str:
    return f"{x * 100:.3g}%"


def _signed_pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.4g}ms"
