"""Two `httpscale operator` processes at once: one leader writes, the other only watches;
the leader stopping (SIGTERM: the Lease is released) or dying (SIGKILL: the Lease expires)
hands the work to the other, which reconciles what changed meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from kubetools import create_app, temporary_namespace, until
from test_operator import create, httpso
from testcluster import Cluster

from httpscale.kube.api import Kube
from httpscale.kube.resources import EVENTS, LEASES, SCALEDOBJECTS

pytestmark = pytest.mark.k8s

LEASE = "httpscale-operator"
LEASE_DURATION = 3.0
_STARTED = re.compile(r"operator (\S+) watching .* admin on port (\d+)")
_READY = "ready: caches synced"


@dataclass
class OperatorProcess:
    proc: asyncio.subprocess.Process
    identity: str
    admin: str  # base URL of its admin server
    log: list[str]

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                http.get(self.admin + path) as resp:
            return resp.status, await resp.text()

    async def metric(self, name: str) -> float:
        """The sum of a metric's samples on /metrics (0 if it has none)."""
        _, text = await self.get("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))


async def _pump(stream: asyncio.StreamReader, log: list[str]) -> None:
    while line := await stream.readline():
        log.append(line.decode(errors="replace").rstrip())


@contextlib.asynccontextmanager
async def operator_process(k8s_cluster: Cluster, ns: str) -> AsyncIterator[OperatorProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "operator",
        "--kubeconfig", str(k8s_cluster.kubeconfig),
        "--watch-namespace", ns, "--namespace", ns,
        "--scaler-address", "httpscale-scaler.httpscale:9091",
        "--admin-host", "127.0.0.1", "--admin-port", "0",
        "--lease-duration", str(LEASE_DURATION), "--renew-deadline", "2",
        "--retry-period", "0.3",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    log: list[str] = []
    pump: asyncio.Task[None] | None = None
    try:
        found = None
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stderr.readline()).decode(errors="replace")
                assert line, f"operator exited before it was ready: {log}"
                log.append(line.rstrip())
                found = found or _STARTED.search(line)
                if _READY in line:
                    break
        assert found is not None, log
        pump = asyncio.create_task(_pump(proc.stderr, log))
        yield OperatorProcess(proc, found[1], f"http://127.0.0.1:{found[2]}", log)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if pump is not None:
            await pump


async def _written_by(kube: Kube, ns: str, name: str) -> str:
    """Which operator created `name`'s ScaledObject: its Event's reportingInstance."""
    events = await until(kube, EVENTS, ns, lambda o: any(
        e["reason"] == "ScaledObjectCreated" and e["involvedObject"]["name"] == name
        for e in o.values()))
    return next(str(e["reportingInstance"]) for e in events.values()
                if e["reason"] == "ScaledObjectCreated" and e["involvedObject"]["name"] == name)


async def _holder(kube: Kube, ns: str, not_: str = "") -> str:
    """The Lease's holder once it is someone (other than `not_`)."""
    key = f"{ns}/{LEASE}"
    leases = await until(kube, LEASES, ns, lambda o: key in o and o[key]["spec"].get(
        "holderIdentity") not in ("", None, not_), timeout_s=30)
    return str(leases[key]["spec"]["holderIdentity"])


async def test_one_leader_writes_and_hands_over_on_stop_and_on_crash(
    k8s_cluster: Cluster, crds: list[str]
) -> None:
    async with k8s_cluster.client() as api:
        kube = Kube(api)
        async with temporary_namespace(kube, f"lead-{secrets.token_hex(3)}") as ns:
            await create_app(kube, ns, "app", ("http", 8080))
            async with operator_process(k8s_cluster, ns) as a, \
                    operator_process(k8s_cluster, ns) as b:
                by_id = {a.identity: a, b.identity: b}
                leader = by_id[await _holder(kube, ns)]
                standby = b if leader is a else a
                await create(kube, ns, httpso("one"))
                await until(kube, SCALEDOBJECTS, ns, lambda o: f"{ns}/one" in o)
                # Both ready (warm caches), only the leader reconciles.
                assert await _written_by(kube, ns, "one") == leader.identity
                for p in (a, b):
                    assert (await p.get("/readyz"))[0] == 200
                assert await leader.metric("httpscale_operator_leader") == 1
                assert await standby.metric("httpscale_operator_leader") == 0
                assert await standby.metric("httpscale_operator_reconciles_total") == 0

                # SIGTERM: the leader releases the Lease; the standby takes over at once,
                # well before the Lease could have expired.
                stopped = time.monotonic()
                leader.proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(leader.proc.wait(), 20) == 0
                assert await _holder(kube, ns, not_=leader.identity) == standby.identity
                assert time.monotonic() - stopped < LEASE_DURATION
                await create(kube, ns, httpso("two", scaleTargetRef={
                    "name": "app", "service": "app", "port": 8080}))
                await until(kube, SCALEDOBJECTS, ns, lambda o: f"{ns}/two" in o)
                assert await _written_by(kube, ns, "two") == standby.identity

                # SIGKILL: no release; a new standby takes over once the Lease expires.
                async with operator_process(k8s_cluster, ns) as c:
                    assert await _holder(kube, ns) == standby.identity
                    standby.proc.kill()
                    await standby.proc.wait()
                    killed = time.monotonic()
                    await create(kube, ns, httpso("three", scaleTargetRef={
                        "name": "app", "service": "app", "port": 8080}))
                    assert await _holder(kube, ns, not_=standby.identity) == c.identity
                    assert time.monotonic() - killed >= LEASE_DURATION * 0.8
                    await until(kube, SCALEDOBJECTS, ns, lambda o: f"{ns}/three" in o)
                    assert await _written_by(kube, ns, "three") == c.identity
                    assert await c.metric("httpscale_operator_leader") == 1
                assert not any("Traceback" in line for line in a.log + b.log), a.log + b.log
