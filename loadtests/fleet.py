"""The components of loadtests/resources.py on the test cluster: where each runs (a reserved
pod-CIDR address), how it is started as its pod would be (podproc.py), and the waits until
the fleet is ready, leading and has listed every route. Every wait is bounded and raises
`Incomplete` naming what did not happen."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from operator_bench import Incomplete
from podproc import REPO, PodProcess, pod_environment, write_identity

from httpscale.kube.api import ApiError, Kube
from httpscale.kube.resources import ENDPOINTSLICES, LEASES, SERVICES, Resource

__all__ = [
    "ADMIN_PORTS",
    "GRPC_PORT",
    "SYSTEM_NS",
    "Fleet",
    "interceptor_service",
    "ms",
    "pod_addresses",
    "start_component",
    "until_leader",
    "until_listed",
    "until_ready",
    "within",
]

SYSTEM_NS = "httpscale"  # the components' namespace, as manifests/kustomization.yaml's
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
RESERVED = 16  # the last pod-CIDR addresses the local kubelet never gives a pod
ADMIN_PORTS = {"interceptor": 9090, "scaler": 9092, "operator": 8081}  # the manifests' env
GRPC_PORT = 9091


def ms(cpu_s: float, wall_s: float) -> float:
    """CPU seconds over wall seconds, in millicores."""
    return round(cpu_s / wall_s * 1000, 1)


class Fleet:
    """The components' processes, their addresses and admin URLs."""

    def __init__(self) -> None:
        self.pods: list[tuple[str, str, PodProcess]] = []  # (component, address, process)

    def of(self, component: str) -> list[tuple[str, PodProcess]]:
        return [(ip, p) for c, ip, p in self.pods if c == component]

    def admin(self, component: str, ip: str) -> str:
        return f"http://{ip}:{ADMIN_PORTS[component]}"

    def check_running(self) -> None:
        for _, _, p in self.pods:
            if p.exited():
                raise Incomplete(f"{p.name} exited: " + "\n  ".join(p.tail))

    def cpu(self) -> dict[str, float]:
        return {p.name: p.cpu_seconds() for _, _, p in self.pods}

    def rss(self) -> dict[str, float]:
        return {p.name: round(p.rss_mib(), 1) for _, _, p in self.pods}

    async def measure(self, seconds: float) -> dict[str, dict[str, float]]:
        before, t0 = self.cpu(), time.monotonic()
        end = t0 + seconds
        while (left := end - time.monotonic()) > 0:  # a component that dies ends the phase
            await asyncio.sleep(min(left, 1.0))
            self.check_running()
        after, wall = self.cpu(), time.monotonic() - t0
        rss = self.rss()
        return {n: {"rss_mib": rss[n], "cpu_m": ms(after[n] - before[n], wall)} for n in rss}


async def pod_addresses(kube: Kube, count: int) -> list[str]:
    """`count` addresses from the reserved end of the node's pod CIDR (its last one is left
    for KEDA's metrics adapter)."""
    nodes = (await kube.request("GET", NODES.path()))["items"]
    if not nodes or not nodes[0]["spec"].get("podCIDR"):
        raise Incomplete("no node with a pod CIDR: is the local kubelet running?")
    hosts = list(ipaddress.ip_network(nodes[0]["spec"]["podCIDR"]).hosts())
    if count > RESERVED - 1:
        raise Incomplete(f"at most {RESERVED - 3} interceptors fit the reserved addresses")
    return [str(ip) for ip in hosts[-RESERVED : -RESERVED + count]]


async def start_component(kube: Kube, kubeconfig: Path, work: Path, component: str,
                          name: str, ip: str, read_only: bool) -> PodProcess:
    deployment = (REPO / "manifests" / component / "deployment.yaml").read_text()
    account = f"httpscale-{component}"
    assert f"serviceAccountName: {account}" in deployment
    token = await kube.request(
        "POST", f"/api/v1/namespaces/{SYSTEM_NS}/serviceaccounts/{account}/token",
        body={"spec": {"expirationSeconds": 3600}})
    env = pod_environment(component, SYSTEM_NS, name)
    env |= write_identity(work / name, kubeconfig, token["status"]["token"], SYSTEM_NS)
    env["HOSTNAME"] = name
    # One network namespace for all: each binds its own pod address, not all interfaces.
    env |= {"interceptor": {"HTTPSCALE_HOST": ip, "HTTPSCALE_ADMIN_HOST": ip},
            "scaler": {"HTTPSCALE_HOST": ip},
            "operator": {"HTTPSCALE_ADMIN_HOST": ip}}[component]
    proc = PodProcess(name, component, env, work / name, read_only=read_only)
    await proc.start()
    return proc


@contextlib.asynccontextmanager
async def within(timeout_s: float, what: str) -> AsyncIterator[None]:
    """A phase's own bound: Incomplete, naming what did not happen, rather than TimeoutError
    (which means the whole run's --timeout)."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        raise Incomplete(f"{what} not within {timeout_s:.0f} s") from None


async def until_ready(http: aiohttp.ClientSession, fleet: Fleet, timeout_s: float) -> None:
    """Every component's readiness endpoint answers 200 (sampled every 0.2 s)."""
    async with within(timeout_s, "components ready"):
        for component, ip, _ in fleet.pods:
            url = fleet.admin(component, ip) + "/readyz"
            while True:
                fleet.check_running()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.2)


async def until_leader(kube: Kube, fleet: Fleet, timeout_s: float) -> None:
    (_, operator), = fleet.of("operator")
    async with within(timeout_s, "the operator leading"):
        while True:
            fleet.check_running()
            with contextlib.suppress(ApiError):
                lease = await kube.request("GET", LEASES.path(SYSTEM_NS, "httpscale-operator"))
                if (lease["spec"].get("holderIdentity") or "").startswith(operator.name):
                    return
            await asyncio.sleep(0.5)


async def until_listed(http: aiohttp.ClientSession, fleet: Fleet, apps: int,
                       timeout_s: float) -> None:
    """Every interceptor and the scaler list all `apps` routes (/status, every 2 s)."""
    async with within(timeout_s, f"{apps} routes listed by every interceptor and the scaler"):
        for component in ("interceptor", "scaler"):
            for ip, _ in fleet.of(component):
                while True:
                    fleet.check_running()
                    async with http.get(fleet.admin(component, ip) + "/status") as resp:
                        routes = (await resp.json())["routes"]
                    if len(routes) >= apps:
                        break
                    await asyncio.sleep(2)


async def interceptor_service(kube: Kube, addresses: list[str]) -> None:
    """The admin Service the scaler reads, without a selector, and its EndpointSlice by hand:
    the interceptors are processes here, not pods the endpointslice controller could see."""
    name = "httpscale-interceptor-admin"
    await kube.request("POST", SERVICES.path(SYSTEM_NS), body={
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"name": "admin", "port": 9090, "protocol": "TCP"}]}})
    await kube.request("POST", ENDPOINTSLICES.path(SYSTEM_NS), body={
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-bench", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "admin", "port": 9090, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in addresses]})
