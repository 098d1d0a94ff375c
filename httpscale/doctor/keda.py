"""Is KEDA there and running? Its CRDs, its metrics API, and its operator (pure checks).

The operator is the hard part: nothing in the API says "KEDA's operator is running". Three
signs, strongest first, and the first one found decides:

1. A Deployment named `keda-operator` (any namespace): what KEDA's manifests and Helm chart
   install. Its available replicas decide.
2. The Lease `operator.keda.sh` (any namespace): KEDA's leader election, on in its manifests
   and chart. Renewed within twice its duration (at least a minute, for clock skew between
   this machine and the cluster), a KEDA operator is alive, however it was deployed.
3. The ScaledObjects themselves. KEDA's operator is their only reconciler: on its first pass
   over one it adds its finalizer `finalizer.keda.sh` and turns `Ready` from Unknown to True or
   False, and it does that within seconds of a ScaledObject's creation. So if every
   ScaledObject older than a minute carries those marks, an operator has been handling them
   all; one that is older and unmarked means none is running. (KEDA's conditions carry no
   time, so a KEDA stopped after the newest ScaledObject was handled looks alive here; the
   Lease or the Deployment, where they exist, do not have that blind spot.)

Sign 3 is what the test cluster has (KEDA runs as host processes there, without leader
election), and what any installation under other names and without leader election has.
"""

from __future__ import annotations

from collections.abc import Iterator

from httpscale.doctor.findings import Finding, Status
from httpscale.doctor.snapshot import ClusterSnapshot, age_seconds, condition, meta
from httpscale.kube.api import Obj

__all__ = [
    "FIRST_PASS_S",
    "KEDA_CRDS",
    "KEDA_FINALIZER",
    "METRICS_API_SERVICE",
    "keda_checks",
    "processed_by_keda",
]

SCALED_OBJECT_CRD = "scaledobjects.keda.sh"
KEDA_CRDS = (
    SCALED_OBJECT_CRD,
    "scaledjobs.keda.sh",
    "triggerauthentications.keda.sh",
    "clustertriggerauthentications.keda.sh",
)
METRICS_API_SERVICE = "v1beta1.external.metrics.k8s.io"
KEDA_FINALIZER = "finalizer.keda.sh"
KEDA_LEASE = "operator.keda.sh"
KEDA_DEPLOYMENT = "keda-operator"
# How long after its creation a ScaledObject may still be waiting for KEDA's first pass.
FIRST_PASS_S = 60.0
_INSTALL_KEDA = ("install KEDA (https://keda.sh/docs/latest/deploy/), e.g. `helm install keda "
                 "kedacore/keda --namespace keda --create-namespace`")


def established(crd: Obj | None) -> bool:
    c = condition(crd, "Established") if crd is not None else None
    return c is not None and c.get("status") == "True"


def processed_by_keda(so: Obj) -> bool:
    """Whether KEDA's operator has reconciled this ScaledObject at least once."""
    ready = condition(so, "Ready")
    return KEDA_FINALIZER in (meta(so).get("finalizers") or ()) or (
        ready is not None and ready.get("status") in ("True", "False"))


def keda_checks(snap: ClusterSnapshot) -> list[Finding]:
    metrics = _metrics_api(snap)
    return [*_crds(snap), *([metrics] if metrics else []), _operator(snap)]


def _crds(snap: ClusterSnapshot) -> Iterator[Finding]:
    if "customresourcedefinitions" in snap.unreadable:
        return  # said once, as a `cluster.read` finding; "not installed" would be a guess
    if SCALED_OBJECT_CRD not in snap.crds:
        yield Finding("keda.crds", f"CustomResourceDefinition {SCALED_OBJECT_CRD}", Status.FAIL,
                      "not installed: KEDA is not installed (no ScaledObject, no scaling)",
                      _INSTALL_KEDA)
        return
    for name in KEDA_CRDS:
        subject = f"CustomResourceDefinition {name}"
        crd = snap.crds.get(name)
        if crd is None:
            yield Finding("keda.crds", subject, Status.WARN,
                          "not installed, while ScaledObjects are: a partial KEDA install",
                          "install KEDA's CRDs as its release ships them")
        elif not established(crd):
            yield Finding("keda.crds", subject, Status.FAIL,
                          "exists but is not Established: its kind is not served",
                          f"`kubectl describe crd {name}` says why (a conflicting name?)")
        else:
            yield Finding("keda.crds", subject, Status.OK, "installed")


def _metrics_api(snap: ClusterSnapshot) -> Finding | None:
    subject = f"APIService {METRICS_API_SERVICE}"
    if "apiservices" in snap.unreadable:
        return None
    api = snap.api_services.get(METRICS_API_SERVICE)
    if api is None:
        return Finding(
            "keda.metrics-api", subject, Status.FAIL,
            "not registered: KEDA's metrics server is not installed, so the HPA reads no "
            "metric and apps never scale above one replica",
            "install KEDA completely (its operator and its metrics server, "
            "keda-operator-metrics-apiserver)")
    service = (api.get("spec") or {}).get("service") or {}
    served_by = f"{service.get('namespace')}/{service.get('name')}" if service else "?"
    available = condition(api, "Available")
    if available is None or available.get("status") != "True":
        why = (available or {}).get("message") or (available or {}).get("reason") or "no status"
        return Finding(
            "keda.metrics-api", subject, Status.FAIL,
            f"not Available ({why}): the HPA cannot read KEDA's metrics, so apps do not "
            "scale above one replica",
            f"check the metrics server behind Service {served_by}: "
            f"`kubectl -n {service.get('namespace')} get pods`, its logs, and that the "
            "apiserver can reach it (network policies, its certificate)")
    if "keda" not in str(service.get("name") or ""):
        return Finding(
            "keda.metrics-api", subject, Status.WARN,
            f"Available, but served by Service {served_by}, which does not look like KEDA's: "
            "only one metrics server can serve external metrics",
            "if another adapter (prometheus-adapter?) holds external.metrics.k8s.io, KEDA's "
            "ScaledObjects get no metrics: give the APIService back to KEDA's metrics server")
    return Finding("keda.metrics-api", subject, Status.OK, f"Available (Service {served_by})")


def _operator(snap: ClusterSnapshot) -> Finding:
    check = "keda.operator"
    if snap.keda_deployments:
        found = []
        for key, deployment in sorted(snap.keda_deployments.items()):
            status = deployment.get("status") or {}
            available = int(status.get("availableReplicas") or 0)
            wanted = int((deployment.get("spec") or {}).get("replicas", 1) or 0)
            if available > 0:
                return Finding(check, f"Deployment {key}", Status.OK,
                               f"{available}/{wanted} replicas available")
            found.append(key)
        ns = found[0].partition("/")[0]
        return Finding(
            check, f"Deployment {found[0]}", Status.FAIL,
            "no available replica: nothing reconciles ScaledObjects or activates apps at zero",
            f"`kubectl -n {ns} describe deployment {KEDA_DEPLOYMENT}` and "
            f"`kubectl -n {ns} logs deployment/{KEDA_DEPLOYMENT}` say why")
    for key, lease in sorted(snap.keda_leases.items()):
        spec = lease.get("spec") or {}
        age = age_seconds(snap, spec.get("renewTime"))
        limit = max(FIRST_PASS_S, 2.0 * float(spec.get("leaseDurationSeconds") or 15))
        if age is not None and age <= limit:
            return Finding(check, f"Lease {key}", Status.OK,
                           f"running: renewed {max(age, 0):.0f}s ago by "
                           f"{spec.get('holderIdentity') or '?'} (not a Deployment named "
                           f"{KEDA_DEPLOYMENT})")
        ago = "never renewed" if age is None else f"last renewed {age:.0f}s ago"
        return Finding(check, f"Lease {key}", Status.FAIL,
                       f"KEDA's leader-election Lease was {ago}: no KEDA operator is running",
                       f"start KEDA's operator (it runs in namespace {key.partition('/')[0]})")
    return _operator_from_scaled_objects(snap)


def _operator_from_scaled_objects(snap: ClusterSnapshot) -> Finding:
    check, subject = "keda.operator", "KEDA operator"
    where = "no Deployment named keda-operator and no Lease operator.keda.sh"
    if "deployments" in snap.unreadable or "leases" in snap.unreadable:
        where += " (or not allowed to look: " + "; ".join(
            snap.unreadable[k] for k in ("deployments", "leases") if k in snap.unreadable) + ")"
    done: list[str] = []
    waiting: list[str] = []
    stale: list[str] = []
    for key, so in sorted(snap.scaled_objects.items()):
        if processed_by_keda(so):
            done.append(key)
        else:
            age = age_seconds(snap, meta(so).get("creationTimestamp"))
            (stale if age is None or age > FIRST_PASS_S else waiting).append(key)
    if stale:
        return Finding(
            check, subject, Status.FAIL,
            f"{where}, and {len(stale)} ScaledObject(s) older than a minute were never "
            f"handled by KEDA (no finalizer, Ready unknown), e.g. {stale[0]}: no KEDA operator "
            "is running",
            f"start KEDA's operator, or {_INSTALL_KEDA}")
    if done:
        return Finding(
            check, subject, Status.OK,
            f"{where}, but KEDA has handled every ScaledObject here ({len(done)}: its finalizer "
            "and Ready condition): its operator runs, installed some other way")
    if waiting:
        return Finding(check, subject, Status.WARN,
                       f"{where}; {len(waiting)} new ScaledObject(s) not handled yet",
                       "run the doctor again in a minute")
    return Finding(check, subject, Status.FAIL,
                   f"{where}, and no ScaledObject KEDA has handled: nothing shows a running "
                   "KEDA operator",
                   f"start KEDA's operator, or {_INSTALL_KEDA}")
