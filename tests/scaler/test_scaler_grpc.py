"""The external scaler over a real gRPC port, fed by stand-in interceptor admin servers.

The stand-ins are used here because these cases need values no real interceptor reports on
demand (a counter that goes back, a replica that hangs); tests/scaler/test_scaler_real.py runs
the same protocol against real `httpscale local` processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scaler_helpers import (
    StandIn,
    cpu_contention,
    eventually,
    fast_settings,
    grpc_client,
    ref,
    route,
    running_scaler,
    wake_connected,
)

from httpscale.scaler.app import SERVICE_NAME, Scaler
from httpscale.scaler.discovery import StaticDiscovery
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.routes import ScalerRouteSink

CONC = route("local/conc", "concurrency", target=10)
RATE = route("local/rate", "requestRate", target=2.5, window=3.0, granularity=0.1)


def open_streams(scaler: Scaler) -> float | None:
    return scaler.metrics.registry.get_sample_value(
        "httpscale_scaler_open_streams", {"rpc": "StreamIsActive"}
    )


@pytest.fixture
async def standins() -> AsyncIterator[list[StandIn]]:
    fakes = [StandIn(), StandIn()]
    for fake in fakes:
        await fake.start()
    yield fakes
    for fake in fakes:
        await fake.stop()


async def test_spec_for_concurrency_and_rate_routes(standins: list[StandIn]) -> None:
    async with running_scaler([CONC, RATE], [s.url for s in standins]) as scaler:
        async with grpc_client(scaler.grpc_port) as stub:
            spec = await stub.GetMetricSpec(ref("conc"))
            (one,) = spec.metricSpecs
            assert one.metricName == "http-local-conc-concurrency"
            assert (one.targetSize, one.targetSizeFloat) == (10, 10.0)
            spec = await stub.GetMetricSpec(ref("rate"))
            (one,) = spec.metricSpecs
            assert one.metricName == "http-local-rate-rate"
            assert (one.targetSize, one.targetSizeFloat) == (3, 2.5)
            fleet = await stub.GetMetricSpec(
                ref("x", "keda", interceptorTargetPendingRequests="200")
            )
            assert fleet.metricSpecs[0].targetSize == 200
            assert fleet.metricSpecs[0].metricName == "http-interceptor-keda-concurrency"


async def test_concurrency_is_summed_over_replicas(standins: list[StandIn]) -> None:
    a, b = standins
    a.set("local/conc", 3, 100)
    b.set("local/conc", 4, 7)
    b.set("other/thing", 5, 0)
    async with running_scaler([CONC], [a.url, b.url]) as scaler:
        async with grpc_client(scaler.grpc_port) as stub:
            await eventually(lambda: scaler.collector.concurrency("local/conc") == 7)
            got = await stub.GetMetrics(
                pb.GetMetricsRequest(scaledObjectRef=ref("conc"), metricName="s0-conc")
            )
            (value,) = got.metricValues
            assert (value.metricName, value.metricValue, value.metricValueFloat) == (
                "s0-conc",
                7,
                7.0,
            )
            assert (await stub.IsActive(ref("conc"))).result is True
            # The fleet trigger sees every route, known or not.
            fleet = await stub.GetMetrics(
                pb.GetMetricsRequest(scaledObjectRef=ref("x", interceptorTargetPendingRequests="1"))
            )
            assert fleet.metricValues[0].metricValue == 12


async def test_rate_from_counter_deltas_with_reset_and_first_sight(
    standins: list[StandIn],
) -> None:
    a, b = standins
    a.set("local/rate", 0, 1_000_000)  # long history: must not read as a burst
    async with running_scaler([RATE], [a.url, b.url]) as scaler:
        async with grpc_client(scaler.grpc_port) as stub:

            def total() -> float:
                return scaler.collector.rate("local/rate") * RATE.window

            await eventually(lambda: a.polls >= 3)
            assert total() == 0.0
            assert (await stub.IsActive(ref("rate"))).result is False
            # A replica seen for the first time mid-life: a baseline, not a burst.
            b.set("local/rate", 0, 50)
            polls = b.polls
            await eventually(lambda: b.polls >= polls + 3)
            assert total() == 0.0
            a.set("local/rate", 0, 1_000_004)  # 4 requests
            await eventually(lambda: total() > 0)
            got = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref("rate")))
            value = got.metricValues[0]
            assert value.metricValueFloat == pytest.approx(4 / RATE.window)
            assert value.metricValue == 2  # rounded up: a small rate never reads as 0
            assert value.metricName == "http-local-rate-rate"
            assert (await stub.IsActive(ref("rate"))).result is True
            # Replica b restarts: its counter starts over at 3. Three new requests, not -47.
            b.set("local/rate", 0, 3)
            await eventually(lambda: total() != pytest.approx(4.0), what="reset counted")
            assert total() == pytest.approx(7.0)
            # Once the window passes with no request the route goes idle; a stream says so.
            stream = stub.StreamIsActive(ref("rate"))
            assert (await stream.read()).result is True
            first_false = await asyncio.wait_for(stream.read(), timeout=RATE.window + 2)
            assert first_false.result is False
            assert total() == 0.0
            assert (await stub.IsActive(ref("rate"))).result is False
            stream.cancel()


async def test_partial_failure_keeps_last_value_then_drops_it(standins: list[StandIn]) -> None:
    a, b = standins
    a.set("local/conc", 2, 0)
    b.set("local/conc", 5, 0)
    settings = fast_settings(stale_grace=0.6, poll_timeout=0.2)
    async with running_scaler([CONC], [a.url, b.url], settings) as scaler:
        await eventually(lambda: scaler.collector.concurrency("local/conc") == 7)
        b.mode = "hang"
        loop = asyncio.get_running_loop()
        failed_at = loop.time()
        await eventually(lambda: any(r.failing for r in scaler.collector.replicas))
        # Within the grace the hanging replica still counts.
        assert scaler.collector.concurrency("local/conc") == 7
        await eventually(lambda: scaler.collector.concurrency("local/conc") == 2, within=3)
        assert loop.time() - failed_at >= 0.5
        assert scaler.ready  # one replica is fresh: still serving
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{scaler.admin_port}/metrics") as resp:
                text = await resp.text()
        assert f'httpscale_scaler_poll_errors_total{{replica="{b.url}"}}' in text
        assert "httpscale_scaler_unreachable_replicas 1.0" in text
        b.mode = "ok"
        await eventually(lambda: scaler.collector.concurrency("local/conc") == 7, within=3)


async def test_unknown_route_and_bad_metadata(standins: list[StandIn]) -> None:
    async with running_scaler([CONC], [standins[0].url]) as scaler:
        async with grpc_client(scaler.grpc_port) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.IsActive(ref("nope"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert "local/nope" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetMetricSpec(ref("Bad/Name"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetMetricSpec(ref("x", interceptorTargetPendingRequests="lots"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            stream = stub.StreamIsActive(ref("nope"))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stream.read()
            assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_follows_replica_freshness(standins: list[StandIn]) -> None:
    a, b = standins
    settings = fast_settings(stale_grace=0.4, poll_timeout=0.2)
    async with running_scaler([CONC], [a.url, b.url], settings) as scaler:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scaler.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            serving = health_pb2.HealthCheckResponse.SERVING
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            statuses = [(await watch.read()).status]
            if statuses[-1] != serving:
                statuses.append((await asyncio.wait_for(watch.read(), 5)).status)
            assert statuses[-1] == serving
            a.mode = "error"
            # One replica failing for longer than stale_grace (dropped as stale) is not enough.
            (a_state,) = [r for r in scaler.collector.replicas if r.url == a.url]
            await eventually(lambda: a_state.failing and not a_state.baseline, what="a dropped")
            check = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            assert check.status == serving
            b.mode = "hang"
            assert (await asyncio.wait_for(watch.read(), 5)).status == not_serving
            assert not scaler.ready
            a.mode = "ok"
            assert (await asyncio.wait_for(watch.read(), 5)).status == serving
            watch.cancel()


async def test_wake_push_activates_streams_before_any_poll(standins: list[StandIn]) -> None:
    a, b = standins
    # Polls are slow here (1 s) so that only the push can explain a fast `true`. A short
    # activity window (0.5 s) lets the route go idle within the test once a poll saw it busy.
    settings = fast_settings(poll_interval=1.0, hold=0.8)
    conc = route("local/conc", target=10, active_for=0.5)
    async with running_scaler([conc, RATE], [a.url, b.url], settings) as scaler:
        await eventually(lambda: wake_connected(scaler, 2))
        async with grpc_client(scaler.grpc_port) as stub:
            streams = [stub.StreamIsActive(ref("conc")) for _ in range(3)]
            other = stub.StreamIsActive(ref("rate"))
            for stream in [*streams, other]:
                assert (await stream.read()).result is False
            loop = asyncio.get_running_loop()
            woke_at = loop.time()
            await b.wake("local/conc")
            # The stand-ins report no concurrency, so no poll can make it active: only the push.
            # (The deadline only guards against a hang; wake latency is a benchmark figure.)
            for stream in streams:
                assert (await asyncio.wait_for(stream.read(), 10)).result is True
            assert (await stub.IsActive(ref("conc"))).result is True
            assert (await stub.IsActive(ref("rate"))).result is False
            # No poll confirms it (the stand-in reports nothing): the hold runs out.
            for stream in streams:
                assert (await asyncio.wait_for(stream.read(), 3)).result is False
            assert loop.time() - woke_at >= 0.75
            # A wake confirmed by a poll stays active past the hold, until concurrency is 0.
            await a.wake("local/conc")
            a.set("local/conc", 1, 1)
            assert (await asyncio.wait_for(streams[0].read(), 10)).result is True
            await eventually(lambda: not scaler.board.held("local/conc"), within=3)
            # Past the end the hold (0.8 s) had: an absence (no leftover hold timer drops it),
            # so waited out rather than awaited.
            await asyncio.sleep(1.0)
            assert (await stub.IsActive(ref("conc"))).result is True
            a.set("local/conc", 0, 1)
            polls = a.polls
            # Not before the activity window has passed after the last poll that saw it busy.
            assert (await asyncio.wait_for(streams[0].read(), 4)).result is False
            assert a.polls >= polls + 1
            assert scaler.collector.last_used("local/conc") >= 0.45
            assert open_streams(scaler) == 4
            for stream in [*streams, other]:
                stream.cancel()
        await eventually(lambda: open_streams(scaler) == 0)


async def test_wake_stream_reconnects_after_the_interceptor_restarts() -> None:
    fake = StandIn()
    await fake.start()
    port = fake.port
    try:
        async with running_scaler([CONC], [fake.url]) as scaler:
            await eventually(lambda: len(scaler.collector.replicas) == 1)
            (replica,) = scaler.collector.replicas
            await eventually(lambda: replica.wake_connected)
            await fake.stop()
            await eventually(lambda: not replica.wake_connected)
            fake = StandIn()
            await fake.start(port)
            await eventually(lambda: replica.wake_connected, within=5)
            async with grpc_client(scaler.grpc_port) as stub:
                stream = stub.StreamIsActive(ref("conc"))
                assert (await stream.read()).result is False
                await fake.wake("local/conc")
                assert (await asyncio.wait_for(stream.read(), 10)).result is True
                stream.cancel()
    finally:
        await fake.stop()


async def test_shutdown_ends_open_streams() -> None:
    fake = StandIn()
    await fake.start()
    # A grace far longer than the test's deadline: stop() returning at all shows the open
    # stream was ended, not waited out.
    fast = fast_settings()
    settings = dataclasses.replace(fast, shutdown=dataclasses.replace(fast.shutdown, grpc_grace=60))
    try:
        async with running_scaler([CONC], [fake.url], settings) as scaler:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{scaler.grpc_port}")
            from httpscale.scaler.proto import externalscaler_pb2_grpc as pb_grpc

            stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[misc]
            stream = stub.StreamIsActive(ref("conc"))
            assert (await stream.read()).result is False
            await asyncio.wait_for(scaler.stop(), 20)
            assert (await asyncio.wait_for(stream.read(), 10)) is grpc.aio.EOF
            await channel.close()
    finally:
        await fake.stop()


async def test_shutdown_waits_for_calls_the_client_dropped() -> None:
    """A stream the client drops as the scaler stops can still be unwinding in grpc's task when
    grpc's server.stop() returns (the core finishes the call before grpc's poller thread resumes
    the Python task); stop() waits for it. The race shows when the CPU is contended, as on a
    busy CI machine, so busy processes (each ending by itself) contend for it here."""
    from httpscale.scaler.proto import externalscaler_pb2_grpc as pb_grpc

    async with cpu_contention(processes=(os.cpu_count() or 2) + 1, seconds=30.0):
        for attempt in range(150):
            async with running_scaler([CONC], []) as scaler:
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{scaler.grpc_port}")
                stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[misc]
                streams = [stub.StreamIsActive(ref("conc")) for _ in range(3)]
                for stream in streams:
                    assert (await stream.read()).result is False
                assert scaler.service.calls_in_progress == 3
                for stream in streams[: attempt % 3]:  # cancelled, or dropped with the channel
                    stream.cancel()
                stopping = asyncio.create_task(scaler.stop())
                await channel.close(None)
                await stopping
                # running_scaler's exit also checks that no grpc call task is left.
                assert scaler.service.calls_in_progress == 0, f"attempt {attempt}"


class PushedRoutes:
    """A route source the test drives, like the Kubernetes watch will."""

    def __init__(self) -> None:
        self.sink: ScalerRouteSink | None = None
        self.ready = asyncio.Event()

    async def run(self, sink: ScalerRouteSink) -> None:
        self.sink = sink
        self.ready.set()
        await asyncio.get_running_loop().create_future()


async def test_stream_metric_spec_follows_route_changes(standins: list[StandIn]) -> None:
    source = PushedRoutes()
    scaler = Scaler(fast_settings(), source, StaticDiscovery([standins[0].url]))
    await scaler.start()
    try:
        await source.ready.wait()
        assert source.sink is not None
        async with grpc_client(scaler.grpc_port) as stub:
            # Before the source pushed anything every route is unknown: UNAVAILABLE, not 404.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetMetricSpec(ref("conc"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            source.sink.set_routes([CONC])
            stream = stub.StreamMetricSpec(ref("conc"))
            first = await asyncio.wait_for(stream.read(), 2)
            assert first.metricSpecs[0].targetSizeFloat == 10.0
            source.sink.set_routes([CONC, RATE])  # unrelated change: nothing sent
            source.sink.set_routes([route("local/conc", target=25.0), RATE])
            second = await asyncio.wait_for(stream.read(), 2)
            assert second.metricSpecs[0].targetSizeFloat == 25.0
            assert (await stub.GetMetricSpec(ref("conc"))).metricSpecs[0].targetSize == 25
            active = stub.StreamIsActive(ref("conc"))
            assert (await active.read()).result is False
            source.sink.set_routes([RATE])  # the HTTPScaledObject is deleted
            for call in (stream, active):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await asyncio.wait_for(call.read(), 2)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await scaler.stop()


async def test_reflection_lists_the_services(standins: list[StandIn]) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with running_scaler([CONC], [standins[0].url]) as scaler:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scaler.grpc_port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            await call.write(
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)
            )
            await call.done_writing()
            listed = await call.read()
            names = {s.name for s in listed.list_services_response.service}
            assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
            described = await call.read()
            protos = described.file_descriptor_response.file_descriptor_proto
            assert protos and b"externalscaler.proto" in protos[0]
            # The call ends here, on both sides, before the scaler stops: the server's task for
            # it is then done, and the leak check after stop() has nothing to race with.
            assert await call.read() == grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
