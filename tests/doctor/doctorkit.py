"""Snapshots for the doctor's pure checks (imported by name: `conftest` is not unique).

`healthy()` is a whole installation that passes every check: KEDA, httpscale in namespace
`httpscale`, and one app `shop/app` (Deployment, Service with one ready endpoint, the
ScaledObject the operator writes, marked Ready by KEDA). Each test breaks one thing in it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
from typing import Any

from httpscale.doctor.components import HTTPSCALE_CRDS
from httpscale.doctor.keda import KEDA_CRDS, METRICS_API_SERVICE
from httpscale.doctor.snapshot import ClusterSnapshot
from httpscale.kube.api import Obj
from httpscale.model import parse_httpso
from httpscale.operator.scaledobject import FIELD_MANAGER, desired_scaled_object

NOW = datetime.datetime(2026, 12, 2, 10, 0, 0, tzinfo=datetime.UTC)
LONG_AGO = "2026-12-02T09:00:00Z"
SCALER = "httpscale-scaler.httpscale:9091"


def ts(seconds_ago: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cond(kind: str, status: str = "True", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "status": status, **extra}


def crd(name: str, version: str = "v1alpha1") -> Obj:
    return {"metadata": {"name": name},
            "spec": {"versions": [{"name": version, "served": True}]},
            "status": {"conditions": [cond("Established")]}}


def service(ns: str, name: str, *ports: tuple[str, int], **spec: Any) -> Obj:
    return {"kind": "Service", "metadata": {"namespace": ns, "name": name},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": n, "port": p, "targetPort": p} for n, p in ports],
                     **spec}}


def endpoint_slice(ns: str, service_name: str, port: tuple[str, int], *ips: str) -> Obj:
    return {"metadata": {"namespace": ns, "name": f"{service_name}-x",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": port[0], "port": port[1]}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


def deployment(ns: str, name: str, replicas: int = 1, available: int | None = None) -> Obj:
    return {"kind": "Deployment", "metadata": {"namespace": ns, "name": name},
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": name}}}},
            "status": {"availableReplicas": replicas if available is None else available}}


def httpso(ns: str, name: str, hosts: list[str], *, created: str = LONG_AGO,
           annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    body: dict[str, Any] = {"hosts": hosts,
                            "scaleTargetRef": {"name": name, "service": name, "port": 80},
                            "replicas": {"min": 0, "max": 2}, **spec}
    return {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"namespace": ns, "name": name, "uid": f"uid-{ns}-{name}",
                         "generation": 1, "creationTimestamp": created,
                         "annotations": annotations or {}},
            "spec": body,
            "status": {"conditions": [cond("Ready", reason="Reconciled", observedGeneration=1,
                                           lastTransitionTime=created)]}}


def written_for(raw: Obj) -> Obj:
    """The ScaledObject the operator writes for `raw`, as KEDA leaves it once Ready."""
    so = desired_scaled_object(raw, parse_httpso(raw), SCALER)
    so = json.loads(json.dumps(so))
    so["metadata"]["creationTimestamp"] = raw["metadata"]["creationTimestamp"]
    so["metadata"]["finalizers"] = ["finalizer.keda.sh"]
    so["metadata"]["managedFields"] = [{
        "manager": FIELD_MANAGER, "operation": "Apply",
        "fieldsV1": {"f:metadata": {"f:labels": {}, "f:annotations": {}}}}]
    so["status"] = {"conditions": [cond("Ready"), cond("Active", "False")]}
    return so


def ingress(ns: str, name: str, host: str, *paths: tuple[str, str, int | str]) -> Obj:
    def port(p: int | str) -> dict[str, Any]:
        return {"number": p} if isinstance(p, int) else {"name": p}

    return {"kind": "Ingress", "metadata": {"namespace": ns, "name": name},
            "spec": {"rules": [{"host": host, "http": {"paths": [
                {"path": path, "pathType": "Prefix",
                 "backend": {"service": {"name": svc, "port": port(p)}}}
                for path, svc, p in paths]}}]}}


def healthy(**changes: Any) -> ClusterSnapshot:
    app = httpso("shop", "app", ["app.example.com"])
    fleet_so = {"metadata": {"namespace": "httpscale", "name": "httpscale-interceptor",
                             "creationTimestamp": LONG_AGO, "finalizers": ["finalizer.keda.sh"]},
                "spec": {"triggers": [{"type": "external-push",
                                       "metadata": {"scalerAddress": SCALER}}]},
                "status": {"conditions": [cond("Ready")]}}
    services = {
        "httpscale/httpscale-interceptor-proxy": service("httpscale", "httpscale-interceptor-proxy",
                                                         ("http", 8080)),
        "httpscale/httpscale-interceptor-admin": service("httpscale", "httpscale-interceptor-admin",
                                                         ("admin", 9090)),
        "httpscale/httpscale-scaler": service("httpscale", "httpscale-scaler", ("grpc", 9091)),
        "shop/app": service("shop", "app", ("http", 80)),
    }
    slices = {
        "httpscale/httpscale-interceptor-proxy": [endpoint_slice(
            "httpscale", "httpscale-interceptor-proxy", ("http", 8080), "10.0.0.1", "10.0.0.2")],
        "httpscale/httpscale-interceptor-admin": [endpoint_slice(
            "httpscale", "httpscale-interceptor-admin", ("admin", 9090), "10.0.0.1", "10.0.0.2")],
        "httpscale/httpscale-scaler": [endpoint_slice(
            "httpscale", "httpscale-scaler", ("grpc", 9091), "10.0.0.3")],
        "shop/app": [endpoint_slice("shop", "app", ("http", 80), "10.0.1.1")],
    }
    base = ClusterSnapshot(
        namespace="httpscale",
        now=NOW,
        crds={**{n: crd(n) for n in KEDA_CRDS},
              **{n: crd(n, v) for n, v in HTTPSCALE_CRDS.items()}},
        api_services={METRICS_API_SERVICE: {
            "metadata": {"name": METRICS_API_SERVICE},
            "spec": {"service": {"namespace": "keda", "name": "keda-operator-metrics-apiserver"}},
            "status": {"conditions": [cond("Available")]}}},
        keda_deployments={"keda/keda-operator": deployment("keda", "keda-operator")},
        deployments={n: deployment("httpscale", n, 2) for n in
                     ("httpscale-operator", "httpscale-interceptor", "httpscale-scaler")},
        services=services,
        endpoint_slices=slices,
        httpsos={"shop/app": app},
        scaled_objects={"shop/app": written_for(app),
                        "httpscale/httpscale-interceptor": fleet_so},
        workloads={"apps/v1/Deployment": {"shop/app": deployment("shop", "app")}},
        ingresses={"shop/app": ingress("shop", "app", "app.example.com",
                                       ("/", "interceptor", 8080))},
    )
    # The Ingress reaches the proxy through an ExternalName Service beside it.
    stand_in = service("shop", "interceptor", ("http", 8080), type="ExternalName",
                       externalName="httpscale-interceptor-proxy.httpscale.svc.cluster.local")
    base = _replace(base, services={**base.services, "shop/interceptor": stand_in})
    return _replace(base, **changes)


def _replace(snap: ClusterSnapshot, **changes: Any) -> ClusterSnapshot:
    return dataclasses.replace(snap, **copy.deepcopy(changes))
