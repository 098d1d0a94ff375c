"""`httpscale doctor` on the test cluster: each kind of miswiring gives the right finding.

httpscale is installed once for the module from `manifests/`, with the overlay of
test_e2e.py (commands from this checkout's venv, pods binding their own IP, the scaler on a
pinned ClusterIP), beside the session's real KEDA: so the doctor looks at a real installation,
real ScaledObjects that KEDA marked Ready (or not), and sends its live requests through the
real API server's service proxy to real interceptor pods. Each test makes its apps in a
namespace of its own and asks the doctor about that namespace only (`app_namespace`), so the
other findings are those of a healthy installation, and a test can assert that nothing but
its own miswiring fails.

What cannot be done to a shared cluster (KEDA's CRDs removed) is checked on a snapshot read
from it and altered (the checks are pure functions of the snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from components import app_deployment, app_service
from kubetools import create_app, deployment, service, uninstall, until
from test_e2e import _apply, _overlay
from testcluster import REQUIRE_ENV, Cluster, kustomize_build

from httpscale.doctor.cli import DoctorSettings, run_cluster
from httpscale.doctor.cluster import check_cluster
from httpscale.doctor.findings import Finding, Status, exit_code
from httpscale.doctor.gather import gather
from httpscale.doctor.output import format_text
from httpscale.kube.api import APPLY_PATCH, ApiError, Kube, Obj
from httpscale.kube.config import KubeSettings
from httpscale.kube.resources import (
    CRDS,
    DEPLOYMENTS,
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    SCALEDOBJECTS,
    SERVICES,
    Resource,
)

pytestmark = [pytest.mark.k8s, pytest.mark.slow, pytest.mark.timeout(240)]

NAMESPACE = "httpscale-doctor"
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
INGRESSES = Resource("networking.k8s.io", "v1", "ingresses", "Ingress")
HTTPROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
REFERENCEGRANTS = Resource("gateway.networking.k8s.io", "v1beta1", "referencegrants",
                           "ReferenceGrant")
PROXY_FQDN = f"httpscale-interceptor-proxy.{NAMESPACE}.svc.cluster.local"
# The Gateway API's CRDs, from its Go module through the Go module proxy, as
# scripts/testcluster takes KEDA's (its `keda-crds`); cached in the same module cache.
GATEWAY_API = "sigs.k8s.io/gateway-api@v1.4.1"
CACHE = Path(os.environ.get("HTTPSCALE_CACHE", Path.home() / ".cache" / "httpscale"))


# -- the installation --------------------------------------------------------------------------


def _one_replica(directory: Path) -> None:
    """The e2e overlay, plus one operator and one scaler (two each is what the e2e suite
    shows working; here they would only cost the shared machine)."""
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    for name in ("httpscale-operator", "httpscale-scaler"):
        kustomization["patches"].append({
            "target": {"kind": "Deployment", "name": name},
            "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/replicas", "value": 1}]),
        })
    path.write_text(yaml.safe_dump(kustomization))


def _ready(name: str, want: int) -> Any:
    def done(deployments: Mapping[str, Obj]) -> bool:
        d = deployments.get(f"{NAMESPACE}/{name}")
        return d is not None and (d.get("status") or {}).get("readyReplicas", 0) >= want
    return done


async def _install(cluster: Cluster, directory: Path) -> None:
    assert cluster.service_cidr is not None
    # A pinned ClusterIP for the scaler (KEDA cannot resolve Service names here); one below
    # the e2e suite's, so both never hold it at once.
    scaler_ip = str(list(ipaddress.ip_network(cluster.service_cidr).hosts())[-11])
    _overlay(directory, NAMESPACE, scaler_ip)
    _one_replica(directory)
    objects = await kustomize_build(directory)
    async with cluster.client() as api:
        kube = Kube(api)
        for obj in objects:
            await _apply(kube, obj)
        await until(kube, DEPLOYMENTS, NAMESPACE, lambda d: all(
            _ready(n, 1)(d) for n in ("httpscale-operator", "httpscale-scaler",
                                      "httpscale-interceptor")), timeout_s=120)
        # KEDA scales the fleet to its minimum of 2; the doctor checks it all ready.
        await until(kube, DEPLOYMENTS, NAMESPACE, _ready("httpscale-interceptor", 2),
                    timeout_s=120)
        await _so_ready(kube, NAMESPACE, "httpscale-interceptor")


async def _uninstall(cluster: Cluster) -> None:
    async with cluster.client() as api:
        await uninstall(Kube(api), NAMESPACE)


@pytest.fixture(scope="module")
def installed(k8s_cluster: Cluster, crds: list[str], keda: Any,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """httpscale from manifests/ in NAMESPACE for this module; its namespace."""
    directory = tmp_path_factory.mktemp("doctor-overlay")
    try:
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(_install(k8s_cluster, directory))
        yield NAMESPACE
    finally:
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(_uninstall(k8s_cluster))


# -- helpers -----------------------------------------------------------------------------------


async def _so_ready(kube: Kube, ns: str, name: str, status: str = "True") -> None:
    """Until KEDA has set the ScaledObject's Ready condition to `status`."""
    def done(objs: Mapping[str, Obj]) -> bool:
        so = objs.get(f"{ns}/{name}")
        return so is not None and any(
            c.get("type") == "Ready" and c.get("status") == status
            for c in (so.get("status") or {}).get("conditions") or ())
    await until(kube, SCALEDOBJECTS, ns, done, timeout_s=60)


async def _reported(kube: Kube, ns: str, name: str, reason: str,
                    resource: Resource = HTTPSCALEDOBJECTS) -> None:
    """Until the operator has reported `reason` on the object's latest generation."""
    def done(objs: Mapping[str, Obj]) -> bool:
        o = objs.get(f"{ns}/{name}")
        return o is not None and any(
            c.get("type") == "Ready" and c.get("reason") == reason
            and c.get("observedGeneration") == o["metadata"]["generation"]
            for c in (o.get("status") or {}).get("conditions") or ())
    await until(kube, resource, ns, done, timeout_s=30)


def _httpso(name: str, hosts: list[str], *, service: str | None = None, port: int = 80,
            annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    body: dict[str, Any] = {"hosts": hosts,
                            "scaleTargetRef": {"name": name, "service": service or name,
                                               "port": port},
                            "replicas": {"min": 0, "max": 2}}
    body.update(spec)
    return {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": name, "annotations": annotations or {}}, "spec": body}


def _route(name: str, hosts: list[str], *, service: str | None = None, port: int = 80) -> Obj:
    """An InterceptorRoute, as examples/kubernetes/interceptor-route.yaml writes one."""
    return {"apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": {"name": name},
            "spec": {"target": {"service": service or name, "port": port},
                     "rules": [{"hosts": hosts}],
                     "scalingMetric": {"concurrency": {"targetValue": 10}}}}


async def _user_scaled_object(kube: Kube, ns: str, name: str, *, min_replicas: int = 0,
                              **names: str) -> None:
    """The ScaledObject a user writes for an InterceptorRoute: scaling Deployment `name`, its
    external-push trigger naming the route with `names` (`interceptorRoute=...`), and asking
    the installed scaler (its address copied from the fleet's ScaledObject)."""
    fleet = await kube.request("GET", SCALEDOBJECTS.path(NAMESPACE, "httpscale-interceptor"))
    scaler = fleet["spec"]["triggers"][0]["metadata"]["scalerAddress"]
    await kube.request("POST", SCALEDOBJECTS.path(ns), body={
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"name": name}, "minReplicaCount": min_replicas,
                 "maxReplicaCount": 2,
                 "triggers": [{"type": "external-push",
                               "metadata": {"scalerAddress": scaler, **names}}]}})


def _ingress(name: str, host: str, *paths: tuple[str, str, int]) -> Obj:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
            "spec": {"rules": [{"host": host, "http": {"paths": [
                {"path": path, "pathType": "Prefix",
                 "backend": {"service": {"name": svc, "port": {"number": port}}}}
                for path, svc, port in paths]}}]}}


def _stand_in() -> Obj:
    """The ExternalName Service an Ingress beside the app names instead of the proxy."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "interceptor"},
            "spec": {"type": "ExternalName", "externalName": PROXY_FQDN,
                     "ports": [{"name": "http", "port": 8080}]}}


async def _post(kube: Kube, resource: Resource, ns: str, *objs: Obj) -> None:
    for obj in objs:
        await kube.request("POST", resource.path(ns), body=obj)


async def _doctor(cluster: Cluster, ns: str, **settings: Any) -> list[Finding]:
    findings, target = await run_cluster(DoctorSettings(
        kube=KubeSettings(kubeconfig=cluster.kubeconfig), namespace=NAMESPACE,
        app_namespace=ns, **settings))
    print(format_text(findings, target))  # shown with -s, and in the report of a failure
    return findings


def _failures(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.check, f.subject, f.message) for f in findings if f.status is Status.FAIL]


def _one(findings: list[Finding], check: str, subject: str, *, contains: str = "",
         status: Status | None = None) -> Finding:
    hits = [f for f in findings if f.check == check and f.subject == subject
            and contains in f.message and (status is None or f.status is status)]
    assert len(hits) == 1, f"{check} {subject} {contains!r}: {hits}"
    return hits[0]


# -- the tests ---------------------------------------------------------------------------------


async def test_a_healthy_setup_has_no_failure_and_answers_live(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    """An app that is up (behind an Ingress through the ExternalName stand-in) and one at
    zero: nothing fails, the live request to the one that is up is answered by the app
    through the API server's service proxy and an interceptor pod, and the one at zero is
    left asleep. The command exits 0 and its JSON says ok."""
    await _post(kube, DEPLOYMENTS, ns, app_deployment("web", replicas=1), deployment("sleepy"))
    await _post(kube, SERVICES, ns, app_service("web"), service("sleepy", ("http", 80)),
                _stand_in())
    await _post(kube, HTTPSCALEDOBJECTS, ns,
                _httpso("web", ["web.doctor"], replicas={"min": 1, "max": 2}),
                _httpso("sleepy", ["sleepy.doctor"]))
    await _post(kube, INGRESSES, ns, _ingress("web", "web.doctor", ("/", "interceptor", 8080)),
                _ingress("sleepy", "sleepy.doctor", ("/", "interceptor", 8080)))
    await until(kube, DEPLOYMENTS, ns, lambda d: (d.get(f"{ns}/web", {}).get("status") or {})
                .get("readyReplicas") == 1, timeout_s=60)
    for name in ("web", "sleepy"):
        await _so_ready(kube, ns, name)
        await _reported(kube, ns, name, "Reconciled")

    findings = await _doctor(k8s_cluster, ns)
    assert _failures(findings) == []
    assert exit_code(findings) == 0
    live = _one(findings, "live.request", f"HTTPScaledObject {ns}/web", status=Status.OK)
    assert "GET http://web.doctor/" in live.message and "200 from the app" in live.message
    assert "service proxy" in live.message
    _one(findings, "live.request", f"HTTPScaledObject {ns}/sleepy", status=Status.INFO,
         contains="at zero, not tried")
    for name in ("web", "sleepy"):
        _one(findings, "traffic.ingress", f"Ingress {ns}/{name} host {name}.doctor path /",
             status=Status.OK, contains="ExternalName Service")
        _one(findings, "apps.scaledobject", f"HTTPScaledObject {ns}/{name}", status=Status.OK)
    _one(findings, "keda.operator", "KEDA operator", status=Status.OK)
    _one(findings, "httpscale.service", f"Service {NAMESPACE}/httpscale-interceptor-proxy",
         status=Status.OK, contains="2 ready endpoint(s)")
    deployments = await kube.request("GET", DEPLOYMENTS.path(ns, "sleepy"))
    assert deployments["spec"]["replicas"] == 0  # the doctor did not wake it

    # The command itself: exit status and JSON.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale.doctor", "--kubeconfig", str(k8s_cluster.kubeconfig),
        "--namespace", NAMESPACE, "--app-namespace", ns, "--output", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["ok"] is True and report["summary"]["fail"] == 0
    assert {f["check"] for f in report["findings"]} >= {
        "keda.crds", "keda.operator", "httpscale.deployment", "apps.scaledobject",
        "traffic.ingress", "live.request"}


async def test_an_ingress_to_the_apps_own_service_is_the_classic_mistake(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    """An Ingress straight to the app's Service, and one whose `/` goes to the interceptor
    but whose `/api` (which the HTTPSO serves) goes to the app: both fail, naming the app;
    the command exits 1 and says it in its JSON."""
    await _post(kube, DEPLOYMENTS, ns, deployment("shop"), deployment("api"))
    await _post(kube, SERVICES, ns, service("shop", ("http", 80)), service("api", ("http", 80)),
                _stand_in())
    await _post(kube, HTTPSCALEDOBJECTS, ns, _httpso("shop", ["shop.doctor"]),
                _httpso("api", ["mixed.doctor"], pathPrefixes=["/api"]))
    await _post(kube, INGRESSES, ns,
                _ingress("shop", "shop.doctor", ("/", "shop", 80)),
                _ingress("mixed", "mixed.doctor", ("/", "interceptor", 8080),
                         ("/api", "api", 80)))
    for name in ("shop", "api"):
        await _so_ready(kube, ns, name)

    findings = await _doctor(k8s_cluster, ns, live=False)
    straight = _one(findings, "traffic.ingress", f"Ingress {ns}/shop host shop.doctor path /")
    assert straight.status is Status.FAIL
    assert f"straight to Service {ns}/shop, the app's own Service" in straight.message
    assert "never wakes" in straight.message
    assert "httpscale-interceptor-proxy" in straight.fix
    mixed = _one(findings, "traffic.ingress", f"Ingress {ns}/mixed host mixed.doctor path /api")
    assert mixed.status is Status.FAIL
    assert mixed.message.startswith(f"sends HTTPScaledObject {ns}/api's traffic straight to "
                                    f"Service {ns}/api, the app's own Service")
    # `/` of the mixed Ingress serves no HTTPSO path: not judged.
    assert not [f for f in findings if f.subject == f"Ingress {ns}/mixed host mixed.doctor path /"]
    assert {(c, s) for c, s, _ in _failures(findings)} == {
        ("traffic.ingress", straight.subject), ("traffic.ingress", mixed.subject)}

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale.doctor", "--kubeconfig", str(k8s_cluster.kubeconfig),
        "--namespace", NAMESPACE, "--app-namespace", ns, "-o", "json", "--no-live",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()
    report = json.loads(out)
    assert report["ok"] is False and report["summary"]["fail"] == 2
    assert {f["subject"] for f in report["findings"] if f["status"] == "fail"} == {
        straight.subject, mixed.subject}


async def test_a_missing_service_port_or_workload_and_a_service_selecting_other_pods(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    for name in ("no-svc", "bad-port", "stray"):
        await kube.request("POST", DEPLOYMENTS.path(ns), body=deployment(name))
    await _post(kube, SERVICES, ns, service("bad-port", ("web", 80)), service("orphan", ("h", 80)))
    stray_svc = service("stray", ("http", 80))
    stray_svc["spec"]["selector"] = {"app": "someone-else"}
    await _post(kube, SERVICES, ns, stray_svc)
    await _post(kube, HTTPSCALEDOBJECTS, ns,
                _httpso("no-svc", ["a.doctor"]),
                _httpso("bad-port", ["b.doctor"], port=8080),
                _httpso("no-workload", ["c.doctor"], service="orphan"),
                _httpso("stray", ["d.doctor"]))
    await _reported(kube, ns, "no-workload", "TargetNotFound")
    await _reported(kube, ns, "no-svc", "ServiceNotFound")
    await _reported(kube, ns, "bad-port", "PortNotFound")
    for name in ("no-svc", "bad-port", "stray"):
        await _so_ready(kube, ns, name)
    await _so_ready(kube, ns, "no-workload", "False")

    findings = await _doctor(k8s_cluster, ns, live=False)
    assert _one(findings, "apps.service", f"HTTPScaledObject {ns}/no-svc").message == (
        f"Service {ns}/no-svc not found")
    port = _one(findings, "apps.service", f"HTTPScaledObject {ns}/bad-port")
    assert port.status is Status.FAIL
    assert port.message == (f"Service {ns}/bad-port:8080: the Service has no port 8080 "
                            "(it has: 80 (web))")
    gone = _one(findings, "apps.workload", f"HTTPScaledObject {ns}/no-workload")
    assert gone.status is Status.FAIL
    assert gone.message == f"Deployment {ns}/no-workload not found: KEDA has nothing to scale"
    stray = _one(findings, "apps.workload", f"HTTPScaledObject {ns}/stray")
    assert stray.status is Status.FAIL and "not selected by Service" in stray.message
    assert "{'app': 'someone-else'}" in stray.message
    # KEDA says the same of the missing workload, in its own words, on the ScaledObject.
    keda = _one(findings, "apps.scaledobject", f"HTTPScaledObject {ns}/no-workload")
    assert keda.status is Status.FAIL and "not Ready" in keda.message
    assert {(c, s.rpartition("/")[2]) for c, s, _ in _failures(findings)} == {
        ("apps.service", "no-svc"), ("apps.service", "bad-port"),
        ("apps.workload", "no-workload"), ("apps.scaledobject", "no-workload"),
        ("apps.workload", "stray")}


async def test_a_scaled_object_missing_not_ready_or_someone_elses(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    """skip-scaledobject-creation and none written; one written whose target KEDA cannot
    find (KEDA itself says not Ready); one of that name that another owner holds."""
    skip = {"httpscaledobject.keda.sh/skip-scaledobject-creation": "true"}
    for name in ("unscaled", "broken", "taken"):
        await create_app(kube, ns, name, ("http", 80))
    installed_so = await kube.request("GET", SCALEDOBJECTS.path(NAMESPACE,
                                                                "httpscale-interceptor"))
    scaler = installed_so["spec"]["triggers"][0]["metadata"]["scalerAddress"]
    await _post(kube, SCALEDOBJECTS, ns, *({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"name": target}, "minReplicaCount": 0,
                 "triggers": [{"type": "external-push", "metadata": {
                     "scalerAddress": scaler, "httpScaledObject": name}}]}}
        for name, target in (("broken", "no-such-deployment"), ("taken", "taken"))))
    await _post(kube, HTTPSCALEDOBJECTS, ns,
                _httpso("unscaled", ["u.doctor"], annotations=skip),
                _httpso("broken", ["b.doctor"], annotations=skip),
                _httpso("taken", ["t.doctor"]))
    await _so_ready(kube, ns, "broken", "False")
    await _reported(kube, ns, "taken", "ScaledObjectConflict")

    findings = await _doctor(k8s_cluster, ns, live=False)
    unscaled = _one(findings, "apps.scaledobject", f"HTTPScaledObject {ns}/unscaled")
    assert unscaled.status is Status.FAIL and "nothing scales it" in unscaled.message
    broken = _one(findings, "apps.scaledobject", f"HTTPScaledObject {ns}/broken")
    assert broken.status is Status.FAIL
    assert broken.message.startswith(f"ScaledObject {ns}/broken: not Ready: ")
    assert "no-such-deployment" in broken.message  # KEDA's own words
    taken = _one(findings, "apps.scaledobject", f"HTTPScaledObject {ns}/taken")
    assert taken.status is Status.FAIL and "is not this object's (not owned)" in taken.message
    assert {(c, s.rpartition("/")[2]) for c, s, _ in _failures(findings)} == {
        ("apps.scaledobject", "unscaled"), ("apps.scaledobject", "broken"),
        ("apps.scaledobject", "taken")}


async def test_two_objects_claiming_one_host(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    for name in ("first", "second"):
        await create_app(kube, ns, name, ("http", 80))
    # Created one after the other: at the same second the key decides ("first" < "second").
    await _post(kube, HTTPSCALEDOBJECTS, ns, _httpso("first", ["same.doctor"]))
    await _post(kube, HTTPSCALEDOBJECTS, ns, _httpso("second", ["same.doctor", "own.doctor"]))
    await _reported(kube, ns, "second", "RouteConflict")
    for name in ("first", "second"):
        await _so_ready(kube, ns, name)

    findings = await _doctor(k8s_cluster, ns, live=False)
    lost = _one(findings, "apps.routes", f"HTTPScaledObject {ns}/second")
    assert lost.status is Status.FAIL
    assert lost.message == (f"host same.doctor path / goes to the older HTTPScaledObject "
                            f"{ns}/first")
    _one(findings, "apps.routes", f"HTTPScaledObject {ns}/first", status=Status.OK)
    assert _failures(findings) == [("apps.routes", lost.subject, lost.message)]


# -- InterceptorRoutes ---------------------------------------------------------------------------


async def test_a_healthy_interceptor_route_with_the_scaled_object_its_user_writes(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    """As examples/kubernetes/interceptor-route.yaml: an InterceptorRoute, and the ScaledObject
    its user writes naming it with `interceptorRoute`; beside it one whose ScaledObject (of
    another name) names it with `httpScaledObject`, which the scaler also takes for the route.
    Nothing fails, both are found scaled, and the one that is up answers the live request."""
    await _post(kube, DEPLOYMENTS, ns, app_deployment("orders", replicas=1), deployment("legacy"))
    await _post(kube, SERVICES, ns, app_service("orders"), service("legacy", ("http", 80)))
    await _post(kube, INTERCEPTORROUTES, ns, _route("orders", ["orders.doctor"]),
                _route("legacy-route", ["legacy.doctor"], service="legacy"))
    await _user_scaled_object(kube, ns, "orders", min_replicas=1, interceptorRoute="orders")
    await _user_scaled_object(kube, ns, "legacy", httpScaledObject="legacy-route")
    await until(kube, DEPLOYMENTS, ns, lambda d: (d.get(f"{ns}/orders", {}).get("status") or {})
                .get("readyReplicas") == 1, timeout_s=60)
    for so, route in (("orders", "orders"), ("legacy", "legacy-route")):
        await _so_ready(kube, ns, so)
        await _reported(kube, ns, route, "Reconciled", INTERCEPTORROUTES)

    findings = await _doctor(k8s_cluster, ns)
    assert _failures(findings) == []
    for so, route, host in (("orders", "orders", "orders.doctor"),
                            ("legacy", "legacy-route", "legacy.doctor")):
        subject = f"InterceptorRoute {ns}/{route}"
        scaled = _one(findings, "apps.scaledobject", subject, status=Status.OK)
        assert scaled.message.startswith(f"ScaledObject {ns}/{so}: ")
        _one(findings, "apps.service", subject, status=Status.OK, contains=f"Service {ns}/{so}:80")
        _one(findings, "apps.routes", subject, status=Status.OK, contains=f"routes {host} ")
        _one(findings, "apps.operator", subject, status=Status.OK, contains="Reconciled")
    live = _one(findings, "live.request", f"InterceptorRoute {ns}/orders", status=Status.OK)
    assert "GET http://orders.doctor/" in live.message and "200 from the app" in live.message
    _one(findings, "live.request", f"InterceptorRoute {ns}/legacy-route", status=Status.INFO,
         contains="at zero, not tried")


async def test_an_interceptor_route_without_its_service_or_without_a_scaled_object(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    """`lost` routes to a Service that does not exist (its ScaledObject is there, and Ready);
    `unscaled` has its Service, but no ScaledObject names it: nothing would ever wake it."""
    await _post(kube, DEPLOYMENTS, ns, deployment("lost"), deployment("unscaled"))
    await _post(kube, SERVICES, ns, service("unscaled", ("http", 80)))
    await _post(kube, INTERCEPTORROUTES, ns, _route("lost", ["lost.doctor"]),
                _route("unscaled", ["unscaled.doctor"]))
    await _user_scaled_object(kube, ns, "lost", interceptorRoute="lost")
    await _reported(kube, ns, "lost", "ServiceNotFound", INTERCEPTORROUTES)
    await _reported(kube, ns, "unscaled", "Reconciled", INTERCEPTORROUTES)
    await _so_ready(kube, ns, "lost")

    findings = await _doctor(k8s_cluster, ns, live=False)
    lost = _one(findings, "apps.service", f"InterceptorRoute {ns}/lost")
    assert lost.status is Status.FAIL
    assert lost.message == f"Service {ns}/lost not found"
    assert "kubectl edit interceptorroute" in lost.fix
    _one(findings, "apps.scaledobject", f"InterceptorRoute {ns}/lost", status=Status.OK)
    unscaled = _one(findings, "apps.scaledobject", f"InterceptorRoute {ns}/unscaled")
    assert unscaled.status is Status.FAIL
    assert unscaled.message == (
        f"you write the ScaledObject for an InterceptorRoute, and no ScaledObject in {ns} has "
        "an external-push trigger with interceptorRoute: unscaled: nothing scales it")
    assert "interceptor-route.yaml" in unscaled.fix
    assert {(c, s.rpartition("/")[2]) for c, s, _ in _failures(findings)} == {
        ("apps.service", "lost"), ("apps.scaledobject", "unscaled")}


async def test_an_interceptor_route_and_an_httpso_claiming_one_host(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    """The InterceptorRoute is created first, so it keeps the host whatever the clock says (at
    the same second an InterceptorRoute goes first); the HTTPScaledObject loses it."""
    for name in ("ir-first", "httpso-second"):
        await create_app(kube, ns, name, ("http", 80))
    await _post(kube, INTERCEPTORROUTES, ns, _route("ir-first", ["both.doctor"]))
    await _user_scaled_object(kube, ns, "ir-first", interceptorRoute="ir-first")
    await _post(kube, HTTPSCALEDOBJECTS, ns, _httpso("httpso-second", ["both.doctor"]))
    await _reported(kube, ns, "httpso-second", "RouteConflict")
    await _reported(kube, ns, "ir-first", "Reconciled", INTERCEPTORROUTES)
    for name in ("ir-first", "httpso-second"):
        await _so_ready(kube, ns, name)

    findings = await _doctor(k8s_cluster, ns, live=False)
    lost = _one(findings, "apps.routes", f"HTTPScaledObject {ns}/httpso-second")
    assert lost.status is Status.FAIL
    assert lost.message == (f"host both.doctor path / goes to the older InterceptorRoute "
                            f"{ns}/ir-first")
    _one(findings, "apps.routes", f"InterceptorRoute {ns}/ir-first", status=Status.OK)
    assert _failures(findings) == [("apps.routes", lost.subject, lost.message)]


async def test_keda_crds_missing_on_a_snapshot_of_this_cluster(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    """KEDA cannot be uninstalled from the session's cluster: its CRDs and metrics API are
    taken out of a snapshot read from it instead."""
    await create_app(kube, ns, "app", ("http", 80))
    await _post(kube, HTTPSCALEDOBJECTS, ns, _httpso("app", ["app.doctor"]))
    await _so_ready(kube, ns, "app")
    snap = await gather(kube, NAMESPACE, ns)
    assert _failures(check_cluster(snap)[0]) == []  # the real thing is healthy
    without = dataclasses.replace(
        snap, crds={k: v for k, v in snap.crds.items() if not k.endswith(".keda.sh")
                    or k.endswith(".http.keda.sh")},
        api_services={}, scaled_objects={})
    findings, _ = check_cluster(without)
    assert {(c, s) for c, s, _ in _failures(findings)} == {
        ("keda.crds", "CustomResourceDefinition scaledobjects.keda.sh"),
        ("keda.metrics-api", "APIService v1beta1.external.metrics.k8s.io"),
        ("keda.operator", "KEDA operator"),
        ("apps.scaledobject", f"HTTPScaledObject {ns}/app"),
    }
    assert _one(findings, "apps.scaledobject", f"HTTPScaledObject {ns}/app").message == (
        "no ScaledObject can exist: KEDA is not installed")


async def test_a_service_whose_target_port_is_wrong_fails_the_live_request(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    """The pod is up and ready, so every object check passes; only a request shows that the
    Service sends it to a port nothing listens on."""
    await kube.request("POST", DEPLOYMENTS.path(ns), body=app_deployment("misport", replicas=1))
    svc = app_service("misport")
    svc["spec"]["ports"][0]["targetPort"] = 9
    await kube.request("POST", SERVICES.path(ns), body=svc)
    # A short conditionWait: the interceptor retries refused connections to a replica that
    # has just become ready for that long (it may not listen yet), then answers 502.
    await _post(kube, HTTPSCALEDOBJECTS, ns,
                _httpso("misport", ["misport.doctor"], replicas={"min": 1, "max": 1},
                        timeouts={"conditionWait": "2s"}))
    await until(kube, DEPLOYMENTS, ns, lambda d: (d.get(f"{ns}/misport", {}).get("status") or {})
                .get("readyReplicas") == 1, timeout_s=60)
    await _so_ready(kube, ns, "misport")

    findings = await _doctor(k8s_cluster, ns, request_timeout=20.0)
    live = _one(findings, "live.request", f"HTTPScaledObject {ns}/misport")
    assert live.status is Status.FAIL
    assert "502 from the interceptor" in live.message
    assert "targetPort" in live.fix
    assert _failures(findings) == [("live.request", live.subject, live.message)]


async def test_wake_sends_the_request_to_an_app_at_zero_and_wakes_it(
    installed: str, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await kube.request("POST", DEPLOYMENTS.path(ns), body=app_deployment("dozy", replicas=0))
    await kube.request("POST", SERVICES.path(ns), body=app_service("dozy"))
    await _post(kube, HTTPSCALEDOBJECTS, ns, _httpso("dozy", ["dozy.doctor"]))
    await _so_ready(kube, ns, "dozy")

    findings = await _doctor(k8s_cluster, ns, wake=True)
    live = _one(findings, "live.request", f"HTTPScaledObject {ns}/dozy")
    assert live.status is Status.OK, live
    assert "200 from the app after waking it" in live.message
    woken = await kube.request("GET", DEPLOYMENTS.path(ns, "dozy"))
    assert woken["spec"]["replicas"] == 1


# -- Gateway API -------------------------------------------------------------------------------


def _gateway_crd_files() -> list[Path]:
    """httproutes and referencegrants of GATEWAY_API's standard channel, downloaded once into
    the module cache scripts/testcluster uses (Go needed the first time only)."""
    go = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists() and not shutil.which(go):
        message = "the Gateway API's CRDs come from its Go module: no Go toolchain"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    env = {**os.environ, "GOPATH": str(CACHE / "gopath"),
           "GOMODCACHE": str(CACHE / "gopath" / "pkg" / "mod"),
           "GOCACHE": str(CACHE / "go-build"), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local",
           "GOWORK": "off"}
    cmd = [go, "mod", "download", "-json", GATEWAY_API]
    done = subprocess.run(cmd, cwd=CACHE, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0 and "GOSUMDB" not in os.environ:
        # As scripts/testcluster: the checksum database is not reachable from every sandbox.
        done = subprocess.run(cmd, cwd=CACHE, env={**env, "GOSUMDB": "off"},
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    crd_dir = Path(json.loads(done.stdout)["Dir"]) / "config" / "crd" / "standard"
    return [crd_dir / f"gateway.networking.k8s.io_{n}.yaml"
            for n in ("httproutes", "referencegrants")]


@pytest.fixture(scope="module")
def gateway_crds(k8s_cluster: Cluster) -> Iterator[list[str]]:
    """The Gateway API's CRDs for this module; removed after it (no other module expects
    them, and the doctor's "HTTPRoute CRD not installed" note depends on it)."""
    files = _gateway_crd_files()

    async def install() -> list[str]:
        async with k8s_cluster.client() as api:
            kube = Kube(api)
            names = []
            for path in files:
                crd = yaml.safe_load(path.read_text())
                names.append(crd["metadata"]["name"])
                await kube.request(
                    "PATCH", CRDS.path(name=crd["metadata"]["name"]),
                    query=[("fieldManager", "httpscale-tests"), ("force", "true")], body=crd,
                    content_type=APPLY_PATCH)
            await until(kube, CRDS, None, lambda crds: all(any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in (crds.get(n, {}).get("status") or {}).get("conditions") or ())
                for n in names))
            return names

    async def remove(names: list[str]) -> None:
        async with k8s_cluster.client() as api:
            kube = Kube(api)
            for name in names:
                with contextlib.suppress(ApiError):
                    await kube.request("DELETE", CRDS.path(name=name))
            await until(kube, CRDS, None, lambda crds: not set(names) & set(crds))

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        names = runner.run(install())
    try:
        yield names
    finally:
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(remove(names))


def _http_route(name: str, host: str, backend: dict[str, Any]) -> Obj:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": "public", "namespace": "gateway"}],
                     "hostnames": [host], "rules": [{"backendRefs": [backend]}]}}


async def test_http_routes_to_the_app_or_across_namespaces_without_a_grant(
    installed: str, gateway_crds: list[str], k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    for name in ("gw-app", "gw-direct"):
        await create_app(kube, ns, name, ("http", 80))
    await _post(kube, HTTPSCALEDOBJECTS, ns, _httpso("gw-app", ["gw.doctor"]),
                _httpso("gw-direct", ["direct.doctor"]))
    proxy = {"name": "httpscale-interceptor-proxy", "namespace": NAMESPACE, "port": 8080}
    await _post(kube, HTTPROUTES, ns, _http_route("via-proxy", "gw.doctor", proxy),
                _http_route("direct", "direct.doctor", {"name": "gw-direct", "port": 80}))
    for name in ("gw-app", "gw-direct"):
        await _so_ready(kube, ns, name)

    findings = await _doctor(k8s_cluster, ns, live=False)
    refused = _one(findings, "traffic.httproute",
                   f"HTTPRoute {ns}/via-proxy host gw.doctor rule 0 path /")
    assert refused.status is Status.FAIL and "no ReferenceGrant" in refused.message
    direct = _one(findings, "traffic.httproute",
                  f"HTTPRoute {ns}/direct host direct.doctor rule 0 path /")
    assert direct.status is Status.FAIL
    assert f"straight to Service {ns}/gw-direct" in direct.message
    assert len(_failures(findings)) == 2

    grant = {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
             "metadata": {"name": f"from-{ns}"},
             "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                "namespace": ns}],
                      "to": [{"group": "", "kind": "Service",
                              "name": "httpscale-interceptor-proxy"}]}}
    await kube.request("POST", REFERENCEGRANTS.path(NAMESPACE), body=grant)
    try:
        findings = await _doctor(k8s_cluster, ns, live=False)
    finally:
        await kube.request("DELETE", REFERENCEGRANTS.path(NAMESPACE, f"from-{ns}"))
    granted = _one(findings, "traffic.httproute", refused.subject)
    assert granted.status is Status.OK
    assert _failures(findings) == [("traffic.httproute", direct.subject, direct.message)]
