"""What runs behind each HTTPScaledObject on a cluster: its workload, min/max and requests.

The report needs, per route, the workload that is scaled (for its replicas), the bounds the
object gives it, and what one pod of it requests (from the workload's pod template: what the
scheduler reserves, so what a node pool is sized and billed for).
"""

from __future__ import annotations

from dataclasses import dataclass

from httpscale.kube.api import ApiError, Kube, Obj
from httpscale.kube.resources import HTTPSCALEDOBJECTS, Resource
from httpscale.model.errors import ConfigError
from httpscale.model.httpso import parse_httpso_spec
from httpscale.report.cost import Requests
from httpscale.report.quantity import GIB, pod_requests

__all__ = ["Target", "list_targets", "resolve_kind"]


@dataclass(frozen=True, slots=True)
class Target:
    namespace: str
    name: str  # the HTTPScaledObject; the route key is namespace/name
    workload: Resource  # the scaled kind, resolved through discovery
    workload_name: str
    min_replicas: int
    max_replicas: int
    requests: Requests

    @property
    def route(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.workload_name}"


async def resolve_kind(kube: Kube, api_version: str, kind: str) -> Resource | None:
    """The resource that serves `kind` in `api_version` (API discovery), None if none."""
    group, _, version = api_version.rpartition("/")
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    try:
        listing = await kube.request("GET", path)
    except ApiError as exc:
        if exc.not_found:
            return None
        raise
    for res in listing.get("resources") or ():
        if res.get("kind") == kind and "/" not in str(res.get("name")):
            return Resource(group, version, str(res["name"]), kind,
                            namespaced=bool(res.get("namespaced")))
    return None


def _template_requests(workload: Obj, fallback: Requests) -> Requests:
    spec = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    found = pod_requests(spec)
    if found is None:
        return Requests(fallback.cpu_cores, fallback.memory_gib,
                        f"{fallback.source}; the pod template requests nothing")
    return Requests(found[0], found[1] / GIB, "pod template requests")


async def list_targets(
    kube: Kube,
    namespace: str | None,
    fallback: Requests,
    override: Requests | None = None,
) -> tuple[list[Target], list[str]]:
    """Every valid HTTPScaledObject's target (in `namespace`, or all), and notes on the ones
    left out. `override` replaces the pod template's requests; `fallback` is used where the
    template requests nothing."""
    try:
        listing = await kube.request("GET", HTTPSCALEDOBJECTS.path(namespace))
    except ApiError as exc:
        if exc.status == 404:  # the bare "could not find the requested resource" otherwise
            raise ApiError(404, "NotFound", "no HTTPScaledObject CRD on this cluster "
                           "(httpscaledobjects.http.keda.sh): is httpscale installed? "
                           "`httpscale doctor` checks the install") from None
        raise
    targets: list[Target] = []
    notes: list[str] = []
    kinds: dict[tuple[str, str], Resource | None] = {}
    for obj in listing.get("items") or ():
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            spec = parse_httpso_spec(obj.get("spec") or {}, source=f"HTTPScaledObject {ns}/{name}")
        except ConfigError as exc:
            notes.append(f"{ns}/{name}: left out, invalid: {exc}")
            continue
        ref = spec.scale_target_ref
        assert ref is not None  # required outside local mode
        key = (ref.api_version, ref.kind)
        if key not in kinds:
            kinds[key] = await resolve_kind(kube, ref.api_version, ref.kind)
        resource = kinds[key]
        if resource is None:
            notes.append(f"{ns}/{name}: left out, no kind {ref.kind} in {ref.api_version}")
            continue
        try:
            workload = await kube.request("GET", resource.path(ns, ref.name))
        except ApiError as exc:
            notes.append(f"{ns}/{name}: left out, {ref.kind} {ref.name}: {exc}")
            continue
        targets.append(Target(
            namespace=ns,
            name=name,
            workload=resource,
            workload_name=ref.name,
            min_replicas=spec.replicas_min,
            max_replicas=spec.replicas_max,
            requests=override or _template_requests(workload, fallback),
        ))
    targets.sort(key=lambda t: t.route)
    return targets, notes
