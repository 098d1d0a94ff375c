"""`httpscale scaler` on a cluster: routes from HTTPScaledObject and InterceptorRoute watches,
interceptor replicas from the EndpointSlices of their admin Service, as its ServiceAccount
with exactly the rights of manifests/scaler/.

The interceptor replicas are pods of a Deployment (local processes run by the local kubelet,
bound to their pod address) running a small stand-in that serves the interceptor admin
contract (`GET /queue`, the `/wake` stream) with values the test sets through `PUT /queue`:
real HTTP servers in real pods, found through the real endpointslice controller. KEDA is
played by a real gRPC client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubetools import apply_manifests, cached, merge_patch, temporary_namespace, until
from testcluster import Cluster, allowed, service_account_token

from httpscale.kube.api import ApiError, Kube, Obj
from httpscale.kube.backoff import BackoffSettings
from httpscale.kube.config import KubeSettings, connect
from httpscale.kube.resources import (
    DEPLOYMENTS,
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    SERVICES,
    Resource,
)
from httpscale.kube.watch import WatchSettings
from httpscale.scaler.app import LIVENESS, READINESS, Scaler
from httpscale.scaler.cluster import EndpointSliceDiscovery, ScalerRouteWatch
from httpscale.scaler.discovery import admin_urls
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.proto import externalscaler_pb2_grpc as pb_grpc
from httpscale.scaler.routes import ScalerRouteTable
from httpscale.scaler.settings import (
    CollectorSettings,
    ListenSettings,
    ScalerSettings,
    ScalerShutdown,
    WakeSettings,
)

pytestmark = pytest.mark.k8s

PODS = Resource("", "v1", "pods", "Pod")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
ADMIN_SERVICE = "interceptor-admin"
QUICK = WatchSettings(backoff=BackoffSettings(initial=0.05, maximum=1.0))
SERVING = health_pb2.HealthCheckResponse.SERVING

# The interceptor admin contract on POD_IP:PORT, with values the test PUTs to /queue and wake
# events it POSTs to /wake (sent to every open /wake stream, which pings every second).
FAKE_INTERCEPTOR = r"""
import http.server, json, os, queue, socketserver, threading
state = {"queue": {}}
streams, lock = [], threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    def _body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))
    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/queue":
            return self._send(200, json.dumps(state["queue"]).encode())
        if self.path != "/wake":
            return self._send(200, b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        mine = queue.Queue()
        with lock:
            streams.append(mine)
        try:
            while True:
                try:
                    line = mine.get(timeout=1.0)
                except queue.Empty:
                    line = b'{"event": "ping"}\n'
                self.wfile.write(line)
                self.wfile.flush()
        except OSError:
            pass
        finally:
            with lock:
                streams.remove(mine)
    def do_PUT(self):
        state["queue"] = json.loads(self._body())
        self._send(200, b"{}")
    def do_POST(self):
        line = json.dumps({"event": "wake", "route": json.loads(self._body())["route"]})
        with lock:
            for s in streams:
                s.put(line.encode() + b"\n")
        self._send(200, b"{}")
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S((os.environ["POD_IP"], int(os.environ["PORT"])), H).serve_forever()
"""


def fake_interceptors(replicas: int) -> Obj:
    labels = {"app": "interceptor"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "interceptor", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 2,
                "containers": [{
                    "name": "interceptor", "image": "local",
                    "command": [sys.executable, "-c", FAKE_INTERCEPTOR],
                    "ports": [{"name": "admin", "containerPort": 9090}],
                    "readinessProbe": {"tcpSocket": {"port": "admin"}, "periodSeconds": 1},
                }],
            }},
        },
    }


def admin_service() -> Obj:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": ADMIN_SERVICE},
        "spec": {"selector": {"app": "interceptor"},
                 "ports": [{"name": "admin", "port": 9090, "targetPort": "admin"}]},
    }


def httpso(name: str, **spec: Any) -> Obj:
    body: dict[str, Any] = {
        "hosts": [f"{name}.example.com"],
        "scaleTargetRef": {"name": name, "service": name, "port": 8080},
        **spec,
    }
    return {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": name}, "spec": body}


def interceptor_route(name: str, **metric: Any) -> Obj:
    return {"apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": {"name": name},
            "spec": {"target": {"service": name, "port": 8080},
                     "rules": [{"hosts": [f"{name}.example.com"]}],
                     "scalingMetric": metric}}


def settings() -> ScalerSettings:
    return ScalerSettings(
        listen=ListenSettings(host="127.0.0.1", grpc_port=0, admin_port=0),
        collector=CollectorSettings(poll_interval=0.1, poll_timeout=1.0, stale_grace=1.0),
        wake=WakeSettings(backoff_initial=0.05, backoff_max=0.5),
        shutdown=ScalerShutdown(grpc_grace=0.5, admin_grace=0.5),
    )


def kubeconfig_for(kubeconfig: Path, token: str, out: Path) -> Path:
    """A copy of `kubeconfig` whose user is whoever `token` belongs to."""
    config = yaml.safe_load(kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


@pytest.fixture
async def admin(k8s_cluster: Cluster, crds: list[str]) -> AsyncIterator[Kube]:
    async with k8s_cluster.client() as api:
        yield Kube(api)


@pytest.fixture
async def ns(admin: Kube) -> AsyncIterator[str]:
    async with temporary_namespace(admin, f"scaler-{secrets.token_hex(3)}") as name:
        # Pods are refused until the namespace's default ServiceAccount exists.
        await until(admin, SERVICE_ACCOUNTS, name, lambda sas: f"{name}/default" in sas)
        await apply_manifests(admin, "scaler", name)
        yield name


@pytest.fixture
async def as_scaler(k8s_cluster: Cluster, admin: Kube, ns: str,
                    tmp_path: Path) -> AsyncIterator[Kube]:
    """A client that is the scaler's ServiceAccount, through a kubeconfig as a user has."""
    token = await service_account_token(admin.api, ns, "httpscale-scaler")
    path = kubeconfig_for(k8s_cluster.kubeconfig, token, tmp_path / "scaler.kubeconfig")
    kube = await connect(KubeSettings(kubeconfig=path))
    try:
        yield kube
    finally:
        await kube.close()


async def create(kube: Kube, namespace: str, obj: Obj) -> Obj:
    resource = {"HTTPScaledObject": HTTPSCALEDOBJECTS, "InterceptorRoute": INTERCEPTORROUTES,
                "Deployment": DEPLOYMENTS, "Service": SERVICES}[obj["kind"]]
    return await kube.request("POST", resource.path(namespace), body=obj)


async def table_until(table: ScalerRouteTable, done: Callable[[ScalerRouteTable], bool],
                      timeout_s: float = 20) -> None:
    """Until `done(table)` holds, checked after every route list pushed (no polling)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not done(table):
                await table.wait_changed()
    except TimeoutError:
        keys = sorted(r.key for r in table.all())
        raise AssertionError(f"route table never got there; it has {keys}") from None


async def values_until(predicate: Callable[[], bool], timeout_s: float = 10) -> None:
    """Until `predicate()` holds for numbers the collector polls (there is no event for a
    poll's result; it polls every 0.1 s here, so this looks as often)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def set_queue(http: aiohttp.ClientSession, url: str, queue: Mapping[str, Any]) -> None:
    async with http.put(url + "/queue", data=json.dumps(queue)) as resp:
        assert resp.status == 200


async def replicas_until(discovery: EndpointSliceDiscovery, n: int) -> tuple[str, ...]:
    """Until the admin Service's slices list `n` ready replicas; their URLs (as the scaler
    has them: its own listener runs first)."""
    await cached(discovery.slices, lambda raw: len(admin_urls(raw.values(), "admin")) == n)
    assert discovery.urls is not None and len(discovery.urls) == n
    return discovery.urls


@contextlib.asynccontextmanager
async def running(kube: Kube, ns: str) -> AsyncIterator[tuple[Scaler, ScalerRouteWatch,
                                                              EndpointSliceDiscovery]]:
    routes = ScalerRouteWatch(kube, settings=QUICK)  # every namespace, as by default
    discovery = EndpointSliceDiscovery(kube, service=ADMIN_SERVICE, namespace=ns, port="admin",
                                       settings=QUICK)
    scaler = Scaler(settings(), routes, discovery)
    await scaler.start()
    try:
        yield scaler, routes, discovery
    finally:
        await scaler.stop()


def so_ref(ns: str, **metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="so", namespace=ns, scalerMetadata=metadata)


async def test_the_scaler_learns_routes_and_interceptors_from_the_cluster(
    k8s_cluster: Cluster, admin: Kube, ns: str, as_scaler: Kube
) -> None:
    await create(admin, ns, fake_interceptors(2))
    await create(admin, ns, admin_service())
    await create(admin, ns, httpso("web", scaledownPeriod=120,
                                   scalingMetric={"concurrency": {"targetValue": 7}}))
    # Valid for the CRD's schema, but the two metrics exclude each other: left out.
    await create(admin, ns, httpso("broken", scalingMetric={
        "concurrency": {"targetValue": 1}, "requestRate": {"targetValue": 1}}))
    await create(admin, ns, interceptor_route(
        "api", concurrency={"targetValue": 4},
        requestRate={"targetValue": 10, "window": "30s", "granularity": "1s"}))

    async with (
        running(as_scaler, ns) as (scaler, routes, discovery),
        grpc.aio.insecure_channel(f"127.0.0.1:{scaler.grpc_port}") as channel,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
    ):
        stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[misc]
        table = scaler.table
        web, api, broken = f"{ns}/web", f"{ns}/api", f"{ns}/broken"
        await table_until(table, lambda t: t.get(web) is not None and t.get(api) is not None)
        assert table.get(broken) is None
        assert "mutually exclusive" in table.invalid[f"HTTPScaledObject {broken}"]
        # Counted (the scaler watches every namespace: other tests' objects count too).
        gauge = scaler.metrics.registry.get_sample_value(
            "httpscale_scaler_invalid_objects", {"kind": "HTTPScaledObject"}
        )
        assert gauge == sum(1 for k in table.invalid if k.startswith("HTTPScaledObject "))
        assert gauge >= 1
        (spec,) = (await stub.GetMetricSpec(so_ref(ns, httpScaledObject="web"))).metricSpecs
        assert (spec.metricName, spec.targetSizeFloat) == (f"http-{ns}-web-concurrency", 7.0)
        assert table.get(web).activity_window == 120.0  # type: ignore[union-attr]
        specs = (await stub.GetMetricSpec(so_ref(ns, interceptorRoute="api"))).metricSpecs
        assert [(s.metricName, s.targetSizeFloat) for s in specs] == [
            ("http_api_concurrency", 4.0), ("http_api_rate", 10.0)]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetMetricSpec(so_ref(ns, httpScaledObject="broken"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        # Both interceptor pods are found and polled; their numbers are summed.
        urls = await replicas_until(discovery, 2)
        web_active = stub.StreamIsActive(so_ref(ns, httpScaledObject="web"))
        assert (await web_active.read()).result is False
        await set_queue(http, urls[0], {web: {"Concurrency": 2, "RequestCount": 2},
                                        api: {"Concurrency": 1, "RequestCount": 9}})
        await set_queue(http, urls[1], {web: {"Concurrency": 3, "RequestCount": 3}})
        assert (await asyncio.wait_for(web_active.read(), 5)).result is True
        await values_until(lambda: scaler.collector.concurrency(web) == 5)
        got = await stub.GetMetrics(pb.GetMetricsRequest(
            scaledObjectRef=so_ref(ns, interceptorRoute="api"), metricName="http_api_concurrency"))
        assert [(v.metricName, v.metricValueFloat) for v in got.metricValues] == [
            ("http_api_concurrency", 1.0)]
        assert (await stub.IsActive(so_ref(ns, interceptorRoute="api"))).result is True

        # Edits: the IR's target changes, the broken HTTPSO is fixed, the IR goes away (its
        # key falls back to nothing), a new HTTPSO appears. Web's open stream is untouched.
        spec_stream = stub.StreamMetricSpec(so_ref(ns, interceptorRoute="api"))
        assert [s.targetSizeFloat for s in (await spec_stream.read()).metricSpecs] == [4.0, 10.0]
        await merge_patch(admin, INTERCEPTORROUTES, ns, "api",
                          {"spec": {"scalingMetric": {"concurrency": {"targetValue": 6}}}})
        changed = await asyncio.wait_for(spec_stream.read(), 10)
        assert [s.targetSizeFloat for s in changed.metricSpecs] == [6.0, 10.0]
        await merge_patch(admin, HTTPSCALEDOBJECTS, ns, "broken",
                          {"spec": {"scalingMetric": {"requestRate": None}}})
        await table_until(table, lambda t: t.get(broken) is not None)
        assert f"HTTPScaledObject {broken}" not in table.invalid
        await admin.request("DELETE", INTERCEPTORROUTES.path(ns, "api"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(spec_stream.read(), 10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert table.get(web) is not None
        # Web's scaledownPeriod (its activity window) goes from 120 s to 1 s: idle, it goes
        # inactive a second after its last use, on the stream opened before all the edits.
        await merge_patch(admin, HTTPSCALEDOBJECTS, ns, "web", {"spec": {"scaledownPeriod": 1}})
        await table_until(table, lambda t: t.get(web).activity_window == 1.0)  # type: ignore[union-attr]
        await set_queue(http, urls[0], {})
        await set_queue(http, urls[1], {})
        assert (await asyncio.wait_for(web_active.read(), 5)).result is False
        idle_for = scaler.collector.last_used(web)
        assert idle_for is not None and idle_for >= 1.0 - 0.05
        # A wake through the pods' streams reaches it too.
        async with http.post(urls[1] + "/wake", data=json.dumps({"route": web})) as resp:
            assert resp.status == 200
        assert (await asyncio.wait_for(web_active.read(), 5)).result is True
        # Until now the scaler had every right it needed: no watch failed.
        assert all(i.reflector.failures == 0
                   for i in (*routes.informers, discovery.slices)), "a watch was refused"

        # One replica leaves: pruned from the set, its numbers with it.
        await set_queue(http, urls[0], {web: {"Concurrency": 2, "RequestCount": 2}})
        await set_queue(http, urls[1], {web: {"Concurrency": 3, "RequestCount": 3}})
        await values_until(lambda: scaler.collector.concurrency(web) == 5)
        await merge_patch(admin, DEPLOYMENTS, ns, "interceptor", {"spec": {"replicas": 1}})
        (left,) = await replicas_until(discovery, 1)
        assert [r.url for r in scaler.collector.replicas] == [left]
        await values_until(lambda: scaler.collector.concurrency(web) == (2 if left == urls[0]
                                                                           else 3))

        # The apiserver restarts: gRPC keeps serving, the watches resume, new objects and
        # replicas are seen. The stream KEDA holds open stays open throughout.
        await k8s_cluster.restart_apiserver()
        assert (await stub.IsActive(so_ref(ns, httpScaledObject="web"))).result is True
        await create(admin, ns, httpso("after"))
        await table_until(table, lambda t: t.get(f"{ns}/after") is not None)
        await merge_patch(admin, DEPLOYMENTS, ns, "interceptor", {"spec": {"replicas": 2}})
        urls = await replicas_until(discovery, 2)
        await set_queue(http, urls[0], {})
        await set_queue(http, urls[1], {})
        await values_until(lambda: scaler.collector.concurrency(web) == 0
                           and len(scaler.collector.replicas) == 2)
        assert (await asyncio.wait_for(web_active.read(), 5)).result is False
        web_active.cancel()
        spec_stream.cancel()

    # Exactly its manifests' rights: reads, and nothing else.
    for verb, resource, group, where in (
        ("list", "httpscaledobjects", "http.keda.sh", "default"),
        ("watch", "interceptorroutes", "http.keda.sh", "default"),
        ("list", "endpointslices", "discovery.k8s.io", ns),
    ):
        assert await allowed(as_scaler.api, verb, resource, group=group, namespace=where), (
            f"the scaler may not {verb} {resource} in {where}")
    for verb, resource, group, where in (
        ("get", "secrets", "", ns), ("list", "secrets", "", ns), ("list", "configmaps", "", ns),
        ("get", "httpscaledobjects", "http.keda.sh", ns),
        ("create", "httpscaledobjects", "http.keda.sh", ns),
        ("patch", "httpscaledobjects", "http.keda.sh", ns),
        ("patch", "interceptorroutes", "http.keda.sh", ns),
        ("delete", "interceptorroutes", "http.keda.sh", ns),
        ("update", "endpointslices", "discovery.k8s.io", ns),
        ("list", "endpointslices", "discovery.k8s.io", "default"),
        ("list", "pods", "", ns), ("patch", "deployments", "apps", ns),
        ("create", "scaledobjects", "keda.sh", ns),
    ):
        assert not await allowed(as_scaler.api, verb, resource, group=group, namespace=where), (
            f"the scaler may {verb} {resource} in {where}")
    with pytest.raises(ApiError) as refused:
        await as_scaler.request("GET", f"/api/v1/namespaces/{ns}/secrets")
    assert refused.value.status == 403


def scaler_pod(ns: str) -> Obj:
    labels = {"app": "scaler"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "scaler", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": "httpscale-scaler",
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "scaler", "image": "local",
                    "command": [sys.executable, "-m", "httpscale", "scaler"],
                    # No --interceptor-namespace: the scaler's own, from $POD_NAMESPACE.
                    "args": ["--host", "$(POD_IP)", "--watch-namespace", ns,
                             "--interceptor-service", ADMIN_SERVICE,
                             "--interceptor-admin-port", "admin", "--poll-interval", "0.1"],
                    "ports": [{"name": "grpc", "containerPort": 9091},
                              {"name": "admin", "containerPort": 9092}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"},
                                       "periodSeconds": 1},
                }],
            }},
        },
    }


def _ready_pod_ip(pods: Mapping[str, Obj]) -> str | None:
    """The address of a ready scaler pod, if there is one."""
    for pod in pods.values():
        if (pod["metadata"].get("labels") or {}).get("app") != "scaler":
            continue
        conditions = (pod.get("status") or {}).get("conditions") or ()
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return str(pod["status"]["podIP"])
    return None


async def test_the_scaler_as_a_pod_of_its_service_account(admin: Kube, ns: str) -> None:
    """`httpscale scaler` with no route or interceptor option, run by the kubelet as the
    manifests' ServiceAccount: it finds the cluster (the pod's kubeconfig), its interceptors
    in its own namespace, answers KEDA and the Kubernetes gRPC probes."""
    await create(admin, ns, fake_interceptors(1))
    await create(admin, ns, admin_service())
    await create(admin, ns, httpso("web"))
    await create(admin, ns, interceptor_route("api", requestRate={"targetValue": 5}))
    await create(admin, ns, scaler_pod(ns))
    # Ready (/readyz) once it polled an interceptor it found through the EndpointSlices.
    pods = await until(admin, PODS, ns, lambda p: _ready_pod_ip(p) is not None, timeout_s=30)
    ip = _ready_pod_ip(pods)
    async with grpc.aio.insecure_channel(f"{ip}:9091") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", LIVENESS, READINESS):
            got = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert got.status == SERVING, service
        stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[misc]
        (spec,) = (await stub.GetMetricSpec(so_ref(ns, httpScaledObject="web"))).metricSpecs
        assert (spec.metricName, spec.targetSizeFloat) == (f"http-{ns}-web-concurrency", 100.0)
        (rate,) = (await stub.GetMetricSpec(so_ref(ns, interceptorRoute="api"))).metricSpecs
        assert (rate.metricName, rate.targetSizeFloat) == ("http_api_rate", 5.0)
    async with aiohttp.ClientSession() as http, http.get(f"http://{ip}:9092/status") as resp:
        status = await resp.json()
    assert [r["url"].split(":")[-1] for r in status["replicas"]] == ["9090"]
    assert status["ready"] is True
    sources = status["sources"]
    assert sources["routes"]["synced"] is True
    assert sources["interceptors"]["service"] == f"{ns}/{ADMIN_SERVICE}"  # its own namespace
    watches = sources["routes"]["watches"] + sources["interceptors"]["watches"]
    assert [w["failures"] for w in watches] == [0, 0, 0], watches  # nothing refused
