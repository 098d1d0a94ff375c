"""The local kubelet, continued: Service ClusterIPs (its service proxy), gRPC probes, preStop
hooks, and the pod fields httpscale's manifests use that it accepts without acting on them."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from testcluster import MERGE_PATCH, Cluster, cluster_ip, wait_until

pytestmark = pytest.mark.k8s

Obj = dict[str, Any]

# Answers its pod name on every path, on POD_IP:PORT.
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

# Echoes every byte back as it comes; on EOF from the client it closes (a half-close test).
ECHO_APP = """
import os, socket, threading
def serve(c):
    while data := c.recv(65536):
        c.sendall(data)
    c.close()
s = socket.create_server((os.environ["POD_IP"], int(os.environ["PORT"])))
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

# Run as a pod: GET the Service four times through the address the kubelet put in its env.
CLIENT_APP = """
import os, sys, urllib.request
url = f"http://{os.environ['HELLO_SERVICE_HOST']}:{os.environ['HELLO_SERVICE_PORT']}/"
names = [urllib.request.urlopen(url, timeout=5).read().decode() for _ in range(4)]
print(" ".join(names), flush=True)
sys.exit(0 if len(set(names)) == 2 else 1)
"""

# A gRPC health server: "flip" is NOT_SERVING for its first two checks, SERVING after; any
# other service is unknown (NOT_FOUND, which a probe counts as a failure).
GRPC_HEALTH_APP = """
import os, grpc
from concurrent import futures
from grpc_health.v1 import health_pb2, health_pb2_grpc
class Flip(health_pb2_grpc.HealthServicer):
    checks = 0
    def Check(self, request, context):
        print("check", repr(request.service), flush=True)
        if request.service != "flip":
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        Flip.checks += 1
        status = health_pb2.HealthCheckResponse.SERVING if Flip.checks > 2 else \\
            health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)
server = grpc.server(futures.ThreadPoolExecutor(2))
health_pb2_grpc.add_HealthServicer_to_server(Flip(), server)
server.add_insecure_port(f"{os.environ['POD_IP']}:{os.environ['PORT']}")
server.start()
server.wait_for_termination()
"""

# Records when SIGTERM arrives (wall clock, into $MARKS), then exits.
TERM_RECORDER_APP = """
import os, signal, sys, time
def term(*_):
    with open(os.environ["MARKS"], "a") as f:
        f.write(f"term {time.time()}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
with open(os.environ["MARKS"], "a") as f:
    f.write(f"started {time.time()}\\n")
while True:
    signal.pause()
"""


@pytest.fixture
async def api(k8s_cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    if not k8s_cluster.local:
        pytest.skip("tests the local kubelet of scripts/testcluster")
    async with k8s_cluster.client() as api:
        yield api


@pytest.fixture
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    core = client.CoreV1Api(api)
    name = f"kubelet2-{os.urandom(3).hex()}"
    await core.create_namespace({"metadata": {"name": name}})
    await wait_until(core.list_namespaced_service_account, lambda sas: "default" in sas,
                     namespace=name, timeout_s=20)
    yield name
    await core.delete_namespace(name)


def _container(app: str, **more: Any) -> Obj:
    return {"name": "c", "image": "local", "command": [sys.executable, "-c", app], **more}


def _pod(name: str, container: Obj, grace_s: int = 5, **spec: Any) -> Obj:
    return {"metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": grace_s, "containers": [container],
                     **spec}}


def _ready(pod: Obj | None) -> bool:
    conds = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _deployment(name: str, app: str, replicas: int) -> Obj:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [_container(
                    app, ports=[{"name": "http", "containerPort": 8080}],
                    readinessProbe={"tcpSocket": {"port": "http"}, "periodSeconds": 1})]},
            },
        },
    }


def _service(name: str) -> Obj:
    return {"metadata": {"name": name},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}


async def _get_names(ip: str, n: int) -> list[str]:
    """n GETs to ip:80, each on a connection of its own (each is a new proxy decision)."""
    names = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=10)) as http:
        for _ in range(n):
            async with http.get(f"http://{ip}:80/") as r:
                assert r.status == 200
                names.append(await r.text())
    return names


def _kubelet_log(cluster: Cluster) -> str:
    assert cluster.state_dir is not None
    return (cluster.state_dir / "logs" / "kubelet.log").read_text()


def _container_log(cluster: Cluster, namespace: str, pod: str) -> str:
    assert cluster.state_dir is not None
    logs = list((cluster.state_dir / "pods").glob(f"{namespace}_{pod}_*/c.log"))
    return "".join(p.read_text() for p in logs)


async def test_service_cluster_ip_spreads_over_ready_pods_and_follows_them(
        k8s_cluster: Cluster, api: client.ApiClient, namespace: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    started = time.monotonic()
    await core.create_namespaced_service(namespace, _service("hello"))
    await apps.create_namespaced_deployment(namespace, _deployment("hello", HELLO_APP, 2))
    ip = await cluster_ip(api, namespace, "hello")
    assert k8s_cluster.service_cidr is not None
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(k8s_cluster.service_cidr)

    endpoints = await k8s_cluster.proxied_endpoints(namespace, "hello", 80,
                                                    lambda eps: len(eps) == 2, timeout_s=40)
    pods = {p.status.pod_ip: p.metadata.name
            for p in (await core.list_namespaced_pod(namespace)).items}
    # The named targetPort ("http") resolved to the container's 8080 on each pod address.
    assert sorted(endpoints) == sorted(f"{pod_ip}:8080" for pod_ip in pods)

    # From this host: one connection per request, alternating over both pods.
    names = await _get_names(ip, 8)
    assert sorted(set(names)) == sorted(pods.values())
    assert names.count(names[0]) == 4, names

    # From a pod: by the address the kubelet gave it ($HELLO_SERVICE_HOST, no DNS here).
    await core.create_namespaced_pod(namespace, _pod("client", _container(CLIENT_APP),
                                                     restartPolicy="Never"))
    finished = await wait_until(
        core.list_namespaced_pod,
        lambda p: (p.get("client", {}).get("status") or {}).get("phase") in ("Succeeded",
                                                                               "Failed"),
        namespace=namespace, timeout_s=30)
    out = _container_log(k8s_cluster, namespace, "client")
    assert finished["client"]["status"]["phase"] == "Succeeded", out
    assert sorted(set(out.split())) == sorted(pods.values())

    # A pod that leaves (scaled away) gets no new connection once its endpoint is gone.
    await apps.patch_namespaced_deployment_scale(namespace=namespace, name="hello",
                                                 body={"spec": {"replicas": 1}},
                                                 _content_type=MERGE_PATCH)
    [left] = await k8s_cluster.proxied_endpoints(namespace, "hello", 80,
                                                 lambda eps: len(eps) == 1)
    remaining = pods[left.split(":")[0]]
    assert await _get_names(ip, 4) == [remaining] * 4

    # No ready endpoint: the connection is refused (reset), as kube-proxy rejects it.
    await apps.patch_namespaced_deployment_scale(namespace=namespace, name="hello",
                                                 body={"spec": {"replicas": 0}},
                                                 _content_type=MERGE_PATCH)
    await k8s_cluster.proxied_endpoints(namespace, "hello", 80, lambda eps: not eps)
    with pytest.raises(aiohttp.ClientError):
        await _get_names(ip, 1)
    print(f"service test in {time.monotonic() - started:.1f}s")  # a figure, not a pass mark


async def test_service_proxy_carries_bytes_both_ways_with_half_close(
        k8s_cluster: Cluster, api: client.ApiClient, namespace: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    await core.create_namespaced_service(namespace, _service("echo"))
    await apps.create_namespaced_deployment(namespace, _deployment("echo", ECHO_APP, 1))
    ip = await cluster_ip(api, namespace, "echo")
    await k8s_cluster.proxied_endpoints(namespace, "echo", 80, lambda eps: len(eps) == 1,
                                        timeout_s=40)
    payload = os.urandom(8 << 20)  # far more than any socket or proxy buffer holds
    reader, writer = await asyncio.open_connection(ip, 80)
    try:
        async def send() -> None:
            for i in range(0, len(payload), 1 << 20):
                writer.write(payload[i:i + (1 << 20)])
                await writer.drain()
            writer.write_eof()  # the echo server closes once it sees this EOF

        async with asyncio.timeout(30):
            sending = asyncio.create_task(send())
            echoed = await reader.read(-1)  # until the server's close comes through
            await sending
    finally:
        writer.close()
    assert len(echoed) == len(payload)
    assert echoed == payload


async def test_grpc_readiness_probe_follows_health_status(
        k8s_cluster: Cluster, api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod(namespace, _pod("grpc", _container(
        GRPC_HEALTH_APP, ports=[{"name": "grpc", "containerPort": 9090}],
        readinessProbe={"grpc": {"port": 9090, "service": "flip"}, "periodSeconds": 1})))
    seen_running_unready = False

    def ready_after_unready(pods: dict[str, Obj]) -> bool:
        nonlocal seen_running_unready
        pod = pods.get("grpc")
        if (pod or {}).get("status", {}).get("phase") == "Running" and not _ready(pod):
            seen_running_unready = True
        return _ready(pod)

    await wait_until(core.list_namespaced_pod, ready_after_unready, namespace=namespace,
                     timeout_s=30)
    assert seen_running_unready
    checks = _container_log(k8s_cluster, namespace, "grpc").splitlines()
    # NOT_SERVING twice kept it unready; the third check (SERVING) made it Ready.
    assert checks[:3] == ["check 'flip'"] * 3, checks


async def test_grpc_liveness_probe_failure_restarts(
        k8s_cluster: Cluster, api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    # The health server does not know "nope": NOT_FOUND, a failed probe.
    await core.create_namespaced_pod(namespace, _pod("grpc-dead", _container(
        GRPC_HEALTH_APP, ports=[{"containerPort": 9090}],
        livenessProbe={"grpc": {"port": 9090, "service": "nope"}, "periodSeconds": 1,
                       "failureThreshold": 1, "initialDelaySeconds": 1}), grace_s=5))

    def restarted(pods: dict[str, Obj]) -> bool:
        cs = (pods.get("grpc-dead", {}).get("status") or {}).get("containerStatuses") or []
        return bool(cs) and cs[0]["restartCount"] >= 1

    pods = await wait_until(core.list_namespaced_pod, restarted, namespace=namespace,
                            timeout_s=30)
    last = pods["grpc-dead"]["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 128 + 15
    assert "check 'nope'" in _container_log(k8s_cluster, namespace, "grpc-dead")


def _hook_word(marks: Path) -> str:
    return Path(f"{marks}.hook").read_text().split()[2]


def _marks(path: Path) -> dict[str, float]:
    lines = path.read_text().splitlines() if path.exists() else []
    return {k: float(v) for k, v in (line.split() for line in lines)}


async def _run_until_deleted(core: client.CoreV1Api, namespace: str, pod: Obj,
                             marks: Path) -> float:
    """Create the pod, wait until it has started, delete it; the wall time of the delete."""
    name = pod["metadata"]["name"]
    await core.create_namespaced_pod(namespace, pod)
    await wait_until(core.list_namespaced_pod, lambda p: _ready(p.get(name)),
                     namespace=namespace, timeout_s=30)
    assert "started" in _marks(marks)
    deleted_at = time.time()
    await core.delete_namespaced_pod(name, namespace)
    await wait_until(core.list_namespaced_pod, lambda p: name not in p, namespace=namespace,
                     timeout_s=30)
    return deleted_at


async def test_prestop_sleep_runs_before_sigterm(
        api: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    marks = tmp_path / "marks"
    pod = _pod("sleepy", _container(
        TERM_RECORDER_APP, env=[{"name": "MARKS", "value": str(marks)}],
        lifecycle={"preStop": {"sleep": {"seconds": 2}}},
        readinessProbe={"exec": {"command": ["test", "-e", str(marks)]}, "periodSeconds": 1}),
        grace_s=10)
    deleted_at = await _run_until_deleted(core, namespace, pod, marks)
    term_after = _marks(marks)["term"] - deleted_at
    # SIGTERM came only after the 2 s hook, well within the 10 s grace period.
    assert 2.0 <= term_after < 5.0, term_after


async def test_prestop_exec_runs_in_container_env_and_is_cut_at_grace(
        api: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(api)
    marks = tmp_path / "marks"
    # The hook writes its mark, with the container's $HOOK_WORD, then would sleep 30 s: the
    # 2 s grace period cuts it, and SIGTERM follows at once.
    hook = (f'echo "prestop $(date +%s.%N) $HOOK_WORD" >> {marks}.hook; '
            f'echo "hook $(date +%s.%N)" >> {marks}; exec sleep 30')
    pod = _pod("hooked", _container(
        TERM_RECORDER_APP, env=[{"name": "MARKS", "value": str(marks)},
                                {"name": "HOOK_WORD", "value": "from-env"}],
        lifecycle={"preStop": {"exec": {"command": ["sh", "-c", hook]}}},
        readinessProbe={"exec": {"command": ["test", "-e", str(marks)]}, "periodSeconds": 1}),
        grace_s=2)
    deleted_at = await _run_until_deleted(core, namespace, pod, marks)
    got = _marks(marks)
    assert deleted_at <= got["hook"] < got["term"]
    assert 2.0 <= got["term"] - deleted_at < 4.5, got["term"] - deleted_at
    assert _hook_word(marks) == "from-env"


async def test_pod_fields_of_the_manifests_are_accepted(
        api: client.ApiClient, namespace: str) -> None:
    """Fields a Deployment of httpscale carries that the local kubelet has no use for
    (securityContext, resources, affinity, topologySpreadConstraints) do not stop it; named
    ports, fieldRef env and an httpGet probe on a named port work."""
    core = client.CoreV1Api(api)
    container = _container(
        HELLO_APP,
        ports=[{"name": "admin", "containerPort": 9000}, {"name": "http", "containerPort": 8080}],
        env=[{"name": "PORT", "value": "8080"},
             {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        resources={"requests": {"cpu": "100m", "memory": "64Mi"},
                   "limits": {"memory": "256Mi"}},
        securityContext={"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                         "allowPrivilegeEscalation": False,
                         "capabilities": {"drop": ["ALL"]},
                         "seccompProfile": {"type": "RuntimeDefault"}},
        readinessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        livenessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    )
    labels = {"app": "fields"}
    pod = _pod("fields", container, grace_s=3,
               securityContext={"runAsNonRoot": True, "fsGroup": 65532},
               affinity={"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                   {"weight": 100, "podAffinityTerm": {
                       "labelSelector": {"matchLabels": labels},
                       "topologyKey": "kubernetes.io/hostname"}}]}},
               topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                           "whenUnsatisfiable": "ScheduleAnyway",
                                           "labelSelector": {"matchLabels": labels}}])
    pod["metadata"]["labels"] = labels
    await core.create_namespaced_pod(namespace, pod)
    pods = await wait_until(core.list_namespaced_pod, lambda p: _ready(p.get("fields")),
                            namespace=namespace, timeout_s=30)
    ip = pods["fields"]["status"]["podIP"]
    async with aiohttp.ClientSession() as http, http.get(f"http://{ip}:8080/") as r:
        assert await r.text() == "fields"


async def test_service_proxy_tries_the_next_endpoint_when_one_refuses(
        k8s_cluster: Cluster, api: client.ApiClient, namespace: str) -> None:
    """A selector-less Service whose EndpointSlice (written here) lists a dead address and
    a live one, both reserved pod-CIDR addresses: every connection reaches the live one."""
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    dead, live = k8s_cluster.reserved_address(14), k8s_cluster.reserved_address(15)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"live")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, live, 7070)
    try:
        await core.create_namespaced_service(namespace, {
            "metadata": {"name": "manual"},
            "spec": {"ports": [{"port": 80, "targetPort": 7070}]}})
        await discovery.create_namespaced_endpoint_slice(namespace, {
            "metadata": {"name": "manual-1", "labels": {
                "kubernetes.io/service-name": "manual",
                "endpointslice.kubernetes.io/managed-by": "httpscale-tests"}},
            "addressType": "IPv4",
            # `ready` unset counts as ready, as kube-proxy reads it.
            "endpoints": [{"addresses": [dead]}, {"addresses": [live]}],
            "ports": [{"name": "", "port": 7070, "protocol": "TCP"}]})
        ip = await cluster_ip(api, namespace, "manual")
        await k8s_cluster.proxied_endpoints(namespace, "manual", 80,
                                            lambda eps: len(eps) == 2)
        for _ in range(4):  # round robin: half of them start with the dead one
            reader, writer = await asyncio.open_connection(ip, 80)
            try:
                assert await asyncio.wait_for(reader.read(-1), 10) == b"live"
            finally:
                writer.close()
        assert _kubelet_log(k8s_cluster).count(f"{dead}:7070: ConnectionRefusedError") >= 2
    finally:
        server.close()
        await server.wait_closed()
