"""`httpscale interceptor --workers 2` on a cluster: each worker watches the cluster itself, so
when the app scales up from zero the requests held in every worker are answered.

Which worker holds what is read from each worker's own admin server (its Unix socket, the
path it logs); the parent's admin sums them and relays their wake-ups."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
from components import scale
from test_interceptor_cluster import TIMEOUT, Proxy, deploy, httpso, interceptor_with
from testcluster import Cluster

from httpscale.kube.api import Kube
from httpscale.kube.resources import HTTPSCALEDOBJECTS

pytestmark = pytest.mark.k8s

READY = r"proxy on \S+, admin on \S+, 2 workers"  # the parent's line once both are ready


def _admin_socket(proxy: Proxy, index: int) -> str:
    found = [m.group(1) for line in proxy.c.log
             if (m := re.search(rf"\[worker {index}\] .*admin on unix:(\S+),", line))]
    assert found, f"worker {index} logged no admin socket"
    return found[-1]


async def _worker_status(proxy: Proxy, index: int) -> Any:
    connector = aiohttp.UnixConnector(path=_admin_socket(proxy, index))
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as http, http.get(
        "http://worker/status"
    ) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_held_requests_in_every_worker_are_answered_when_the_app_scales_from_zero(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await deploy(kube, ns, "sleepy", replicas=0)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("sleepy", ["sleepy.test"]))
    route = f"{ns}/sleepy"
    async with interceptor_with(k8s_cluster.kubeconfig, ns, "--workers", "2",
                                ready=READY) as proxy, aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=120), connector=aiohttp.TCPConnector(limit=0)
    ) as http:
        for index in (0, 1):  # each worker has its own watches
            await proxy.c.wait_for(rf"\[worker {index}\] .*routes from the cluster via")

        async def one(i: int) -> tuple[int, str]:
            async with http.get(f"{proxy.url}/r{i}", headers={"Host": "sleepy.test"}) as resp:
                await resp.read()
                return resp.status, resp.headers.get("X-HTTPScale-Cold-Start", "")

        requests: list[asyncio.Task[tuple[int, str]]] = []
        async with http.get(proxy.admin + "/wake") as wake:
            # Requests (each on its own connection: limit=0) until both workers hold some;
            # the kernel picks a connection's worker (40 all on one: 2 in 2**40).
            held = [0, 0]
            while min(held) == 0:
                assert len(requests) < 40, held
                requests.append(asyncio.create_task(one(len(requests))))
                async with asyncio.timeout(30):
                    while True:  # polled: a held request has no event outside its worker
                        held = [(await _worker_status(proxy, i))["routes"][route]["held"]
                                for i in (0, 1)]
                        if sum(held) == len(requests):
                            break
                        await asyncio.sleep(0.05)
            # The parent sums the workers' concurrency, and relays their wake-up.
            async with http.get(proxy.admin + "/queue") as resp:
                queue = json.loads(await resp.text())
            assert queue[route]["Concurrency"] == len(requests)
            async with asyncio.timeout(30):
                while True:
                    line = await wake.content.readline()
                    assert line, "the /wake stream ended"
                    if json.loads(line).get("route") == route:
                        break
        await scale(kube, ns, "sleepy", 1)  # as KEDA would on that wake-up
        results = await asyncio.gather(*requests)
    assert [s for s, _ in results] == [200] * len(requests)
    assert all(cold == "true" for _, cold in results)  # every one of them was held
