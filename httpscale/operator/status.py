"""The `Ready` condition and the status the operator writes, as pure functions.

KEDA's add-on has one condition, `Ready`, with reasons `Reconciled` (True) and `CreateError`
(False). httpscale keeps both and adds reasons a user can act on, so `kubectl get httpso`
(whose columns show Ready and Reason) says at a glance which objects work and why not. When
several things are wrong the reason is the first by `Reason` order and the message lists all.

`lastTransitionTime` moves only when the status flips (metav1.Condition's rule), and nothing
is written when nothing changed, so a steady state costs no writes and no watch events.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from httpscale.kube.api import Obj

__all__ = [
    "READY",
    "Problem",
    "ReadyVerdict",
    "Reason",
    "current_ready",
    "status_update",
    "verdict",
]

READY = "Ready"
_MAX_MESSAGE = 32_768  # metav1.Condition's limit


class Reason(Enum):
    """Why an object is (not) Ready, most fundamental first."""

    INVALID_SPEC = "InvalidSpec"  # the spec breaks a rule; the message names the field path
    KEDA_NOT_INSTALLED = "KEDANotInstalled"  # no ScaledObject CRD on the cluster
    SCALED_OBJECT_CONFLICT = "ScaledObjectConflict"  # a ScaledObject we do not own has the name
    ROUTE_CONFLICT = "RouteConflict"  # another object serves (part of) its hosts and paths
    CREATE_ERROR = "CreateError"  # the API refused to write the ScaledObject (KEDA's reason)
    TARGET_NOT_FOUND = "TargetNotFound"  # scaleTargetRef names no existing workload
    SERVICE_NOT_FOUND = "ServiceNotFound"
    PORT_NOT_FOUND = "PortNotFound"  # the Service has no such port / portName
    RECONCILED = "Reconciled"  # all is well (KEDA's reason)


_ORDER = {reason: i for i, reason in enumerate(Reason)}


@dataclass(frozen=True, slots=True)
class Problem:
    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class ReadyVerdict:
    """The Ready condition to show: status True only with reason Reconciled."""

    reason: Reason
    message: str

    @property
    def ready(self) -> bool:
        return self.reason is Reason.RECONCILED


def verdict(problems: Sequence[Problem], ok_message: str) -> ReadyVerdict:
    """The condition for these problems (none: Reconciled with `ok_message`)."""
    if not problems:
        return ReadyVerdict(Reason.RECONCILED, ok_message)
    ordered = sorted(problems, key=lambda p: _ORDER[p.reason])
    message = "; ".join(p.message for p in ordered)
    return ReadyVerdict(ordered[0].reason, message[:_MAX_MESSAGE])


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_update(
    obj: Obj,
    result: ReadyVerdict,
    *,
    extra: Mapping[str, str] | None = None,
    now: str | None = None,
) -> dict[str, Any] | None:
    """The new `status` for `obj` (a merge-patch body's `status`), or None if it already says
    this. `extra` are plain status fields (`targetWorkload`, `targetService`)."""
    meta = obj.get("metadata") or {}
    generation = meta.get("generation")
    status = obj.get("status") or {}
    conditions: list[dict[str, Any]] = [
        dict(c) for c in status.get("conditions") or () if isinstance(c, dict)
    ]
    current = next((c for c in conditions if c.get("type") == READY), None)
    wanted_status = "True" if result.ready else "False"
    fields_same = all(status.get(k) == v for k, v in (extra or {}).items())
    if (
        current is not None
        and current.get("status") == wanted_status
        and current.get("reason") == result.reason.value
        and current.get("message") == result.message
        and current.get("observedGeneration") == generation
        and fields_same
    ):
        return None
    transition = (
        current["lastTransitionTime"]
        if current is not None
        and current.get("status") == wanted_status
        and current.get("lastTransitionTime")
        else (now or _now())
    )
    ready: dict[str, Any] = {
        "type": READY,
        "status": wanted_status,
        "reason": result.reason.value,
        "message": result.message,
        "lastTransitionTime": transition,
    }
    if isinstance(generation, int):
        ready["observedGeneration"] = generation
    # Other condition types (none today, another tool's tomorrow) are kept as they are; old
    # entries without a lastTransitionTime (KEDA's add-on before v0.9) would fail validation.
    others = [c for c in conditions if c.get("type") != READY and c.get("lastTransitionTime")]
    return {**(extra or {}), "conditions": [*others, ready]}


def current_ready(obj: Obj) -> Mapping[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(c, dict) and c.get("type") == READY:
            return c
    return None
