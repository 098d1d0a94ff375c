"""The cost report on a real local-mode run: real replica processes, the admin server's real
`/history`, read over loopback by `collect` and by `httpscale report cost`."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from click.testing import CliRunner
from reportkit import hello_app

from httpscale.local.runner import LocalRunner
from httpscale.report.cli import report_command
from httpscale.report.collect import DEFAULT_REQUESTS, CostSettings, collect
from httpscale.report.cost import replica_seconds


async def _get(url: str, host: str) -> tuple[int, dict[str, str], float]:
    """(status, headers, seconds taken) of one GET through the proxy."""
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(url, headers={"Host": host}) as resp,
    ):
        await resp.read()
        return resp.status, dict(resp.headers), time.monotonic() - started


async def _scaled_to_zero(runner: LocalRunner) -> None:
    """Until no replica process of hello is left (another process's state: no event to wait
    on, so a short poll bounded by a time limit)."""
    scaler = runner.autoscaler.scalers["local/hello"]
    async with asyncio.timeout(20):
        while scaler.supervisor.replicas:  # noqa: ASYNC110 - see above
            await asyncio.sleep(0.02)


async def test_cost_of_a_real_cold_start_and_scale_to_zero(local: object) -> None:
    runner: LocalRunner = await local(  # type: ignore[operator]
        hello_app("hello", "--startup-delay", "0.3", replicas={"min": 0, "max": 2},
                  scaledownPeriod=1),
    )
    proxy = "http://{}:{}/".format(*runner.interceptor.proxy_address)
    admin = "http://{}:{}".format(*runner.interceptor.admin_address)

    status, headers, took = await _get(proxy, "hello.localhost")
    assert status == 200 and headers.get("X-HTTPScale-Cold-Start") == "true"
    await _scaled_to_zero(runner)

    report, notes = await collect(CostSettings(admin_url=admin))
    assert notes == []
    (hello,) = report.routes
    assert (hello.timeline.name, hello.timeline.route) == ("hello", "local/hello")
    assert (hello.timeline.min_replicas, hello.timeline.max_replicas) == (0, 2)
    assert hello.timeline.requests == DEFAULT_REQUESTS
    # At zero, one replica, at zero again: exactly what ran.
    assert [n for _, n in hello.timeline.replicas] == [0, 1, 0]
    (t_zero, _), (t_up, _), (t_down, _) = hello.timeline.replicas
    assert report.start == t_zero < t_up < t_down < report.end
    assert hello.used.replica_seconds == t_down - t_up
    assert hello.at_min.replica_seconds == report.end - report.start  # 1 replica always on
    assert hello.at_max.replica_seconds == 2 * (report.end - report.start)
    assert hello.used.replica_seconds < hello.at_min.replica_seconds < hello.at_max.replica_seconds
    # The cold start, its wait no longer than the request that paid for it took.
    assert hello.cold_starts.count == 1
    wait = hello.cold_starts.p50
    assert wait is not None and hello.cold_starts.p99 == wait
    assert 0 < wait <= took

    # The same through the command (its own event loop, so in a thread of its own), as JSON
    # and as the text table; --since cuts the period to its end.
    def invoke(*args: str) -> str:
        result = CliRunner().invoke(report_command, ["cost", "--admin", admin, *args])
        assert result.exit_code == 0, result.output
        return result.output

    doc = json.loads(await asyncio.to_thread(invoke, "--format", "json"))
    (route,) = doc["routes"]
    assert route["used"]["replica_seconds"] == t_down - t_up
    assert route["cold_starts"]["count"] == 1 and route["cold_starts"]["p50"] == wait
    text = await asyncio.to_thread(invoke, "--cpu-per-replica", "2", "--memory-per-replica",
                                   "4Gi")
    row = next(line for line in text.splitlines() if line.startswith("hello"))
    assert row.split()[1] == "0-2"
    assert "per replica 2 CPU and 4 GiB (given: --cpu-per-replica 2, " in text

    since = await asyncio.to_thread(invoke, "--format", "json", "--since", "1h")
    start = json.loads(since)["start"]
    assert start < t_zero
    used, covered = replica_seconds(hello.timeline.replicas, start, report.end)
    assert covered == t_zero and used == t_down - t_up
