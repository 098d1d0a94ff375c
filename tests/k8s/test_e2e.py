"""End to end: httpscale installed from manifests/ and the real KEDA scale real apps.

The session's KEDA (operator + metrics adapter, built from its Go module; the `keda` fixture)
is the client of httpscale's scaler; the HPA of kube-controller-manager reads KEDA's external
metrics through the aggregated API. httpscale is installed once for this module from
`manifests/` with a test overlay (below), and every component runs as its Deployment's pods,
processes run by the local kubelet as their own ServiceAccounts: RBAC decides every call.

The overlay, and why (the rest is the manifests as users apply them):
- each container's `command` points at this checkout's venv: the local kubelet runs commands,
  it has no image to run;
- each component binds its pod's IP instead of every address: the local kubelet's pods are
  processes sharing this host's network, so two replicas would collide on their ports;
- there is no cluster DNS: KEDA cannot resolve `httpscale-scaler.<ns>.svc`. The scaler's
  Service gets a pinned ClusterIP (the local kubelet's service proxy answers on ClusterIPs),
  and that address is what the operator writes into every ScaledObject (`--scaler-address`)
  and what the interceptor fleet's ScaledObject names. On a real cluster the name resolves
  and none of this is needed.

Clients reach the interceptor as an Ingress would: through its proxy Service's ClusterIP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from components import app_deployment, app_service
from kubetools import MANIFESTS, merge_patch, uninstall, until
from testcluster import Cluster, kustomize_build

from httpscale.kube.api import APPLY_PATCH, ApiError, Kube, Obj
from httpscale.kube.cache import Informer
from httpscale.kube.resources import (
    CRDS,
    DEPLOYMENTS,
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    SCALEDOBJECTS,
    SERVICES,
    Resource,
)

# The module's install (pods started, KEDA scaling the interceptor fleet) counts against the
# first test's timeout; cold starts and cooldowns take their real time.
pytestmark = [pytest.mark.k8s, pytest.mark.slow, pytest.mark.timeout(300)]

E2E_NAMESPACE = "httpscale-e2e"
VENV_HTTPSCALE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "httpscale"
PODS = Resource("", "v1", "pods", "Pod")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
TIMEOUT = aiohttp.ClientTimeout(total=120)
# Whole cold-start cycles in the first test (KEDA's add-on's benchmark takes 10).
COLD_SAMPLES = int(os.environ.get("HTTPSCALE_E2E_COLD_SAMPLES", "3"))
_RBAC = "rbac.authorization.k8s.io"
_KINDS: dict[str, Resource] = {
    "Namespace": NAMESPACES,
    "CustomResourceDefinition": CRDS,
    "ServiceAccount": Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    "ClusterRole": Resource(_RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
    "ClusterRoleBinding": Resource(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding",
                                   namespaced=False),
    "Role": Resource(_RBAC, "v1", "roles", "Role"),
    "RoleBinding": Resource(_RBAC, "v1", "rolebindings", "RoleBinding"),
    "Deployment": DEPLOYMENTS,
    "Service": SERVICES,
    "PodDisruptionBudget": Resource("policy", "v1", "poddisruptionbudgets",
                                    "PodDisruptionBudget"),
    "ScaledObject": SCALEDOBJECTS,
}


@dataclass(frozen=True)
class Installed:
    namespace: str
    proxy: str  # the interceptor proxy Service, "ip:port"
    scaler: str  # the scaler Service, "ip:port" (what KEDA dials)


# The bind-address options of each component (HTTPSCALE_<OPTION> env).
_BIND_OPTIONS = {
    "operator": ("HTTPSCALE_ADMIN_HOST",),
    "interceptor": ("HTTPSCALE_HOST", "HTTPSCALE_ADMIN_HOST"),
    "scaler": ("HTTPSCALE_HOST",),
}


def _bind_pod_ip(names: tuple[str, ...]) -> list[Obj]:
    env = "/spec/template/spec/containers/0/env/-"
    ops: list[Obj] = [{"op": "add", "path": env, "value": {
        "name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}}]
    ops += [{"op": "add", "path": env, "value": {"name": n, "value": "$(POD_IP)"}}
            for n in names]
    return ops


def _overlay(directory: Path, namespace: str, scaler_ip: str) -> None:
    """The test overlay over manifests/ (see the module docstring)."""
    scaler = f"{scaler_ip}:9091"
    patch_command = [{"op": "replace", "path": "/spec/template/spec/containers/0/command/0",
                      "value": str(VENV_HTTPSCALE)}]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS, directory)],
        "namespace": namespace,
        "patches": [
            {"target": {"kind": "Deployment"}, "patch": yaml.safe_dump(patch_command)},
            # Pods here are processes on one host: each binds its own pod IP, or every
            # replica's admin port would collide (a real pod has a network of its own).
            *({"target": {"kind": "Deployment", "name": f"httpscale-{component}"},
               "patch": yaml.safe_dump(_bind_pod_ip(names))}
              for component, names in _BIND_OPTIONS.items()),
            {"target": {"kind": "Service", "name": "httpscale-scaler"},
             "patch": yaml.safe_dump([{"op": "add", "path": "/spec/clusterIP",
                                       "value": scaler_ip}])},
            {"target": {"kind": "Deployment", "name": "httpscale-operator"},
             "patch": yaml.safe_dump([{
                 "op": "add", "path": "/spec/template/spec/containers/0/env/-",
                 "value": {"name": "HTTPSCALE_SCALER_ADDRESS", "value": scaler}}])},
            {"target": {"group": "keda.sh", "kind": "ScaledObject",
                        "name": "httpscale-interceptor"},
             "patch": yaml.safe_dump([{
                 "op": "replace", "path": "/spec/triggers/0/metadata/scalerAddress",
                 "value": scaler}])},
        ],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))


async def _apply(kube: Kube, obj: Obj) -> None:
    resource = _KINDS[obj["kind"]]
    meta = obj["metadata"]
    await kube.request(
        "PATCH", resource.path(meta.get("namespace"), meta["name"]),
        query=[("fieldManager", "httpscale-e2e"), ("force", "true")],
        body=obj, content_type=APPLY_PATCH,
    )


def _ready_replicas(name: str, want: int) -> Callable[[Mapping[str, Obj]], bool]:
    def done(deployments: Mapping[str, Obj]) -> bool:
        d = next((o for o in deployments.values() if o["metadata"]["name"] == name), None)
        return d is not None and (d.get("status") or {}).get("readyReplicas", 0) >= want

    return done


async def _install(cluster: Cluster, directory: Path) -> Installed:
    assert cluster.service_cidr is not None
    # The scaler's pinned ClusterIP, from the range's lower band: the apiserver keeps it for
    # addresses chosen by hand and allocates from it only when the rest is full (KEP-3070; 16
    # addresses on a /24). The top of the range, picked before, collided now and then with a
    # Service an earlier test was given ("provided IP is already allocated").
    scaler_ip = str(list(ipaddress.ip_network(cluster.service_cidr).hosts())[11])
    _overlay(directory, E2E_NAMESPACE, scaler_ip)
    objects = await kustomize_build(directory)
    async with cluster.client() as api:
        kube = Kube(api)
        for obj in objects:  # the CRDs first, then the namespace, as kustomize orders them
            await _apply(kube, obj)
        await until(kube, DEPLOYMENTS, E2E_NAMESPACE, lambda d: all(
            _ready_replicas(n, 2)(d)
            for n in ("httpscale-operator", "httpscale-scaler", "httpscale-interceptor")
        ), timeout_s=120)
        proxy = await kube.request("GET", SERVICES.path(E2E_NAMESPACE,
                                                        "httpscale-interceptor-proxy"))
        proxy_ip = proxy["spec"]["clusterIP"]
        await cluster.proxied_endpoints(E2E_NAMESPACE, "httpscale-interceptor-proxy", 8080,
                                        lambda eps: len(eps) >= 2, timeout_s=60)
    return Installed(E2E_NAMESPACE, f"{proxy_ip}:8080", f"{scaler_ip}:9091")


async def _uninstall(cluster: Cluster) -> None:
    async with cluster.client() as api:
        await uninstall(Kube(api), E2E_NAMESPACE)


@pytest.fixture(scope="module")
def installed(k8s_cluster: Cluster, crds: list[str], keda: Any,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """httpscale from manifests/ (test overlay), for this module; uninstalled after it."""
    directory = tmp_path_factory.mktemp("e2e-overlay")
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        result = runner.run(_install(k8s_cluster, directory))
    try:
        yield result
    finally:
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(_uninstall(k8s_cluster))


@pytest.fixture
async def ns(ns: str, kube: Kube) -> AsyncIterator[str]:
    """The test's namespace (conftest's), and after the test, until it is gone: KEDA has put
    its finalizer on the namespace's ScaledObjects, and a namespace still going when a later
    test restarts the apiserver can lose them (below, in the restart test)."""
    yield ns
    with contextlib.suppress(ApiError):  # (conftest's own delete then finds it gone)
        await kube.request("DELETE", NAMESPACES.path(name=ns))
    await until(kube, NAMESPACES, None, lambda n: ns not in n, timeout_s=120)


# -- helpers -----------------------------------------------------------------------------------


async def _app(kube: Kube, ns: str, name: str, replicas: int = 0) -> None:
    await kube.request("POST", DEPLOYMENTS.path(ns), body=app_deployment(name, replicas=replicas))
    await kube.request("POST", SERVICES.path(ns), body=app_service(name))


def _httpso(name: str, hosts: list[str], **spec: Any) -> Obj:
    body: dict[str, Any] = {"hosts": hosts,
                            "scaleTargetRef": {"name": name, "service": name, "port": 80},
                            "replicas": {"min": 0, "max": 3}, "scaledownPeriod": 5}
    body.update(spec)
    return {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": name}, "spec": body}


async def _replicas(kube: Kube, ns: str, name: str, done: Callable[[int], bool],
                    timeout_s: float = 120) -> None:
    """Until the Deployment's `spec.replicas` (what KEDA and the HPA set) satisfies `done`."""
    await until(kube, DEPLOYMENTS, ns, lambda d: f"{ns}/{name}" in d and done(
        d[f"{ns}/{name}"]["spec"].get("replicas", 1)), timeout_s=timeout_s)


async def _keda_ready(kube: Kube, ns: str, name: str) -> None:
    """Until KEDA reports the ScaledObject Ready (it reached httpscale's scaler)."""
    def ready(objs: Mapping[str, Obj]) -> bool:
        so = objs.get(f"{ns}/{name}")
        return so is not None and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (so.get("status") or {}).get("conditions") or ())

    await until(kube, SCALEDOBJECTS, ns, ready, timeout_s=60)


class PodClock:
    """When each pod of a namespace was first seen and when it turned Ready (monotonic)."""

    def __init__(self, kube: Kube, ns: str) -> None:
        self.seen: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self._informer: Informer[Obj] = Informer(kube, PODS, namespace=ns)
        self._informer.subscribe(self._changed)
        self._task: asyncio.Task[None] | None = None
        self._changes = asyncio.Event()  # set on every change; a waiter clears it

    def _changed(self, snapshot: Any, changed: frozenset[str]) -> None:
        now = time.monotonic()
        for key in changed:
            pod = snapshot.raw.get(key)
            if pod is None:
                continue
            self.seen.setdefault(key, now)
            if any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (pod.get("status") or {}).get("conditions") or ()):
                self.ready.setdefault(key, now)
        self._changes.set()

    async def next_ready(self, known: set[str], timeout_s: float = 30) -> str:
        """The first pod not in `known` to turn Ready (the watch may tell this test after
        the interceptor's own watch let a request through)."""
        async with asyncio.timeout(timeout_s):
            while not set(self.ready) - known:
                self._changes.clear()
                await self._changes.wait()
        (pod,) = set(self.ready) - known
        return pod

    async def __aenter__(self) -> PodClock:
        self._task = asyncio.create_task(self._informer.run())
        await self._informer.wait_synced()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Load:
    """Requests back to back from a few loops, each on a new connection (as an Ingress
    controller spreads them over the interceptors)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self._more = asyncio.Condition()

    async def record(self, status: int) -> None:
        self.statuses.append(status)
        async with self._more:
            self._more.notify_all()

    async def wait_for(self, count: int, timeout_s: float = 60) -> None:
        """Until `count` requests have been answered in all."""
        async with asyncio.timeout(timeout_s), self._more:
            await self._more.wait_for(lambda: len(self.statuses) >= count)


@contextlib.asynccontextmanager
async def steady_load(url: str, host: str, clients: int = 4, path: str = "/"
                      ) -> AsyncIterator[Load]:
    load = Load()
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as http:
        async def loop() -> None:
            while not stop.is_set():
                try:
                    async with http.get(url + path, headers={"Host": host}) as resp:
                        await resp.read()
                        await load.record(resp.status)
                except aiohttp.ClientError:
                    await load.record(0)  # a connection error is a failed request too

        tasks = [asyncio.create_task(loop()) for _ in range(clients)]
        try:
            yield load
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def _in_flight(kube: Kube, installed: Installed, key: str) -> int:
    """The route's Concurrency summed over every interceptor pod's /queue (as the scaler
    sums them), from the admin Service's EndpointSlices."""
    slices = await kube.request("GET", f"/apis/discovery.k8s.io/v1/namespaces/"
                                f"{installed.namespace}/endpointslices", query=[
        ("labelSelector", "kubernetes.io/service-name=httpscale-interceptor-admin")])
    total = 0
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        for s in slices["items"]:
            for e in s.get("endpoints") or ():
                async with http.get(f"http://{e['addresses'][0]}:9090/queue") as resp:
                    total += (await resp.json()).get(key, {}).get("Concurrency", 0)
    return total


# -- the tests ---------------------------------------------------------------------------------


async def test_cold_start_through_keda_and_back_to_zero(
    installed: Installed, kube: Kube, ns: str
) -> None:
    """A held POST answered once KEDA scaled the app up through httpscale's scaler; back to
    zero with no traffic; again, COLD_SAMPLES times, each a whole cycle. Prints the time to
    first byte against the pod's own start (created to Ready), the overhead httpscale and KEDA
    add; KEDA's add-on's benchmark gates the average time to answer at 3 s."""
    await _app(kube, ns, "cold")
    # Scaled on request rate over a 5 s window: any rate above zero keeps a route active
    # (KEDA's add-on's rule too), so the window bounds how soon it can go back to zero.
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=_httpso(
        "cold", ["cold.e2e"], scalingMetric={"requestRate": {
            "targetValue": 10, "window": "5s", "granularity": "1s"}}))
    await _keda_ready(kube, ns, "cold")
    firsts: list[float] = []
    overheads: list[float] = []
    async with PodClock(kube, ns) as pods, aiohttp.ClientSession(timeout=TIMEOUT) as http:
        for i in range(COLD_SAMPLES):
            known = set(pods.ready)
            started = time.monotonic()
            async with http.post(f"http://{installed.proxy}/order", data=b"one pizza",
                                 headers={"Host": "cold.e2e"}) as resp:
                first_byte = time.monotonic()
                body = await resp.read()
            assert (resp.status, body) == (200, b"one pizza")
            assert resp.headers["X-HTTPScale-Cold-Start"] == "true"
            pod = await pods.next_ready(known)
            pod_start = pods.ready[pod] - pods.seen[pod]
            firsts.append(first_byte - started)
            overheads.append(firsts[-1] - pod_start)
            print(f"\ncold start {i + 1} through KEDA: first byte after {firsts[-1]:.2f}s; "
                  f"the pod itself took {pod_start:.2f}s from created to Ready; httpscale + "
                  f"KEDA added {overheads[-1]:.2f}s")
            # No traffic: back to zero after the scaledownPeriod and KEDA's cooldown.
            t0 = time.monotonic()
            await _replicas(kube, ns, "cold", lambda r: r == 0)
            await until(kube, PODS, ns, lambda p: not any("/cold-" in k for k in p))
            print(f"back to zero {time.monotonic() - t0:.1f}s after the answer")
    print(f"cold start over {COLD_SAMPLES}: first byte mean {statistics.mean(firsts):.2f}s, "
          f"max {max(firsts):.2f}s; overhead mean {statistics.mean(overheads):.2f}s, "
          f"max {max(overheads):.2f}s")


async def test_one_to_n_under_load_through_the_hpa_and_back(
    installed: Installed, kube: Kube, ns: str
) -> None:
    await _app(kube, ns, "busy")
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=_httpso(
        "busy", ["busy.e2e"], replicas={"min": 0, "max": 4},
        scalingMetric={"concurrency": {"targetValue": 2}}))
    await _keda_ready(kube, ns, "busy")
    # Eight clients, each request held 0.5 s by the app: ~8 in flight, 2 per replica wanted.
    async with steady_load(f"http://{installed.proxy}", "busy.e2e", clients=8,
                           path="/slow?ms=500") as load:
        await _replicas(kube, ns, "busy", lambda r: r >= 3)
    assert load.statuses and set(load.statuses) == {200}
    await _replicas(kube, ns, "busy", lambda r: r == 0)


async def test_routing_by_host_path_and_header_then_edit_and_delete(
    installed: Installed, kube: Kube, ns: str
) -> None:
    await _app(kube, ns, "web", replicas=1)
    await _app(kube, ns, "api")
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=_httpso(
        "web", ["shop.e2e"], replicas={"min": 1, "max": 2}))
    # The newer API: an InterceptorRoute and the ScaledObject its user writes.
    await kube.request("POST", INTERCEPTORROUTES.path(ns), body={
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": {"name": "api"},
        "spec": {"target": {"service": "api", "port": 80},
                 "rules": [{"hosts": ["shop.e2e"], "paths": [{"value": "/api"}]},
                           {"hosts": ["shop.e2e"], "headers": [{"name": "X-Tenant",
                                                                "value": "beta"}]}],
                 "scalingMetric": {"concurrency": {"targetValue": 10}}}})
    await kube.request("POST", SCALEDOBJECTS.path(ns), body={
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "api"},
        "spec": {"scaleTargetRef": {"name": "api"}, "minReplicaCount": 0,
                 "maxReplicaCount": 2, "cooldownPeriod": 5,
                 "triggers": [{"type": "external-push", "metadata": {
                     "scalerAddress": installed.scaler, "interceptorRoute": "api"}}]}})
    await _keda_ready(kube, ns, "api")
    await _keda_ready(kube, ns, "web")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async def get(host: str, path: str = "/", **headers: str) -> tuple[int, str]:
            async with http.get(f"http://{installed.proxy}{path}",
                                headers={"Host": host, **headers}) as resp:
                return resp.status, resp.headers.get("X-Pod", "")

        status, pod = await get("shop.e2e", "/")
        assert status == 200 and pod.startswith("web-")
        status, pod = await get("shop.e2e", "/api/items")  # api is at zero: held, scaled
        assert status == 200 and pod.startswith("api-")
        status, pod = await get("shop.e2e", "/", **{"X-Tenant": "beta"})
        assert status == 200 and pod.startswith("api-")
        # Edit: the HTTPSO moves to another host; the old one is nobody's.
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "web", {"spec": {"hosts": ["web.e2e"]}})
        assert await _eventually(lambda: get("web.e2e"), lambda r: r[0] == 200)
        assert (await get("shop.e2e", "/"))[0] == 404
        await kube.request("DELETE", HTTPSCALEDOBJECTS.path(ns, "web"))
        assert await _eventually(lambda: get("web.e2e"), lambda r: r[0] == 404)


async def _eventually(call: Callable[[], Any], done: Callable[[Any], bool],
                      timeout_s: float = 10) -> bool:
    """Until `done(await call())`: the interceptors are other processes (two of them, each
    behind the Service), so their state is sampled by asking them."""
    async with asyncio.timeout(timeout_s):
        for _ in range(int(timeout_s / 0.05)):
            if done(await call()):
                return True
            await asyncio.sleep(0.05)  # sampling other processes, no event to await
    return False


async def test_interceptor_rollout_under_steady_load_loses_nothing(
    installed: Installed, kube: Kube, ns: str
) -> None:
    await _app(kube, ns, "steady", replicas=1)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=_httpso(
        "steady", ["steady.e2e"], replicas={"min": 1, "max": 2}))
    await _keda_ready(kube, ns, "steady")
    e2e = installed.namespace
    async with steady_load(f"http://{installed.proxy}", "steady.e2e") as load:
        before = await kube.request("GET", DEPLOYMENTS.path(e2e, "httpscale-interceptor"))
        await merge_patch(kube, DEPLOYMENTS, e2e, "httpscale-interceptor", {"spec": {
            "template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ")}}}}})
        generation = before["metadata"]["generation"] + 1

        def rolled(d: Mapping[str, Obj]) -> bool:
            dep = d.get(f"{e2e}/httpscale-interceptor")
            st = (dep or {}).get("status") or {}
            want = (dep or {}).get("spec", {}).get("replicas", 1)
            return (st.get("observedGeneration", 0) >= generation
                    and st.get("updatedReplicas") == want == st.get("readyReplicas")
                    and st.get("replicas") == want)  # the old pods are gone too

        await until(kube, DEPLOYMENTS, e2e, rolled, timeout_s=180)
        await load.wait_for(len(load.statuses) + 20)  # and on through the new pods
    statuses = load.statuses
    assert len(statuses) > 50
    failed = [s for s in statuses if s != 200]
    assert not failed, f"{len(failed)} of {len(statuses)} requests failed: {set(failed)}"


async def test_an_app_pod_killed_mid_request_loses_no_safe_request(
    installed: Installed, kube: Kube, ns: str
) -> None:
    await _app(kube, ns, "fragile", replicas=2)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=_httpso(
        "fragile", ["fragile.e2e"], replicas={"min": 2, "max": 2}))
    await _keda_ready(kube, ns, "fragile")
    pods = await until(kube, PODS, ns, lambda p: sum(
        1 for o in p.values() if o["metadata"]["name"].startswith("fragile-") and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (o.get("status") or {}).get("conditions") or ())) == 2)
    victim = sorted(k for k in pods if "/fragile-" in k)[0].split("/", 1)[1]
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async def slow(i: int) -> tuple[int, str]:
            async with http.get(f"http://{installed.proxy}/slow?ms=3000&i={i}",
                                headers={"Host": "fragile.e2e"}) as resp:
                await resp.read()
                return resp.status, resp.headers.get("X-Pod", "")

        requests = [asyncio.create_task(slow(i)) for i in range(10)]
        # All ten in flight, spread over both pods, before one pod dies.
        assert await _eventually(lambda: _in_flight(kube, installed, f"{ns}/fragile"),
                                 lambda n: n == 10)
        # Killed, not stopped: grace 0, its connections reset mid-request.
        await kube.request("DELETE", PODS.path(ns, victim), body={"gracePeriodSeconds": 0})
        results = await asyncio.gather(*requests)
    assert [s for s, _ in results] == [200] * 10, results
    assert all(pod != victim for _, pod in results)  # the killed pod's were retried elsewhere


async def test_a_scaler_restart_and_an_apiserver_restart_lose_nothing(
    installed: Installed, k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    e2e = installed.namespace
    await _app(kube, ns, "after")
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=_httpso("after", ["after.e2e"]))
    await _keda_ready(kube, ns, "after")
    # Every scaler pod replaced: KEDA's streams reconnect through the Service.
    before = await kube.request("GET", DEPLOYMENTS.path(e2e, "httpscale-scaler"))
    await merge_patch(kube, DEPLOYMENTS, e2e, "httpscale-scaler", {"spec": {"template": {
        "metadata": {"annotations": {"httpscale.test/restart": secrets.token_hex(3)}}}}})
    await until(kube, DEPLOYMENTS, e2e, lambda d: (
        (d[f"{e2e}/httpscale-scaler"].get("status") or {}).get("observedGeneration", 0)
        > before["metadata"]["generation"]
        and d[f"{e2e}/httpscale-scaler"]["status"].get("updatedReplicas") == 2
        == d[f"{e2e}/httpscale-scaler"]["status"].get("readyReplicas")
        and d[f"{e2e}/httpscale-scaler"]["status"].get("replicas") == 2), timeout_s=120)
    # Let earlier tests' namespaces finish going first: a kube-apiserver that has just started
    # serves CRD-backed kinds a moment after it answers, and a namespace controller sweeping a
    # namespace in that moment can miss its ScaledObjects and finalize the namespace around
    # them (seen here), leaving objects that no controller can ever finalize.
    await until(kube, NAMESPACES, None, lambda n: not any(
        (o.get("status") or {}).get("phase") == "Terminating" for o in n.values()),
        timeout_s=120)
    await k8s_cluster.restart_apiserver()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(
        f"http://{installed.proxy}/x", headers={"Host": "after.e2e"}
    ) as resp:
        await resp.read()
    assert (resp.status, resp.headers["X-HTTPScale-Cold-Start"]) == (200, "true")


async def test_each_component_has_its_rights_and_no_more(
    installed: Installed, kube: Kube
) -> None:
    async def may(user: str, verb: str, resource: str, group: str = "", ns: str = "") -> bool:
        review = await kube.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            body={"spec": {"user": f"system:serviceaccount:{installed.namespace}:{user}",
                           "groups": ["system:serviceaccounts"],
                           "resourceAttributes": {"verb": verb, "resource": resource,
                                                  "group": group, "namespace": ns}}})
        return bool(review["status"].get("allowed"))

    ns = installed.namespace
    assert await may("httpscale-operator", "patch", "scaledobjects", "keda.sh", "anywhere")
    assert await may("httpscale-interceptor", "watch", "endpointslices", "discovery.k8s.io")
    assert await may("httpscale-scaler", "watch", "httpscaledobjects", "http.keda.sh")
    for user in ("httpscale-operator", "httpscale-interceptor", "httpscale-scaler"):
        for verb, resource, group in (("get", "secrets", ""), ("list", "secrets", ""),
                                      ("create", "pods", ""), ("delete", "deployments", "apps"),
                                      ("update", "clusterroles", _RBAC)):
            assert not await may(user, verb, resource, group, ns), (user, verb, resource)
    for user in ("httpscale-interceptor", "httpscale-scaler"):  # readers only
        assert not await may(user, "patch", "httpscaledobjects", "http.keda.sh", ns)
        assert not await may(user, "create", "scaledobjects", "keda.sh", ns)
