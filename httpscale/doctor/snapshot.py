"""Everything the cluster checks look at, read once: plain objects as the API returned them.

The checks (`httpscale.doctor.cluster`) are pure functions of a `ClusterSnapshot`, so each
kind of miswiring is tested by building one by hand, and a snapshot read from a real cluster
can be altered (a CRD removed, say) to test what could not be done to a shared cluster.
`gather.py` fills it. Objects keep their `managedFields` (who wrote a ScaledObject matters);
CRDs lose their schemas (megabytes that nothing here reads).

Keys are `<namespace>/<name>` as everywhere in httpscale (`httpscale.kube.cache.object_key`);
cluster-scoped objects are keyed by name.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from httpscale.kube.api import Obj
from httpscale.kube.endpoints import ready_endpoints, service_port
from httpscale.routing.spec import Endpoint

__all__ = [
    "ClusterSnapshot",
    "age_seconds",
    "condition",
    "endpoints_of",
    "meta",
    "parse_time",
    "workload_key",
]


def workload_key(api_version: str, kind: str) -> str:
    """How `ClusterSnapshot.workloads` is keyed: "apps/v1/Deployment"."""
    return f"{api_version}/{kind}"


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    namespace: str  # httpscale's own namespace (its Deployments and Services)
    now: datetime.datetime  # when it was read (aware, UTC), for the age of Leases and objects
    app_namespace: str | None = None  # only apps of this namespace were read; None: all
    # CustomResourceDefinitions asked for by name; a missing name is a CRD not installed.
    crds: Mapping[str, Obj] = field(default_factory=dict)
    api_services: Mapping[str, Obj] = field(default_factory=dict)  # by name
    # KEDA's operator, wherever it runs: Deployments named keda-operator (any namespace), and
    # its leader-election Lease `operator.keda.sh` (any namespace).
    keda_deployments: Mapping[str, Obj] = field(default_factory=dict)
    keda_leases: Mapping[str, Obj] = field(default_factory=dict)
    deployments: Mapping[str, Obj] = field(default_factory=dict)  # httpscale's namespace
    pods: Mapping[str, Obj] = field(default_factory=dict)  # httpscale's namespace
    services: Mapping[str, Obj] = field(default_factory=dict)  # apps' and httpscale's
    # EndpointSlices by the key of their Service (`kubernetes.io/service-name`), not their own.
    endpoint_slices: Mapping[str, Sequence[Obj]] = field(default_factory=dict)
    httpsos: Mapping[str, Obj] = field(default_factory=dict)
    interceptor_routes: Mapping[str, Obj] = field(default_factory=dict)
    scaled_objects: Mapping[str, Obj] = field(default_factory=dict)
    # Workloads that scaleTargetRefs name, per `workload_key`: every object of that kind.
    # A kind the cluster does not serve is in `missing_kinds` (with why) instead.
    workloads: Mapping[str, Mapping[str, Obj]] = field(default_factory=dict)
    missing_kinds: Mapping[str, str] = field(default_factory=dict)
    ingresses: Mapping[str, Obj] = field(default_factory=dict)
    # None: the Gateway API's CRD is not installed (nothing to check), as opposed to none.
    http_routes: Mapping[str, Obj] | None = None
    reference_grants: Mapping[str, Obj] | None = None
    # What could not be read ("ingresses" -> "403 Forbidden: ..."): the checks that need it
    # say they were skipped instead of reporting what is missing from an empty list.
    unreadable: Mapping[str, str] = field(default_factory=dict)


def meta(obj: Obj) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def condition(obj: Obj, kind: str) -> Mapping[str, Any] | None:
    """The status condition of type `kind`, or None."""
    for c in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(c, Mapping) and c.get("type") == kind:
            return c
    return None


def parse_time(text: object) -> datetime.datetime | None:
    """An RFC 3339 time as the API writes it (`2026-12-02T10:00:00Z`, maybe with fractions)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def age_seconds(snapshot: ClusterSnapshot, text: object) -> float | None:
    when = parse_time(text)
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return (snapshot.now - when).total_seconds()


def endpoints_of(
    snap: ClusterSnapshot, namespace: str, name: str, port: int | None, port_name: str | None
) -> tuple[Endpoint, ...] | str:
    """The ready endpoints of a Service port, as the interceptor would pick them (its own
    rules, `httpscale.kube.endpoints`); a string saying why there are none to look for."""
    found = service_port(snap.services.get(f"{namespace}/{name}"), port, port_name)
    if isinstance(found, str):
        return found
    return ready_endpoints(snap.endpoint_slices.get(f"{namespace}/{name}", ()), found)
