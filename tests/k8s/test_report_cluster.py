"""`httpscale report cost --record` against the test cluster's real apiserver.

Real parts: the apiserver's `/scale` subresource and API discovery, the controller-manager
(Deployment -> ReplicaSet -> pods, and the status it writes back), the local kubelet running
the pods as processes, and the report's own client. Neither KEDA nor the operator runs: the
test scales the Deployment through `/scale` itself, as KEDA would, and waits on watches of its
status and pods and on the recording's own samples (never on the clock) between the steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from components import app_deployment, kubeconfig_for_token, scale
from kubetools import deployment, until
from localrun import communicate
from testcluster import Cluster, service_account_token

from httpscale.kube.api import Kube, Obj
from httpscale.kube.config import KubeSettings
from httpscale.kube.resources import DEPLOYMENTS, HTTPSCALEDOBJECTS, Resource
from httpscale.report.collect import DEFAULT_REQUESTS, CostSettings, collect
from httpscale.report.cost import CostReport, RouteTimeline
from httpscale.report.recordsource import Recording

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(90)]

INTERVAL = 0.2  # seconds between /scale samples: fine enough to bound the sums tightly
LAG = INTERVAL + 0.5  # how late a sample can see a change: one period and a generous GET
DRAIN_S = 2.0  # how long the app's pods keep serving after SIGTERM
PODS = Resource("", "v1", "pods", "Pod")


def httpso(name: str, target: str, *, kind: str | None = None, api_version: str | None = None,
           replicas: tuple[int, int] = (0, 3)) -> Obj:
    ref: dict[str, Any] = {"name": target, "service": target, "port": 8080}
    if kind is not None:
        ref["kind"] = kind
    if api_version is not None:
        ref["apiVersion"] = api_version
    return {
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": name},
        "spec": {"hosts": [f"{name}.example.com"], "scaleTargetRef": ref,
                 "replicas": {"min": replicas[0], "max": replicas[1]}},
    }


def with_requests(dep: Obj) -> Obj:
    """`dep` whose pods request 300m + 200m CPU and 192Mi + 64Mi memory (two containers)."""
    spec = dep["spec"]["template"]["spec"]
    [app] = spec["containers"]
    app["resources"] = {"requests": {"cpu": "300m", "memory": "192Mi"}}
    spec["containers"].append({
        "name": "sidecar", "image": "local",
        "command": [sys.executable, "-c", "import time; time.sleep(600)"],
        # A limit without a request: the apiserver makes it the request too.
        "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}},
    })
    return dep


def deployment_status(ns: str, name: str, done: Callable[[Mapping[str, Any]], bool]
                      ) -> Callable[[Mapping[str, Obj]], bool]:
    def check(objs: Mapping[str, Obj]) -> bool:
        dep = objs.get(f"{ns}/{name}")
        return dep is not None and done(dep.get("status") or {})

    return check


@contextlib.asynccontextmanager
async def recording(
    cluster: Cluster, ns: str
) -> AsyncIterator[tuple[Samples, asyncio.Event, asyncio.Task[tuple[CostReport, list[str]]]]]:
    """`collect` recording `ns` (for a minute at most) in a task of its own; the test sets
    the event to end it and awaits the task for the report. Never left running."""
    stop = asyncio.Event()
    samples = Samples()
    settings = CostSettings(record=60.0, interval=INTERVAL, namespace=ns,
                            kube=KubeSettings(kubeconfig=cluster.kubeconfig))
    task = asyncio.create_task(collect(settings, on_sample=samples, stop=stop), name="record")
    try:
        yield samples, stop, task
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Samples:
    """The recording's progress, seen through `on_sample`: waited on, not slept through."""

    def __init__(self) -> None:
        self.count = 0
        self.timelines: list[RouteTimeline] = []
        self._new = asyncio.Event()

    def __call__(self, recording: Recording) -> None:
        self.count = recording.samples
        self.timelines = recording.timelines()
        self._new.set()

    def running(self) -> float | None:
        """Replicas running at the last sample of the only route."""
        if not self.timelines or not self.timelines[0].replicas:
            return None
        return self.timelines[0].replicas[-1][1]

    async def until(self, done: Callable[[], bool], timeout_s: float = 20) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                self._new.clear()
                await self._new.wait()


async def test_record_sums_a_scale_up_and_down_with_the_pod_template_s_requests(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    # Its pods keep serving DRAIN_S after SIGTERM: stopping, they still hold their requests.
    dep = with_requests(app_deployment("web", replicas=0, drain_s=DRAIN_S))
    await kube.request("POST", DEPLOYMENTS.path(ns), body=dep)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("web", "web"))

    async with recording(k8s_cluster, ns) as (samples, stop, task):
        await samples.until(lambda: samples.running() == 0)
        t_up = time.time()
        await scale(kube, ns, "web", 2)
        await until(kube, DEPLOYMENTS, ns, deployment_status(
            ns, "web", lambda s: s.get("replicas") == 2 and s.get("readyReplicas") == 2),
            timeout_s=30)
        t_ready = time.time()
        # At 2 for ten samples at least: a stretch long enough to bound from below.
        at = samples.count
        await samples.until(lambda: samples.count >= at + 10 and samples.running() == 2)
        t_down = time.time()
        await scale(kube, ns, "web", 0)
        await until(kube, PODS, ns, lambda pods: not pods, timeout_s=30)
        t_gone = time.time()
        await samples.until(lambda: samples.running() == 0)
        stop.set()
        report, notes = await asyncio.wait_for(task, 10)

    assert notes == []
    assert report.start <= t_up and report.end >= t_gone
    assert f"sampled every {INTERVAL:g}s" in report.source
    [route] = report.routes
    timeline = route.timeline
    assert (timeline.name, timeline.route) == (f"{ns}/web", f"{ns}/web")
    assert (timeline.min_replicas, timeline.max_replicas) == (0, 3)
    # Per replica: the sum of both containers' requests (the sidecar's from its limits).
    assert timeline.requests.cpu_cores == pytest.approx(0.5)
    assert timeline.requests.memory_gib == pytest.approx(0.25)
    assert timeline.requests.source == "pod template requests"

    counts = [n for _, n in timeline.replicas]
    assert counts[0] == 0 and counts[-1] == 0 and max(counts) == 2
    assert set(counts) <= {0, 1, 2}
    assert [t for t, _ in timeline.replicas] == sorted(t for t, _ in timeline.replicas)

    # Nothing ran before the scale-up nor after the last pod was gone (plus one sample's
    # lag); two ran from readiness until they had drained after the scale-down (minus one
    # sample's lag at the start).
    used = route.used.replica_seconds
    assert 2 * (t_down + DRAIN_S - t_ready - LAG) <= used <= 2 * (t_gone - t_up + LAG)
    assert route.used.cpu_core_hours == pytest.approx(used / 3600 * 0.5)
    assert route.used.gib_hours == pytest.approx(used / 3600 * 0.25)
    assert 0 < route.mean_replicas < 2

    # Baselines over the same observed time: min 0 -> one always on; max 3.
    seconds = route.observed_seconds
    assert t_gone - t_up <= seconds <= report.end - report.start
    assert route.at_min.replica_seconds == pytest.approx(seconds)
    assert route.at_max.replica_seconds == pytest.approx(3 * seconds)
    assert used < route.at_max.replica_seconds
    assert route.at_max.cost > route.used.cost > 0

    # One cold start, the wait to the first ready replica measured (a Deployment says).
    cold = route.cold_starts
    assert cold.count == 1 and cold.basis == "time to first ready replica"
    assert cold.p50 is not None and 0 < cold.p50 <= t_ready - t_up + LAG
    assert cold.p99 == cold.p50


async def test_a_workload_deleted_while_recording_stops_counting_once_its_pods_are_gone(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await kube.request("POST", DEPLOYMENTS.path(ns), body=app_deployment("web", replicas=1))
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("web", "web"))
    await until(kube, DEPLOYMENTS, ns, deployment_status(
        ns, "web", lambda s: s.get("readyReplicas") == 1), timeout_s=30)

    async with recording(k8s_cluster, ns) as (samples, stop, task):
        await samples.until(lambda: samples.running() == 1)
        t_delete = time.time()
        await kube.request("DELETE", DEPLOYMENTS.path(ns, "web"))
        await until(kube, PODS, ns, lambda pods: not pods, timeout_s=30)
        t_gone = time.time()
        await samples.until(lambda: samples.running() == 0)
        at = samples.count
        await samples.until(lambda: samples.count >= at + 3)
        stop.set()
        report, notes = await asyncio.wait_for(task, 10)

    # Counted until its pods were gone, not held at its last count to the end.
    [route] = report.routes
    assert [n for _, n in route.timeline.replicas][-1] == 0
    assert route.used.replica_seconds <= t_gone - report.start + LAG
    assert route.used.replica_seconds >= t_delete - route.observed_from - LAG
    [note] = notes
    assert note.startswith(f"{ns}/web: ") and "failed samples" in note
    assert 'deployments.apps "web" not found' in note


async def run_cli(cluster: Cluster, *args: str,
                  kubeconfig: Path | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "report", "cost", *args,
        "--kubeconfig", str(kubeconfig or cluster.kubeconfig),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    status, out, err = await communicate(proc, 30)
    return status, out.decode(), err.decode()


async def test_record_leaves_out_what_it_cannot_find_and_says_which(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    # A Deployment whose template requests nothing, at 0 throughout; and two HTTPScaledObjects
    # whose targets are not there: a missing Deployment, and a kind no API serves.
    await kube.request("POST", DEPLOYMENTS.path(ns), body=deployment("idle"))
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("idle", "idle",
                                                                    replicas=(2, 4)))
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("gone", "missing"))
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso(
        "odd", "odd", kind="Rollout", api_version="argoproj.io/v1alpha1"))

    code, out, err = await run_cli(k8s_cluster, "--record", "1s", "--interval", str(INTERVAL),
                                   "--namespace", ns, "--format", "json")
    assert code == 0, err
    assert f"note: {ns}/gone: left out, Deployment missing: 404 NotFound: " in err
    assert 'deployments.apps "missing" not found' in err
    assert f"note: {ns}/odd: left out, no kind Rollout in argoproj.io/v1alpha1" in err
    doc = json.loads(out)
    assert len(doc["notes"]) == 2
    assert f"sampled every {INTERVAL:g}s" in doc["source"]
    [route] = doc["routes"]
    assert route["route"] == f"{ns}/idle"
    # Nothing requested: the assumed figures, and the report says so.
    assert route["requests"]["cpu_cores"] == DEFAULT_REQUESTS.cpu_cores
    assert route["requests"]["memory_gib"] == DEFAULT_REQUESTS.memory_gib
    assert "the pod template requests nothing" in route["requests"]["source"]
    assert route["used"]["replica_seconds"] == 0
    assert route["cold_starts"]["count"] == 0
    # The baselines: min 2 and max 4 always on, over the time observed.
    seconds = doc["end"] - route["observed_from"]
    assert 0 < seconds <= doc["end"] - doc["start"]
    assert route["always_on_at_min"]["replica_seconds"] == pytest.approx(2 * seconds)
    assert route["always_on_at_max"]["replica_seconds"] == pytest.approx(4 * seconds)


async def test_record_with_nothing_to_sample_says_so_at_once(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    # Ten minutes asked for: refused at once, not after sampling nothing for that long.
    code, out, err = await run_cli(k8s_cluster, "--record", "10m", "--namespace", ns)
    assert (code, out) == (1, ""), err
    assert f"Error: nothing to record: no HTTPScaledObject in namespace {ns} (kubeconfig " in err

    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("gone", "missing"))
    code, out, err = await run_cli(k8s_cluster, "--record", "10m", "--namespace", ns)
    assert (code, out) == (1, ""), err
    assert (f"Error: nothing to record: no HTTPScaledObject in namespace {ns} has a workload "
            f"to sample: {ns}/gone: left out, Deployment missing: 404 NotFound") in err


_RBAC = "rbac.authorization.k8s.io"
ROLES = Resource(_RBAC, "v1", "roles", "Role")
ROLEBINDINGS = Resource(_RBAC, "v1", "rolebindings", "RoleBinding")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")


async def test_record_without_the_right_to_list_pods_counts_status_replicas_and_says_so(
    k8s_cluster: Cluster, kube: Kube, ns: str, tmp_path: Path
) -> None:
    # Everything --record reads but pods: HTTPScaledObjects, the Deployment and its /scale.
    await kube.request("POST", SERVICEACCOUNTS.path(ns), body={"metadata": {"name": "reader"}})
    await kube.request("POST", ROLES.path(ns), body={
        "metadata": {"name": "reader"},
        "rules": [
            {"apiGroups": ["http.keda.sh"], "resources": ["httpscaledobjects"],
             "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"],
             "verbs": ["get"]},
        ],
    })
    await kube.request("POST", ROLEBINDINGS.path(ns), body={
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": _RBAC, "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
    })
    token = await service_account_token(kube.api, ns, "reader")
    kubeconfig = kubeconfig_for_token(k8s_cluster.kubeconfig, token, tmp_path / "kubeconfig")
    await kube.request("POST", DEPLOYMENTS.path(ns), body=app_deployment("web", replicas=1))
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("web", "web"))
    await until(kube, DEPLOYMENTS, ns, deployment_status(
        ns, "web", lambda s: s.get("replicas") == 1), timeout_s=30)

    code, out, err = await run_cli(k8s_cluster, "--record", "1s", "--interval", str(INTERVAL),
                                   "--namespace", ns, "--format", "json",
                                   kubeconfig=kubeconfig)
    assert code == 0, err
    doc = json.loads(out)
    [note] = doc["notes"]
    assert note.startswith(f"{ns}/web: counted status.replicas of /scale, which leaves out "
                           "stopping pods: cannot list pods: 403 Forbidden")
    # One replica throughout, as status.replicas says.
    [route] = doc["routes"]
    assert route["mean_replicas"] == pytest.approx(1.0)
    assert route["used"] == route["always_on_at_min"]
