"""HTTPScaledObject -> ScaledObject (pure): the shape KEDA's add-on writes, ownership by uid,
and when an apply would change anything."""

from __future__ import annotations

import copy
from typing import Any

from httpscale.model import parse_httpso
from httpscale.operator.scaledobject import (
    FIELD_MANAGER,
    controller_of,
    desired_scaled_object,
    is_owned_by,
    needs_apply,
    without_owner,
)

SCALER = "httpscale-scaler.httpscale:9091"


def _httpso(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "hosts": ["app.example.com"],
        "scaleTargetRef": {"name": "app", "service": "app", "port": 8080},
    }
    base.update(spec)
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {
            "name": "app",
            "namespace": "shop",
            "uid": "uid-1",
            "labels": {"team": "web"},
            "annotations": {
                "note": "x",
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            },
        },
        "spec": base,
    }


def _desired(raw: dict[str, Any]) -> dict[str, Any]:
    return desired_scaled_object(raw, parse_httpso(raw), SCALER)


def test_the_scaled_object_keda_s_add_on_writes() -> None:
    raw = _httpso(
        replicas={"min": 1, "max": 7},
        scaledownPeriod=90,
        initialCooldownPeriod=20,
        scaleTargetRef={"name": "web", "kind": "StatefulSet", "apiVersion": "apps/v1",
                        "service": "web", "port": 80},
    )
    so = _desired(raw)
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
    meta = so["metadata"]
    assert (meta["name"], meta["namespace"]) == ("app", "shop")
    assert meta["labels"] == {"team": "web"}
    # Copied, except kubectl's record of the HTTPSO itself.
    assert meta["annotations"] == {"note": "x"}
    assert meta["ownerReferences"] == [{
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject", "name": "app",
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True,
    }]
    assert so["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"},
        "pollingInterval": 15,
        "cooldownPeriod": 90,
        "initialCooldownPeriod": 20,
        "minReplicaCount": 1,
        "maxReplicaCount": 7,
        "advanced": {"restoreToOriginalReplicaCount": True},
        "triggers": [{
            "type": "external-push",
            "metadata": {"scalerAddress": SCALER, "httpScaledObject": "app"},
        }],
    }


def test_defaults_and_legacy_deployment_field() -> None:
    raw = _httpso(scaleTargetRef={"deployment": "legacy", "service": "legacy", "port": 80})
    spec = _desired(raw)["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "legacy"}
    # KEDA's own ScaledObject defaults, written out.
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 100)
    assert (spec["cooldownPeriod"], spec["initialCooldownPeriod"]) == (300, 0)


def _as_stored(desired: dict[str, Any], *, managed: bool = True) -> dict[str, Any]:
    """`desired` as the API server would return it after our apply (plus KEDA's label)."""
    stored = copy.deepcopy(desired)
    stored["metadata"]["resourceVersion"] = "42"
    stored["metadata"]["labels"]["scaledobject.keda.sh/name"] = "app"  # KEDA adds it
    stored["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    if managed:
        fields = {
            f"f:{name}": {f"f:{k}": {} for k in desired["metadata"][name]}
            for name in ("labels", "annotations")
        }
        stored["metadata"]["managedFields"] = [{
            "manager": FIELD_MANAGER, "operation": "Apply",
            "fieldsV1": {"f:metadata": fields, "f:spec": {}},
        }]
    return stored


def test_needs_apply_is_false_in_the_steady_state() -> None:
    desired = _desired(_httpso())
    assert not needs_apply(desired, _as_stored(desired))


def test_needs_apply_sees_a_hand_edit_of_a_field_we_set() -> None:
    desired = _desired(_httpso())
    edited = _as_stored(desired)
    edited["spec"]["maxReplicaCount"] = 3
    assert needs_apply(desired, edited)
    edited = _as_stored(desired)
    edited["spec"]["triggers"].append({"type": "cpu", "metadata": {"value": "50"}})
    assert needs_apply(desired, edited)
    edited = _as_stored(desired)
    edited["metadata"]["labels"]["team"] = "other"
    assert needs_apply(desired, edited)


def test_needs_apply_ignores_what_others_add() -> None:
    desired = _desired(_httpso())
    stored = _as_stored(desired)
    stored["metadata"]["annotations"]["autoscaling.keda.sh/paused-replicas"] = "2"
    stored["spec"]["fallback"] = {"failureThreshold": 3, "replicas": 1}
    assert not needs_apply(desired, stored)


def test_needs_apply_when_the_httpso_dropped_a_label() -> None:
    raw = _httpso()
    before = _desired(raw)
    stored = _as_stored(before)
    raw["metadata"]["labels"] = {}
    after = _desired(raw)
    assert needs_apply(after, stored)  # our apply must remove "team"


def test_a_scaled_object_written_by_kedas_add_on_is_taken_over() -> None:
    desired = _desired(_httpso())
    stored = _as_stored(desired, managed=False)  # same content, another field manager
    assert is_owned_by(stored, "uid-1")
    assert needs_apply(desired, stored)


def test_ownership_is_by_uid_and_controller() -> None:
    desired = _desired(_httpso())
    stored = _as_stored(desired)
    assert is_owned_by(stored, "uid-1")
    assert not is_owned_by(stored, "uid-2")  # a new HTTPSO of the same name
    stored["metadata"]["ownerReferences"][0]["controller"] = False
    assert controller_of(stored) is None and not is_owned_by(stored, "uid-1")
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u9"}
    stored["metadata"]["ownerReferences"].append(other)
    assert without_owner(stored, "uid-1") == [other]
