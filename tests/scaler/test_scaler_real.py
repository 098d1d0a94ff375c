"""The scaler against real interceptors: `httpscale local` processes serving real requests.

Routes come from the same config file the interceptors run (`routes_from_local_config`), and
KEDA's side is a real gRPC client on a real port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scaler_helpers import (
    LocalInterceptor,
    eventually,
    fast_settings,
    grpc_client,
    ref,
    running_scaler,
    wake_connected,
)

from httpscale.scaler.app import SERVICE_NAME, Scaler
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.routes import routes_from_local_config

pytestmark = pytest.mark.slow

# Bounded, so that a stuck request fails the test with a reason instead of its timeout.
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20)

APPS = """
apps:
  - name: slow
    hosts: [slow.localhost]
    replicas: {min: 0, max: 1}
    scaledownPeriod: 30
    run:
      command: ["{python}", "-m", "httpscale.examples.hello", "--port", "{port}",
                "--startup-delay", "1"]
  - name: busy
    hosts: [busy.localhost]
    replicas: {min: 1, max: 1}
    scalingMetric:
      concurrency: {targetValue: 4}
    run:
      command: ["{python}", "-m", "httpscale.examples.hello", "--port", "{port}",
                "--response-delay", "3"]
  - name: rated
    hosts: [rated.localhost]
    replicas: {min: 1, max: 1}
    scalingMetric:
      requestRate: {targetValue: 5, window: 20s, granularity: 1s}
    run:
      command: ["{python}", "-m", "httpscale.examples.hello", "--port", "{port}"]
"""


@pytest.fixture
async def interceptors(tmp_path: Path) -> AsyncIterator[list[LocalInterceptor]]:
    procs = [LocalInterceptor(APPS, tmp_path, f"interceptor-{i}") for i in range(2)]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield procs
    finally:
        await asyncio.gather(*(p.stop() for p in procs))


def polls(scaler: Scaler) -> float:
    """GET /queue polls so far, failed ones included."""
    count = scaler.metrics.registry.get_sample_value("httpscale_scaler_poll_duration_seconds_count")
    return count or 0.0


def all_polled(scaler: Scaler) -> bool:
    """Every replica answered a poll: requests sent from now on are deltas, not baselines."""
    replicas = scaler.collector.replicas
    return len(replicas) == 2 and all(r.last_ok is not None for r in replicas)


async def get(http: aiohttp.ClientSession, proxy: str, host: str) -> str:
    async with http.get(proxy + "/", headers={"Host": host}) as response:
        assert response.status == 200, await response.text()
        return await response.text()


async def test_concurrency_and_rate_from_real_interceptors(
    interceptors: list[LocalInterceptor],
) -> None:
    a, b = interceptors
    routes = routes_from_local_config(a.config)
    assert {r.key: r.primary.kind for r in routes} == {
        "local/slow": "concurrency",
        "local/busy": "concurrency",
        "local/rated": "requestRate",
    }
    async with (
        running_scaler(list(routes), [a.admin_url, b.admin_url]) as scaler,
        grpc_client(scaler.grpc_port) as stub,
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
    ):
        spec = (await stub.GetMetricSpec(ref("rated"))).metricSpecs[0]
        assert (spec.metricName, spec.targetSize, spec.targetSizeFloat) == (
            "http-local-rated-rate",
            5,
            5.0,
        )
        await eventually(lambda: all_polled(scaler))
        # 3 slow requests through one interceptor, 2 through the other: in flight together.
        busy = [asyncio.create_task(get(http, a.proxy_url, "busy.localhost")) for _ in range(3)]
        busy += [asyncio.create_task(get(http, b.proxy_url, "busy.localhost")) for _ in range(2)]
        await eventually(lambda: scaler.collector.concurrency("local/busy") == 5, what="5")
        got = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref("busy")))
        assert (got.metricValues[0].metricValue, got.metricValues[0].metricValueFloat) == (5, 5.0)
        assert (await stub.IsActive(ref("busy"))).result is True
        fleet = await stub.GetMetrics(
            pb.GetMetricsRequest(scaledObjectRef=ref("x", interceptorTargetPendingRequests="9"))
        )
        assert fleet.metricValues[0].metricValue == 5
        # 8 + 4 quick requests: 12 in a 20 s window is 0.6 req/s, whichever replica took them.
        await asyncio.gather(
            *(get(http, a.proxy_url, "rated.localhost") for _ in range(8)),
            *(get(http, b.proxy_url, "rated.localhost") for _ in range(4)),
        )
        await eventually(lambda: scaler.collector.rate("local/rated") * 20 >= 12 - 1e-9)
        got = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref("rated")))
        assert got.metricValues[0].metricValueFloat == pytest.approx(0.6)
        assert got.metricValues[0].metricValue == 1
        assert (await stub.IsActive(ref("rated"))).result is True
        await asyncio.gather(*busy)
        await eventually(lambda: scaler.collector.concurrency("local/busy") == 0)
        # Still active: five requests are in the 60 s rate window, and a route with short
        # requests would otherwise read as idle between polls.
        assert scaler.collector.rate("local/busy") == pytest.approx(5 / 60)
        assert (await stub.IsActive(ref("busy"))).result is True


async def test_activation_reaches_streams_before_the_cold_start_ends(
    interceptors: list[LocalInterceptor],
) -> None:
    a, b = interceptors
    routes = routes_from_local_config(a.config)
    async with (
        running_scaler(list(routes), [a.admin_url, b.admin_url]) as scaler,
        grpc_client(scaler.grpc_port) as stub,
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
    ):
        # Both replicas polled once: the request below is a delta of RequestCount, not part of
        # a first reading (which of the two it was depended on timing, and so did the end).
        await eventually(lambda: wake_connected(scaler, 2) and all_polled(scaler))
        streams = [stub.StreamIsActive(ref("slow")) for _ in range(2)]
        for stream in streams:
            assert (await stream.read()).result is False
        loop = asyncio.get_running_loop()
        sent = loop.time()
        request = asyncio.create_task(get(http, b.proxy_url, "slow.localhost"))
        for stream in streams:
            assert (await asyncio.wait_for(stream.read(), 5)).result is True
        latency = loop.time() - sent
        # Order, not a time: the app takes >= 1 s to start, and `true` came while it was held.
        assert not request.done()
        print(f"\nactivation latency (request -> StreamIsActive true): {latency * 1000:.1f} ms")
        assert "hello" in await request
        # Concurrency back at 0 and the wake hold over. The route stays active: it was in use
        # within its activity window (its scaledownPeriod, 30 s; docs/scaler.md), and
        # IsActive agrees with the streams, which said nothing new.
        key = "local/slow"
        await eventually(
            lambda: scaler.board.load(key).concurrency == 0 and not scaler.board.held(key)
        )
        assert scaler.board.load(key).rate > 0
        assert scaler.board.recently_used(key)
        assert scaler.table.get(key).activity_window == 30.0  # type: ignore[union-attr]
        assert (await stub.IsActive(ref("slow"))).result is True
        for stream in streams:
            stream.cancel()


async def test_restarted_interceptor_counter_reset_is_not_a_negative_rate(
    interceptors: list[LocalInterceptor],
) -> None:
    a, b = interceptors
    routes = routes_from_local_config(a.config)
    # The grace outlasts a restart, so the scaler sees the same replica with a lower counter.
    settings = fast_settings(stale_grace=8.0, poll_timeout=0.3, poll_interval=0.1)
    async with (
        running_scaler(list(routes), [a.admin_url, b.admin_url], settings) as scaler,
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
    ):
        await eventually(lambda: all_polled(scaler))

        def rated_total() -> float:
            return scaler.collector.rate("local/rated") * 20

        await asyncio.gather(*(get(http, a.proxy_url, "rated.localhost") for _ in range(6)))
        await eventually(lambda: rated_total() >= 6 - 1e-9)
        await a.stop()
        await a.start()
        await asyncio.gather(*(get(http, a.proxy_url, "rated.localhost") for _ in range(2)))
        await eventually(lambda: rated_total() >= 8 - 1e-9, what="8 requests")
        # Polls that come after it add nothing: no request counted twice.
        seen = polls(scaler)
        await eventually(lambda: polls(scaler) >= seen + 4, what="4 more polls")
        assert rated_total() == pytest.approx(8)


async def test_partial_then_total_interceptor_failure(
    interceptors: list[LocalInterceptor],
) -> None:
    a, b = interceptors
    routes = routes_from_local_config(a.config)
    settings = fast_settings(stale_grace=1.0, poll_timeout=0.3, poll_interval=0.1)
    async with (
        running_scaler(list(routes), [a.admin_url, b.admin_url], settings) as scaler,
        grpc_client(scaler.grpc_port) as stub,
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
    ):
        await eventually(lambda: all_polled(scaler))
        # a dies with requests in flight; its share stays for the grace, then goes.
        busy = [asyncio.create_task(get(http, a.proxy_url, "busy.localhost")) for _ in range(3)]
        busy += [asyncio.create_task(get(http, b.proxy_url, "busy.localhost")) for _ in range(2)]
        await eventually(lambda: scaler.collector.concurrency("local/busy") == 5)
        loop = asyncio.get_running_loop()
        await a.stop(sig=9)
        killed = loop.time()
        # A failed poll of a does not drop its share (not before the grace has passed).
        (a_state,) = [r for r in scaler.collector.replicas if r.url == a.admin_url]
        await eventually(lambda: a_state.failing, what="a poll of a failed")
        assert scaler.collector.concurrency("local/busy") == 5
        await eventually(lambda: scaler.collector.concurrency("local/busy") == 2, within=3)
        assert loop.time() - killed >= 0.9
        got = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref("busy")))
        assert got.metricValues[0].metricValue == 2
        async with aiohttp.ClientSession() as admin:
            async with admin.get(f"http://127.0.0.1:{scaler.admin_port}/readyz") as resp:
                assert resp.status == 200
        results = await asyncio.gather(*busy, return_exceptions=True)
        assert sum(isinstance(r, Exception) for r in results) == 3  # a's three died with it

        # Every replica gone: NOT_SERVING, and /readyz agrees.
        await b.stop(sig=9)
        await eventually(lambda: not scaler.ready, within=4)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scaler.grpc_port}") as channel:
            check = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            )
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        async with aiohttp.ClientSession() as admin:
            async with admin.get(f"http://127.0.0.1:{scaler.admin_port}/readyz") as resp:
                assert resp.status == 503
