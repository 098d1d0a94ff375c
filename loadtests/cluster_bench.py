#!/usr/bin/env python3
"""The interceptor on a cluster: route updates at 1,000 routes, memory per route, and how
fast a held request reaches a pod that just became ready.

Prints three figures (docs/benchmarks.md, "Interceptor on a cluster"):

1. **Route update latency at 1,000 routes**: an HTTPSO's host is changed (PATCH answered) →
   the first request to the new host that the interceptor routes (200). Probes go out back to
   back on one keep-alive connection, so the figure includes at most one probe's round trip.
2. **Interceptor RSS per 1,000 routes**: RSS with 1 route, then with 1,001 (all listed).
3. **Slice ready → forwarded**: a route at zero holds one request; its Deployment is scaled
   0 → 1; the benchmark's own EndpointSlice watch stamps the moment the slice shows the pod
   ready; the pod stamps when the held request arrives. Both on this machine's wall clock.

Everything runs on the test control plane (`scripts/testcluster up` in a temporary directory,
or `--kubeconfig`), the interceptor as a real process, pods as local processes (the local
kubelet). Bounded: `--timeout` for the whole run.

    .venv/bin/python loadtests/cluster_bench.py [--routes 1000] [--updates 50] [--wakes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_bench import (
    Incomplete,
    cluster_down,
    cluster_up,
    install_crds,
    latency_summary,
    load_crds,
    proc_memory,
)

from httpscale.kube.api import MERGE_PATCH, Kube, Obj
from httpscale.kube.cache import Informer
from httpscale.kube.config import KubeSettings, connect
from httpscale.kube.resources import (
    DEPLOYMENTS,
    ENDPOINTSLICES,
    HTTPSCALEDOBJECTS,
    SERVICES,
    Resource,
)

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
NS = "bench"
# The pod's program: answers with the wall-clock time the request arrived.
APP = r"""
import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stall
    def do_GET(self):
        body = repr(time.time()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


def app(name: str, replicas: int) -> tuple[Obj, Obj]:
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "terminationGracePeriodSeconds": 2,
                     "containers": [{
                         "name": "app", "image": "local",
                         "command": [sys.executable, "-c", APP],
                         "env": [{"name": "POD_IP", "valueFrom": {
                             "fieldRef": {"fieldPath": "status.podIP"}}}],
                         "ports": [{"name": "http", "containerPort": 8080}],
                         "readinessProbe": {"tcpSocket": {"port": "http"},
                                            "periodSeconds": 1},
                     }]}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": labels,
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    return deployment, service


def httpso(name: str, host: str, service: str) -> Obj:
    return {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": name},
            "spec": {"hosts": [host],
                     "scaleTargetRef": {"name": service, "service": service, "port": 80}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Interceptor:
    def __init__(self, kubeconfig: Path) -> None:
        self.port, self.admin = free_port(), free_port()
        self.kubeconfig = kubeconfig
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._line = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "httpscale", "interceptor",
            "--kubeconfig", str(self.kubeconfig), "--watch-namespace", NS,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--admin-host", "127.0.0.1", "--admin-port", str(self.admin),
            "--readiness-delay", "0", "--log-level", "debug",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        self._pump = asyncio.create_task(self._read())
        await self.wait_for(r"routes from the cluster: \d+ routes", 60)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode(errors="replace").rstrip())
            self._line.set()

    async def wait_for(self, pattern: str, timeout_s: float) -> None:
        regex = re.compile(pattern)
        seen = 0
        async with asyncio.timeout(timeout_s):
            while True:
                if any(regex.search(line) for line in self.log[seen:]):
                    return
                seen = len(self.log)
                self._line.clear()
                await self._line.wait()

    async def status(self, http: aiohttp.ClientSession) -> Any:
        async with http.get(f"http://127.0.0.1:{self.admin}/status") as resp:
            return json.loads(await resp.text())

    def rss(self) -> dict[str, float]:
        assert self.proc is not None
        return proc_memory(self.proc.pid)

    async def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            await self._pump
        return self.proc.returncode


async def routes_listed(icp: Interceptor, want: int) -> None:
    """Until the interceptor logs a route list of `want` routes or more (its debug log)."""
    pushed = re.compile(r"route list #\d+ pushed: (\d+) routes")
    seen = 0
    async with asyncio.timeout(120):
        while True:
            for line in icp.log[seen:]:
                found = pushed.search(line)
                if found and int(found[1]) >= want:
                    return
            seen = len(icp.log)
            icp._line.clear()
            await icp._line.wait()


async def route_updates(kube: Kube, http: aiohttp.ClientSession, icp: Interceptor,
                        updates: int) -> list[float]:
    out = []
    url = f"http://127.0.0.1:{icp.port}/"
    for i in range(updates):
        host = f"moved-{i}.bench"
        await kube.request("PATCH", HTTPSCALEDOBJECTS.path(NS, f"r{i}"),
                           body={"spec": {"hosts": [host]}}, content_type=MERGE_PATCH)
        answered = time.monotonic()
        async with asyncio.timeout(10):
            while True:  # probes back to back: each one a request the interceptor answers
                async with http.get(url, headers={"Host": host}) as resp:
                    await resp.read()
                    if resp.status == 200:
                        break
        out.append(time.monotonic() - answered)
    return out


async def slice_ready_to_forward(kube: Kube, http: aiohttp.ClientSession, icp: Interceptor,
                                 wakes: int) -> list[float]:
    ready_at: list[float] = []  # wall clock of each "slice shows a ready endpoint"
    ready, empty = asyncio.Event(), asyncio.Event()

    def on_slices(snapshot: Any, changed: frozenset[str]) -> None:
        endpoints = [e for obj in snapshot.raw.values() for e in obj.get("endpoints") or ()]
        up = any((e.get("conditions") or {}).get("ready") for e in endpoints)
        if up and not ready.is_set():
            ready_at.append(time.time())
        (ready.set if up else ready.clear)()
        # At zero only once the old pod is gone from the slice altogether: while it is
        # terminating but still serving, the interceptor rightly sends requests to it.
        (empty.set if not endpoints else empty.clear)()

    slices: Informer[Obj] = Informer(kube, ENDPOINTSLICES, namespace=NS,
                                     label_selector="kubernetes.io/service-name=cold")
    slices.subscribe(on_slices)
    watch = asyncio.create_task(slices.run())
    out = []
    try:
        await slices.wait_synced()
        for _ in range(wakes):
            async with asyncio.timeout(60):
                await empty.wait()
            await _at_zero(http, icp, f"{NS}/cold")
            held = asyncio.create_task(_get(http, f"http://127.0.0.1:{icp.port}/", "cold.bench"))
            await _scale(kube, "cold", 1)
            async with asyncio.timeout(60):
                body, cold = await held
            if cold != "true":
                raise Incomplete(f"the request was not held: {body!r}")
            received = float(body)
            out.append(received - ready_at[-1])
            print(f"wake {len(out)}: slice ready -> at the pod {out[-1] * 1000:.1f} ms "
                  f"(wall {ready_at[-1]:.3f} -> {received:.3f})", file=sys.stderr)
            await _scale(kube, "cold", 0)
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    return out


async def _at_zero(http: aiohttp.ClientSession, icp: Interceptor, key: str) -> None:
    """Until the interceptor itself has no endpoint for `key` (its watch may be a moment
    behind ours): sampled every 5 ms, for at most 10 s."""
    for _ in range(2000):
        if not (await icp.status(http))["routes"][key]["endpoints"]:
            return
        await asyncio.sleep(0.005)
    raise Incomplete(f"{key} still has endpoints in the interceptor")


async def _get(http: aiohttp.ClientSession, url: str, host: str) -> tuple[str, str]:
    """The body, and whether the interceptor held the request (its cold-start header)."""
    async with http.get(url, headers={"Host": host}) as resp:
        return await resp.text(), resp.headers.get("X-HTTPScale-Cold-Start", "")


async def _scale(kube: Kube, name: str, replicas: int) -> None:
    await kube.request("PATCH", DEPLOYMENTS.path(NS, name, "scale"),
                       body={"spec": {"replicas": replicas}}, content_type=MERGE_PATCH)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"routes": args.routes}
    state = None
    kubeconfig = args.kubeconfig
    if kubeconfig is None:
        state = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
        kubeconfig = await asyncio.to_thread(cluster_up, state)
    kube = await connect(KubeSettings(kubeconfig=kubeconfig))
    icp = Interceptor(kubeconfig)
    try:
        await install_crds(kube, await asyncio.to_thread(load_crds))
        await kube.request("POST", NAMESPACES.path(), body={"metadata": {"name": NS}})
        for name, replicas in (("app", 1), ("cold", 0)):
            deployment, service = app(name, replicas)
            await kube.request("POST", DEPLOYMENTS.path(NS), body=deployment)
            await kube.request("POST", SERVICES.path(NS), body=service)
        await kube.request("POST", HTTPSCALEDOBJECTS.path(NS), body=httpso("cold", "cold.bench",
                                                                           "cold"))
        await icp.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            await routes_listed(icp, 1)
            result["rss_1_route_mib"] = icp.rss()["VmRSS"]
            gate = asyncio.Semaphore(32)

            async def make(i: int) -> None:
                async with gate:
                    await kube.request("POST", HTTPSCALEDOBJECTS.path(NS),
                                       body=httpso(f"r{i}", f"r{i}.bench", "app"))

            started = time.monotonic()
            await asyncio.gather(*(make(i) for i in range(args.routes)))
            await routes_listed(icp, args.routes + 1)
            result["all_routes_listed_s"] = round(time.monotonic() - started, 2)
            result["rss_routes_mib"] = icp.rss()["VmRSS"]
            result["rss_per_1000_routes_mib"] = round(
                (result["rss_routes_mib"] - result["rss_1_route_mib"]) * 1000 / args.routes, 1)
            result["route_update"] = latency_summary(
                await route_updates(kube, http, icp, args.updates))
            result["slice_ready_to_forward"] = latency_summary(
                await slice_ready_to_forward(kube, http, icp, args.wakes))
        result["interceptor_exit"] = await icp.stop()
    finally:
        await icp.stop()
        if args.log is not None:
            args.log.write_text("\n".join(icp.log) + "\n")
        await kube.close()
        if state is not None:
            await asyncio.to_thread(cluster_down, state)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--wakes", type=int, default=10)
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--log", type=Path, default=None, help="write the interceptor's log here")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(args.timeout):
            return await run(args)

    try:
        result = asyncio.run(bounded())
    except (Incomplete, TimeoutError) as exc:
        print(f"incomplete: {exc!r}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
