"""Do the Ingresses and HTTPRoutes in front send httpscale's hosts to the interceptor? (pure)

The most common mistake with any HTTP scale-to-zero: the Ingress still points at the app's
own Service. Requests then bypass the interceptor, so nothing holds them while the app is at
zero (the controller answers 503) and nothing tells KEDA to wake it: the app never wakes.

The question asked is the one a request asks: for a host and path that an HTTPScaledObject or
InterceptorRoute serves, where does this Ingress rule (or HTTPRoute rule) send it? So every
path of every rule whose host an object serves is looked at, and so is each of the objects'
own path prefixes under that host (an Ingress path `/` to the app also takes `/api`, which an
HTTPSO serves). Hosts match by the interceptor's own table (`RouteTable`: exact, then
`*.example.com` wildcards, case-insensitive); paths by the Ingress rules (`Exact`, else the
longest `Prefix` on segment boundaries; `ImplementationSpecific` is taken as `Prefix`).
Catch-all objects (no hosts) are left out: they would claim every Ingress in the cluster.
Rules without a host, `defaultBackend`s and regular-expression paths are not judged.

A backend is right when it is the interceptor proxy Service (in httpscale's namespace, on its
port), or, for an Ingress, an `ExternalName` Service of the Ingress's namespace whose
`externalName` is `httpscale-interceptor-proxy.<namespace>.svc[.cluster.local]`
(docs/kubernetes.md, "Traffic in"). An HTTPRoute may name the proxy Service across
namespaces when a ReferenceGrant in httpscale's namespace allows it, which is checked too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from httpscale.doctor.apps import App, AppIndex
from httpscale.doctor.components import PROXY_SERVICE, proxy_port
from httpscale.doctor.findings import Finding, Status
from httpscale.doctor.snapshot import ClusterSnapshot
from httpscale.kube.api import Obj
from httpscale.routing.spec import RouteMatch
from httpscale.routing.table import RouteTable, normalize_host, normalize_path_prefix

__all__ = ["traffic_checks"]

_GATEWAY_GROUP = "gateway.networking.k8s.io"


@dataclass(frozen=True, slots=True, eq=False)  # by identity: two rules may read the same
class _Path:
    """One path of a rule: what it takes, and where it sends it."""

    value: str  # normalized ("" is the root)
    exact: bool
    label: str  # as written, for messages
    backends: tuple[Mapping[str, Any], ...]
    rule: int  # the rule's index (HTTPRoute)


def _takes(path: _Path, request_path: str) -> bool:
    if path.exact:
        return request_path == path.value
    return (not path.value or request_path == path.value
            or request_path.startswith(path.value + "/"))


def _best(paths: Sequence[_Path], request_path: str) -> list[_Path]:
    """The paths that take `request_path`: the longest match, Exact before Prefix; several
    only when equally specific (HTTPRoute matches that differ by header)."""
    taking = [p for p in paths if _takes(p, request_path)]
    if not taking:
        return []
    top = max((len(p.value), p.exact) for p in taking)
    return [p for p in taking if (len(p.value), p.exact) == top]


class _Hosts:
    """Which served object takes a host and path, by the interceptor's own table."""

    def __init__(self, apps: Iterable[App]) -> None:
        pairs: list[tuple[RouteMatch, App]] = []
        prefixes = {""}
        for app in apps:
            for route in app.routes:
                for m in route.matches:
                    hosts = tuple(h for h in m.hosts if h not in ("", "*"))
                    if hosts:
                        pairs.append((RouteMatch(hosts, m.path_prefixes), app))
                        prefixes.update(normalize_path_prefix(p) for p in m.path_prefixes)
        self.table: RouteTable[App] = RouteTable.build(pairs)
        self.prefixes = prefixes
        self.any = bool(pairs)
        self.hosts = sorted({h for m, _ in pairs for h in m.hosts})

    def claims(self, host: str, paths: Sequence[_Path]) -> dict[str, App]:
        """Request path -> the object serving `host` + that path, for every path worth
        asking about (the rule's own and the objects' prefixes)."""
        out = {}
        for request_path in sorted({p.value for p in paths} | self.prefixes):
            app = self.table.lookup(host, request_path or "/", {})
            if app is not None:
                out[request_path] = app
        return out


def traffic_checks(snap: ClusterSnapshot, index: AppIndex) -> list[Finding]:
    hosts = _Hosts(a for a in index.apps if a.parsed is not None)
    out: list[Finding] = []
    covered: set[str] = set()
    for key, ingress in sorted(snap.ingresses.items()):
        out += _ingress(snap, index, hosts, key, ingress, covered)
    if snap.http_routes is None:
        out.append(Finding("traffic.httproute", "HTTPRoutes", Status.INFO,
                           "the Gateway API's HTTPRoute CRD is not installed: none to check"))
    else:
        for key, route in sorted(snap.http_routes.items()):
            out += _http_route(snap, index, hosts, key, route, covered)
    uncovered = [h for h in hosts.hosts if normalize_host(h) not in covered]
    if uncovered and "ingresses" not in snap.unreadable:
        out.append(Finding(
            "traffic.hosts", "hosts without an Ingress or HTTPRoute", Status.INFO,
            f"{', '.join(uncovered)}: no Ingress or HTTPRoute here sends them anywhere; fine if "
            "they reach the interceptor otherwise (a LoadBalancer Service, another cluster's "
            "proxy)"))
    return out


def _ingress(snap: ClusterSnapshot, index: AppIndex, hosts: _Hosts, key: str, ingress: Obj,
             covered: set[str]) -> Iterator[Finding]:
    ns = key.partition("/")[0]
    for rule in (ingress.get("spec") or {}).get("rules") or ():
        host = rule.get("host")
        if not host or not hosts.any:
            continue
        paths = [
            _Path(normalize_path_prefix(str(p.get("path") or "/")), p.get("pathType") == "Exact",
                  str(p.get("path") or "/"), (p.get("backend") or {},), 0)
            for p in (rule.get("http") or {}).get("paths") or ()
        ]
        claims = hosts.claims(host, paths)
        if claims:
            covered.add(normalize_host(host))
        for path, apps in _group(paths, claims).items():
            subject = f"Ingress {key} host {host} path {path.label}"
            yield _judge(snap, index, ns, path.backends[0], subject, apps, "traffic.ingress",
                         allow_external_name=True)


def _group(paths: Sequence[_Path], claims: Mapping[str, App]) -> dict[_Path, list[App]]:
    """Each rule path that takes some served host + path, with the objects involved."""
    out: dict[_Path, list[App]] = {}
    for request_path, app in claims.items():
        for path in _best(paths, request_path):
            apps = out.setdefault(path, [])
            if app not in apps:
                apps.append(app)
    return out


def _judge(snap: ClusterSnapshot, index: AppIndex, ns: str, backend: Mapping[str, Any],
           subject: str, apps: list[App], check: str, *, allow_external_name: bool,
           cross_namespace: str | None = None) -> Finding:
    """Whether one backend is the interceptor; `ns` is where a name without a namespace lives."""
    names = ", ".join(a.subject for a in apps)
    port_wanted = proxy_port(snap)
    to_proxy = (f"send it to Service {snap.namespace}/{PROXY_SERVICE} port {port_wanted} (in "
                f"namespace {snap.namespace}, or through an ExternalName Service "
                f"{PROXY_SERVICE}.{snap.namespace}.svc.cluster.local beside the Ingress: "
                "docs/kubernetes.md, Traffic in)")
    service = backend.get("service") if "service" in backend else backend
    if not isinstance(service, Mapping) or not service.get("name"):
        return Finding(check, subject, Status.FAIL,
                       f"sends {names}'s traffic to a backend that is not a Service", to_proxy)
    name = str(service["name"])
    svc_ns = str(service.get("namespace") or ns)
    port = service.get("port")
    number = port.get("number") if isinstance(port, Mapping) else port
    port_name = port.get("name") if isinstance(port, Mapping) else None
    svc_key = f"{svc_ns}/{name}"
    svc = snap.services.get(svc_key)
    if svc_ns == snap.namespace and name == PROXY_SERVICE:
        if not _port_matches(snap.services.get(svc_key), number, port_name, port_wanted):
            return Finding(check, subject, Status.FAIL,
                           f"sends {names}'s traffic to the interceptor, but on port "
                           f"{number or port_name}, which its Service does not have",
                           f"use port {port_wanted}")
        if cross_namespace is not None:
            return Finding(check, subject, Status.FAIL if cross_namespace else Status.OK,
                           cross_namespace or "→ the interceptor (ReferenceGrant in place)",
                           "" if not cross_namespace else
                           "add a ReferenceGrant (docs/kubernetes.md, Traffic in, Gateway API)")
        return Finding(check, subject, Status.OK, "→ the interceptor")
    spec = (svc or {}).get("spec") or {}
    if spec.get("type") == "ExternalName":
        target = str(spec.get("externalName") or "").lower().rstrip(".")
        proxy_name = f"{PROXY_SERVICE}.{snap.namespace}"
        if target == proxy_name or target.startswith(proxy_name + ".svc"):
            resolved = _resolve_port(svc, number, port_name)
            if not allow_external_name:
                return Finding(check, subject, Status.WARN,
                               f"→ the interceptor through ExternalName Service {svc_key}: "
                               "most Gateway implementations do not send to ExternalName "
                               "Services", "reference the proxy Service itself, with a "
                               "ReferenceGrant")
            if resolved != port_wanted:
                return Finding(check, subject, Status.WARN,
                               f"→ the interceptor through ExternalName Service {svc_key}, "
                               f"but on port {resolved}, not {port_wanted}",
                               f"use port {port_wanted}")
            return Finding(check, subject, Status.OK,
                           f"→ the interceptor (ExternalName Service {svc_key})")
    owners = index.by_service.get(svc_key)
    if owners:
        return Finding(
            check, subject, Status.FAIL,
            f"sends {names}'s traffic straight to Service {svc_key}, the app's own Service "
            f"({', '.join(a.subject for a in owners)}): requests bypass the interceptor, so "
            "at zero nothing holds them and nothing wakes the app (it never wakes), and while "
            "it runs its traffic is not counted for scaling", to_proxy)
    where = f"Service {svc_key}" + ("" if svc is not None else " (which does not exist)")
    return Finding(check, subject, Status.FAIL,
                   f"sends {names}'s traffic to {where}, not to the interceptor: those requests "
                   "never reach httpscale", to_proxy)


def _port_matches(svc: Obj | None, number: object, name: object, wanted: int) -> bool:
    if svc is None:
        return number in (None, wanted)
    return _resolve_port(svc, number, name) == wanted


def _resolve_port(svc: Obj | None, number: object, name: object) -> int | None:
    if isinstance(number, int):
        return number
    for entry in ((svc or {}).get("spec") or {}).get("ports") or ():
        if name is not None and entry.get("name") == name:
            return int(entry["port"])
    ports: list[Obj] = ((svc or {}).get("spec") or {}).get("ports") or []
    return int(ports[0]["port"]) if name is None and len(ports) == 1 else None


def _http_route(snap: ClusterSnapshot, index: AppIndex, hosts: _Hosts, key: str, route: Obj,
                covered: set[str]) -> Iterator[Finding]:
    ns = key.partition("/")[0]
    spec = route.get("spec") or {}
    paths: list[_Path] = []
    for i, rule in enumerate(spec.get("rules") or ()):
        backends = tuple(rule.get("backendRefs") or ())
        matches: list[Obj] = rule.get("matches") or [{}]  # none: every path
        for match in matches:
            path = match.get("path") or {}
            kind = path.get("type") or "PathPrefix"
            if kind not in ("PathPrefix", "Exact"):
                continue  # a regular expression: not judged
            value = str(path.get("value") or "/")
            paths.append(_Path(normalize_path_prefix(value), kind == "Exact", value, backends, i))
    for host in spec.get("hostnames") or ():
        claims = hosts.claims(host, paths)
        if not claims:
            continue
        covered.add(normalize_host(host))
        for path, apps in _group(paths, claims).items():
            subject = f"HTTPRoute {key} host {host} rule {path.rule} path {path.label}"
            if not path.backends:
                yield Finding("traffic.httproute", subject, Status.FAIL,
                              "no backendRefs: the Gateway answers 500",
                              f"add a backendRef to Service {snap.namespace}/{PROXY_SERVICE}")
            for ref in path.backends:
                if ref.get("group") not in (None, "", "core") or ref.get("kind") not in (
                        None, "Service"):
                    yield Finding("traffic.httproute", subject, Status.FAIL,
                                  f"backendRef {ref.get('kind')} {ref.get('name')} is not a "
                                  "Service", f"reference Service {PROXY_SERVICE}")
                    continue
                grant = _grant(snap, ns, ref) if str(ref.get("namespace") or ns) != ns else None
                yield _judge(snap, index, ns, ref, subject, apps, "traffic.httproute",
                             allow_external_name=False, cross_namespace=grant)
    yield from _route_status(key, route)


def _grant(snap: ClusterSnapshot, route_ns: str, ref: Mapping[str, Any]) -> str:
    """"" when a ReferenceGrant lets HTTPRoutes of `route_ns` reference the Service, else why
    not."""
    target_ns, name = str(ref.get("namespace")), str(ref.get("name"))
    if snap.reference_grants is None:
        return ("references a Service in another namespace, and the ReferenceGrant CRD is not "
                "installed: the Gateway refuses the reference")
    for key, grant in snap.reference_grants.items():
        if key.partition("/")[0] != target_ns:
            continue
        spec = grant.get("spec") or {}
        from_ok = any(f.get("group") == _GATEWAY_GROUP and f.get("kind") == "HTTPRoute"
                      and f.get("namespace") == route_ns for f in spec.get("from") or ())
        to_ok = any(t.get("group") in ("", None) and t.get("kind") == "Service"
                    and t.get("name") in (None, "", name) for t in spec.get("to") or ())
        if from_ok and to_ok:
            return ""
    return (f"references Service {target_ns}/{name} from namespace {route_ns}, and no "
            f"ReferenceGrant in {target_ns} allows it: the Gateway refuses the reference "
            "(ResolvedRefs: False, RefNotPermitted) and answers 500")


def _route_status(key: str, route: Obj) -> Iterator[Finding]:
    """What the Gateway implementation itself says about the route, when it said anything."""
    for parent in (route.get("status") or {}).get("parents") or ():
        for c in parent.get("conditions") or ():
            if c.get("type") in ("Accepted", "ResolvedRefs") and c.get("status") == "False":
                ref = parent.get("parentRef") or {}
                yield Finding("traffic.httproute", f"HTTPRoute {key}", Status.FAIL,
                              f"{c['type']} False on Gateway {ref.get('name')}: "
                              f"{c.get('reason')}: {c.get('message') or ''}",
                              "the message says what the Gateway refuses")
