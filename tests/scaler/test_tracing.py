"""Issue 19 item 4, the scaler's part: a SERVER span per gRPC call, its parent taken from the
call's `traceparent` metadata, exported over OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scaler_helpers import StandIn, grpc_client, ref, route, running_scaler
from tracingkit import (
    CLIENT_SPAN_ID,
    CLIENT_TRACE_ID,
    SERVER,
    TRACEPARENT,
    OtlpReceiver,
    trace_to,
    tracing_off,
)

CONC = route("local/conc", "concurrency", target=10)
SERVICE = "externalscaler.ExternalScaler"


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = await OtlpReceiver().start()
    yield r
    await r.close()


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    fake = StandIn()
    await fake.start()
    yield fake
    await fake.stop()


async def test_unary_call_span_has_the_callers_parent(monkeypatch, receiver, standin):
    trace_to(monkeypatch, receiver)
    async with running_scaler([CONC], [standin.url]) as scaler:
        async with grpc_client(scaler.grpc_port) as stub:
            spec = await stub.GetMetricSpec(
                ref("conc"), metadata=(("traceparent", TRACEPARENT),)
            )
            assert spec.metricSpecs[0].targetSize == 10
            (span,) = await receiver.wait_spans(1)
    assert span.name == f"{SERVICE}/GetMetricSpec"
    assert span.kind == SERVER
    assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE_ID, CLIENT_SPAN_ID)
    assert span.resource["service.name"] == "httpscale-scaler"
    assert span.scope == "httpscale.scaler"
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.service"] == SERVICE
    assert span.attributes["rpc.method"] == "GetMetricSpec"
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["client.address"] == "127.0.0.1"
    assert span.status_code == 0


async def test_refused_and_cancelled_calls_carry_their_status(monkeypatch, receiver, standin):
    trace_to(monkeypatch, receiver)
    async with running_scaler([CONC], [standin.url]) as scaler:
        async with grpc_client(scaler.grpc_port) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.IsActive(ref("nope"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            (refused,) = await receiver.wait_spans(1)
            # A stream the client gives up: its span ends when the call does, CANCELLED.
            stream = stub.StreamIsActive(ref("conc"), metadata=(("traceparent", TRACEPARENT),))
            assert (await stream.read()).result is False
            stream.cancel()
            spans = await receiver.wait_spans(2)
    assert refused.name == f"{SERVICE}/IsActive"
    assert refused.parent_span_id == ""  # no metadata: a root span
    assert refused.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert refused.status_code == 0  # the caller's mistake, not a server failure
    streamed = spans[1]
    assert streamed.name == f"{SERVICE}/StreamIsActive"
    assert streamed.parent_span_id == CLIENT_SPAN_ID
    assert streamed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]


async def test_health_checks_are_not_traced(monkeypatch, receiver, standin):
    trace_to(monkeypatch, receiver)
    async with running_scaler([CONC], [standin.url]) as scaler:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scaler.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(service="liveness"))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc_client(scaler.grpc_port) as stub:
            await stub.GetMetricSpec(ref("conc"))
            # Spans leave in the order they ended: the health check's would have come first.
            spans = await receiver.wait_spans(1)
    assert [s.name for s in spans] == [f"{SERVICE}/GetMetricSpec"]


async def test_off_means_no_interceptor_and_no_span(monkeypatch, receiver, standin):
    tracing_off(monkeypatch)
    async with running_scaler([CONC], [standin.url]) as scaler:
        assert scaler._tracing is None
        async with grpc_client(scaler.grpc_port) as stub:
            await stub.GetMetricSpec(ref("conc"), metadata=(("traceparent", TRACEPARENT),))
    assert receiver.exports == 0


async def test_stop_flushes_spans_still_queued(monkeypatch, receiver, standin):
    trace_to(monkeypatch, receiver, OTEL_BSP_SCHEDULE_DELAY="600000")
    async with running_scaler([CONC], [standin.url]) as scaler:
        async with grpc_client(scaler.grpc_port) as stub:
            await stub.GetMetricSpec(ref("conc"))
        assert receiver.spans == []  # ended (before the answer left), queued for 10 minutes
    # running_scaler stopped the scaler: the span went out in its shutdown.
    assert [s.name for s in receiver.spans] == [f"{SERVICE}/GetMetricSpec"]
