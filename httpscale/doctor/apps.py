"""Each HTTPScaledObject and InterceptorRoute: does everything it points at exist, and does
KEDA scale it? (pure checks)

Per object, in the order a request needs them: the spec parses (httpscale's own model, the
same verdict the interceptor reaches); the workload exists and its Service selects that
workload's pods; the Service has the port; a ScaledObject scales it and KEDA reports it Ready;
no older object takes its hosts and paths (the operator's `RouteClaims`, built as the
interceptors build their table); and the operator has reported on its latest generation.

The ScaledObject an HTTPSO should have is compared with `desired_scaled_object`, what the
operator writes, taking the scaler address from the ScaledObject itself (the doctor cannot
know the operator's `--scaler-address`; that address is checked on its own, against the
scaler Service).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from httpscale.doctor.components import SCALER_PORT, SCALER_SERVICE, scaled_object_ready
from httpscale.doctor.findings import Finding, Status
from httpscale.doctor.keda import SCALED_OBJECT_CRD
from httpscale.doctor.snapshot import ClusterSnapshot, condition, endpoints_of, meta, workload_key
from httpscale.kube.api import Obj
from httpscale.kube.cache import Snapshot
from httpscale.model import (
    ConfigError,
    HTTPScaledObject,
    InterceptorRoute,
    parse_httpso,
    parse_interceptor_route,
    to_route_spec,
)
from httpscale.model.routespecs import interceptor_route_specs
from httpscale.operator.conflicts import RouteClaims
from httpscale.operator.scaledobject import (
    ORPHAN_ANNOTATION,
    SKIP_ANNOTATION,
    controller_of,
    desired_scaled_object,
    is_owned_by,
    needs_apply,
)
from httpscale.routing.spec import RouteSpec

__all__ = ["App", "AppIndex", "app_checks", "index_apps"]

Kind = Literal["HTTPScaledObject", "InterceptorRoute"]
_TRIGGER_TYPES = ("external-push", "external")
# Reasons in the operator's Ready condition that the checks here explain on their own.
_EXPLAINED_HERE = {"InvalidSpec", "TargetNotFound", "ServiceNotFound", "PortNotFound",
                   "RouteConflict", "ScaledObjectConflict", "KEDANotInstalled"}


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """A Service an object sends requests to."""

    namespace: str
    service: str
    port: int | None
    port_name: str | None
    role: str = "Service"  # or "failover Service", "fallback Service"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.service}"

    def __str__(self) -> str:
        return f"{self.key}:{self.port if self.port is not None else self.port_name}"


@dataclass(slots=True)
class App:
    kind: Kind
    key: str  # "<namespace>/<name>"
    raw: Obj
    parsed: HTTPScaledObject | InterceptorRoute | None = None
    error: str = ""  # why it does not parse
    routes: list[RouteSpec] = field(default_factory=list)
    targets: list[ServiceTarget] = field(default_factory=list)  # first: where requests go

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.key}"

    @property
    def namespace(self) -> str:
        return self.key.partition("/")[0]

    @property
    def name(self) -> str:
        return self.key.partition("/")[2]


@dataclass(slots=True)
class AppIndex:
    apps: list[App]
    losses: Mapping[tuple[str, str], str]  # (kind, key) -> why it loses a route
    by_service: dict[str, list[App]]  # "<ns>/<svc>" -> the apps sending requests there

    def served(self) -> list[App]:
        """The objects the interceptors route for (parsed, not wholly shadowed)."""
        return [a for a in self.apps if a.parsed is not None
                and not self.losses.get((a.kind, a.key), "").startswith(
                    "route conflict: the InterceptorRoute")]


def _no_bodies(namespace: str, name: str) -> None:
    return None  # response bodies decide nothing checked here


def _parse(kind: Kind, key: str, raw: Obj) -> App:
    app = App(kind, key, raw)
    try:
        if kind == "HTTPScaledObject":
            httpso = parse_httpso(raw)
            ref = httpso.spec.scale_target_ref
            assert ref is not None  # required for Kubernetes objects
            app.parsed, app.routes = httpso, [to_route_spec(httpso.key, httpso.spec)]
            app.targets.append(
                ServiceTarget(httpso.namespace, ref.service, ref.port, ref.port_name)
            )
            failover = httpso.spec.cold_start_timeout_failover_ref
            if failover is not None:
                app.targets.append(ServiceTarget(httpso.namespace, failover.service, failover.port,
                                                 failover.port_name, "failover Service"))
        else:
            route = parse_interceptor_route(raw)
            target = route.spec.target
            app.parsed, app.routes = route, interceptor_route_specs(route, _no_bodies)
            app.targets.append(ServiceTarget(route.namespace, target.service, target.port,
                                             target.port_name))
            fallback = route.spec.cold_start.fallback if route.spec.cold_start else None
            if fallback is not None:
                app.targets.append(ServiceTarget(route.namespace, fallback.name, fallback.port,
                                                 fallback.port_name, "fallback Service"))
    except ConfigError as exc:
        app.error = f"{exc.key}: {exc.message}" if exc.key else exc.message
    return app


def index_apps(snap: ClusterSnapshot) -> AppIndex:
    apps = [_parse("HTTPScaledObject", k, o) for k, o in sorted(snap.httpsos.items())]
    apps += [_parse("InterceptorRoute", k, o) for k, o in sorted(snap.interceptor_routes.items())]
    # The operator's own conflict detection, fed the snapshot instead of its watches.
    claims = RouteClaims()
    claims.update(_as_cache(apps, "HTTPScaledObject"), _as_cache(apps, "InterceptorRoute"),
                  [(a.kind, a.key) for a in apps])
    by_service: dict[str, list[App]] = {}
    for app in apps:
        for target in app.targets:
            by_service.setdefault(target.key, []).append(app)
    return AppIndex(apps, claims.losses, by_service)


def _as_cache(apps: list[App], kind: Kind) -> Snapshot[Any]:
    mine = [a for a in apps if a.kind == kind]
    return Snapshot(items={a.key: a.parsed for a in mine if a.parsed is not None},
                    invalid={a.key: ValueError(a.error) for a in mine if a.parsed is None},
                    raw={a.key: a.raw for a in mine}, synced=True)


def app_checks(snap: ClusterSnapshot, index: AppIndex) -> list[Finding]:
    out: list[Finding] = []
    for app in index.apps:
        if app.parsed is None:
            out.append(Finding(
                "apps.spec", app.subject, Status.FAIL, f"invalid: {app.error}",
                f"fix that field (`kubectl edit {app.kind.lower()} -n {app.namespace} "
                f"{app.name}`); until then the interceptors ignore it (404)"))
            continue
        if isinstance(app.parsed, HTTPScaledObject):
            out += _workload(snap, app, app.parsed)
        if "services" not in snap.unreadable:
            out += (_service(snap, app, t) for t in app.targets)
        out += _scaling(snap, app)
        loss = index.losses.get((app.kind, app.key))
        if loss is not None:
            out.append(Finding(
                "apps.routes", app.subject, Status.FAIL, loss.removeprefix("route conflict: "),
                "the older object keeps what both claim: give this one other hosts, paths or "
                "headers, or delete the other"))
        else:
            hosts = sorted({h for r in app.routes for m in r.matches for h in m.hosts})
            out.append(Finding("apps.routes", app.subject, Status.OK,
                               f"routes {', '.join(hosts) if hosts else 'every host'}"
                               " without conflict"))
        out += _operator_verdict(app)
    return out


def _workload(snap: ClusterSnapshot, app: App, httpso: HTTPScaledObject) -> list[Finding]:
    ref = httpso.spec.scale_target_ref
    assert ref is not None
    check, wkey = "apps.workload", workload_key(ref.api_version, ref.kind)
    where = f"{ref.kind} {app.namespace}/{ref.name}"
    fix = (f"create it, or correct spec.scaleTargetRef (`kubectl edit httpso -n {app.namespace} "
           f"{app.name}`)")
    if wkey in snap.missing_kinds:
        return [Finding(check, app.subject, Status.FAIL,
                        f"scaleTargetRef: {snap.missing_kinds[wkey]}", fix)]
    objects = snap.workloads.get(wkey)
    if objects is None:
        return []  # could not be listed: said once, as a `cluster.read` finding
    workload = objects.get(f"{app.namespace}/{ref.name}")
    if workload is None:
        return [Finding(check, app.subject, Status.FAIL,
                        f"{where} not found: KEDA has nothing to scale", fix)]
    mismatch = _selector_mismatch(snap, app, workload)
    if mismatch:
        return [Finding(check, app.subject, Status.FAIL, f"{where}: {mismatch}",
                        "make the Service's selector match the workload's pod labels "
                        "(spec.template.metadata.labels)")]
    replicas = (workload.get("spec") or {}).get("replicas")
    return [Finding(check, app.subject, Status.OK,
                    f"{where} exists" + (f" ({replicas} replicas)" if replicas is not None
                                         else ""))]


def _selector_mismatch(snap: ClusterSnapshot, app: App, workload: Obj) -> str:
    """Why the target Service would never get the workload's pods as endpoints, or ""."""
    labels = (((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "labels")
    svc = snap.services.get(app.targets[0].key) if app.targets else None
    selector = ((svc or {}).get("spec") or {}).get("selector")
    if not isinstance(labels, Mapping) or not isinstance(selector, Mapping) or not selector:
        return ""  # no template (another kind), no Service (said below), or hand-made slices
    missing = {k: v for k, v in selector.items() if labels.get(k) != v}
    if not missing:
        return ""
    return (f"its pods are not selected by Service {app.targets[0].key} (selector "
            f"{dict(selector)}, pod labels {dict(labels)}): once woken, its pods never become "
            "the Service's endpoints, so held requests time out (504)")


def _service(snap: ClusterSnapshot, app: App, target: ServiceTarget) -> Finding:
    check = "apps.service"
    fix = (f"create the Service, or correct the {app.kind}'s reference "
           f"(`kubectl edit {app.kind.lower()} -n {app.namespace} {app.name}`)")
    svc = snap.services.get(target.key)
    found = endpoints_of(snap, target.namespace, target.service, target.port, target.port_name)
    if svc is None:
        return Finding(check, app.subject, Status.FAIL, f"{target.role} {target.key} not found",
                       fix)
    if isinstance(found, str):
        has = ", ".join(f"{p.get('port')}" + (f" ({p['name']})" if p.get("name") else "")
                        for p in (svc.get("spec") or {}).get("ports") or ())
        return Finding(check, app.subject, Status.FAIL,
                       f"{target.role} {target}: {found} (it has: {has or 'none'})", fix)
    state = f"{len(found)} ready endpoint(s)" if found else "at zero (no ready endpoint)"
    return Finding(check, app.subject, Status.OK, f"{target.role} {target}: {state}")


def _names(so_name: str, metadata: Mapping[str, Any]) -> tuple[Kind | None, str]:
    """The object a trigger's metadata names, by the scaler's own rule (`resolve_ref` in
    httpscale/scaler/service.py): `interceptorRoute` names an InterceptorRoute only; the fleet
    key names no app; else `httpScaledObject`, or without it the ScaledObject's own name, names
    the route of that key whichever kind it came from (None)."""
    if "interceptorRoute" in metadata:
        return "InterceptorRoute", str(metadata["interceptorRoute"])
    if "interceptorTargetPendingRequests" in metadata:
        return None, ""  # the interceptor fleet's trigger: no app's
    return None, str(metadata.get("httpScaledObject", so_name))


def _triggers_naming(snap: ClusterSnapshot, app: App) -> list[tuple[str, Obj]]:
    """ScaledObjects of the app's namespace with an external(-push) trigger naming it."""
    out = []
    for key, so in sorted(snap.scaled_objects.items()):
        namespace, _, so_name = key.partition("/")
        if namespace != app.namespace:
            continue
        for trigger in (so.get("spec") or {}).get("triggers") or ():
            if trigger.get("type") not in _TRIGGER_TYPES:
                continue
            kind, name = _names(so_name, trigger.get("metadata") or {})
            if name == app.name and kind in (None, app.kind):
                out.append((key, so))
                break
    return out


def _scaling(snap: ClusterSnapshot, app: App) -> Iterator[Finding]:
    check = "apps.scaledobject"
    if SCALED_OBJECT_CRD not in snap.crds and "customresourcedefinitions" not in snap.unreadable:
        yield Finding(check, app.subject, Status.FAIL,
                      "no ScaledObject can exist: KEDA is not installed", "install KEDA (above)")
        return
    annotations = meta(app.raw).get("annotations") or {}
    own = (app.kind == "HTTPScaledObject" and annotations.get(SKIP_ANNOTATION) != "true"
           and annotations.get(ORPHAN_ANNOTATION) != "true")
    if not own:
        # The user writes the ScaledObject: find it by its trigger.
        field_name = "httpScaledObject" if app.kind == "HTTPScaledObject" else "interceptorRoute"
        naming = _triggers_naming(snap, app)
        if not naming:
            why = (f"{SKIP_ANNOTATION} is set, and" if app.kind == "HTTPScaledObject" and
                   annotations.get(SKIP_ANNOTATION) == "true" else
                   f"{ORPHAN_ANNOTATION} is set, and" if app.kind == "HTTPScaledObject" else
                   "you write the ScaledObject for an InterceptorRoute, and")
            yield Finding(check, app.subject, Status.FAIL,
                          f"{why} no ScaledObject in {app.namespace} has an external-push "
                          f"trigger with {field_name}: {app.name}: nothing scales it",
                          "write one (examples/kubernetes/interceptor-route.yaml shows it)")
            return
        for key, named in naming:
            yield from _scaled_object(snap, app, key, named)
        return
    so = snap.scaled_objects.get(app.key)
    if so is None:
        yield Finding(check, app.subject, Status.FAIL,
                      f"ScaledObject {app.key} not found: the operator writes it, so it has not "
                      "run since this HTTPScaledObject was created",
                      "check the httpscale-operator Deployment (above) and this object's Ready "
                      "condition")
        return
    uid = str(meta(app.raw).get("uid") or "")
    if not is_owned_by(so, uid):
        owner = controller_of(so)
        by = f"controlled by {owner.get('kind')} {owner.get('name')}" if owner else "not owned"
        yield Finding(check, app.subject, Status.FAIL,
                      f"ScaledObject {app.key} exists but is not this object's ({by}): the "
                      "operator leaves it alone",
                      f"delete it to have it written for this HTTPScaledObject, or set "
                      f'{SKIP_ANNOTATION}: "true" to keep yours')
        return
    yield from _scaled_object(snap, app, app.key, so)
    assert isinstance(app.parsed, HTTPScaledObject)
    address = _scaler_address(so, app.name) or ""
    desired = desired_scaled_object(app.raw, app.parsed, address)
    if needs_apply(desired, so):
        yield Finding(check, app.subject, Status.WARN,
                      f"ScaledObject {app.key} differs from what the operator writes for this "
                      "HTTPScaledObject: the operator has not caught up (not running, or not "
                      "leading)", "check the httpscale-operator Deployment and its log")


def _scaler_address(so: Obj, name: str | None = None) -> str | None:
    for trigger in (so.get("spec") or {}).get("triggers") or ():
        if trigger.get("type") in _TRIGGER_TYPES:
            return str((trigger.get("metadata") or {}).get("scalerAddress") or "")
    return None


def _scaled_object(snap: ClusterSnapshot, app: App, key: str, so: Obj) -> Iterator[Finding]:
    check = "apps.scaledobject"
    ready = scaled_object_ready(snap, so, f"ScaledObject {key}", check, app.key,
                                "is the scaler reachable at its scalerAddress?")
    yield Finding(check, app.subject, ready.status, f"ScaledObject {key}: {ready.message}",
                  ready.fix)
    address = _scaler_address(so)
    if address is not None and not _is_our_scaler(snap, address):
        yield Finding(
            check, app.subject, Status.WARN,
            f"ScaledObject {key}: KEDA asks {address or 'no address'}, not httpscale's scaler "
            f"({SCALER_SERVICE}.{snap.namespace}:{SCALER_PORT})",
            "if that is another installation (KEDA's add-on's scaler?), its interceptor does "
            "not see this app's traffic: point scalerAddress at httpscale's scaler "
            "(the operator's --scaler-service / --scaler-address)")


def _is_our_scaler(snap: ClusterSnapshot, address: str) -> bool:
    host, _, port = address.rpartition(":")
    if port != str(SCALER_PORT):
        return False
    host = host.lower().rstrip(".")
    name = f"{SCALER_SERVICE}.{snap.namespace}"
    svc = snap.services.get(f"{snap.namespace}/{SCALER_SERVICE}") or {}
    ips = {str(ip) for ip in (svc.get("spec") or {}).get("clusterIPs") or ()}
    ips.add(str((svc.get("spec") or {}).get("clusterIP") or ""))
    return host in ips or host == name or host.startswith(name + ".svc")


def _operator_verdict(app: App) -> Iterator[Finding]:
    check = "apps.operator"
    ready = condition(app.raw, "Ready")
    generation = meta(app.raw).get("generation")
    if ready is None or ready.get("lastTransitionTime") is None:
        yield Finding(check, app.subject, Status.WARN,
                      "the operator has not reported on it (no Ready condition)",
                      "check the httpscale-operator Deployment (above)")
        return
    if generation is not None and ready.get("observedGeneration") not in (None, generation):
        yield Finding(check, app.subject, Status.WARN,
                      f"the operator's Ready condition is about generation "
                      f"{ready.get('observedGeneration')}, the object is at {generation}: it "
                      "has not caught up with the last change",
                      "check the httpscale-operator Deployment (above)")
        return
    reason = str(ready.get("reason") or "")
    if ready.get("status") == "True":
        yield Finding(check, app.subject, Status.OK, f"operator: {reason}")
    elif reason not in _EXPLAINED_HERE:
        yield Finding(check, app.subject, Status.FAIL,
                      f"operator: {reason}: {ready.get('message') or ''}",
                      "docs/operator.md, Status, says what each reason needs")
