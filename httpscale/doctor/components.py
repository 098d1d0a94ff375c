"""Is httpscale itself installed and running? Its CRDs, Deployments, Services (pure checks).

Names are the ones `manifests/` gives (docs/kubernetes.md, "What gets installed"), in the
namespace the doctor is told (`--namespace`); an install renamed by a kustomize `namePrefix`
is not recognised.
"""

from __future__ import annotations

from collections.abc import Iterator

from httpscale.doctor.findings import Finding, Status
from httpscale.doctor.keda import FIRST_PASS_S, established, processed_by_keda
from httpscale.doctor.snapshot import ClusterSnapshot, age_seconds, condition, endpoints_of, meta
from httpscale.kube.api import Obj
from httpscale.kube.resources import HTTPSCALEDOBJECTS, INTERCEPTORROUTES

__all__ = [
    "ADMIN_SERVICE",
    "COMPONENTS",
    "FLEET_SCALED_OBJECT",
    "HTTPSCALE_CRDS",
    "PROXY_SERVICE",
    "SCALER_PORT",
    "SCALER_SERVICE",
    "component_checks",
    "proxy_port",
]

COMPONENTS = ("httpscale-operator", "httpscale-interceptor", "httpscale-scaler")
PROXY_SERVICE = "httpscale-interceptor-proxy"
PROXY_PORT = 8080  # when the Service itself cannot tell (it is missing)
ADMIN_SERVICE = "httpscale-interceptor-admin"
SCALER_SERVICE = "httpscale-scaler"
SCALER_PORT = 9091
FLEET_SCALED_OBJECT = "httpscale-interceptor"
HTTPSCALE_CRDS = {r.crd_name: r.version for r in (HTTPSCALEDOBJECTS, INTERCEPTORROUTES)}
_APPLY = "`kubectl apply -k manifests/` (docs/kubernetes.md)"


def proxy_port(snap: ClusterSnapshot) -> int:
    """The interceptor proxy Service's port (its first, `http` in manifests/)."""
    svc = snap.services.get(f"{snap.namespace}/{PROXY_SERVICE}") or {}
    for entry in (svc.get("spec") or {}).get("ports") or ():
        if isinstance(entry.get("port"), int):
            return int(entry["port"])
    return PROXY_PORT


def component_checks(snap: ClusterSnapshot) -> list[Finding]:
    deployments = [] if "deployments" in snap.unreadable else [
        _deployment(snap, name) for name in COMPONENTS]
    return [*_crds(snap), *deployments, *_services(snap), _fleet(snap)]


def _crds(snap: ClusterSnapshot) -> Iterator[Finding]:
    if "customresourcedefinitions" in snap.unreadable:
        return  # said once, under KEDA
    for name, version in HTTPSCALE_CRDS.items():
        subject = f"CustomResourceDefinition {name}"
        crd = snap.crds.get(name)
        if crd is None:
            yield Finding("httpscale.crds", subject, Status.FAIL, "not installed",
                          f"apply manifests/crd: {_APPLY}")
            continue
        served = [v.get("name") for v in (crd.get("spec") or {}).get("versions") or ()
                  if v.get("served")]
        if not established(crd):
            yield Finding("httpscale.crds", subject, Status.FAIL, "not Established",
                          f"`kubectl describe crd {name}` says why")
        elif version not in served:
            yield Finding(
                "httpscale.crds", subject, Status.FAIL,
                f"does not serve {version} (serves {', '.join(map(str, served)) or 'nothing'}):"
                " an older CRD, e.g. KEDA's add-on's",
                "apply httpscale's CRDs over it: `kubectl apply --server-side "
                "--force-conflicts -k manifests/crd`")
        else:
            yield Finding("httpscale.crds", subject, Status.OK, f"installed, serves {version}")


def _pod_problems(snap: ClusterSnapshot, component: str) -> list[str]:
    """Why the component's pods are not ready, in kubectl's words (CrashLoopBackOff, ...)."""
    out = []
    short = component.removeprefix("httpscale-")
    for key, pod in sorted(snap.pods.items()):
        labels = meta(pod).get("labels") or {}
        if labels.get("app.kubernetes.io/component") != short:
            continue
        status = pod.get("status") or {}
        ready = condition(pod, "Ready")
        if ready is not None and ready.get("status") == "True":
            continue
        why = [str(status.get("phase") or "Unknown")]
        for c in status.get("containerStatuses") or ():
            waiting = (c.get("state") or {}).get("waiting") or {}
            terminated = (c.get("lastState") or {}).get("terminated") or {}
            if waiting.get("reason"):
                why.append(str(waiting["reason"]))
            if terminated.get("exitCode") is not None:
                why.append(f"last exit {terminated['exitCode']}")
            if c.get("restartCount"):
                why.append(f"{c['restartCount']} restarts")
        if ready is not None and ready.get("message"):
            why.append(str(ready["message"]))
        out.append(f"{key.partition('/')[2]}: {', '.join(why)}")
    return out


def _deployment(snap: ClusterSnapshot, name: str) -> Finding:
    subject = f"Deployment {snap.namespace}/{name}"
    check = "httpscale.deployment"
    deployment = snap.deployments.get(name)
    if deployment is None:
        return Finding(check, subject, Status.FAIL, "not found",
                       f"install httpscale into namespace {snap.namespace}: {_APPLY}; or pass "
                       "--namespace where it is installed")
    status = deployment.get("status") or {}
    wanted = (deployment.get("spec") or {}).get("replicas")
    wanted = 1 if wanted is None else int(wanted)
    available = int(status.get("availableReplicas") or 0)
    problems = _pod_problems(snap, name)
    pods = f"; pods: {'; '.join(problems)}" if problems else ""
    logs = (f"`kubectl -n {snap.namespace} describe deployment {name}` and `kubectl -n "
            f"{snap.namespace} logs deployment/{name}`")
    if available == 0:
        why = "scaled to 0 replicas" if wanted == 0 else f"0 of {wanted} replicas available"
        return Finding(check, subject, Status.FAIL, why + pods,
                       f"`kubectl -n {snap.namespace} scale deployment {name} --replicas=2`"
                       if wanted == 0 else f"{logs} say why")
    if available < wanted:
        return Finding(check, subject, Status.WARN,
                       f"{available} of {wanted} replicas available{pods}", f"{logs} say why")
    return Finding(check, subject, Status.OK, f"{available}/{wanted} replicas available")


def _services(snap: ClusterSnapshot) -> Iterator[Finding]:
    what = {
        PROXY_SERVICE: (None, "what Ingresses send app traffic to: no request reaches "
                              "any app"),
        ADMIN_SERVICE: (None, "how the scaler finds the interceptors: no app scales"),
        SCALER_SERVICE: (SCALER_PORT, "what KEDA asks for metrics: no app scales"),
    }
    for name, (port, impact) in what.items():
        subject = f"Service {snap.namespace}/{name}"
        svc = snap.services.get(f"{snap.namespace}/{name}")
        if svc is None:
            yield Finding("httpscale.service", subject, Status.FAIL,
                          f"not found: it is {impact}", f"install httpscale: {_APPLY}")
            continue
        first = ((svc.get("spec") or {}).get("ports") or [{}])[0]
        number = port if port is not None else first.get("port")
        found = endpoints_of(snap, snap.namespace, name, number, None)
        if isinstance(found, str):
            yield Finding("httpscale.service", subject, Status.FAIL,
                          f"port {number}: {found}", f"restore it from manifests/: {_APPLY}")
        elif not found:
            yield Finding("httpscale.service", subject, Status.FAIL,
                          f"no ready endpoint on port {number}: it is {impact}",
                          "the Deployment behind it has no ready pod (above)")
        else:
            yield Finding("httpscale.service", subject, Status.OK,
                          f"{len(found)} ready endpoint(s) on port {number}")


def _fleet(snap: ClusterSnapshot) -> Finding:
    subject = f"ScaledObject {snap.namespace}/{FLEET_SCALED_OBJECT}"
    so = snap.scaled_objects.get(f"{snap.namespace}/{FLEET_SCALED_OBJECT}")
    if so is None:
        return Finding("httpscale.fleet", subject, Status.INFO,
                       "not installed: the interceptor fleet keeps its Deployment's size "
                       "(manifests/components/interceptor-scaledobject adds it)")
    return scaled_object_ready(snap, so, subject, "httpscale.fleet", "the interceptor fleet",
                               "installed into another namespace than httpscale without the "
                               "overlay's replacements block? (docs/kubernetes.md)")


def scaled_object_ready(snap: ClusterSnapshot, so: Obj, subject: str, check: str, what: str,
                        hint: str) -> Finding:
    """A ScaledObject's Ready condition, as KEDA wrote it."""
    ready = condition(so, "Ready")
    if ready is not None and ready.get("status") == "True":
        paused = condition(so, "Paused")
        if paused is not None and paused.get("status") == "True":
            return Finding(check, subject, Status.WARN,
                           f"Ready, but paused: KEDA does not scale {what}",
                           "remove the autoscaling.keda.sh/paused(-replicas) annotation when "
                           "that was not meant to last")
        return Finding(check, subject, Status.OK, "Ready (KEDA)")
    if not processed_by_keda(so):
        age = age_seconds(snap, meta(so).get("creationTimestamp"))
        if age is not None and age <= FIRST_PASS_S:
            # KEDA's first pass takes seconds: one made just now is not a fault yet (the
            # same allowance as the KEDA operator check's).
            return Finding(check, subject, Status.WARN,
                           f"created {max(age, 0):.0f}s ago, not handled by KEDA yet",
                           "run the doctor again in a minute; if it stays so, see the KEDA "
                           "operator finding above")
        return Finding(check, subject, Status.FAIL,
                       "KEDA has not handled it (no Ready condition): nothing scales "
                       f"{what}", "see the KEDA operator finding above")
    message = str((ready or {}).get("message") or (ready or {}).get("reason") or "")
    return Finding(check, subject, Status.FAIL, f"not Ready: {message}",
                   f"`kubectl describe scaledobject` and KEDA's operator log; {hint}")
