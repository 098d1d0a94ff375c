#!/usr/bin/env python3
"""Per-component RSS and CPU on a cluster: the figures of docs/kubernetes.md, "Resources".

    .venv/bin/python loadtests/resources.py [--apps 1000] [--interceptors 3] [--window 60]
        [--kubeconfig PATH] [--timeout 1500] [--json FILE]

On the test control plane (`scripts/testcluster up` in a temporary directory, `down` at the
end, or `--kubeconfig` to reuse one: then only its namespaces `httpscale` and `apps` are
created and deleted), every component runs as a real process as its pod would
(loadtests/podproc.py: its ServiceAccount's token from the manifests' RBAC, the environment
of its Deployment, a read-only root filesystem): `--interceptors` interceptors and one scaler,
which finds them through a hand-made EndpointSlice of `httpscale-interceptor-admin`, and one
operator (leader election on, so the leader). Each binds a reserved address of the pod CIDR.

Phases, per process RSS (VmRSS at the end) and CPU (utime + stime from /proc, in millicores):

  idle      no HTTPScaledObject; `--window` seconds
  settling  `--apps` apps created (a Deployment at 0 replicas, a headless Service and an
            HTTPScaledObject each) until every interceptor and the scaler list them all, the
            operator has written every ScaledObject, kube-controller-manager has observed
            every Deployment and written every EndpointSlice, and the operator has gone
            quiet; CPU over that time
  apps      the same, settled; `--window` seconds
  keda      plus KEDA's load for every ScaledObject (loadtests/kedaload.py, a real gRPC
            client): a StreamIsActive stream each, and every 15 s IsActive + GetMetrics and
            GetMetricSpec + GetMetrics; `--window` seconds after one full round

Prints a Markdown table (the doc's), and JSON to stdout or to `--json FILE`. Exits 1 if a phase
did not complete or a component did not exit 0 on SIGTERM. Bounded by `--timeout`; every
process it starts is stopped on exit, Ctrl-C or SIGTERM. Network: loopback and the test
cluster's pod addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "k8s"))
from cluster_bench import app, httpso
from fleet import (
    GRPC_PORT,
    SYSTEM_NS,
    Fleet,
    interceptor_service,
    ms,
    pod_addresses,
    start_component,
    until_leader,
    until_listed,
    until_ready,
    within,
)
from kedaload import KedaLoad
from kubetools import apply_manifests
from operator_bench import (
    NAMESPACES,
    Incomplete,
    Stamps,
    cluster_down,
    cluster_up,
    install_crds,
    load_crds,
    settle,
    watch,
)

from httpscale.kube.api import ApiError, Kube
from httpscale.kube.config import KubeSettings, connect
from httpscale.kube.resources import (
    DEPLOYMENTS,
    ENDPOINTSLICES,
    HTTPSCALEDOBJECTS,
    SCALEDOBJECTS,
    SERVICES,
)

APPS_NS = "apps"


async def create_apps(kube: Kube, count: int) -> None:
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        name = f"app-{i}"
        deployment, service = app(name, 0)
        # Headless: the test cluster's service CIDR is a /24, 254 ClusterIPs. The interceptor
        # routes to the EndpointSlices, which a headless Service has all the same.
        service["spec"]["clusterIP"] = "None"
        async with gate:
            await kube.request("POST", DEPLOYMENTS.path(APPS_NS), body=deployment)
            await kube.request("POST", SERVICES.path(APPS_NS), body=service)
            await kube.request("POST", HTTPSCALEDOBJECTS.path(APPS_NS),
                               body=httpso(name, f"{name}.apps", name))

    await asyncio.gather(*(one(i) for i in range(count)))


async def until_cluster_settled(kube: Kube, apps: int, timeout_s: float) -> None:
    """The control plane done with the apps: every Deployment observed by the deployment
    controller and every Service's EndpointSlice written (LISTs every 3 s). Until then the
    operator and the interceptors see a stream of updates (kube-controller-manager writes at
    its default 20 requests/s), which is not the steady state the phase is about."""
    async with within(timeout_s, "the deployment and endpointslice controllers done"):
        while True:
            deployments = (await kube.request("GET", DEPLOYMENTS.path(APPS_NS)))["items"]
            observed = sum((d.get("status") or {}).get("observedGeneration", 0)
                           >= d["metadata"].get("generation", 1) for d in deployments)
            slices = len((await kube.request("GET", ENDPOINTSLICES.path(APPS_NS)))["items"])
            if observed >= apps and slices >= apps:
                return
            await asyncio.sleep(3)


class _Admin:
    """What operator_bench.settle reads of an operator: its admin URL."""

    def __init__(self, admin: str) -> None:
        self.admin = admin


async def run(args: argparse.Namespace, kubeconfig: Path, work: Path,
              report: dict[str, Any]) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    kube = await connect(KubeSettings(kubeconfig=kubeconfig))
    fleet = Fleet()
    load: KedaLoad | None = None
    phases: dict[str, Any] = report.setdefault("phases", {})
    try:
        await install_crds(kube, await asyncio.to_thread(load_crds))
        for ns in (SYSTEM_NS, APPS_NS):
            await kube.request("POST", NAMESPACES.path(), body={"metadata": {"name": ns}})
        for component in ("interceptor", "scaler", "operator"):
            await apply_manifests(kube, component, SYSTEM_NS)
        addresses = await pod_addresses(kube, args.interceptors + 2)
        await interceptor_service(kube, addresses[: args.interceptors])
        names = [f"interceptor-{i}" for i in range(args.interceptors)] + ["scaler", "operator"]
        for name, ip in zip(names, addresses, strict=True):
            component = name.split("-")[0]
            proc = await start_component(kube, kubeconfig, work, component, name, ip,
                                         not args.writable_root)
            fleet.pods.append((component, ip, proc))
        report["addresses"] = dict(zip(names, addresses, strict=True))
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await until_ready(http, fleet, 120)
            await until_leader(kube, fleet, 60)
            print(f"components ready; idle for {args.window:.0f} s", file=sys.stderr)
            phases["idle"] = await fleet.measure(args.window)

            scaled_objects = Stamps()
            watcher = await watch(kube, SCALEDOBJECTS, APPS_NS, scaled_objects)
            try:
                cpu0, t0 = fleet.cpu(), time.monotonic()
                await create_apps(kube, args.apps)
                created = time.monotonic() - t0
                print(f"{args.apps} apps created in {created:.1f} s", file=sys.stderr)
                async with within(300, f"{args.apps} ScaledObjects written"):
                    await scaled_objects.wait_for(f"app-{i}" for i in range(args.apps))
                await until_listed(http, fleet, args.apps, 300)
                await until_cluster_settled(kube, args.apps, 600)
                await settle(http, _Admin(fleet.admin("operator", addresses[-1])),  # type: ignore[arg-type]
                             scaled_objects)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            cpu1, wall = fleet.cpu(), time.monotonic() - t0
            rss = fleet.rss()
            phases["settling"] = {n: {"rss_mib": rss[n], "cpu_m": ms(cpu1[n] - cpu0[n], wall)}
                                  for n in rss}
            report["settling_s"] = round(wall, 1)
            report["apps_created_s"] = round(created, 1)
            print(f"settled after {wall:.1f} s; apps for {args.window:.0f} s", file=sys.stderr)
            phases["apps"] = await fleet.measure(args.window)

            listed = await kube.request("GET", SCALEDOBJECTS.path(APPS_NS))
            refs = [(so["metadata"]["name"], APPS_NS, so["spec"]["triggers"][0]["metadata"])
                    for so in listed["items"]]
            load = KedaLoad(f"{addresses[args.interceptors]}:{GRPC_PORT}", refs)
            await load.start()
            print(f"KEDA's load on for {len(refs)} ScaledObjects; {args.window:.0f} s",
                  file=sys.stderr)
            calls0 = load.snapshot()
            phases["keda"] = await fleet.measure(args.window)
            calls = load.snapshot() - calls0
            report["keda_calls"] = dict(sorted(calls.items()))
            report["keda_streams_open"] = load.streams_open
    finally:
        if load is not None:
            await load.stop()
        exits = await asyncio.gather(*(p.stop() for _, _, p in fleet.pods))
        report["components"] = [p.describe() for _, _, p in fleet.pods]
        report["exit_codes"] = dict(zip((p.name for _, _, p in fleet.pods), exits, strict=True))
        if args.kubeconfig is not None:
            for ns in (APPS_NS, SYSTEM_NS):
                with contextlib.suppress(ApiError):
                    await kube.request("DELETE", NAMESPACES.path(name=ns))
        await kube.close()


def _span(values: list[float], unit: str, digits: int) -> str:
    low, high = min(values), max(values)
    fmt = f"{{:.{digits}f}}"
    if fmt.format(low) == fmt.format(high):
        return f"{fmt.format(low)} {unit}"
    return f"{fmt.format(low)}\u2013{fmt.format(high)} {unit}"  # an en dash, as the doc


def _cell(figures: list[dict[str, float]]) -> str:
    cpu = [f["cpu_m"] for f in figures]
    digits = 1 if max(cpu) < 10 else 0
    return f"{_span([f['rss_mib'] for f in figures], 'MiB', 1)}, {_span(cpu, 'm', digits)}"


def table(report: dict[str, Any]) -> str:
    phases, n = report.get("phases", {}), report["interceptors"]
    calls = report.get("keda_calls", {})
    done = sum(v for k, v in calls.items() if k.split()[0] != "StreamIsActive")
    failed = sum(v for k, v in calls.items() if not k.endswith((" OK", " message")))
    labels = {
        "idle": "idle: no HTTPScaledObject",
        "settling": f"{report['apps']:,} apps created (Deployment, headless Service, HTTPSO "
                    f"each) until all listed and everything quiet: {report.get('settling_s')} s",
        "apps": f"{report['apps']:,} apps, settled ({report['apps']:,} ScaledObjects written)",
        "keda": f"+ KEDA's load: a `StreamIsActive` stream each, and per object every 15 s "
                f"`IsActive` + `GetMetrics` and `GetMetricSpec` + `GetMetrics`: {done:,} "
                f"calls in {report['window_s']:.0f} s, {failed} failed",
    }
    lines = [f"| phase | interceptor (each of {n}) | scaler | operator |", "|---|---|---|---|"]
    for phase, label in labels.items():
        if phase not in phases:
            continue
        figures = phases[phase]
        icp = [v for k, v in figures.items() if k.startswith("interceptor-")]
        lines.append(f"| {label} | {_cell(icp)} | {_cell([figures['scaler']])} "
                     f"| {_cell([figures['operator']])} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--apps", type=int, default=1000, help="apps (Deployment, Service, HTTPSO)")
    p.add_argument("--interceptors", type=int, default=3, help="interceptor processes")
    p.add_argument("--window", type=float, default=60, help="seconds measured per phase")
    p.add_argument("--kubeconfig", type=Path, default=None,
                   help="reuse this cluster (default: start one with scripts/testcluster)")
    p.add_argument("--timeout", type=float, default=1500, help="seconds for the whole run")
    p.add_argument("--json", type=Path, default=None, help="write the JSON here, not to stdout")
    p.add_argument("--writable-root", action="store_true",
                   help="leave the root filesystem writable (no `mount -o remount,ro /`)")
    args = p.parse_args(argv)
    if args.apps < 1 or args.interceptors < 1 or args.window <= 0:
        p.error("--apps and --interceptors must be at least 1, --window above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("resources.py needs root: each component gets a private mount namespace",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    report: dict[str, Any] = {
        "apps": args.apps, "interceptors": args.interceptors, "window_s": args.window,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "read_only_root": not args.writable_root,
    }
    # As operator_bench: Ctrl-C (even when started in the background) and SIGTERM before the
    # event loop runs unwind through the `finally` below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    tmp = tempfile.TemporaryDirectory(prefix="resources-")
    work = Path(tmp.name)
    own_cluster = args.kubeconfig is None
    try:
        deadline = time.monotonic() + args.timeout
        kubeconfig = cluster_up(work / "cluster") if own_cluster else args.kubeconfig

        async def bounded() -> None:
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                await run(args, kubeconfig, work, report)

        asyncio.run(bounded())
    except (Incomplete, ApiError) as exc:
        report["incomplete"] = str(exc)
    except TimeoutError:
        report["incomplete"] = f"not done within --timeout {args.timeout:.0f} s"
    except (KeyboardInterrupt, asyncio.CancelledError):
        report["incomplete"] = "interrupted"
    except Exception as exc:  # a bug here, or the cluster's: still the figures measured so far
        traceback.print_exc()
        report["incomplete"] = repr(exc)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the teardown is not to be interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if own_cluster:
            cluster_down(work / "cluster")
        tmp.cleanup()
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(table(report))
    if report.get("incomplete"):
        print(f"\nincomplete: {report['incomplete']}")
    text = json.dumps(report, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    else:
        print(text)
    bad_exit = any(code != 0 for code in report.get("exit_codes", {}).values())
    return 1 if report.get("incomplete") or bad_exit else 0


if __name__ == "__main__":
    sys.exit(main())
