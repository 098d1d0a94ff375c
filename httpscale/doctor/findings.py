"""What `httpscale doctor` reports: findings, one per thing checked, and the exit code.

A finding says what was checked (`check`, a stable dotted id scripts can key on), on what
(`subject`, in the words `kubectl` uses: `Ingress shop/web`), how it went, and for anything
that is not ok, what to do (`fix`). Every check reports its successes too, so the output shows
what was looked at, not only what broke: a doctor that prints nothing proves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

__all__ = ["SECTIONS", "Finding", "FindingJSON", "Status", "exit_code", "section_of"]


class Status(StrEnum):
    OK = "ok"
    INFO = "info"  # nothing wrong, nothing proven either: a check skipped, and why
    WARN = "warn"  # works, but probably not as meant; does not fail the run
    FAIL = "fail"  # broken: requests will not be served or apps will not scale


class FindingJSON(TypedDict):
    check: str
    subject: str
    status: str
    message: str
    fix: str


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # "<section>.<what>", e.g. "traffic.ingress"
    subject: str  # the object or thing: "HTTPScaledObject shop/app"
    status: Status
    message: str
    fix: str = ""  # what to do; empty when there is nothing to do

    def to_json(self) -> FindingJSON:
        return {"check": self.check, "subject": self.subject, "status": self.status.value,
                "message": self.message, "fix": self.fix}


# Sections in the order they are printed: each builds on the ones before (no KEDA, no
# ScaledObject can be Ready; no interceptor, no live request can answer).
SECTIONS: dict[str, str] = {
    "cluster": "Cluster access",
    "keda": "KEDA",
    "httpscale": "httpscale components",
    "apps": "HTTPScaledObjects and InterceptorRoutes",
    "traffic": "Traffic in (Ingress, HTTPRoute)",
    "live": "Live requests through the interceptor",
    "local": "Local mode",
}


def section_of(finding: Finding) -> str:
    return finding.check.partition(".")[0]


def exit_code(findings: Iterable[Finding]) -> int:
    """1 when anything failed, else 0 (warnings do not fail a run)."""
    return 1 if any(f.status is Status.FAIL for f in findings) else 0
