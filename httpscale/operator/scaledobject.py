"""HTTPScaledObject -> KEDA ScaledObject: what the operator writes, as a pure function.

The ScaledObject is the one KEDA's add-on writes for the same HTTPScaledObject (same name and
namespace, labels and annotations copied, a controller ownerReference, one `external-push`
trigger naming the HTTPSO and the scaler's address, `pollingInterval: 15`,
`restoreToOriginalReplicaCount: true`), so a cluster can switch between the two operators
without KEDA noticing. Two deliberate differences:

- min/max replicas, `cooldownPeriod` and `initialCooldownPeriod` are always written (KEDA's
  add-on omits unset ones), with the values KEDA would default to (0, 100, 300, 0): the object
  then says what it does, and a field never has to be removed when the HTTPSO drops it;
- `kubectl.kubernetes.io/last-applied-configuration` is not copied: it describes the
  HTTPSO, and on the ScaledObject it would make `kubectl apply` diff against the wrong thing.

It is written with server-side apply under one field manager, so the operator owns exactly the
fields it sets: a hand edit of one of them is put back, while what others add (KEDA's own
`scaledobject.keda.sh/name` label, a `paused-replicas` annotation set on the ScaledObject
itself) is left alone. `needs_apply` tells from the cached object whether an apply would
change anything, so a steady state costs no writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from httpscale.kube.api import Obj
from httpscale.kube.resources import HTTPSCALEDOBJECTS, SCALEDOBJECTS
from httpscale.model import HTTPScaledObject

__all__ = [
    "ADDON_FINALIZER",
    "FIELD_MANAGER",
    "ORPHAN_ANNOTATION",
    "SKIP_ANNOTATION",
    "controller_of",
    "desired_scaled_object",
    "is_owned_by",
    "needs_apply",
    "without_owner",
]

FIELD_MANAGER = "httpscale-operator"
SKIP_ANNOTATION = "httpscaledobject.keda.sh/skip-scaledobject-creation"
ORPHAN_ANNOTATION = "httpscaledobject.keda.sh/orphan-scaledobject"
# KEDA's add-on puts this finalizer on every HTTPSO (and does nothing with it but remove it);
# objects migrated from it still carry it, and would never finish deleting without us.
ADDON_FINALIZER = "httpscaledobject.http.keda.sh"
POLLING_INTERVAL = 15
TRIGGER_TYPE = "external-push"
_NOT_COPIED = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def desired_scaled_object(raw: Obj, httpso: HTTPScaledObject, scaler: str) -> Obj:
    """The ScaledObject for the HTTPSO `raw` (whose parsed form is `httpso`)."""
    meta = _meta(raw)
    spec = httpso.spec
    ref = spec.scale_target_ref
    if ref is None:  # parse_httpso always sets it for Kubernetes objects
        raise ValueError(f"{httpso.key}: no scaleTargetRef")
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in _NOT_COPIED
    }
    return {
        "apiVersion": SCALEDOBJECTS.api_version,
        "kind": SCALEDOBJECTS.kind,
        "metadata": {
            "name": httpso.name,
            "namespace": httpso.namespace,
            "labels": dict(meta.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": HTTPSCALEDOBJECTS.api_version,
                    "kind": HTTPSCALEDOBJECTS.kind,
                    "name": httpso.name,
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
            },
            "pollingInterval": POLLING_INTERVAL,
            "cooldownPeriod": round(spec.scaledown_period),
            "initialCooldownPeriod": round(spec.initial_cooldown_period),
            "minReplicaCount": spec.replicas_min,
            "maxReplicaCount": spec.replicas_max,
            "advanced": {"restoreToOriginalReplicaCount": True},
            "triggers": [
                {
                    "type": TRIGGER_TYPE,
                    "metadata": {"scalerAddress": scaler, "httpScaledObject": httpso.name},
                }
            ],
        },
    }


def controller_of(obj: Obj) -> Mapping[str, Any] | None:
    """The ownerReference marked `controller: true`, if any."""
    for ref in _meta(obj).get("ownerReferences") or ():
        if ref.get("controller"):
            return dict(ref)
    return None


def is_owned_by(obj: Obj, uid: str) -> bool:
    """Whether `obj`'s controller is the object with `uid` (the HTTPSO it was written for).

    By uid, not name: a ScaledObject left behind by a deleted HTTPSO of the same name is not
    the new one's to take over. One written by KEDA's add-on for this same HTTPSO is.
    """
    ref = controller_of(obj)
    return ref is not None and ref.get("uid") == uid


def without_owner(obj: Obj, uid: str) -> list[dict[str, Any]]:
    """`obj`'s ownerReferences minus those pointing at `uid` (for orphaning)."""
    return [r for r in _meta(obj).get("ownerReferences") or () if r.get("uid") != uid]


def needs_apply(desired: Obj, actual: Obj) -> bool:
    """Whether applying `desired` would change `actual` (a cached ScaledObject whose
    managedFields kept only this operator's entries).

    Spec: every field set must be equal (lists whole: `triggers` is an atomic list).
    Labels and annotations: each desired one present with its value, and the keys this
    manager applied last time the same as now (so one the HTTPSO dropped gets removed).
    """
    if not _contains(desired["spec"], actual.get("spec") or {}):
        return True
    want_meta = desired["metadata"]
    have_meta = _meta(actual)
    owned = _owned_metadata_keys(actual)
    for field in ("labels", "annotations"):
        want: dict[str, str] = want_meta[field]
        have = have_meta.get(field) or {}
        if any(have.get(k) != v for k, v in want.items()):
            return True
        if owned is not None and owned.get(field, set()) != set(want):
            return True
    if owned is None:
        return True  # never applied by us (e.g. written by KEDA's add-on): take it over
    wanted_ref = want_meta["ownerReferences"][0]
    return not any(
        r.get("uid") == wanted_ref["uid"] and r.get("controller")
        for r in have_meta.get("ownerReferences") or ()
    )


def _contains(want: object, have: object) -> bool:
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            k in have and _contains(v, have[k]) for k, v in want.items()
        )
    return want == have


def _owned_metadata_keys(obj: Obj) -> dict[str, set[str]] | None:
    """Label and annotation keys this operator's last apply set, from managedFields; None if
    it never applied this object."""
    for entry in _meta(obj).get("managedFields") or ():
        if entry.get("manager") != FIELD_MANAGER or entry.get("operation") != "Apply":
            continue
        fields = (entry.get("fieldsV1") or {}).get("f:metadata") or {}
        return {
            name: {k[2:] for k in (fields.get(f"f:{name}") or {}) if k.startswith("f:")}
            for name in ("labels", "annotations")
        }
    return None
