"""A Service port's pod endpoints, from its EndpointSlices (pure functions on cached objects).

The interceptor connects to pods directly: no kube-proxy hop, and it sees readiness the
moment the slice changes. The rules are kube-proxy's:

- A route names a Service port by number (`port`) or by name (`portName`); the Service's port
  entry gives the port's *name*, and each EndpointSlice lists its ports by that same name with
  the pod-side number (the resolved `targetPort`, which may differ per slice).
- An endpoint is used when its `ready` condition is true or unset. When none is, endpoints that
  are `serving` while `terminating` are used instead (a rolling update's last pods still answer
  while they drain), as kube-proxy does since Kubernetes 1.26.
- IPv4 slices only (the interceptor's pods are IPv4 on every cluster it is tested on); the
  first address of an endpoint is its pod's.

`compact_slice` keeps only what this reads, so 10,000 slices cost little memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from httpscale.kube.api import Obj
from httpscale.routing.spec import Endpoint

__all__ = [
    "SERVICE_NAME_LABEL",
    "ServicePort",
    "compact_slice",
    "ready_endpoints",
    "service_port",
    "upstream_scheme",
]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class ServicePort:
    """The Service port a route means: its name ("" for an unnamed single port), number, and
    `appProtocol` ("" when unset)."""

    name: str
    port: int
    app_protocol: str = ""


# A Service port's `appProtocol` -> how the interceptor talks to its pods (RouteSpec's
# `upstream_scheme`). Kubernetes' own names first (KEP-3726: kubernetes.io/h2c, ws, wss), then
# the IANA service names and the values meshes and Gateway implementations read for the same
# thing, so a Service already annotated for one of them works unchanged. Anything else (tcp,
# a custom value) is HTTP/1.1 in clear text, as when the field is unset.
_SCHEMES = {
    "http": "http",
    "kubernetes.io/ws": "http",
    "https": "https",
    "kubernetes.io/wss": "https",
    "kubernetes.io/h2c": "h2c",
    "h2c": "h2c",
    "http2": "h2c",
    "grpc": "h2c",
    "kubernetes.io/h2": "h2",
    "h2": "h2",
    "grpcs": "h2",
    "grpc-tls": "h2",
}


def upstream_scheme(app_protocol: str) -> str:
    """The RouteSpec `upstream_scheme` for a Service port's `appProtocol` (case-insensitive)."""
    return _SCHEMES.get(app_protocol.strip().lower(), "http")


def service_port(service: Obj | None, port: int | None, port_name: str | None) -> ServicePort | str:
    """The Service's port entry for `port` or `port_name`; a string saying why there is none."""
    if service is None:
        return "no such Service"
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return "an ExternalName Service has no endpoints to route to"
    for entry in spec.get("ports") or ():
        name = str(entry.get("name") or "")
        number = entry.get("port")
        if (port is not None and number == port) or (port_name is not None and name == port_name):
            return ServicePort(name, int(number), str(entry.get("appProtocol") or ""))
    wanted = f"port {port}" if port is not None else f"port name {port_name!r}"
    return f"the Service has no {wanted}"


def compact_slice(obj: Obj) -> Obj:
    """An EndpointSlice reduced to what `ready_endpoints` reads (an informer transform)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {SERVICE_NAME_LABEL: labels.get(SERVICE_NAME_LABEL, "")},
        },
        "addressType": obj.get("addressType"),
        "ports": [{"name": p.get("name") or "", "port": p.get("port")}
                  for p in obj.get("ports") or ()],
        "endpoints": [
            {"addresses": (e.get("addresses") or [])[:1], "conditions": e.get("conditions") or {}}
            for e in obj.get("endpoints") or ()
        ],
    }


def _conditions(endpoint: Any) -> tuple[bool, bool]:
    """(ready, serving-while-terminating) of one slice endpoint."""
    cond = endpoint.get("conditions") or {}
    ready = cond.get("ready") is not False  # unset means ready
    serving = cond.get("serving")
    serving = ready if serving is None else bool(serving)
    return ready, serving and bool(cond.get("terminating"))


def ready_endpoints(slices: Iterable[Obj], port: ServicePort) -> tuple[Endpoint, ...]:
    """The endpoints of `port` across a Service's slices, by the rules above (sorted)."""
    ready: set[Endpoint] = set()
    draining: set[Endpoint] = set()
    for s in slices:
        if s.get("addressType") != "IPv4":
            continue
        number = next(
            (p.get("port") for p in s.get("ports") or () if (p.get("name") or "") == port.name),
            None,
        )
        if not isinstance(number, int):
            continue  # this slice does not carry the port (yet)
        for endpoint in s.get("endpoints") or ():
            addresses = endpoint.get("addresses") or ()
            if not addresses:
                continue
            is_ready, is_draining = _conditions(endpoint)
            if is_ready:
                ready.add(Endpoint(str(addresses[0]), number))
            elif is_draining:
                draining.add(Endpoint(str(addresses[0]), number))
    return tuple(sorted(ready or draining))
