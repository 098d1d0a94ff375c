"""Issue 19 item 4: the interceptor's spans, exported over OTLP/HTTP to a receiver on loopback.

The receiver (tests/tracingkit.py) decodes what the SDK really sends; the backend records the
trace context it really received. A span must continue the client's trace, and the app's
spans must continue the interceptor's (its span id is the backend's parent id).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from tracingkit import (
    CLIENT_SPAN_ID,
    CLIENT_TRACE_ID,
    INTERNAL,
    SERVER,
    STATUS_ERROR,
    TRACEPARENT,
    OtlpReceiver,
    ReceivedSpan,
    trace_to,
    traceparent,
    tracing_off,
)

from httpscale.routing.spec import Endpoint
from httpscale.tracing import TracingConfigError, tracing_enabled

from .backends import free_port, http_app, named_app
from .client import Conn, build_request, get
from .helpers import APP_HOST, APP_KEY, app_route, eventually


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = await OtlpReceiver().start()
    yield r
    await r.close()


def _servers(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.kind == SERVER]


async def test_span_continues_the_clients_trace_and_the_app_continues_the_span(
    monkeypatch, receiver, proxied
):
    trace_to(monkeypatch, receiver)
    ic, backend = await proxied()
    assert ic.proxy.tracer is not None
    headers = [
        ("traceparent", TRACEPARENT),
        ("tracestate", "vendor=abc"),
        ("baggage", "tenant=t1"),
        ("User-Agent", "trace-test/1"),
    ]
    resp = await get(ic.proxy_address, "/items/7?full=1", headers=headers)
    assert resp.status == 200
    spans = await receiver.wait_spans(1)
    (span,) = spans
    assert span.kind == SERVER
    assert span.name == f"GET {APP_KEY}"
    assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE_ID, CLIENT_SPAN_ID)
    assert span.resource["service.name"] == "httpscale-interceptor"
    assert span.attributes == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/items/7",
        "url.query": "full=1",
        "network.protocol.version": "1.1",
        "client.address": "127.0.0.1",
        "server.address": APP_HOST,
        "server.port": 80,
        "user_agent.original": "trace-test/1",
        "httpscale.route": APP_KEY,
        "httpscale.upstream": str(backend.endpoint),
        "http.response.status_code": 200,
    }
    assert span.status_code == 0
    # The app received the interceptor's span as its parent, once, and the rest unchanged.
    (seen,) = backend.requests
    assert len(seen.header_all("traceparent")) == 1
    trace_id, parent_id, flags = traceparent(seen.header("traceparent"))
    assert (trace_id, parent_id, flags) == (CLIENT_TRACE_ID, span.span_id, "01")
    assert seen.header_all("tracestate") == ["vendor=abc"]
    assert seen.header_all("baggage") == ["tenant=t1"]
    assert seen.header("x-forwarded-for") == "127.0.0.1"
    assert seen.header("host") == APP_HOST


async def test_full_parse_path_replaces_the_trace_context_too(monkeypatch, receiver, proxied):
    # A chunked upload and odd spelling take the full header pass (not the splice path).
    trace_to(monkeypatch, receiver)
    ic, backend = await proxied()
    conn = await Conn.open(ic.proxy_address)
    try:
        await conn.send(
            build_request(
                "POST", "/upload",
                headers=[("Transfer-Encoding", "chunked"), ("TraceParent", TRACEPARENT)],
            ) + b"5\r\nhello\r\n0\r\n\r\n"
        )
        resp = await conn.read_response()
    finally:
        await conn.aclose()
    assert resp.status == 200
    (span,) = await receiver.wait_spans(1)
    assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE_ID, CLIENT_SPAN_ID)
    (seen,) = backend.requests
    assert seen.body == b"hello"
    assert len(seen.header_all("traceparent")) == 1
    assert traceparent(seen.header("traceparent"))[:2] == (CLIENT_TRACE_ID, span.span_id)


async def test_spliced_post_keeps_its_body_with_the_new_context(monkeypatch, receiver, proxied):
    # A small POST whole in one read is spliced: head and body leave in one write.
    trace_to(monkeypatch, receiver)
    ic, backend = await proxied()
    resp = await get(
        ic.proxy_address, "/form", method="POST", body=b"a=1&b=2",
        headers=[("traceparent", TRACEPARENT), ("Connection", "keep-alive")],
    )
    assert resp.status == 200
    (span,) = await receiver.wait_spans(1)
    (seen,) = backend.requests
    assert (seen.method, seen.body) == ("POST", b"a=1&b=2")
    assert seen.header("connection") is None  # still hop-by-hop: cut
    assert seen.header_all("traceparent") == [f"00-{CLIENT_TRACE_ID}-{span.span_id}-01"]
    assert span.attributes["http.request.method"] == "POST"


async def test_a_request_without_context_starts_a_trace(monkeypatch, receiver, proxied):
    trace_to(monkeypatch, receiver, OTEL_SERVICE_NAME="edge-proxy")
    ic, backend = await proxied()
    assert (await get(ic.proxy_address, "/")).status == 200
    (span,) = await receiver.wait_spans(1)
    assert span.parent_span_id == ""
    assert span.resource["service.name"] == "edge-proxy"
    (seen,) = backend.requests
    assert traceparent(seen.header("traceparent"))[:2] == (span.trace_id, span.span_id)
    assert seen.header("baggage") is None


async def test_cold_start_hold_is_a_child_span(monkeypatch, receiver, backends, make_interceptor):
    trace_to(monkeypatch, receiver)
    b = await backends(http_app(named_app("awake")))
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    conn = await Conn.open(ic.proxy_address)
    try:
        await conn.send(build_request("GET", "/", headers=[("traceparent", TRACEPARENT)]))
        await eventually(lambda: ic.route_stats(APP_KEY)["held"] == 1, what="held")
        ic.set_endpoints(APP_KEY, [b.endpoint])
        resp = await conn.read_response()
    finally:
        await conn.aclose()
    assert resp.status == 200 and resp.header("x-httpscale-cold-start") == "true"
    spans = await receiver.wait_spans(2)
    (server,) = _servers(spans)
    (hold,) = [s for s in spans if s.name == "hold"]
    assert hold.kind == INTERNAL
    assert (hold.trace_id, hold.parent_span_id) == (CLIENT_TRACE_ID, server.span_id)
    assert hold.attributes == {"httpscale.cold_start": True}
    assert server.attributes["httpscale.cold_start"] is True
    assert server.start_ns <= hold.start_ns < hold.end_ns <= server.end_ns
    assert server.attributes["http.response.status_code"] == 200


async def test_hold_that_times_out_is_traced_with_the_504(
    monkeypatch, receiver, make_interceptor
):
    trace_to(monkeypatch, receiver)
    ic = await make_interceptor(routes=[app_route(dynamic=True, readiness_timeout=0.2)])
    resp = await get(ic.proxy_address, "/")
    assert resp.status == 504
    spans = await receiver.wait_spans(2)
    (server,) = _servers(spans)
    (hold,) = [s for s in spans if s.name == "hold"]
    assert hold.parent_span_id == server.span_id
    assert hold.end_ns - hold.start_ns >= 150_000_000  # it held ~0.2 s
    assert server.attributes["error.type"] == "timeout"
    assert server.status_code == STATUS_ERROR
    assert "did not become ready" in server.status_message


async def test_client_gone_while_held(monkeypatch, receiver, make_interceptor):
    trace_to(monkeypatch, receiver)
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    conn = await Conn.open(ic.proxy_address)
    await conn.send(build_request("GET", "/"))
    await eventually(lambda: ic.route_stats(APP_KEY)["held"] == 1, what="held")
    conn.abort()
    spans = await receiver.wait_spans(2)
    (server,) = _servers(spans)
    (hold,) = [s for s in spans if s.name == "hold"]
    assert hold.parent_span_id == server.span_id
    assert server.attributes["http.response.status_code"] == 499
    assert server.attributes["error.type"] == "client_closed"
    assert server.attributes["httpscale.route"] == APP_KEY


async def test_unrouted_request_span_has_404_and_error_type(monkeypatch, receiver, proxied):
    trace_to(monkeypatch, receiver)
    ic, backend = await proxied()
    resp = await get(ic.proxy_address, "/x", host="nowhere.test")
    assert resp.status == 404
    (span,) = await receiver.wait_spans(1)
    assert span.name == "GET"
    assert span.attributes["http.response.status_code"] == 404
    assert span.attributes["error.type"] == "no_route"
    assert "no route for host 'nowhere.test'" in span.attributes["httpscale.error"]
    assert "httpscale.route" not in span.attributes
    assert span.status_code == 0  # a 4xx is the client's doing: the server span is not failed
    assert backend.requests == []


async def test_upstream_failure_is_an_error_span(monkeypatch, receiver, make_interceptor):
    trace_to(monkeypatch, receiver)
    dead = Endpoint("127.0.0.1", free_port())
    ic = await make_interceptor(routes=[app_route(dead)])
    resp = await get(ic.proxy_address, "/")
    assert resp.status == 502
    (span,) = await receiver.wait_spans(1)
    assert span.attributes["http.response.status_code"] == 502
    assert span.attributes["error.type"] == "upstream_failed"
    assert span.status_code == STATUS_ERROR
    assert str(dead) in span.status_message


async def test_shutdown_flushes_the_queued_spans(monkeypatch, receiver, proxied):
    # A batch delay far longer than the test: only the shutdown's flush can send the span.
    trace_to(monkeypatch, receiver, OTEL_BSP_SCHEDULE_DELAY="600000")
    ic, _ = await proxied()
    assert (await get(ic.proxy_address, "/")).status == 200
    assert receiver.spans == []
    await ic.shutdown()
    assert len(receiver.spans) == 1
    assert receiver.spans[0].attributes["http.response.status_code"] == 200


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "URL", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "URL", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
async def test_off_means_no_tracer_and_context_passed_through(
    monkeypatch, receiver, proxied, env
):
    tracing_off(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, receiver.url if value == "URL" else value)
    ic, backend = await proxied()
    assert ic.proxy.tracer is None
    resp = await get(ic.proxy_address, "/", headers=[("traceparent", TRACEPARENT)])
    assert resp.status == 200
    (seen,) = backend.requests
    assert seen.header_all("traceparent") == [TRACEPARENT]  # untouched, as any header
    await ic.shutdown()
    assert receiver.exports == 0


def test_what_turns_tracing_on():
    assert not tracing_enabled({})
    assert tracing_enabled({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing_enabled({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"})
    assert not tracing_enabled(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    )
    assert tracing_enabled(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    )
    with pytest.raises(TracingConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing_enabled({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(TracingConfigError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='grpc'"):
        tracing_enabled(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
        )


async def test_unknown_propagator_is_a_clear_error(monkeypatch, make_interceptor):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,nosuch")
    with pytest.raises(TracingConfigError, match="OTEL_PROPAGATORS: no propagator 'nosuch'"):
        await make_interceptor()


def test_the_proxy_does_not_import_opentelemetry_when_off():
    code = (
        "import sys, asyncio\n"
        "from httpscale.interceptor.app import Interceptor\n"
        "from httpscale.interceptor.proxy import Proxy\n"
        "from httpscale.interceptor.settings import InterceptorSettings\n"
        "async def main():\n"
        "    assert Proxy(InterceptorSettings()).tracer is None\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout


async def test_many_concurrent_traced_requests_each_get_their_span(
    monkeypatch, receiver, proxied
):
    trace_to(monkeypatch, receiver)
    ic, backend = await proxied()
    resps = await asyncio.gather(*(get(ic.proxy_address, f"/r{i}") for i in range(20)))
    assert {r.status for r in resps} == {200}
    spans = await receiver.wait_spans(20)
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == 20
    # Each backend request names its own request's span as the parent.
    for req in backend.requests:
        _, parent, _ = traceparent(req.header("traceparent"))
        assert by_id[parent].attributes["url.path"] == req.target
