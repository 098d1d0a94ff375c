"""Operator at scale: N HTTPScaledObjects applied at once -> their KEDA ScaledObjects.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python loadtests/operator_bench.py [--count 1000] [--concurrency 32]
        [--single 50] [--kubeconfig PATH] [--json] [--timeout 600] [--profile FILE]

Starts its own control plane (`scripts/testcluster up` in a temporary state directory, `down`
at the end, also on Ctrl-C, SIGTERM or failure) unless `--kubeconfig` names one to reuse (then
only its own namespace is created and deleted). Installs httpscale's CRDs and KEDA's
ScaledObject CRD, one Deployment and one Service, and runs `httpscale operator` as a real
subprocess (`--no-leader-elect`, one namespace). Then, on one monotonic clock:

  burst    `--count` HTTPSOs created by `--concurrency` clients in flight; for each, the time
           its create request was sent -> the time this process read its ScaledObject's ADDED
           watch event (and the HTTPSO's first watch event with Ready=True, reason Reconciled)
  single   `--single` more, one at a time, each waiting for its ScaledObject and its Ready
           before the next: the same latency for an operator that is not busy

The watches here are `httpscale.kube`'s Reflector (the list+watch an Informer runs) with a sink
that only stamps times: an Informer would rebuild its whole snapshot after every batch of
events, work that would run on the same 2 cores as what is measured.

Also the operator's RSS (VmRSS, VmHWM) idle, after the burst settled and at the end; its CPU
seconds (and the control plane's) during the burst; its /metrics (API writes, reconciles);
the writes the apiserver served (its own `apiserver_request_total`, by verb, resource and
code: the operator's writes as the server counted them); the Events it wrote. Prints a
table, and with `--json` one JSON line. Asserts nothing; exits 1 if a phase did not complete
(the table then shows what was measured) or the operator did not exit 0 on SIGTERM.
Method and figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import yaml
from benchkit import cpu_seconds, free_port, stop_group
from prometheus_client.parser import text_string_to_metric_families

from httpscale.kube.api import APPLY_PATCH, ApiError, Kube, Obj
from httpscale.kube.cache import Informer
from httpscale.kube.config import KubeSettings, connect
from httpscale.kube.resources import (
    CRDS,
    DEPLOYMENTS,
    EVENTS,
    HTTPSCALEDOBJECTS,
    SCALEDOBJECTS,
    SERVICES,
    Resource,
)
from httpscale.kube.watch import Reflector, WatchSettings

REPO = Path(__file__).resolve().parent.parent
TESTCLUSTER = REPO / "scripts" / "testcluster"
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
FIELD_MANAGER = "operator-bench"
APP = "app"  # the Deployment and Service every HTTPSO points at
OPERATOR_COMPONENT = "httpscale-operator"  # Events' reportingComponent
SETTLE_QUIET_S = 1.0  # settled: nothing reconciled, written or recorded for this long
SETTLE_MAX_S = 60.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class Incomplete(Exception):
    """A phase did not finish; the report shows what was measured."""


# -- figures ---------------------------------------------------------------------------------


def pct(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None without samples."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_summary(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        **{f"p{p}_ms": _r(pct(ms, p)) for p in (50, 90, 99)},
        "max_ms": _r(max(ms)) if ms else None,
        "min_ms": _r(min(ms)) if ms else None,
    }


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of `pid`, MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of the one process `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


# -- watches that stamp times ----------------------------------------------------------------


class Stamps:
    """A `WatchSink` recording when each object first satisfied `check` (its first event, for
    the default), stamped as the event is read, before any other work. `wait_for` is woken by
    the events themselves."""

    def __init__(self, check: Callable[[Obj], bool] = lambda obj: True) -> None:
        self.check = check
        self.at: dict[str, float] = {}
        self.events = 0
        self.last_event = time.monotonic()
        # Events only, the operator's: new Events by reason, and count bumps (a repeat).
        self.reasons: Counter[str] = Counter()
        self.bumps = 0
        self._changed = asyncio.Event()

    def replace(self, items: list[Obj], resource_version: str) -> None:
        for obj in items:
            self._see("ADDED", obj)

    def apply(self, event_type: str, obj: Obj) -> None:
        if event_type != "DELETED":
            self._see(event_type, obj)

    def connection_changed(self, connected: bool, error: str | None) -> None:
        pass

    def _see(self, event_type: str, obj: Obj) -> None:
        now = time.monotonic()
        self.events += 1
        self.last_event = now
        name = obj["metadata"]["name"]
        ours = obj.get("reportingComponent") == OPERATOR_COMPONENT
        if name not in self.at and self.check(obj):
            self.at[name] = now
            if ours:
                self.reasons[str(obj.get("reason"))] += 1
        elif ours and event_type == "MODIFIED":
            self.bumps += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, names: Iterable[str]) -> None:
        wanted = set(names)
        while not wanted <= self.at.keys():
            await self._changed.wait()


def ready_reconciled(obj: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" and c.get("reason") == "Reconciled"
        for c in (obj.get("status") or {}).get("conditions") or ()
    )


# -- the cluster -----------------------------------------------------------------------------


def cluster_up(state: Path) -> Path:
    env = {**os.environ, "HTTPSCALE_TESTCLUSTER_DIR": str(state)}
    # Its own session, so Ctrl-C reaches only the benchmark, which then sends SIGTERM: `up`
    # traps it and stops what it had started (SIGKILL, subprocess.run's way, would not).
    proc = subprocess.Popen(
        [str(TESTCLUSTER), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except BaseException:
        proc.terminate()
        proc.communicate(timeout=60)
        raise
    found = re.findall(r"^KUBECONFIG=(.+)$", stdout, re.M)
    if proc.returncode != 0 or not found:
        raise Incomplete(f"testcluster up exited {proc.returncode}:\n{stderr[-2000:]}")
    started = re.search(r"up in [\d.]+s.*", stderr)
    print(f"cluster: {started.group(0) if started else 'up'} (state in {state})", flush=True)
    return Path(found[-1])


def cluster_down(state: Path) -> None:
    env = {**os.environ, "HTTPSCALE_TESTCLUSTER_DIR": str(state)}
    # Its own session: a second Ctrl-C in the terminal must not interrupt the teardown.
    done = subprocess.run(
        [str(TESTCLUSTER), "down"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    if done.returncode != 0:
        print(f"testcluster down exited {done.returncode}:\n{done.stderr[-2000:]}", file=sys.stderr)


def component_pids(state: Path | None) -> dict[str, int]:
    """Process group ids of the control plane's components (only for a cluster we started)."""
    out: dict[str, int] = {}
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kubelet"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            out[name] = int((state / f"{name}.pid").read_text().split()[0])  # type: ignore[operator]
    return out


def load_crds() -> list[Obj]:
    docs: list[Obj] = []
    for path in sorted((REPO / "manifests" / "crd").glob("*.yaml")):
        docs += [
            d
            for d in yaml.safe_load_all(path.read_text())
            if d and d.get("kind") == "CustomResourceDefinition"
        ]
    done = subprocess.run(
        [str(TESTCLUSTER), "keda-crds"], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise Incomplete(f"testcluster keda-crds exited {done.returncode}: {done.stderr[-1000:]}")
    keda = Path(done.stdout.strip().splitlines()[-1]) / "keda.sh_scaledobjects.yaml"
    docs += [d for d in yaml.safe_load_all(keda.read_text()) if d]
    return docs


async def install_crds(kube: Kube, crds: list[Obj], timeout_s: float = 60) -> None:
    for crd in crds:
        await kube.request(
            "PATCH",
            CRDS.path(name=crd["metadata"]["name"]),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=crd,
            content_type=APPLY_PATCH,
        )
    names = {crd["metadata"]["name"] for crd in crds}
    informer: Informer[Obj] = Informer(kube, CRDS)
    established = asyncio.Event()

    def check(snapshot: Any, changed: frozenset[str]) -> None:
        if all(
            any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in (snapshot.raw.get(n, {}).get("status") or {}).get("conditions") or ()
            )
            for n in names
        ):
            established.set()

    informer.subscribe(check)
    task = asyncio.create_task(informer.run(), name="watch crds")
    try:
        async with asyncio.timeout(timeout_s):
            await established.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def create_app(kube: Kube, ns: str) -> None:
    await kube.request("POST", NAMESPACES.path(), body={"metadata": {"name": ns}})
    labels = {"app": APP}
    await kube.request(
        "POST",
        DEPLOYMENTS.path(ns),
        body={
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": APP, "labels": labels},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": APP, "image": "none", "command": ["true"]}]},
                },
            },
        },
    )
    await kube.request(
        "POST",
        SERVICES.path(ns),
        body={
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": APP},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
            },
        },
    )


async def warm_up(kube: Kube, ns: str) -> None:
    """Create and delete one HTTPSO and one ScaledObject before the operator starts. On a fresh
    apiserver the first write of each custom resource kind takes ~2 s (its log then says
    "quota admission added evaluator for: scaledobjects.keda.sh"): a one-time cost of the
    apiserver, which would otherwise land on the first creates of the burst."""
    scaled_object = {
        "apiVersion": SCALEDOBJECTS.api_version,
        "kind": SCALEDOBJECTS.kind,
        "metadata": {"name": "warm-up"},
        "spec": {
            "scaleTargetRef": {"name": APP},
            "triggers": [{"type": "cpu", "metadata": {"value": "50"}}],
        },
    }
    for resource, body in ((SCALEDOBJECTS, scaled_object), (HTTPSCALEDOBJECTS, httpso("warm-up"))):
        await kube.request("POST", resource.path(ns), body=body)
        await kube.request("DELETE", resource.path(ns, "warm-up"))


_WRITE_RESOURCES = frozenset({"httpscaledobjects", "scaledobjects", "events"})


async def apiserver_writes(kube: Kube) -> Counter[str]:
    """Writes the apiserver has served to HTTPSOs, ScaledObjects and core Events, from its own
    `apiserver_request_total`, as {"<verb> <resource>[/<subresource>] <code>": count}: what
    the operator really sent, whatever its own metrics say."""
    async with kube.stream("/metrics", accept="text/plain", read_timeout=30) as body:
        text = (await body.read()).decode()
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        head, _, value = line.rpartition(" ")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if labels.get("verb") in ("GET", "LIST", "WATCH", "WATCHLIST"):
            continue
        if labels.get("resource") not in _WRITE_RESOURCES or labels.get("group") == "events.k8s.io":
            continue
        sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
        out[f"{labels['verb']} {labels['resource']}{sub} {labels.get('code')}"] += int(float(value))
    return out


def writes_between(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in sorted(after) if after[k] - before[k]}


def httpso(name: str) -> Obj:
    return {
        "apiVersion": HTTPSCALEDOBJECTS.api_version,
        "kind": HTTPSCALEDOBJECTS.kind,
        "metadata": {"name": name},
        "spec": {
            "hosts": [f"{name}.bench"],
            "scaleTargetRef": {"name": APP, "service": APP, "port": 8080},
            "replicas": {"min": 0, "max": 5},
        },
    }


# -- the operator process --------------------------------------------------------------------


def _die_with_parent() -> None:
    # In the child between fork and exec: SIGKILL it if the benchmark dies without cleaning up.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# `--profile`: cProfile timed by the process's CPU clock, not the wall clock (`python -m
# cProfile`'s), which on a machine shared with the apiserver charges whatever function was
# running with the time the process spent descheduled. Stats are written on exit.
_PROFILED = """\
import cProfile, sys, time
from httpscale.cli import main
out = sys.argv.pop(1)
profile = cProfile.Profile(time.process_time)
try:
    profile.runcall(main)
finally:
    profile.dump_stats(out)
"""


class OperatorProcess:
    """`httpscale operator` as a subprocess in its own session; its log is read line by line
    (kept whole in `--log`, last lines in memory, warnings counted)."""

    def __init__(self, log_path: Path | None) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.admin_port = free_port()
        self.tail: deque[str] = deque(maxlen=40)
        self.levels: Counter[str] = Counter()
        self.ready = asyncio.Event()
        self._log = log_path.open("w") if log_path else None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def start(self, kubeconfig: Path, ns: str, args: argparse.Namespace) -> None:
        command = [sys.executable, "-m", "httpscale"]
        if args.profile:
            command = [sys.executable, "-c", _PROFILED, str(args.profile)]
        argv = [
            *command, "operator", "--kubeconfig", str(kubeconfig),
            "--watch-namespace", ns, "--namespace", ns,
            "--scaler-address", "httpscale-scaler.httpscale:9091",
            "--admin-host", "127.0.0.1", "--admin-port", str(self.admin_port),
            "--workers", str(args.workers), "--no-leader-elect",
        ]  # fmt: skip
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            cwd=REPO,
        )
        self._reader = asyncio.create_task(self._read(), name="operator log")
        ready = asyncio.create_task(self.ready.wait(), name="operator ready")
        exited = asyncio.create_task(self.proc.wait(), name="operator exit")
        try:
            async with asyncio.timeout(60):
                await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
        if not self.ready.is_set():
            raise Incomplete("operator exited before ready:\n" + "\n".join(self.tail))

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            self.tail.append(text)
            if self._log is not None:
                self._log.write(text + "\n")
            level = text.split()[2] if len(text.split()) > 2 else ""
            if level in ("WARNING", "ERROR", "CRITICAL"):
                self.levels[level] += 1
            if "ready: caches synced" in text:
                self.ready.set()

    async def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, wait up to `grace`, then SIGKILL; the exit code (negative: a signal)."""
        proc = self.proc
        if proc is None:
            return None
        await stop_group(proc, grace)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)
        if self._log is not None:
            self._log.close()
        return proc.returncode


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The operator's /metrics as {"name{label=value,...}": value}."""
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def metric(m: dict[str, float], name: str) -> float:
    """Sum of every sample of `name` (all label sets)."""
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def reconciles(m: dict[str, float]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in m.items():
        found = re.fullmatch(r"httpscale_operator_reconciles_total\{kind=(\w+),result=(\w+)\}", key)
        if found and value:
            out[f"{found.group(1)}/{found.group(2)}"] = int(value)
    return out


async def settle(http: aiohttp.ClientSession, op: OperatorProcess, events: Stamps) -> float:
    """Until the operator has nothing queued and neither reconciled, written nor recorded an
    Event for `SETTLE_QUIET_S`: the operator exposes no "idle" signal to wait on, so its
    /metrics is sampled (every 0.2 s, bounded by SETTLE_MAX_S). The moment it went quiet."""
    deadline = time.monotonic() + SETTLE_MAX_S
    last: tuple[float, float] | None = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        m = await scrape(http, op.admin)
        now = time.monotonic()
        seen = (
            metric(m, "httpscale_operator_reconciles_total"),
            metric(m, "httpscale_operator_api_writes_total"),
        )
        if seen != last or m.get("httpscale_operator_queue_depth", 0) > 0:
            last, quiet_since = seen, now
        quiet_since = max(quiet_since, events.last_event)
        if now - quiet_since >= SETTLE_QUIET_S:
            return quiet_since
        await asyncio.sleep(0.2)
    raise Incomplete(f"operator still busy {SETTLE_MAX_S:.0f} s after the burst")


# -- the benchmark ---------------------------------------------------------------------------


async def watch(kube: Kube, resource: Resource, ns: str, sink: Stamps) -> asyncio.Task[None]:
    reflector = Reflector(kube, resource, sink, namespace=ns, settings=WatchSettings())
    return asyncio.create_task(reflector.run(), name=f"watch {resource.plural}")


async def run(
    args: argparse.Namespace, kubeconfig: Path, state: Path | None, report: dict[str, Any]
) -> None:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM ends the run as Ctrl-C does: cancel, then clean up in `finally`.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    kube = await connect(KubeSettings(kubeconfig=kubeconfig))
    ns = f"opbench-{os.getpid()}"
    op = OperatorProcess(args.log)
    tasks: list[asyncio.Task[None]] = []
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    phase = "setup"
    try:
        async with asyncio.timeout(args.timeout):
            t0 = time.monotonic()
            await install_crds(kube, await asyncio.to_thread(load_crds))
            await create_app(kube, ns)
            await warm_up(kube, ns)
            report["setup_s"] = {"crds_app": round(time.monotonic() - t0, 2)}
            t0 = time.monotonic()
            await op.start(kubeconfig, ns, args)
            report["setup_s"]["operator_ready"] = round(time.monotonic() - t0, 2)
            scaled, ready, events = Stamps(), Stamps(ready_reconciled), Stamps()
            tasks += [
                await watch(kube, SCALEDOBJECTS, ns, scaled),
                await watch(kube, HTTPSCALEDOBJECTS, ns, ready),
                await watch(kube, EVENTS, ns, events),
            ]
            m_idle = await scrape(http, op.admin)
            api_idle = await apiserver_writes(kube)
            report["memory_mib"] = {"idle": proc_memory(op.pid)}

            phase = "burst"
            names = [f"burst-{i:05d}" for i in range(args.count)]
            await burst(kube, ns, names, args.concurrency, scaled, ready, op, state, report)
            settled = await settle(http, op, events)
            b = report["burst"]
            b["settled_s"] = round(settled - b["_t0"], 2)
            cpu = report["cpu_s"]
            cpu["operator"] = round(proc_cpu(op.pid) - cpu["operator"], 2)
            for name, pgid in component_pids(state).items():
                cpu[name] = round(cpu_seconds(pgid) - cpu[name], 2)
            cpu["benchmark"] = round(time.process_time() - cpu["benchmark"], 2)
            report["memory_mib"]["after_burst"] = proc_memory(op.pid)
            m_burst = await scrape(http, op.admin)
            api_burst = await apiserver_writes(kube)
            report["apiserver_writes"] = {"burst": writes_between(api_idle, api_burst)}
            writes = "httpscale_operator_api_writes_total"
            report["writes"] = {"burst": int(metric(m_burst, writes) - metric(m_idle, writes))}
            report["events_burst"] = dict(events.reasons)

            phase = "single"
            singles = [f"single-{i:05d}" for i in range(args.single)]
            await single(kube, ns, singles, scaled, ready, report)

            phase = "end"
            m_end = await scrape(http, op.admin)
            report["apiserver_writes"]["single"] = writes_between(
                api_burst, await apiserver_writes(kube)
            )
            report["memory_mib"]["end"] = proc_memory(op.pid)
            report["writes"]["single"] = int(
                metric(m_end, "httpscale_operator_api_writes_total")
                - metric(m_burst, "httpscale_operator_api_writes_total")
            )
            report["writes"]["total"] = int(metric(m_end, "httpscale_operator_api_writes_total"))
            report["reconciles"] = reconciles(m_end)
            duration_count = metric(m_end, "httpscale_operator_reconcile_duration_seconds_count")
            duration_sum = metric(m_end, "httpscale_operator_reconcile_duration_seconds_sum")
            report["reconcile_mean_ms"] = _r(1000 * duration_sum / max(duration_count, 1), 2)
            report["events_dropped"] = int(metric(m_end, "httpscale_operator_events_dropped"))
            report["events_total"] = dict(events.reasons)
            report["event_bumps"] = events.bumps
    except TimeoutError:
        report["incomplete"] = f"global timeout ({args.timeout:.0f} s) in phase {phase}"
    except (Incomplete, ApiError, aiohttp.ClientError) as exc:
        report["incomplete"] = f"phase {phase}: {exc}"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.close()
        code = await asyncio.shield(op.stop())
        report["operator"] = {"exit_code": code, "log_levels": dict(op.levels)}
        if code not in (0, None) or report.get("incomplete"):
            report["operator"]["log_tail"] = list(op.tail)[-15:]
        if state is None:  # a cluster we did not start: take our namespace away
            with contextlib.suppress(ApiError):
                await kube.request("DELETE", NAMESPACES.path(name=ns))
        await kube.close()


async def burst(
    kube: Kube,
    ns: str,
    names: list[str],
    concurrency: int,
    scaled: Stamps,
    ready: Stamps,
    op: OperatorProcess,
    state: Path | None,
    report: dict[str, Any],
) -> None:
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    todo = iter(names)

    async def client() -> None:
        for name in todo:
            sent[name] = time.monotonic()
            await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso(name))
            answered[name] = time.monotonic()

    report["cpu_s"] = {
        "operator": proc_cpu(op.pid),
        "benchmark": time.process_time(),
        **{n: cpu_seconds(g) for n, g in component_pids(state).items()},
    }
    t0 = time.monotonic()
    b: dict[str, Any] = {"_t0": t0}
    report["burst"] = b
    try:
        async with asyncio.TaskGroup() as group:
            for i in range(concurrency):
                group.create_task(client(), name=f"create client {i}")
        b["all_created_s"] = round(time.monotonic() - t0, 2)
        await scaled.wait_for(names)
        b["all_scaled_objects_s"] = round(max(scaled.at[n] for n in names) - t0, 2)
        await ready.wait_for(names)
        b["all_ready_s"] = round(max(ready.at[n] for n in names) - t0, 2)
    finally:
        b["create_rtt"] = latency_summary([answered[n] - sent[n] for n in answered])
        b["to_scaled_object"] = latency_summary(
            [scaled.at[n] - sent[n] for n in sent if n in scaled.at]
        )
        b["to_ready"] = latency_summary([ready.at[n] - sent[n] for n in sent if n in ready.at])


async def single(
    kube: Kube, ns: str, names: list[str], scaled: Stamps, ready: Stamps, report: dict[str, Any]
) -> None:
    to_so: list[float] = []
    to_ready: list[float] = []
    try:
        for name in names:
            sent = time.monotonic()
            await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso(name))
            await scaled.wait_for([name])
            to_so.append(scaled.at[name] - sent)
            await ready.wait_for([name])
            to_ready.append(ready.at[name] - sent)
    finally:
        report["single"] = {
            "to_scaled_object": latency_summary(to_so),
            "to_ready": latency_summary(to_ready),
        }


# -- report ----------------------------------------------------------------------------------


def _lat(d: dict[str, Any] | None) -> str:
    if not d or not d.get("n"):
        return "—"
    return f"{d['p50_ms']} / {d.get('p90_ms', '—')} / {d['p99_ms']} / {d['max_ms']} ms (n={d['n']})"


def _sec(value: float | None) -> str:
    return "—" if value is None else f"{value} s"


def _mem(d: dict[str, float] | None) -> str:
    return f"{d['VmRSS']} MiB (VmHWM {d['VmHWM']})" if d else "—"


def print_report(r: dict[str, Any]) -> None:
    b, s = r.get("burst") or {}, r.get("single") or {}
    mem, cpu, w = r.get("memory_mib") or {}, r.get("cpu_s") or {}, r.get("writes") or {}
    n, q = r["count"], "p50 / p90 / p99 / max"
    rows = [
        (f"burst: create sent → ScaledObject seen, {q}", _lat(b.get("to_scaled_object"))),
        (f"burst: create sent → Ready=True seen, {q}", _lat(b.get("to_ready"))),
        (f"burst: create request round trip, {q}", _lat(b.get("create_rtt"))),
        (
            f"burst: all {n} created (first sent → last answered)",
            _sec(b.get("all_created_s")),
        ),
        (f"burst: all {n} ScaledObjects present", _sec(b.get("all_scaled_objects_s"))),
        (f"burst: all {n} HTTPSOs Ready=True", _sec(b.get("all_ready_s"))),
        (
            "burst: ScaledObjects per second (count / time until all present)",
            f"{n / b['all_scaled_objects_s']:.0f}" if b.get("all_scaled_objects_s") else "—",
        ),
        ("burst: operator quiet (settled)", _sec(b.get("settled_s"))),
        (
            f"single ({r['single_count']}, one at a time): create → ScaledObject, {q}",
            _lat(s.get("to_scaled_object")),
        ),
        (f"single: create → Ready=True, {q}", _lat(s.get("to_ready"))),
        ("operator RSS idle, 0 objects", _mem(mem.get("idle"))),
        (f"operator RSS after the burst ({n} objects)", _mem(mem.get("after_burst"))),
        (f"operator RSS at the end ({n + r['single_count']} objects)", _mem(mem.get("end"))),
    ]
    if mem.get("idle") and mem.get("after_burst"):
        grow = mem["after_burst"]["VmRSS"] - mem["idle"]["VmRSS"]
        rows.append(
            (
                "RSS growth idle → after burst, per object",
                f"{grow:.1f} MiB, {grow * 1024 / n:.1f} KiB",
            )
        )
    if "settled_s" in b:
        cores = cpu["operator"] / b["settled_s"] if b["settled_s"] else 0
        rows.append(
            (
                "CPU during the burst (until settled): operator",
                f"{cpu['operator']} s ({cores:.2f} cores)",
            )
        )
        others = ", ".join(f"{k} {v}" for k, v in cpu.items() if k != "operator")
        rows.append(("CPU during the burst: others (s)", others))
    if "burst" in w:
        rows.append(
            (
                "API writes (httpscale_operator_api_writes_total): burst",
                f"{w['burst']} ({w['burst'] / n:.2f} per object)",
            )
        )
    for part, count in (("burst", n), ("single", r["single_count"])):
        seen = (r.get("apiserver_writes") or {}).get(part)
        if seen is None or not count:
            continue
        ours = {k: v for k, v in seen.items() if not k.startswith("POST httpscaledobjects ")}
        rows.append(
            (
                f"writes the apiserver served, {part} (the benchmark's creates left out)",
                ", ".join(f"{k}: {v}" for k, v in ours.items())
                + f"; {sum(ours.values()) / count:.2f} per object",
            )
        )
    if "single" in w and r["single_count"]:
        rows.append(
            (
                "API writes: single",
                f"{w['single']} ({w['single'] / r['single_count']:.2f} per object)",
            )
        )
    if "reconciles" in r:
        total = sum(r["reconciles"].values())
        objects = n + r["single_count"]
        rows.append(
            (
                "reconciles (kind/result)",
                ", ".join(f"{k} {v}" for k, v in sorted(r["reconciles"].items()))
                + f"; {total / objects:.2f} per object; mean {r['reconcile_mean_ms']} ms",
            )
        )
    if "events_total" in r:
        rows.append(
            (
                "Events written by the operator (reason: count)",
                ", ".join(f"{k} {v}" for k, v in sorted(r["events_total"].items())) or "none",
            )
        )
        rows.append(
            (
                "Events: count bumps (PATCH) / dropped (queue full)",
                f"{r.get('event_bumps', '—')} / {r['events_dropped']}",
            )
        )
    op = r.get("operator") or {}
    rows.append(("operator exit code on SIGTERM", str(op.get("exit_code"))))
    rows.append(
        (
            "operator log lines at WARNING or above",
            ", ".join(f"{k} {v}" for k, v in op.get("log_levels", {}).items()) or "none",
        )
    )
    width = max(len(k) for k, _ in rows)
    print(f"\n| {'figure':<{width}} | value |\n|{'-' * (width + 2)}|---|")
    for k, v in rows:
        print(f"| {k:<{width}} | {v} |")
    if r.get("incomplete"):
        print(f"\nINCOMPLETE: {r['incomplete']}")
    if op.get("log_tail"):
        print("operator log, last lines:\n  " + "\n  ".join(op["log_tail"]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=1000, help="HTTPSOs created in the burst")
    p.add_argument("--concurrency", type=int, default=32, help="create requests in flight")
    p.add_argument("--single", type=int, default=50, help="HTTPSOs created one at a time after")
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="reuse this cluster (default: start one with scripts/testcluster)",
    )
    p.add_argument("--workers", type=int, default=4, help="the operator's --workers")
    p.add_argument("--timeout", type=float, default=600, help="seconds for the whole run")
    p.add_argument("--json", action="store_true", help="also print one JSON line")
    p.add_argument("--log", type=Path, default=None, help="write the operator's log here")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the operator under cProfile, writing its stats here",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    report: dict[str, Any] = {
        "count": args.count,
        "single_count": args.single,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "leader_election": False,
        "profiled": bool(args.profile),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"operator benchmark: {args.count} HTTPScaledObjects, {args.concurrency} creates in "
        f"flight, then {args.single} one at a time; {os.cpu_count()} CPUs, load average "
        f"{' '.join(map(str, report['loadavg_before']))}"
        + (" (operator under cProfile)" if args.profile else ""),
        flush=True,
    )
    # Ctrl-C even when started in the background (which inherits SIGINT ignored), and SIGTERM
    # before the event loop runs (during `up`), unwind through the `finally` below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    state: Path | None = None
    tmp = None if args.kubeconfig else tempfile.TemporaryDirectory(prefix="operator-bench-")
    try:
        if tmp is not None:
            state = Path(tmp.name)
            t0 = time.monotonic()
            kubeconfig = cluster_up(state)
            report["cluster_up_s"] = round(time.monotonic() - t0, 2)
        else:
            kubeconfig = args.kubeconfig
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run(args, kubeconfig, state, report))
    except Incomplete as exc:
        report["incomplete"] = str(exc)
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (a cancel)
        report["incomplete"] = "interrupted"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the teardown is not to be interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if tmp is not None:
            cluster_down(Path(tmp.name))
            tmp.cleanup()
        report["wall_s"] = round(time.monotonic() - started, 1)
        report.get("burst", {}).pop("_t0", None)
        print_report(report)
        print(f"\nwhole run: {report['wall_s']} s")
        if args.json:
            print(json.dumps(report, separators=(",", ":")))
    failed = bool(report.get("incomplete")) or report.get("operator", {}).get("exit_code") != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
