"""The local kubelet's own promises: grace then SIGKILL, restarts with backoff, probes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from testcluster import Cluster, wait_until

pytestmark = pytest.mark.k8s

Obj = dict[str, Any]

# Ignores SIGTERM, listens on POD_IP:PORT (for the tcpSocket probe).
STUBBORN_APP = """
import os, signal, socket
signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.create_server((os.environ["POD_IP"], int(os.environ["PORT"])))
while True:
    s.accept()[0].close()
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
    name = f"kubelet-{os.urandom(3).hex()}"
    await core.create_namespace({"metadata": {"name": name}})
    await wait_until(core.list_namespaced_service_account, lambda sas: "default" in sas,
                     namespace=name, timeout_s=20)
    yield name
    await core.delete_namespace(name)


def _pod(name: str, container: Obj, grace_s: int = 30) -> Obj:
    return {
        "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": grace_s,
                 "containers": [{"name": "c", "image": "local", **container}]},
    }


def _ready(pods: dict[str, Obj], name: str) -> bool:
    conds = pods.get(name, {}).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


async def test_sigterm_ignored_means_sigkill_after_grace(
        api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod(namespace, _pod("stubborn", {
        "command": [sys.executable, "-c", STUBBORN_APP],
        "ports": [{"containerPort": 7000}],
        "readinessProbe": {"tcpSocket": {"port": 7000}, "periodSeconds": 1},
    }, grace_s=2))
    pods = await wait_until(core.list_namespaced_pod, lambda p: _ready(p, "stubborn"),
                            namespace=namespace, timeout_s=30)
    status = pods["stubborn"]["status"]
    pid = int(status["containerStatuses"][0]["containerID"].removeprefix("local://"))
    assert status["podIP"] == status["podIPs"][0]["ip"]
    assert status["phase"] == "Running"

    started = time.monotonic()
    await core.delete_namespaced_pod("stubborn", namespace)
    await wait_until(core.list_namespaced_pod, lambda p: "stubborn" not in p,
                     namespace=namespace, timeout_s=20)
    took = time.monotonic() - started
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # It ignored SIGTERM, so only the SIGKILL after the 2 s grace period ended it (within the
    # wait's 20 s: it would otherwise sleep for 600); not before the grace was up.
    assert took >= 2.0, took


async def test_crashed_container_restarts_with_backoff(
        api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod(namespace, _pod("crasher", {
        "command": [sys.executable, "-c", "import sys; sys.exit(3)"],
    }, grace_s=1))

    def crashed_after_two_restarts(pods: dict[str, Obj]) -> bool:
        cs = pods.get("crasher", {}).get("status", {}).get("containerStatuses") or []
        return bool(cs) and cs[0]["restartCount"] >= 2 and "waiting" in cs[0]["state"]

    started = time.monotonic()
    pods = await wait_until(core.list_namespaced_pod, crashed_after_two_restarts,
                            namespace=namespace, timeout_s=30)
    took = time.monotonic() - started
    cs = pods["crasher"]["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert not cs["ready"]
    # Backoff 1 s then 2 s before the second restart.
    assert took >= 3.0, took
    await core.delete_namespaced_pod("crasher", namespace)
    await wait_until(core.list_namespaced_pod, lambda p: "crasher" not in p,
                     namespace=namespace, timeout_s=20)


async def test_failing_readiness_probe_keeps_pod_unready(
        api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    # Listens on nothing: its httpGet readiness probe fails.
    await core.create_namespaced_pod(namespace, _pod("unready", {
        "command": [sys.executable, "-c", "import time; time.sleep(600)"],
        "readinessProbe": {"httpGet": {"port": 8080, "path": "/"}, "periodSeconds": 1},
    }, grace_s=1))
    await wait_until(core.list_namespaced_pod,
                     lambda p: p.get("unready", {}).get("status", {}).get("phase") == "Running",
                     namespace=namespace, timeout_s=30)
    # Started after "unready" runs, with the same probe period: once this one is Ready
    # (exec probe), "unready" has been probed too.
    await core.create_namespaced_pod(namespace, _pod("exec-ready", {
        "command": [sys.executable, "-c", "import time; time.sleep(600)"],
        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
    }, grace_s=1))
    pods = await wait_until(core.list_namespaced_pod, lambda p: _ready(p, "exec-ready"),
                            namespace=namespace, timeout_s=30)
    unready = pods["unready"]["status"]
    assert unready["phase"] == "Running"
    assert not _ready(pods, "unready")
    assert not unready["containerStatuses"][0]["ready"]


# Run as a pod: who am I (SelfSubjectReview), and may I list pods elsewhere (no).
WHOAMI_APP = """
import asyncio, os, sys
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

async def main():
    await config.load_kube_config()  # $KUBECONFIG, from the local kubelet
    async with client.ApiClient() as api:
        review = await client.AuthenticationV1Api(api).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        user = review.status.user_info.username
        print(user, flush=True)
        try:
            await client.CoreV1Api(api).list_namespaced_pod("kube-system")
            return 3
        except ApiException as e:
            if e.status != 403:
                return 4
    return 0 if user == os.environ["EXPECTED_USER"] else 2

sys.exit(asyncio.run(main()))
"""


async def test_pod_acts_as_its_service_account(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "robot"}})
    pod = _pod("whoami", {
        "command": [sys.executable, "-c", WHOAMI_APP],
        "env": [{"name": "EXPECTED_USER",
                 "value": f"system:serviceaccount:{namespace}:robot"}],
    }, grace_s=1)
    pod["spec"].update(serviceAccountName="robot", restartPolicy="Never")
    await core.create_namespaced_pod(namespace, pod)

    def finished(pods: dict[str, Obj]) -> bool:
        return pods.get("whoami", {}).get("status", {}).get("phase") in ("Succeeded", "Failed")

    pods = await wait_until(core.list_namespaced_pod, finished, namespace=namespace,
                            timeout_s=30)
    state = pods["whoami"]["status"]["containerStatuses"][0]["state"]
    assert pods["whoami"]["status"]["phase"] == "Succeeded", state


async def test_failing_liveness_probe_restarts_container(
        api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    # Listens on nothing, so the tcpSocket liveness probe fails at once.
    await core.create_namespaced_pod(namespace, _pod("dead", {
        "command": [sys.executable, "-c", "import time; time.sleep(600)"],
        "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1,
                          "failureThreshold": 1},
    }, grace_s=5))

    def restarted(pods: dict[str, Obj]) -> bool:
        cs = pods.get("dead", {}).get("status", {}).get("containerStatuses") or []
        return bool(cs) and cs[0]["restartCount"] >= 1

    pods = await wait_until(core.list_namespaced_pod, restarted, namespace=namespace,
                            timeout_s=30)
    last = pods["dead"]["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 128 + 15  # SIGTERM ended it, as a runtime reports it
