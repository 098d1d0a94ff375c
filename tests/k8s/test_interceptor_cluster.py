"""`httpscale interceptor` on a cluster: routes from HTTPScaledObjects and InterceptorRoutes,
endpoints from EndpointSlices, straight to real pods (local processes run by the local
kubelet). The interceptor is a real process with a kubeconfig; nothing is restarted."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from components import (
    Component,
    app_deployment,
    app_service,
    component,
    free_port,
    scale,
)
from kubetools import merge_patch, until
from testcluster import Cluster

from httpscale.kube.api import Kube, Obj
from httpscale.kube.resources import (
    DEPLOYMENTS,
    ENDPOINTSLICES,
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    SERVICES,
)

pytestmark = pytest.mark.k8s

TIMEOUT = aiohttp.ClientTimeout(total=30)


class Proxy:
    """The interceptor process, and a client for its proxy and admin ports."""

    def __init__(self, c: Component, port: int, admin: int) -> None:
        self.c = c
        self.url = f"http://127.0.0.1:{port}"
        self.admin = f"http://127.0.0.1:{admin}"

    async def get(self, host: str, path: str = "/", **headers: str) -> tuple[int, str, Any]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(
            self.url + path, headers={"Host": host, **headers}
        ) as resp:
            return resp.status, await resp.text(), resp.headers

    async def admin_json(self, path: str) -> Any:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(
            self.admin + path
        ) as resp:
            return json.loads(await resp.text())


def interceptor(k8s_cluster: Cluster, ns: str, *extra: str) -> Any:
    return interceptor_with(k8s_cluster.kubeconfig, ns, *extra)


# Everything listed: a single interceptor's own line, or with --workers N (the default on a
# machine of several CPUs) the parent's line once every worker listed; a worker's own line
# ("[worker i] ...") says nothing of the others.
READY = r"^(?!.*\[worker \d+\]).*(routes from the cluster: \d+ routes|admin on \S+, \d+ workers)"


@asynccontextmanager
async def interceptor_with(
    kubeconfig: Path, ns: str, *extra: str, ready: str = READY
) -> AsyncIterator[Proxy]:
    """`httpscale interceptor` for namespace `ns`, as whoever `kubeconfig` names; returns
    once a log line matches `ready` (by default: it has listed everything)."""
    port, admin = free_port(), free_port()
    args = ["interceptor", "--kubeconfig", str(kubeconfig), "--watch-namespace", ns,
            "--host", "127.0.0.1", "--port", str(port), "--admin-host", "127.0.0.1",
            "--admin-port", str(admin), "--readiness-delay", "0", *extra]
    async with component(args, ready) as c:
        yield Proxy(c, port, admin)
        assert not c.errors(), "\n".join(c.log[-40:])


async def deploy(kube: Kube, ns: str, name: str, replicas: int = 1) -> None:
    await kube.request("POST", DEPLOYMENTS.path(ns), body=app_deployment(name, replicas=replicas))
    await kube.request("POST", SERVICES.path(ns), body=app_service(name))


async def ready_pods(kube: Kube, ns: str, service: str, count: int) -> set[str]:
    """Until the Service's slices list `count` ready endpoints; their pod names."""

    def names(slices: dict[str, Obj]) -> set[str]:
        return {e["targetRef"]["name"] for s in slices.values()
                if s["metadata"]["labels"].get("kubernetes.io/service-name") == service
                for e in s.get("endpoints") or ()
                if (e.get("conditions") or {}).get("ready")}

    slices = await until(kube, ENDPOINTSLICES, ns, lambda s: len(names(s)) == count,
                         timeout_s=40)
    return names(slices)


def httpso(name: str, hosts: list[str], **spec: Any) -> Obj:
    body: dict[str, Any] = {"hosts": hosts,
                            "scaleTargetRef": {"name": name, "service": name, "port": 80}}
    body.update(spec)
    return {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": name}, "spec": body}


async def test_requests_reach_the_right_pods_by_host_path_and_header(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await deploy(kube, ns, "web")
    await deploy(kube, ns, "api")
    await deploy(kube, ns, "blue")
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("web", ["web.test"]))
    await kube.request("POST", INTERCEPTORROUTES.path(ns), body={
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": {"name": "api"},
        "spec": {"target": {"service": "api", "portName": "http"},
                 "rules": [{"hosts": ["web.test"], "paths": [{"value": "/api"}]},
                           {"hosts": ["api.test"]}],
                 "scalingMetric": {"concurrency": {"targetValue": 10}}}})
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso(
        "blue", ["web.test"], headers=[{"name": "X-Tenant", "value": "blue"}]))
    web = await ready_pods(kube, ns, "web", 1)
    api = await ready_pods(kube, ns, "api", 1)
    blue = await ready_pods(kube, ns, "blue", 1)
    async with interceptor(k8s_cluster, ns) as proxy:
        status, body, headers = await proxy.get("web.test", "/")
        assert (status, headers["X-Pod"]) == (200, next(iter(web))), body
        status, body, headers = await proxy.get("web.test", "/api/v1/items")
        assert status == 200, (body, "\n".join(proxy.c.log[-20:]))
        assert headers["X-Pod"] in api and body.endswith("/api/v1/items -")
        status, body, headers = await proxy.get("API.test:8080", "/x")  # any case, any port
        assert headers["X-Pod"] in api
        status, body, headers = await proxy.get("web.test", "/", **{"X-Tenant": "blue"})
        assert headers["X-Pod"] in blue and body.endswith("blue")
        status, body, _ = await proxy.get("nowhere.test", "/")
        assert status == 404 and "nowhere.test" in body
        queue = await proxy.admin_json("/queue")
        assert queue[f"{ns}/web"]["RequestCount"] == 1
        assert queue[f"{ns}/api"]["RequestCount"] == 2


async def test_held_requests_are_all_answered_when_the_app_scales_from_zero(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await deploy(kube, ns, "sleepy", replicas=0)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("sleepy", ["sleepy.test"]))
    async with interceptor(k8s_cluster, ns) as proxy, aiohttp.ClientSession(
        timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=0)
    ) as http:
        async def one(i: int) -> tuple[int, str]:
            async with http.get(f"{proxy.url}/r{i}", headers={"Host": "sleepy.test"}) as resp:
                await resp.read()
                return resp.status, resp.headers.get("X-HTTPScale-Cold-Start", "")

        # The interceptor pushes "held at zero" on /wake; then wake the app by hand, as KEDA
        # would on that signal.
        async with http.get(proxy.admin + "/wake") as wake:
            requests = [asyncio.create_task(one(i)) for i in range(200)]
            while True:
                line = await wake.content.readline()
                assert line, "the /wake stream ended"
                event = json.loads(line)
                if event.get("route") == f"{ns}/sleepy":
                    break
        await scale(kube, ns, "sleepy", 1)
        results = await asyncio.gather(*requests)
    assert [s for s, _ in results] == [200] * 200
    assert all(cold == "true" for _, cold in results)  # every one of them was held


async def test_route_edit_delete_and_a_bad_route_beside_good_ones(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await deploy(kube, ns, "app")
    await ready_pods(kube, ns, "app", 1)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("app", ["one.test"]))
    async with interceptor(k8s_cluster, ns, "--log-level", "debug") as proxy:
        assert (await proxy.get("one.test"))[0] == 200
        # A change takes effect without a restart, on the watch event: once the interceptor
        # says it pushed the next route list, requests follow it.
        pushed = await _pushes(proxy)
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "app", {"spec": {"hosts": ["two.test"]}})
        await _next_pushes(proxy, pushed)
        assert (await proxy.get("two.test"))[0] == 200
        assert (await proxy.get("one.test"))[0] == 404
        # An invalid object next to good ones: left out and reported, the others still served.
        await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso(
            "bad", ["two.test"], scalingMetric={"concurrency": {"targetValue": 1},
                                                "requestRate": {"targetValue": 1}}))
        await proxy.c.wait_for(rf"HTTPScaledObject is invalid and skipped: {ns}/bad")
        cluster = (await proxy.admin_json("/status"))["cluster"]
        assert "mutually exclusive" in cluster["invalid"][f"HTTPScaledObject {ns}/bad"]
        assert (await proxy.get("two.test"))[0] == 200
        metrics = await _metrics(proxy)
        assert 'httpscale_interceptor_cluster_invalid_objects{kind="HTTPScaledObject"} 1.0' in (
            metrics)
        pushed = await _pushes(proxy)
        await kube.request("DELETE", HTTPSCALEDOBJECTS.path(ns, "app"))
        await _next_pushes(proxy, pushed, ": 0 routes")
        assert (await proxy.get("two.test"))[0] == 404


async def _metrics(proxy: Proxy) -> str:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(
        proxy.admin + "/metrics"
    ) as resp:
        return await resp.text()


async def _pushes(proxy: Proxy) -> dict[str, int]:
    """How many route lists each process (the interceptor, or each of its workers: its log
    tag) has pushed so far, from their debug log."""
    await proxy.c.wait_for(r"route list #(\d+) pushed")
    pushes: dict[str, int] = {}
    for line in proxy.c.log:
        if m := re.search(r"(\[worker \d+\] )?\S+: route list #(\d+) pushed", line):
            who = m.group(1) or ""
            pushes[who] = max(pushes.get(who, 0), int(m.group(2)))
    return pushes


async def _next_pushes(proxy: Proxy, before: dict[str, int], then: str = "") -> None:
    """Until every process pushed the route list after `before` (each worker routes by its
    own table), the line going on with `then`."""
    for who, count in before.items():
        await proxy.c.wait_for(rf"{re.escape(who)}\S+: route list #{count + 1} pushed{then}")


async def test_a_pod_deleted_mid_load_loses_no_request(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await deploy(kube, ns, "busy", replicas=2)
    pods = await ready_pods(kube, ns, "busy", 2)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("busy", ["busy.test"]))
    async with interceptor(k8s_cluster, ns) as proxy, aiohttp.ClientSession(
        timeout=TIMEOUT
    ) as http:
        statuses: list[int] = []
        served_by: set[str] = set()
        done = asyncio.Event()
        wanted: set[str] = set()  # pods that must have served before the load stops
        all_served = asyncio.Event()

        async def client() -> None:
            while not done.is_set():
                async with http.get(proxy.url + "/", headers={"Host": "busy.test"}) as resp:
                    await resp.read()
                    statuses.append(resp.status)
                    served_by.add(resp.headers.get("X-Pod", "?"))
                    if wanted and wanted <= served_by:
                        all_served.set()

        clients = [asyncio.create_task(client()) for _ in range(8)]
        victim = sorted(pods)[0]
        # Delete one pod while 8 clients keep requests going: its endpoint turns
        # terminating in the slice, the pod serves what it has (DRAIN_S), then exits.
        await kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{victim}")
        await ready_pods(kube, ns, "busy", 2)  # the Deployment's replacement is ready
        survivors = await _slice_pods(kube, ns, "busy")
        assert victim not in survivors
        # Keep going until the replacement has served too, then stop.
        wanted.update(survivors)
        async with asyncio.timeout(20):
            await all_served.wait()
        done.set()
        await asyncio.gather(*clients)
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests: {set(statuses)}"


async def _slice_pods(kube: Kube, ns: str, service: str) -> set[str]:
    slices = await kube.request("GET", ENDPOINTSLICES.path(ns), query=[
        ("labelSelector", f"kubernetes.io/service-name={service}")])
    return {e["targetRef"]["name"] for s in slices["items"] for e in s.get("endpoints") or ()
            if (e.get("conditions") or {}).get("ready")}


async def test_held_requests_fail_over_to_the_fallback_services_pods(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await deploy(kube, ns, "main", replicas=0)
    await deploy(kube, ns, "spare")
    spare = await ready_pods(kube, ns, "spare", 1)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso(
        "main", ["main.test"],
        coldStartTimeoutFailoverRef={"service": "spare", "portName": "http",
                                     "timeoutSeconds": 1}))
    async with interceptor(k8s_cluster, ns) as proxy:
        status, body, headers = await proxy.get("main.test", "/page")
        # Held for the failover timeout, then answered by a pod of the fallback Service.
        assert (status, headers["X-Pod"]) == (200, next(iter(spare))), body
        route = (await proxy.admin_json("/status"))["routes"][f"{ns}/main"]
        assert len(route["fallbackEndpoints"]) == 1


async def test_static_routes_and_a_placeholder_from_a_config_map(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await deploy(kube, ns, "site", replicas=0)
    config_maps = f"/api/v1/namespaces/{ns}/configmaps"
    await kube.request("POST", config_maps, body={
        "metadata": {"name": "pages", "labels": {"http.keda.sh/response-body": "true"}},
        "data": {"index.html": "<h1>waking up</h1>"}})
    await kube.request("POST", INTERCEPTORROUTES.path(ns), body={
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": {"name": "site"},
        "spec": {
            "target": {"service": "site", "port": 80},
            "rules": [{"hosts": ["site.test"]}],
            "scalingMetric": {"concurrency": {"targetValue": 10}},
            "coldStart": {"placeholder": {"response": {
                "statusCode": 503, "bodyFromConfigMap": {"name": "pages", "key": "index.html"},
                "headers": {"Content-Type": "text/html"}}}},
            "staticRoutes": [{"rules": [{"hosts": ["site.test"], "paths": [{"value": "/healthz"}]}],
                              "response": {"statusCode": 200, "body": "OK"},
                              "responseMode": "Always"}],
        }})
    async with interceptor(k8s_cluster, ns, "--log-level", "debug") as proxy:
        status, body, _ = await proxy.get("site.test", "/healthz")
        assert (status, body) == (200, "OK")
        status, body, _ = await proxy.get("site.test", "/")  # at zero: the placeholder, for all
        assert (status, body) == (503, "<h1>waking up</h1>")
        queue = await proxy.admin_json("/queue")
        assert f"{ns}/site#static-0" not in queue  # static routes never count for scaling
        # The ConfigMap changes: the body follows without a restart.
        pushed = await _pushes(proxy)
        await kube.request("PATCH", f"{config_maps}/pages",
                           body={"data": {"index.html": "<h1>almost there</h1>"}},
                           content_type="application/merge-patch+json")
        await _next_pushes(proxy, pushed)
        assert (await proxy.get("site.test", "/"))[1] == "<h1>almost there</h1>"


async def test_keeps_routing_through_an_apiserver_restart(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await deploy(kube, ns, "calm")
    await ready_pods(kube, ns, "calm", 1)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("calm", ["calm.test"]))
    async with interceptor(k8s_cluster, ns, "--log-level", "debug") as proxy:
        assert (await proxy.get("calm.test"))[0] == 200
        await k8s_cluster.stop_apiserver()
        # The control plane is down; the data plane is not: it routes from its caches.
        assert (await proxy.get("calm.test"))[0] == 200
        await k8s_cluster.start_apiserver()
        await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso(
            "calm2", ["calm2.test"], scaleTargetRef={"name": "calm", "service": "calm",
                                                     "port": 80}))
        # Its watches come back by themselves (relisting if the server asks) and see it.
        for who in await _pushes(proxy):  # each worker's watches
            await proxy.c.wait_for(rf"{re.escape(who)}\S+: route list #\d+ pushed: 2 routes",
                                   timeout_s=40)
        assert (await proxy.get("calm2.test"))[0] == 200
        assert (await proxy.get("calm.test"))[0] == 200
