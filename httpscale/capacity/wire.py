"""What the CLI and its load-generating child (`httpscale.capacity.run`) say to each other.

The CLI passes one `LoadSpec` as JSON on the child's command line; the child writes one JSON
object per line on its stdout, an `event` each:

* `progress`: the step in progress, so far (every `progress_interval` seconds);
* `step`: a finished step, judged (`StepJSON`);
* `end`: why it stopped, and the HTML report written (or why not).

A child that cannot run at all exits non-zero with the reason on its stderr.

Pure and stdlib-only, since both sides import it, one of them under gevent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypedDict

from httpscale.capacity.core import Judged, KneeRules, StepPlan, StepStats, Verdict

__all__ = [
    "EndEvent",
    "LoadSpec",
    "ProgressEvent",
    "StepJSON",
    "judged_from_json",
    "judged_to_json",
]


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One run of the load generator. Seconds throughout."""

    base_url: str  # where locust connects: scheme://host:port
    path: str  # path and query, as sent
    host_header: str  # Host of every request (the route as users reach it)
    plan: StepPlan = field(default_factory=StepPlan)
    rules: KneeRules = field(default_factory=KneeRules)
    warmup: float = 3.0  # per step, after the users are spawned, not measured
    step_duration: float = 10.0  # per step, measured
    max_duration: float = 300.0  # the whole run; no step starts that would end later
    max_requests: int = 500_000  # the whole run, warm-ups included
    request_timeout: float = 30.0  # one request, connect to last byte
    connect_timeout: float = 5.0
    progress_interval: float = 0.5
    report: str | None = None  # HTML report path

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LoadSpec:
        doc = dict(doc)
        plan = StepPlan(**doc.pop("plan"))
        rules = KneeRules(**doc.pop("rules"))
        return cls(plan=plan, rules=rules, **doc)


class StepJSON(TypedDict):
    index: int
    users: int
    seconds: float
    requests: int
    failures: int
    mean: float
    p50: float
    p99: float
    cpu: float
    error: str | None
    verdict: str
    reason: str


class ProgressEvent(TypedDict):
    event: Literal["progress"]
    step: int  # 1-based index of the step in progress
    users: int
    phase: Literal["warmup", "measure"]
    elapsed: float  # into the phase
    duration: float  # of the phase
    requests: int  # measured so far in the window
    rps: float
    p50: float
    p99: float
    error_rate: float


class EndEvent(TypedDict):
    event: Literal["end"]
    stopped: str
    report: str | None
    report_error: str | None


def judged_to_json(step: Judged) -> StepJSON:
    s = step.stats
    return {
        "index": step.index,
        "users": s.users,
        "seconds": s.seconds,
        "requests": s.requests,
        "failures": s.failures,
        "mean": s.mean,
        "p50": s.p50,
        "p99": s.p99,
        "cpu": s.cpu,
        "error": s.error,
        "verdict": step.verdict.value,
        "reason": step.reason,
    }


def judged_from_json(doc: StepJSON) -> Judged:
    stats = StepStats(
        users=doc["users"],
        seconds=doc["seconds"],
        requests=doc["requests"],
        failures=doc["failures"],
        mean=doc["mean"],
        p50=doc["p50"],
        p99=doc["p99"],
        cpu=doc["cpu"],
        error=doc["error"],
    )
    return Judged(doc["index"], stats, Verdict(doc["verdict"]), doc["reason"])
