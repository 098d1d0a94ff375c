"""Activity from traffic, InterceptorRoute triggers and gRPC health, over a real gRPC port.

Stand-in interceptors report the counters (a trickle no poll ever sees in flight, a replica
restart), as a real interceptor cannot be made to on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scaler_helpers import (
    StandIn,
    eventually,
    fast_settings,
    grpc_client,
    ref,
    route,
    running_scaler,
)

from httpscale.model.httpso import ScalingMetric
from httpscale.scaler.app import LIVENESS, READINESS, SERVICE_NAME
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.routes import interceptor_route

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    fake = StandIn()
    await fake.start()
    yield fake
    await fake.stop()


async def test_a_trickle_of_short_requests_keeps_the_route_active(standin: StandIn) -> None:
    """One request every 0.5 s, never seen in flight, with a 0.2 s rate window: the rate
    reads 0 most of the time, yet the route never goes inactive while requests keep coming
    within its activity window (1 s); it goes inactive one window after the last one."""
    key = "local/trickle"
    trickle = route(key, target=10, window=0.2, granularity=0.1, active_for=1.0)
    count = 1_000  # history: the first reading is a baseline, not use
    standin.set(key, 0, count)
    async with running_scaler([trickle], [standin.url]) as scaler:
        async with grpc_client(scaler.grpc_port) as stub:
            await eventually(lambda: standin.polls >= 2)
            assert (await stub.IsActive(ref("trickle"))).result is False
            stream = stub.StreamIsActive(ref("trickle"))
            assert (await stream.read()).result is False
            loop = asyncio.get_running_loop()
            reads: asyncio.Queue[bool] = asyncio.Queue()
            reader = asyncio.create_task(_collect(stream, reads))
            rate_was_zero_while_active = False
            for _ in range(6):
                count += 1
                standin.set(key, 0, count)
                await asyncio.sleep(0.5)  # the traffic's own pace: one request per 0.5 s
                load = scaler.board.load(key)
                if load.rate == 0 and scaler.board.is_active(key):
                    rate_was_zero_while_active = True
            last_request = loop.time() - 0.5
            assert reads.get_nowait() is True
            assert reads.empty(), "the route flapped"
            assert rate_was_zero_while_active, "the rate alone would have kept it active"
            # No more requests: inactive one activity window after the last poll that saw use.
            assert await asyncio.wait_for(reads.get(), 3) is False
            assert loop.time() - last_request >= 1.0 - 0.05
            reader.cancel()
            stream.cancel()


async def _collect(stream: object, out: asyncio.Queue[bool]) -> None:
    while (message := await stream.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
        out.put_nowait(message.result)


async def test_a_restarted_replica_counts_what_it_served_since(standin: StandIn) -> None:
    key = "local/r"
    r = route(key, target=10, window=0.2, granularity=0.1, active_for=0.6)
    standin.set(key, 0, 500)
    async with running_scaler([r], [standin.url]) as scaler:
        await eventually(lambda: standin.polls >= 2)
        with scaler.board.watch(key) as watch:
            changes = watch.changes()
            assert await anext(changes) is False
            # Restarted (same address, new process) and served 3 requests before the next
            # poll: in use, though the counter went from 500 down to 3.
            standin.set(key, 0, 3)
            assert await asyncio.wait_for(anext(changes), 2) is True
            assert scaler.board.recently_used(key)
            assert await asyncio.wait_for(anext(changes), 2) is False
            # Restarted again and served nothing yet: no use (and never a negative count).
            standin.set(key, 0, 0)
            polls = standin.polls
            await eventually(lambda: standin.polls >= polls + 3)
            assert not scaler.board.is_active(key)
            assert scaler.collector.last_used(key) > 0.6  # type: ignore[operator]


async def test_interceptor_route_trigger_answers_two_metrics(standin: StandIn) -> None:
    both = interceptor_route(
        "shop/api",
        [ScalingMetric("concurrency", 4), ScalingMetric("requestRate", 2.5, window=2.0,
                                                        granularity=0.1)],
    )
    rate_only = interceptor_route("shop/feed", [ScalingMetric("requestRate", 7)])
    web = route("shop/web", target=3)
    standin.set("shop/api", 0, 100)
    async with running_scaler([both, rate_only, web], [standin.url]) as scaler:
        async with grpc_client(scaler.grpc_port) as stub:
            meta = {"interceptorRoute": "api"}
            so = pb.ScaledObjectRef(name="api-so", namespace="shop", scalerMetadata=meta)
            spec = await stub.GetMetricSpec(so)
            assert [(s.metricName, s.targetSizeFloat, s.targetSize) for s in spec.metricSpecs] == [
                ("http_api_concurrency", 4.0, 4),
                ("http_api_rate", 2.5, 3),
            ]
            feed = pb.ScaledObjectRef(namespace="shop", scalerMetadata={"interceptorRoute": "feed"})
            assert [s.metricName for s in (await stub.GetMetricSpec(feed)).metricSpecs] == [
                "http_feed_rate"]
            await eventually(lambda: standin.polls >= 2)
            standin.set("shop/api", 3, 104)  # 3 in flight, 4 requests counted
            await eventually(lambda: scaler.collector.rate("shop/api") > 0)
            assert (await stub.IsActive(so)).result is True

            async def values(name: str) -> list[tuple[str, float]]:
                got = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=so,
                                                                 metricName=name))
                return [(v.metricName, v.metricValueFloat) for v in got.metricValues]

            assert await values("http_api_concurrency") == [("http_api_concurrency", 3.0)]
            ((name, rate),) = await values("http_api_rate")
            assert name == "http_api_rate" and rate == pytest.approx(4 / 2.0)
            assert [n for n, _ in await values("")] == ["http_api_concurrency", "http_api_rate"]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await values("http_api_latency")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert "http_api_concurrency, http_api_rate" in (err.value.details() or "")
            # An InterceptorRoute trigger never reaches an HTTPScaledObject's route.
            web_by_ir = pb.ScaledObjectRef(namespace="shop",
                                           scalerMetadata={"interceptorRoute": "web"})
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetMetricSpec(web_by_ir)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            # The HTTPSO trigger still answers one metric, by its own name.
            (one,) = (await stub.GetMetricSpec(ref("web", "shop"))).metricSpecs
            assert (one.metricName, one.targetSizeFloat) == ("http-shop-web-concurrency", 3.0)


async def test_health_services_for_kubernetes_probes(standin: StandIn) -> None:
    standin.mode = "error"  # no replica answers: not ready, but alive
    settings = fast_settings(stale_grace=0.3, poll_timeout=0.2)
    async with running_scaler([route("local/a")], [standin.url], settings) as scaler:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scaler.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def check(service: str) -> int:
                got = await health.Check(health_pb2.HealthCheckRequest(service=service))
                return int(got.status)

            assert [await check(s) for s in ("", LIVENESS)] == [SERVING, SERVING]
            assert [await check(s) for s in (READINESS, SERVICE_NAME)] == [NOT_SERVING] * 2
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await check("something-else")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            readiness = health.Watch(health_pb2.HealthCheckRequest(service=READINESS))
            liveness = health.Watch(health_pb2.HealthCheckRequest(service=LIVENESS))
            assert (await readiness.read()).status == NOT_SERVING
            assert (await liveness.read()).status == SERVING
            standin.mode = "ok"
            assert (await asyncio.wait_for(readiness.read(), 3)).status == SERVING
            assert await check(SERVICE_NAME) == SERVING
            standin.mode = "error"
            assert (await asyncio.wait_for(readiness.read(), 3)).status == NOT_SERVING
            assert await check("") == SERVING  # an unreachable interceptor never kills it
            # Shutdown: liveness too says NOT_SERVING before the server goes away.
            stopping = asyncio.create_task(scaler.stop())
            assert (await asyncio.wait_for(liveness.read(), 3)).status == NOT_SERVING
            await stopping
            readiness.cancel()
            liveness.cancel()
            # The calls end in grpc's own tasks: awaited, so none outlives the test.
            for call in (readiness, liveness):
                await call.code()  # CANCELLED, or UNAVAILABLE if the server went first
