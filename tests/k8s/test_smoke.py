"""Smoke tests of the test control plane: real /scale, real EndpointSlices, real processes,
real CRD schema validation."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from testcluster import (
    MERGE_PATCH,
    REQUIRE_ENV,
    Cluster,
    allowed,
    service_account_token,
    wait_until,
)

pytestmark = pytest.mark.k8s

Obj = dict[str, Any]

# The app: answers its pod name on / and /healthz, on POD_IP:PORT as the local kubelet sets.
HELLO_APP = """
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


@pytest.fixture
async def api(k8s_cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    async with k8s_cluster.client() as api:
        yield api


@pytest.fixture
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    core = client.CoreV1Api(api)
    name = f"smoke-{secrets.token_hex(3)}"
    await core.create_namespace({"metadata": {"name": name}})
    # The ServiceAccount admission plugin refuses pods until the namespace's default
    # ServiceAccount exists; the serviceaccount controller creates it.
    await wait_until(core.list_namespaced_service_account, lambda sas: "default" in sas,
                     namespace=name, timeout_s=20)
    yield name
    await core.delete_namespace(name)


def _ready_addresses(slices: dict[str, Obj]) -> dict[str, str]:
    """pod name -> address, for the ready endpoints of every slice."""
    out = {}
    for s in slices.values():
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready"):
                out[ep["targetRef"]["name"]] = ep["addresses"][0]
    return out


def _deployment(image: str, command: list[str]) -> Obj:
    labels = {"app": "hello"}
    return {
        "metadata": {"name": "hello", "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "hello",
                        "image": image,
                        "command": command,
                        "env": [{"name": "POD_NAME",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "POD_IP",
                                 "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                {"name": "PORT", "value": "8080"}],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                           "periodSeconds": 1},
                    }],
                },
            },
        },
    }


async def _scale(apps: client.AppsV1Api, ns: str, replicas: int) -> None:
    # Through the /scale subresource, as KEDA and the HPA do.
    await apps.patch_namespaced_deployment_scale(
        "hello", ns, {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH)


async def test_deployment_scaled_through_scale_gets_real_endpoints(
        k8s_cluster: Cluster, api: client.ApiClient, namespace: str) -> None:
    if k8s_cluster.local and k8s_cluster.pod_cidr and k8s_cluster.pod_cidr.startswith("127."):
        reason = ("pods got loopback addresses (no CAP_NET_ADMIN for the pod route), which "
                  "EndpointSlices reject")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    started = time.monotonic()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    discovery = client.DiscoveryV1Api(api)
    if k8s_cluster.local:
        command = [sys.executable, "-c", HELLO_APP]
        image = "local"
    else:
        command, image = ["python", "-c", HELLO_APP], "python:3.11-slim"
    await core.create_namespaced_service(namespace, {
        "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })
    await apps.create_namespaced_deployment(namespace, _deployment(image, command))

    await _scale(apps, namespace, 2)
    slices = await wait_until(
        discovery.list_namespaced_endpoint_slice, lambda s: len(_ready_addresses(s)) == 2,
        namespace=namespace, label_selector="kubernetes.io/service-name=hello", timeout_s=40)
    ready = _ready_addresses(slices)
    scaled_up = time.monotonic() - started

    pods = await core.list_namespaced_pod(namespace, label_selector="app=hello")
    assert sorted(p.metadata.name for p in pods.items) == sorted(ready)
    for p in pods.items:
        assert p.status.pod_ip == ready[p.metadata.name]
    if not k8s_cluster.local:
        return  # pod addresses of e.g. kind need not be reachable from here, nor its processes
    async with aiohttp.ClientSession() as http:
        for name, ip in ready.items():
            async with http.get(f"http://{ip}:8080/") as r:
                assert r.status == 200
                assert await r.text() == name

    pids = [int(p.status.container_statuses[0].container_id.removeprefix("local://"))
            for p in pods.items]
    for pid in pids:
        os.kill(pid, 0)  # alive: raises if not

    await _scale(apps, namespace, 0)
    # The local kubelet deletes a pod for good only once its processes have exited.
    await wait_until(core.list_namespaced_pod, lambda p: not p, namespace=namespace,
                     label_selector="app=hello", timeout_s=20)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    async with aiohttp.ClientSession() as http:
        for ip in ready.values():
            with pytest.raises(aiohttp.ClientConnectionError):
                async with http.get(f"http://{ip}:8080/"):
                    pass
    total = time.monotonic() - started
    print(f"scaled 0->2 with ready endpoints in {scaled_up:.1f}s, whole test {total:.1f}s")
    assert total < 60


async def test_crd_schema_rejects_invalid_object(api: client.ApiClient, namespace: str) -> None:
    ext, custom = client.ApiextensionsV1Api(api), client.CustomObjectsApi(api)
    group = f"t{secrets.token_hex(3)}.httpscale.test"
    name = f"widgets.{group}"
    await ext.create_custom_resource_definition({
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["replicas"],
                        "properties": {"replicas": {"type": "integer", "minimum": 0}},
                    }},
                }},
            }],
        },
    })
    try:
        def established(crds: dict[str, Obj]) -> bool:
            # A new CRD's status may hold `conditions: null` at first.
            conds = (crds.get(name, {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        await wait_until(ext.list_custom_resource_definition, established,
                         field_selector=f"metadata.name={name}", timeout_s=20)

        def widget(n: str, spec: Obj) -> Obj:
            return {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": n},
                    "spec": spec}

        ok = await custom.create_namespaced_custom_object(
            group, "v1", namespace, "widgets", widget("good", {"replicas": 2}))
        assert ok["spec"] == {"replicas": 2}
        with pytest.raises(ApiException) as bad:
            await custom.create_namespaced_custom_object(
                group, "v1", namespace, "widgets", widget("bad", {"replicas": -1}))
        assert bad.value.status == 422
        assert "spec.replicas" in str(bad.value.body)
        with pytest.raises(ApiException) as missing:
            await custom.create_namespaced_custom_object(
                group, "v1", namespace, "widgets", widget("missing", {}))
        assert missing.value.status == 422
        assert "spec.replicas: Required value" in str(missing.value.body)
    finally:
        await ext.delete_custom_resource_definition(name)


async def test_service_account_gets_exactly_what_rbac_grants(
        k8s_cluster: Cluster, api: client.ApiClient, namespace: str) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = await service_account_token(api, namespace, "reader")
    async with k8s_cluster.client(token) as as_sa:
        sa_core = client.CoreV1Api(as_sa)
        with pytest.raises(ApiException) as denied:
            await sa_core.list_namespaced_pod(namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in str(denied.value.body)

        await rbac.create_namespaced_role(namespace, {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        })
        await rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        })
        # The RBAC authorizer reads roles from an informer, with no event to await from
        # here: bounded retries until the grant shows (within moments).
        for _ in range(200):
            if await allowed(as_sa, "list", "pods", namespace=namespace):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the RoleBinding did not take effect within 10 s")
        pods = await sa_core.list_namespaced_pod(namespace)
        assert pods.items == []
        assert not await allowed(as_sa, "delete", "pods", namespace=namespace)
        assert not await allowed(as_sa, "list", "pods", namespace="default")
        assert not await allowed(as_sa, "patch", "deployments", namespace=namespace,
                                 group="apps", subresource="scale")
