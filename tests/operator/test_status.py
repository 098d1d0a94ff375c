"""The Ready condition (pure): reasons by priority, and writing only when something changed."""

from __future__ import annotations

from typing import Any

from httpscale.operator.status import Problem, Reason, status_update, verdict


def _obj(conditions: list[dict[str, Any]] | None = None, generation: int = 3) -> dict[str, Any]:
    status = {"conditions": conditions} if conditions is not None else {}
    return {"metadata": {"generation": generation}, "status": status}


def test_no_problems_is_reconciled() -> None:
    v = verdict([], "ScaledObject created and configured")
    assert v.ready and v.reason is Reason.RECONCILED
    assert v.message == "ScaledObject created and configured"


def test_the_most_fundamental_problem_names_the_reason_and_all_are_listed() -> None:
    v = verdict(
        [
            Problem(Reason.PORT_NOT_FOUND, "no port 81"),
            Problem(Reason.KEDA_NOT_INSTALLED, "KEDA is not installed"),
            Problem(Reason.TARGET_NOT_FOUND, "Deployment shop/app not found"),
        ],
        "ok",
    )
    assert not v.ready and v.reason is Reason.KEDA_NOT_INSTALLED
    assert v.message == "KEDA is not installed; Deployment shop/app not found; no port 81"


def test_first_status_then_nothing_to_write() -> None:
    v = verdict([], "fine")
    fields = {"targetWorkload": "apps/v1/Deployment/app", "targetService": "app:8080"}
    status = status_update(_obj(), v, extra=fields, now="2026-12-02T10:00:00Z")
    assert status == {
        **fields,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Reconciled", "message": "fine",
            "lastTransitionTime": "2026-12-02T10:00:00Z", "observedGeneration": 3,
        }],
    }
    written = {"metadata": {"generation": 3}, "status": status}
    assert status_update(written, v, extra=fields) is None


def test_transition_time_moves_only_when_the_status_flips() -> None:
    ready = {"type": "Ready", "status": "False", "reason": "ServiceNotFound",
             "message": "m", "lastTransitionTime": "2026-12-01T00:00:00Z",
             "observedGeneration": 3}
    # Still False, another reason: same transition time.
    again = status_update(_obj([ready]), verdict([Problem(Reason.PORT_NOT_FOUND, "p")], ""),
                          now="2026-12-02T00:00:00Z")
    assert again is not None
    assert again["conditions"][0]["lastTransitionTime"] == "2026-12-01T00:00:00Z"
    assert again["conditions"][0]["reason"] == "PortNotFound"
    # Flips to True: now.
    flipped = status_update(_obj([ready]), verdict([], "ok"), now="2026-12-02T00:00:00Z")
    assert flipped is not None
    assert flipped["conditions"][0]["lastTransitionTime"] == "2026-12-02T00:00:00Z"


def test_a_new_generation_is_written_even_if_the_verdict_is_the_same() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok",
             "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 2}
    status = status_update(_obj([ready], generation=3), verdict([], "ok"))
    assert status is not None and status["conditions"][0]["observedGeneration"] == 3


def test_other_conditions_are_kept_and_keda_s_old_untimed_ones_dropped() -> None:
    mine = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok",
            "lastTransitionTime": "t", "observedGeneration": 3}
    theirs = {"type": "Audited", "status": "True", "reason": "Fine", "message": "",
              "lastTransitionTime": "t0"}
    old = {"type": "Pending", "status": "True", "reason": "Old", "message": ""}
    status = status_update(_obj([theirs, old, mine]), verdict([Problem(Reason.INVALID_SPEC,
                                                                         "spec.x: bad")], ""))
    assert status is not None
    assert [c["type"] for c in status["conditions"]] == ["Audited", "Ready"]


def test_long_messages_are_cut_to_the_condition_limit() -> None:
    v = verdict([Problem(Reason.INVALID_SPEC, "x" * 40_000)], "")
    assert len(v.message) == 32_768
