"""`httpscale capacity` on a cluster: the workload held with KEDA's `paused-replicas`
annotation while it is measured, and the annotation put back whatever happens.

Real parts: the test cluster's apiserver, the session's KEDA (which acts on the annotation:
it scales the Deployment to N and stops autoscaling it), the local kubelet running the pods,
and the command as a process of its own with `--kubeconfig`. The ScaledObject has a cron
trigger that is never active, so KEDA's own decision is always 0 replicas: anything above 0
is the hold, and 0 again after it is KEDA autoscaling once more.

The interceptor is played by a loopback server of this test (the URL names it, as the URL
names an Ingress or a port-forward): the load stays on 127.0.0.1, and what is tested here is
the hold around it. The load itself, through the real interceptor, is tests/capacity's.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web
from components import app_deployment
from keda import Keda
from kubetools import until
from localrun import communicate
from testcluster import Cluster

from httpscale.capacity.clusterhold import PAUSED_REPLICAS
from httpscale.kube.api import MERGE_PATCH, Kube, Obj
from httpscale.kube.resources import DEPLOYMENTS, HTTPSCALEDOBJECTS, SCALEDOBJECTS

pytestmark = [pytest.mark.k8s, pytest.mark.slow, pytest.mark.timeout(240)]

CAPACITY = (
    "from httpscale.capacity.cli import capacity_command; "
    "capacity_command(prog_name='httpscale capacity')"
)
# Short, bounded load: this module tests the hold, not the knee.
QUICK = ("--max-duration", "2s", "--step-duration", "0.5s", "--warmup", "0.2s",
         "--max-users", "3", "--output", "json")
NEVER = {"timezone": "UTC", "start": "0 0 1 1 *", "end": "1 0 1 1 *", "desiredReplicas": "1"}


def scaled_object(name: str) -> Obj:
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": 0, "maxReplicaCount": 3,
            "pollingInterval": 1, "cooldownPeriod": 1,
            "triggers": [{"type": "cron", "metadata": NEVER}],
        },
    }


def httpso(name: str, host: str) -> Obj:
    return {
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": name},
        "spec": {"hosts": [host], "scaleTargetRef": {"name": name, "service": name, "port": 80},
                 "replicas": {"min": 0, "max": 3}},
    }


def never_ready(name: str) -> Obj:
    """A Deployment whose pods run but never pass readiness (nothing listens)."""
    dep = app_deployment(name, replicas=0)
    [container] = dep["spec"]["template"]["spec"]["containers"]
    container["command"] = [sys.executable, "-c", "import time; time.sleep(600)"]
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    return dep


class StandIn:
    """The interceptor's stand-in on 127.0.0.1: 200 to anything; `first` set by the first
    request (the command's preflight, sent once the replicas are held and ready)."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.requests = 0
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.first.set()
        return web.Response(text="ok\n")


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    server = StandIn()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


Make = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_web(keda: Keda, kube: Kube, ns: str) -> Make:
    """Deployment, ScaledObject (KEDA's) and HTTPScaledObject `web`; its host. Its pods get
    ready unless `ready=False` (then they run, and never pass readiness)."""

    async def make(ready: bool = True) -> str:
        host = f"{ns}.localhost"
        dep = app_deployment("web", replicas=0) if ready else never_ready("web")
        await kube.request("POST", DEPLOYMENTS.path(ns), body=dep)
        await kube.request("POST", SCALEDOBJECTS.path(ns), body=scaled_object("web"))
        await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("web", host))
        return host

    return make


async def start(cluster: Cluster, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CAPACITY, *args, "--kubeconfig", str(cluster.kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    status, out, err = await communicate(proc, 120)
    return status, out.decode(), err.decode()


async def annotation(kube: Kube, ns: str) -> str | None:
    so = await kube.request("GET", SCALEDOBJECTS.path(ns, "web"))
    value: str | None = ((so.get("metadata") or {}).get("annotations") or {}).get(PAUSED_REPLICAS)
    return value


def replicas(n: int) -> Any:
    def done(deps: Mapping[str, Obj]) -> bool:
        return any(d["spec"].get("replicas") == n for d in deps.values())

    return done


async def test_held_while_measured_then_given_back_to_keda(
    k8s_cluster: Cluster, kube: Kube, ns: str, make_web: Make, stand_in: StandIn
) -> None:
    web_app = await make_web()
    url = f"http://{web_app}:{stand_in.port}/"
    proc = await start(k8s_cluster, url, "--replicas", "2", *QUICK)
    async with asyncio.timeout(120):
        await stand_in.first.wait()
    # Found through the HTTPScaledObject serving the URL's host; held at 2, both ready.
    assert await annotation(kube, ns) == "2"
    dep = await kube.request("GET", DEPLOYMENTS.path(ns, "web"))
    assert (dep["spec"]["replicas"], dep["status"].get("readyReplicas")) == (2, 2)

    code, out, err = await finish(proc)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["target"] == {"mode": "cluster", "namespace": ns, "scaledobject": "web",
                             "workload": {"kind": "Deployment", "name": "web"}}
    assert doc["replicas"] == 2 and len(doc["steps"]) >= 1
    assert stand_in.requests > len(doc["steps"])
    # Per replica: the whole measured rate over the two held replicas.
    assert doc["knee_rps"] == pytest.approx(doc["knee"]["rps"] / 2, abs=0.01)
    assert f"holding ScaledObject {ns}/web (Deployment web) at 2 replicas..." in err
    # Released: no annotation, and KEDA autoscales again (its trigger says 0).
    assert await annotation(kube, ns) is None
    await until(kube, DEPLOYMENTS, ns, replicas(0), timeout_s=90)


async def test_a_failure_after_the_hold_puts_the_previous_value_back(
    k8s_cluster: Cluster, kube: Kube, ns: str, make_web: Make
) -> None:
    web_app = await make_web()
    # Someone had paused it at 0 already: that is what must be there afterwards.
    await kube.request("PATCH", SCALEDOBJECTS.path(ns, "web"), content_type=MERGE_PATCH,
                       body={"metadata": {"annotations": {PAUSED_REPLICAS: "0"}}})
    # Named, not found; nothing listens on port 1: the preflight fails after the hold.
    proc = await start(k8s_cluster, f"http://{web_app}:1/", "--namespace", ns,
                       "--scaledobject", "web", *QUICK)
    code, out, err = await finish(proc)
    assert (code, out) == (2, ""), err
    assert f"cannot reach http://{web_app}:1/ at http://127.0.0.1:1" in err
    assert f"holding ScaledObject {ns}/web (Deployment web) at 1 replica..." in err
    assert await annotation(kube, ns) == "0"
    await until(kube, DEPLOYMENTS, ns, replicas(0), timeout_s=90)


async def test_replicas_that_never_get_ready_time_out_and_are_released(
    k8s_cluster: Cluster, kube: Kube, ns: str, make_web: Make
) -> None:
    web_app = await make_web(ready=False)
    proc = await start(k8s_cluster, f"http://{web_app}:1/", "--hold-timeout", "4s", *QUICK)
    code, out, err = await finish(proc)
    assert (code, out) == (1, ""), err
    assert (f"Deployment {ns}/web: 0 of 1 replicas ready after 4s with {PAUSED_REPLICAS}=1 "
            "on ScaledObject web") in err
    assert await annotation(kube, ns) is None


async def test_ctrl_c_while_holding_releases_and_exits_130(
    k8s_cluster: Cluster, kube: Kube, ns: str, make_web: Make
) -> None:
    web_app = await make_web(ready=False)
    proc = await start(k8s_cluster, f"http://{web_app}:1/", "--replicas", "2", *QUICK)
    # Interrupted once the annotation is there: the command is waiting for readiness.
    await until(kube, SCALEDOBJECTS, ns, lambda sos: any(
        (o["metadata"].get("annotations") or {}).get(PAUSED_REPLICAS) == "2"
        for o in sos.values()), timeout_s=60)
    proc.send_signal(signal.SIGINT)
    code, out, err = await finish(proc)
    assert code == 130, err
    doc = json.loads(out)
    assert (doc["stopped"], doc["steps"], doc["recommended"]) == ("interrupted", [], None)
    assert await annotation(kube, ns) is None

