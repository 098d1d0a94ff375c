"""scripts/testcluster's own promises: the kube-apiserver stops and restarts with nothing lost
and the controllers and the kubelet working after it; KEDA's CRDs, from its Go module, are
installed and validate as KEDA's schema says."""

from __future__ import annotations

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
from testcluster import MERGE_PATCH, REQUIRE_ENV, Cluster, install_keda_crds, wait_until

pytestmark = pytest.mark.k8s

Obj = dict[str, Any]

KEDA = ("keda.sh", "v1alpha1")
# Answers its pod name, on POD_IP:PORT (both set by the local kubelet).
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


async def _new_namespace(core: client.CoreV1Api) -> str:
    name = f"tc-{secrets.token_hex(3)}"
    await core.create_namespace({"metadata": {"name": name}})
    # Pods are refused until the serviceaccount controller has made `default`.
    await wait_until(core.list_namespaced_service_account, lambda sas: "default" in sas,
                     namespace=name, timeout_s=20)
    return name


@pytest.fixture
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    core = client.CoreV1Api(api)
    name = await _new_namespace(core)
    yield name
    await core.delete_namespace(name)


@pytest.fixture
def local(k8s_cluster: Cluster) -> Cluster:
    """The cluster, if its processes run here (to stop one, reach pod addresses)."""
    if not k8s_cluster.local:
        pytest.skip("stops and starts the kube-apiserver of scripts/testcluster")
    if k8s_cluster.pod_cidr and k8s_cluster.pod_cidr.startswith("127."):
        reason = ("pods got loopback addresses (no CAP_NET_ADMIN for the pod route), which "
                  "EndpointSlices reject")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return k8s_cluster


def _container(name: str) -> Obj:
    return {
        "name": name, "image": "local", "command": [sys.executable, "-c", HELLO_APP],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }


def _deployment(name: str) -> Obj:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"terminationGracePeriodSeconds": 5,
                                  "containers": [_container(name)]}},
        },
    }


def _ready_addresses(slices: dict[str, Obj]) -> dict[str, str]:
    """pod name -> address, for the ready endpoints of every slice."""
    return {ep["targetRef"]["name"]: ep["addresses"][0]
            for s in slices.values() for ep in s.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready")}


def _ready(pod: Obj | None) -> bool:
    conds = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _scaled_object(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": 0,
            "maxReplicaCount": 3,
            "triggers": [{"type": "external-push",
                          "metadata": {"scalerAddress": "httpscale-scaler.keda:9090",
                                       "host": "hello.example"}}],
            **spec,
        },
    }


async def _get(http: aiohttp.ClientSession, ip: str) -> str:
    async with http.get(f"http://{ip}:8080/") as r:
        assert r.status == 200
        return await r.text()


async def test_keda_crds_validate_scaled_objects(
        keda_crds: list[str], api: client.ApiClient, namespace: str) -> None:
    assert {"scaledobjects.keda.sh", "scaledjobs.keda.sh", "triggerauthentications.keda.sh",
            "clustertriggerauthentications.keda.sh"} <= set(keda_crds)
    custom = client.CustomObjectsApi(api)
    ok = await custom.create_namespaced_custom_object(
        *KEDA, namespace, "scaledobjects", _scaled_object("hello"), dry_run="All")
    assert ok["kind"] == "ScaledObject"
    assert ok["spec"]["triggers"][0]["type"] == "external-push"
    assert ok["spec"]["triggers"][0]["metadata"]["scalerAddress"] == "httpscale-scaler.keda:9090"

    # The CRD's OpenAPI schema: scaleTargetRef is required.
    bad = _scaled_object("no-target")
    del bad["spec"]["scaleTargetRef"]
    with pytest.raises(ApiException) as missing:
        await custom.create_namespaced_custom_object(
            *KEDA, namespace, "scaledobjects", bad, dry_run="All")
    assert missing.value.status == 422
    assert "spec.scaleTargetRef: Required value" in str(missing.value.body)
    # Its CEL rule (x-kubernetes-validations), run by the apiserver.
    with pytest.raises(ApiException) as cel:
        await custom.create_namespaced_custom_object(
            *KEDA, namespace, "scaledobjects",
            _scaled_object("inverted", minReplicaCount=5, maxReplicaCount=2), dry_run="All")
    assert cel.value.status == 422
    assert "minReplicaCount must be less than or equal to maxReplicaCount" in str(cel.value.body)
    # dryRun=All stored nothing.
    stored = await custom.list_namespaced_custom_object(*KEDA, namespace, "scaledobjects")
    assert stored["items"] == []


async def test_install_keda_crds_again_replaces(
        keda_crds: list[str], api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    before = await ext.read_custom_resource_definition("scaledobjects.keda.sh")
    # Every one exists now: each takes the replace path and is Established again at once.
    assert await install_keda_crds(api) == keda_crds
    after = await ext.read_custom_resource_definition("scaledobjects.keda.sh")
    assert after.metadata.uid == before.metadata.uid


async def test_apiserver_restart_loses_nothing_and_controllers_carry_on(
        local: Cluster, keda_crds: list[str], api: client.ApiClient, namespace: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    custom, discovery = client.CustomObjectsApi(api), client.DiscoveryV1Api(api)
    cm = await core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "before"}, "data": {"k": "v"}})
    so = await custom.create_namespaced_custom_object(
        *KEDA, namespace, "scaledobjects", _scaled_object("hello"))
    await core.create_namespaced_service(namespace, {
        "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })
    await apps.create_namespaced_deployment(namespace, _deployment("hello"))

    started = time.monotonic()
    await local.restart_apiserver()
    restarted = time.monotonic() - started

    # The same client: the old server closed its pooled connections; new ones are made.
    got = await core.read_namespaced_config_map("before", namespace)
    assert (got.metadata.uid, got.data) == (cm.metadata.uid, {"k": "v"})
    got_so = await custom.get_namespaced_custom_object(*KEDA, namespace, "scaledobjects", "hello")
    assert got_so["metadata"]["uid"] == so["metadata"]["uid"]
    # KEDA's kinds are served by the new process, schema and all.
    await custom.create_namespaced_custom_object(
        *KEDA, namespace, "scaledobjects", _scaled_object("after"), dry_run="All")
    with pytest.raises(ApiException) as inverted:
        await custom.create_namespaced_custom_object(
            *KEDA, namespace, "scaledobjects",
            _scaled_object("inverted", minReplicaCount=5, maxReplicaCount=2), dry_run="All")
    assert inverted.value.status == 422

    # The controller-manager (deployment, replicaset, endpointslice controllers) and the
    # local kubelet (binding, running, readiness) reconnected: scaling gets ready endpoints.
    await apps.patch_namespaced_deployment_scale(
        "hello", namespace, {"spec": {"replicas": 2}}, _content_type=MERGE_PATCH)
    slices = await wait_until(
        discovery.list_namespaced_endpoint_slice, lambda s: len(_ready_addresses(s)) == 2,
        namespace=namespace, label_selector="kubernetes.io/service-name=hello", timeout_s=40)
    ready_after = time.monotonic() - started
    async with aiohttp.ClientSession() as http:
        for name, ip in _ready_addresses(slices).items():
            assert await _get(http, ip) == name
    # The serviceaccount controller: a new namespace gets its `default` ServiceAccount.
    await core.delete_namespace(await _new_namespace(core))
    # And back to zero: the kubelet stops the pods' processes, then they are deleted.
    await apps.patch_namespaced_deployment_scale(
        "hello", namespace, {"spec": {"replicas": 0}}, _content_type=MERGE_PATCH)
    await wait_until(core.list_namespaced_pod, lambda p: not p, namespace=namespace,
                     label_selector="app=hello", timeout_s=30)
    print(f"apiserver restarted in {restarted:.1f}s; 2 ready endpoints "
          f"{ready_after:.1f}s after the restart began")
    assert restarted < 30


async def test_apiserver_held_down_pods_run_on(
        local: Cluster, api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod(namespace, {
        "metadata": {"name": "steady"},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [_container("c")]},
    })
    pods = await wait_until(core.list_namespaced_pod, lambda p: _ready(p.get("steady")),
                            namespace=namespace, timeout_s=30)
    status = pods["steady"]["status"]
    ip, container_id = status["podIP"], status["containerStatuses"][0]["containerID"]
    pid = int(container_id.removeprefix("local://"))

    await local.stop_apiserver()
    try:
        with pytest.raises(aiohttp.ClientConnectorError):  # refused: nothing listens
            await core.read_namespaced_pod("steady", namespace)
        # The pod neither knows nor cares: its process runs and serves.
        os.kill(pid, 0)
        async with aiohttp.ClientSession() as http:
            assert await _get(http, ip) == "steady"
    finally:
        await local.start_apiserver()  # the session's other tests need it, pass or fail

    pod = await core.read_namespaced_pod("steady", namespace)
    assert pod.status.container_statuses[0].container_id == container_id
    assert pod.status.container_statuses[0].restart_count == 0
    os.kill(pid, 0)
    # The kubelet watches again: it sees the deletion and stops the process.
    await core.delete_namespaced_pod("steady", namespace)
    await wait_until(core.list_namespaced_pod, lambda p: "steady" not in p,
                     namespace=namespace, timeout_s=30)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
