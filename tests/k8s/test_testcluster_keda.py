"""The whole KEDA path on the test cluster, with the real KEDA operator and metrics adapter:

    a tiny external scaler (grpcio, in this test) behind a Service ClusterIP
      ◀── gRPC ── KEDA operator: activation 0 → 1 and back to 0
    HPA controller ── external.metrics.k8s.io (aggregated API) ──▶ KEDA adapter
      ── gRPC, mTLS ──▶ operator ──▶ the scaler: 1 → N and back

The scaler is reached as the real suite reaches httpscale's: at `<ClusterIP>:9091` of a
Service, through the local kubelet's service proxy. Here the Service has no selector and
its EndpointSlice names this process's server on a reserved pod-CIDR address.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from keda import Keda
from kubernetes_asyncio import client
from testcluster import Cluster, cluster_ip, wait_until

from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.proto import externalscaler_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(360)]

Obj = dict[str, Any]
SCALER_PORT = 9091
METRIC = "load"

# Answers its pod name, on POD_IP:PORT.
APP = """
import http.server, os
name = os.environ["POD_NAME"].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a):
        pass
http.server.HTTPServer((os.environ["POD_IP"], int(os.environ["PORT"])), H).serve_forever()
"""


class _Scaler(pb_grpc.ExternalScalerServicer):
    """KEDA's external scaler protocol with one metric whose value the test sets: active
    while it is above 0, one replica per unit (target 1, as an AverageValue)."""

    def __init__(self) -> None:
        self.value = 0
        self.calls: dict[str, int] = {}
        self.seen_metadata: dict[str, str] = {}

    def _count(self, name: str, ref: pb.ScaledObjectRef) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        self.seen_metadata = dict(ref.scalerMetadata)

    async def IsActive(self, request: pb.ScaledObjectRef,
                       context: grpc.aio.ServicerContext[Any, Any]) -> pb.IsActiveResponse:
        self._count("IsActive", request)
        return pb.IsActiveResponse(result=self.value > 0)

    async def StreamIsActive(self, request: pb.ScaledObjectRef,
                             context: grpc.aio.ServicerContext[Any, Any]
                             ) -> AsyncIterator[pb.IsActiveResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not an external-push trigger")
        yield pb.IsActiveResponse()  # not reached: abort raises

    async def StreamMetricSpec(self, request: pb.ScaledObjectRef,
                               context: grpc.aio.ServicerContext[Any, Any]
                               ) -> AsyncIterator[pb.GetMetricSpecResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the metric spec does not change")
        yield pb.GetMetricSpecResponse()  # not reached: abort raises

    async def GetMetricSpec(self, request: pb.ScaledObjectRef,
                            context: grpc.aio.ServicerContext[Any, Any]
                            ) -> pb.GetMetricSpecResponse:
        self._count("GetMetricSpec", request)
        return pb.GetMetricSpecResponse(metricSpecs=[
            pb.MetricSpec(metricName=METRIC, targetSize=1, targetSizeFloat=1.0)])

    async def GetMetrics(self, request: pb.GetMetricsRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetMetricsResponse:
        self._count("GetMetrics", request.scaledObjectRef)
        return pb.GetMetricsResponse(metricValues=[pb.MetricValue(
            metricName=METRIC, metricValue=self.value, metricValueFloat=float(self.value))])


@pytest.fixture
async def api(k8s_cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    async with k8s_cluster.client() as api:
        yield api


@pytest.fixture
async def scaler(k8s_cluster: Cluster) -> AsyncIterator[tuple[_Scaler, str]]:
    """The external scaler, served on a reserved pod-CIDR address (1: the session's KEDA
    adapter has 0); with the address it listens on."""
    servicer = _Scaler()
    server = grpc.aio.server()
    pb_grpc.add_ExternalScalerServicer_to_server(servicer, server)
    address = f"{k8s_cluster.reserved_address(1)}:{SCALER_PORT}"
    server.add_insecure_port(address)
    await server.start()
    try:
        yield servicer, address
    finally:
        await server.stop(grace=None)


def _app(replicas: int) -> Obj:
    labels = {"app": "app"}
    return {
        "metadata": {"name": "app"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [{
                    "name": "app", "image": "local", "command": [sys.executable, "-c", APP],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
                }]}},
        },
    }


def _scaled_object(scaler_address: str) -> Obj:
    instant = {"stabilizationWindowSeconds": 0,
               "policies": [{"type": "Percent", "value": 1000, "periodSeconds": 1}]}
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "app"},
        "spec": {
            "scaleTargetRef": {"name": "app"},
            "pollingInterval": 1,  # KEDA asks IsActive every second (default 30)
            "cooldownPeriod": 1,  # back to 0 a second after the last active (default 300)
            "minReplicaCount": 0,
            "maxReplicaCount": 4,
            # The HPA's default scale-down stabilization is 5 minutes.
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleUp": instant, "scaleDown": instant}}},
            "triggers": [{"type": "external", "metadata": {
                "scalerAddress": scaler_address, "route": "test"}}],
        },
    }


def _replicas(n: int) -> Callable[[dict[str, Obj]], bool]:
    return lambda deps: (deps.get("app") or {}).get("spec", {}).get("replicas") == n


async def test_keda_scales_from_zero_through_hpa_and_back(
        k8s_cluster: Cluster, keda: Keda, api: client.ApiClient, ns: str,
        scaler: tuple[_Scaler, str]) -> None:
    servicer, scaler_endpoint = scaler
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    discovery, custom = client.DiscoveryV1Api(api), client.CustomObjectsApi(api)
    autoscaling = client.AutoscalingV2Api(api)
    started = time.monotonic()

    # The scaler as a Service whose endpoint is this process's server.
    ip, port = scaler_endpoint.rsplit(":", 1)
    await core.create_namespaced_service(ns, {
        "metadata": {"name": "scaler"},
        "spec": {"ports": [{"name": "grpc", "port": SCALER_PORT, "targetPort": int(port)}]}})
    await discovery.create_namespaced_endpoint_slice(ns, {
        "metadata": {"name": "scaler-1", "labels": {
            "kubernetes.io/service-name": "scaler",
            "endpointslice.kubernetes.io/managed-by": "httpscale-tests"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
        "ports": [{"name": "grpc", "port": int(port), "protocol": "TCP"}]})
    scaler_ip = await cluster_ip(api, ns, "scaler")
    await k8s_cluster.proxied_endpoints(ns, "scaler", SCALER_PORT,
                                        lambda eps: eps == [scaler_endpoint])

    await apps.create_namespaced_deployment(ns, _app(0))
    await custom.create_namespaced_custom_object(
        "keda.sh", "v1alpha1", ns, "scaledobjects",
        _scaled_object(f"{scaler_ip}:{SCALER_PORT}"))

    # KEDA made its HPA (1..4) on the external metric, and polls the scaler: still at 0.
    # (A deadline, not a speed. The module before this one stops and restarts the apiserver;
    # KEDA's informers then come back on client-go's backoff, and until its Deployment cache
    # has relisted KEDA answers "target deployment doesn't exist" and retries: seen in CI
    # taking 80 s.)
    hpas = await wait_until(autoscaling.list_namespaced_horizontal_pod_autoscaler,
                            lambda h: "keda-hpa-app" in h, namespace=ns, timeout_s=180)
    hpa_spec = hpas["keda-hpa-app"]["spec"]
    assert (hpa_spec["minReplicas"], hpa_spec["maxReplicas"]) == (1, 4)
    [metric] = hpa_spec["metrics"]
    assert metric["type"] == "External"
    metric_name = metric["external"]["metric"]["name"]
    assert metric_name.endswith(METRIC)

    # 0 -> 1: KEDA's own activation (IsActive), not the HPA (which does not scale from 0).
    servicer.value = 1
    await wait_until(apps.list_namespaced_deployment, _replicas(1), namespace=ns,
                     timeout_s=20)
    activated = time.monotonic() - started
    assert servicer.seen_metadata.get("route") == "test"

    # 1 -> 3: the HPA, reading KEDA's external metric through the aggregated API.
    servicer.value = 3
    await wait_until(apps.list_namespaced_deployment, _replicas(3), namespace=ns,
                     timeout_s=20)
    scaled_up = time.monotonic() - started
    # The same metric as the HPA controller reads it: through the apiserver's aggregator.
    resp = await api.call_api(
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric_name}", "GET",
        query_params=[("labelSelector", "scaledobject.keda.sh/name=app")],
        header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
        _preload_content=False)
    try:
        assert resp.status == 200, await resp.text()
        got = await resp.json()
    finally:
        resp.release()
    assert got["kind"] == "ExternalMetricValueList"
    assert [item["value"] for item in got["items"]] == ["3"]
    hpas = await wait_until(
        autoscaling.list_namespaced_horizontal_pod_autoscaler,
        lambda h: (h["keda-hpa-app"].get("status") or {}).get("desiredReplicas") == 3,
        namespace=ns, timeout_s=10)
    status = hpas["keda-hpa-app"]["status"]
    # The HPA computed 3 from the external metric it read (not from anything else).
    assert status["currentMetrics"][0]["external"]["metric"]["name"] == metric_name
    active = {c["type"]: c for c in status["conditions"]}["ScalingActive"]
    assert (active["status"], active["reason"]) == ("True", "ValidMetricFound"), active

    # 3 -> 1 through the HPA, then 1 -> 0 by KEDA once the scaler is inactive.
    servicer.value = 1
    await wait_until(apps.list_namespaced_deployment, _replicas(1), namespace=ns,
                     timeout_s=20)
    servicer.value = 0
    await wait_until(apps.list_namespaced_deployment, _replicas(0), namespace=ns,
                     timeout_s=20)
    took = time.monotonic() - started
    assert servicer.calls.get("GetMetrics", 0) > 0 and servicer.calls.get("IsActive", 0) > 0
    print(f"KEDA start-up {keda.startup_s:.1f}s (session); 0->1 at +{activated:.1f}s, "
          f"1->3 at +{scaled_up:.1f}s, back to 0 at +{took:.1f}s")
