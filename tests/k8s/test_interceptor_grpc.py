"""gRPC through `httpscale interceptor` on a cluster: a grpcio app in real pods behind a Service
whose port says `appProtocol: kubernetes.io/h2c`, called by a grpcio client through the
interceptor's plain port (h2c with prior knowledge), also while the app is at zero."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import grpc
import pytest
from components import scale
from kubetools import merge_patch
from test_interceptor_cluster import TIMEOUT, _next_pushes, _pushes, interceptor, ready_pods
from testcluster import Cluster

from httpscale.kube.api import Kube, Obj
from httpscale.kube.resources import DEPLOYMENTS, HTTPSCALEDOBJECTS, SERVICES

pytestmark = pytest.mark.k8s

# A grpcio server on the pod's address: `test.Echo/Unary` answers with the pod's name, so the
# test sees which pod it reached. Readiness is the kubelet's gRPC probe (grpc.health.v1).
GRPC_APP = r"""
import os, signal, threading
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
name = os.environ["POD_NAME"].encode()
def unary(request, context):
    return b"%s:%s" % (name, request)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "test.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}),))
checker = health.HealthServicer()
checker.set("", health_pb2.HealthCheckResponse.SERVING)
health_pb2_grpc.add_HealthServicer_to_server(checker, server)
server.add_insecure_port(os.environ["POD_IP"] + ":8080")
server.start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
server.stop(1).wait()
"""


def grpc_deployment(name: str, replicas: int) -> Obj:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "app", "image": "local",
                        "command": [sys.executable, "-c", GRPC_APP],
                        "env": [
                            {"name": "POD_NAME",
                             "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_IP",
                             "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        ],
                        "ports": [{"name": "grpc", "containerPort": 8080}],
                        "readinessProbe": {"grpc": {"port": 8080}, "periodSeconds": 1},
                    }],
                },
            },
        },
    }


def grpc_service(name: str, app_protocol: str) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": "grpc", "port": 80, "targetPort": "grpc",
                            "appProtocol": app_protocol}]},
    }


async def _call(port: int, authority: str, message: bytes) -> bytes:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.default_authority", authority)]
    ) as channel:
        unary = channel.unary_unary("/test.Echo/Unary")
        reply: bytes = await unary(message, timeout=60)
        return reply


async def test_a_grpc_app_behind_app_protocol_h2c_answers_through_the_interceptor_from_zero(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await kube.request("POST", DEPLOYMENTS.path(ns), body=grpc_deployment("echo", 1))
    await kube.request("POST", SERVICES.path(ns), body=grpc_service("echo", "kubernetes.io/h2c"))
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body={
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": "echo"},
        "spec": {"hosts": ["echo.test"],
                 "scaleTargetRef": {"name": "echo", "service": "echo", "port": 80}}})
    pods = await ready_pods(kube, ns, "echo", 1)
    async with interceptor(k8s_cluster, ns, "--log-level", "debug") as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        reply = await _call(port, "echo.test", b"hello")
        assert reply == next(iter(pods)).encode() + b":hello"
        status = await proxy.admin_json("/status")
        assert status["routes"][f"{ns}/echo"]["upstream"] == {"scheme": "h2c", "serverName": ""}
        assert status["http2UpstreamPools"], status  # the call went over a shared h2 connection

        # At zero: the call is held until a pod is ready, then goes through.
        await scale(kube, ns, "echo", 0)
        await ready_pods(kube, ns, "echo", 0)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(
            proxy.admin + "/wake"
        ) as wake:
            call = asyncio.create_task(_call(port, "echo.test", b"cold"))
            while True:
                line = await wake.content.readline()
                assert line, "the /wake stream ended"
                if json.loads(line).get("route") == f"{ns}/echo":
                    break
            await scale(kube, ns, "echo", 1)
            reply = await call
        assert reply.endswith(b":cold")
        queue = await proxy.admin_json("/queue")
        assert queue[f"{ns}/echo"]["RequestCount"] == 2

        # The Service's port changes its appProtocol: the route follows without a restart (to
        # "https": over TLS the pod's certificate is checked against the Service's DNS name).
        for app_protocol, upstream in (
            ("https", {"scheme": "https", "serverName": f"echo.{ns}.svc"}),
            ("grpc", {"scheme": "h2c", "serverName": ""}),
        ):
            pushed = await _pushes(proxy)
            await merge_patch(kube, SERVICES, ns, "echo", {"spec": {"ports": [
                {"name": "grpc", "port": 80, "targetPort": "grpc", "appProtocol": app_protocol}
            ]}})
            await _next_pushes(proxy, pushed)
            status = await proxy.admin_json("/status")
            assert status["routes"][f"{ns}/echo"]["upstream"] == upstream
        assert (await _call(port, "echo.test", b"again")).endswith(b":again")
