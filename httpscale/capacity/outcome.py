"""What a capacity run found, as text for people and as one JSON object for programs.

Per replica at the knee: requests/s, and concurrency by Little's law (requests/s x mean
latency, as the client saw it): the time-average number of requests in flight, which is what
the interceptor's concurrency metric counts per replica. When the knee was not reached (a
limit or Ctrl-C ended the run first, or the load generator saturated), the numbers come from
the best step measured: a lower bound, and the output says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from httpscale.capacity.core import Judged, KneeRules, knee_of
from httpscale.capacity.recommend import Recommendation, recommend

__all__ = ["Outcome", "format_step", "format_text", "to_json"]

STEP_HEADER = f"{'step':>4} {'users':>5} {'req/s':>8} {'p50':>8} {'p99':>8} {'errors':>7}  verdict"


@dataclass(frozen=True, slots=True)
class Outcome:
    url: str
    held: str  # what was measured, for people
    target: dict[str, Any]  # the same for JSON
    replicas: int
    rules: KneeRules
    headroom: float
    steps: Sequence[Judged]
    stopped: str  # why the search ended (core.Finder.stopped, or the CLI's reason)
    report: str | None = None
    report_error: str | None = None

    @property
    def knee(self) -> Judged | None:
        return knee_of(self.steps)[0]

    @property
    def limit(self) -> Judged | None:
        return knee_of(self.steps)[1]

    @property
    def knee_reached(self) -> bool:
        return self.knee is not None and self.limit is not None

    @property
    def recommendation(self) -> Recommendation | None:
        knee = self.knee
        return None if knee is None else recommend(knee.stats, self.replicas, self.headroom)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"


def format_step(step: Judged) -> str:
    s = step.stats
    verdict = "ok" if step.ok else f"{step.verdict.value}: {step.reason}"
    return (
        f"{step.index:>4} {s.users:>5} {s.rps:>8.1f} {_ms(s.p50):>8} {_ms(s.p99):>8} "
        f"{s.error_rate * 100:>6.2f}%  {verdict}"
    )


def _step_json(step: Judged) -> dict[str, Any]:
    s = step.stats
    return {
        "step": step.index,
        "users": s.users,
        "seconds": round(s.seconds, 3),
        "requests": s.requests,
        "failures": s.failures,
        "rps": round(s.rps, 2),
        "concurrency": round(s.concurrency, 3),
        "mean_ms": round(s.mean * 1000, 2),
        "p50_ms": round(s.p50 * 1000, 2),
        "p99_ms": round(s.p99 * 1000, 2),
        "error_rate": round(s.error_rate, 5),
        "generator_cpu": round(s.cpu, 3),
        "error": s.error,
        "verdict": step.verdict.value,
        "reason": step.reason,
    }


def to_json(outcome: Outcome) -> dict[str, Any]:
    knee, limit, rec = outcome.knee, outcome.limit, outcome.recommendation
    replicas = outcome.replicas
    return {
        "url": outcome.url,
        "target": outcome.target,
        "replicas": replicas,
        "rules": {
            "slo_p99_ms": None if outcome.rules.slo_p99 is None else outcome.rules.slo_p99 * 1000,
            "error_budget": outcome.rules.error_budget,
            "min_efficiency": outcome.rules.min_efficiency,
        },
        "stopped": outcome.stopped,
        "knee_reached": outcome.knee_reached,
        # Per replica, at the knee (or the best step measured when knee_reached is false).
        "knee_rps": None if knee is None else round(knee.stats.rps / replicas, 3),
        "knee_concurrency": None if knee is None else round(knee.stats.concurrency / replicas, 3),
        "knee": None if knee is None else _step_json(knee),
        "limit": None if limit is None else _step_json(limit),
        "headroom": outcome.headroom,
        "recommended": None
        if rec is None
        else {"concurrency": rec.concurrency.value, "requestRate": rec.request_rate.value},
        "arithmetic": None
        if rec is None
        else {
            "concurrency": rec.concurrency.arithmetic(),
            "requestRate": rec.request_rate.arithmetic(),
        },
        "steps": [_step_json(s) for s in outcome.steps],
        "report": outcome.report,
    }


def format_text(outcome: Outcome, steps: bool = True) -> str:
    """`steps`: include the table of steps (not when the progress display just showed it)."""
    knee, limit, rec = outcome.knee, outcome.limit, outcome.recommendation
    n = outcome.replicas
    lines = [f"{outcome.url}: {outcome.held}, {n} replica{'s' if n != 1 else ''}", ""]
    if steps:
        lines += [STEP_HEADER, *(format_step(s) for s in outcome.steps), ""]
    lines.append(f"stopped: {outcome.stopped}")
    if knee is None:
        lines.append(
            "no step met the rules: nothing to recommend"
            if outcome.steps
            else "no step was measured: nothing to recommend"
        )
        if limit is not None:
            lines.append(f"  step {limit.index} ({limit.stats.users} users): {limit.reason}")
    else:
        s = knee.stats
        if limit is not None:
            lines.append(
                f"knee: step {knee.index}, {s.users} users (step {limit.index}, "
                f"{limit.stats.users} users: {limit.reason})"
            )
        else:
            lines.append(
                f"knee NOT reached: the best step measured was step {knee.index}, {s.users} "
                "users; the app serves at least this much (the targets below are lower bounds)"
            )
        lines.append(
            f"  {s.rps:.1f} requests/s, {s.concurrency:.2f} in flight "
            f"(Little's law: {s.rps:.1f}/s x {_ms(s.mean)} mean), p99 {_ms(s.p99)}, "
            f"errors {s.error_rate * 100:.2f}%"
        )
        if n != 1:
            lines.append(
                f"  per replica: {s.rps / n:.1f} requests/s, {s.concurrency / n:.2f} in flight"
            )
    if rec is not None:
        lines += [
            "",
            f"recommended targets per replica (headroom {outcome.headroom * 100:g}%):",
            f"  concurrency:  {rec.concurrency.arithmetic()}",
            f"  requestRate:  {rec.request_rate.arithmetic()}",
            "",
            "in the HTTPScaledObject's spec, one of:",
            rec.yaml(indent="  "),
        ]
    if outcome.report:
        lines += ["", f"report: {outcome.report}"]
    elif outcome.report_error:
        lines += ["", f"report not written: {outcome.report_error}"]
    return "\n".join(lines)
