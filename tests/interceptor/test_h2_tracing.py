"""Tracing of HTTP/2 streams (contract D): a SERVER span per stream continuing the client's
trace, the app's trace context naming that span, the cold-start hold as a child span.

Needs httpscale/tracing.py and tests/tracingkit.py (the tracing part of issue 19)."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("httpscale.tracing") is None
    or importlib.util.find_spec("tracingkit") is None,
    reason="httpscale/tracing.py and tests/tracingkit.py (tracing, contract D) are not merged",
)

from .backends import http_app, named_app  # noqa: E402
from .h2client import H2Client  # noqa: E402
from .helpers import APP_KEY, app_route, eventually  # noqa: E402

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"
SERVER, INTERNAL = 2, 1


@pytest.fixture
async def receiver(monkeypatch) -> AsyncIterator[object]:
    from tracingkit import OtlpReceiver, trace_to

    r = await OtlpReceiver().start()
    trace_to(monkeypatch, r)
    yield r
    await r.close()


async def test_stream_span_continues_the_clients_trace(receiver, proxied):
    ic, backend = await proxied()
    assert ic.proxy.tracer is not None
    c = await H2Client.open(ic.proxy_address)
    try:
        r = await c.get("/items/7", headers=[("traceparent", TRACEPARENT)])
    finally:
        await c.aclose()
    assert r.status == 200
    (span,) = await receiver.wait_spans(1)
    assert span.kind == SERVER and span.name == f"GET {APP_KEY}"
    assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE_ID, CLIENT_SPAN_ID)
    assert span.attributes["network.protocol.version"] == "2"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["httpscale.upstream"] == str(backend.endpoint)
    (seen,) = backend.requests
    _, trace_id, parent_id, _ = seen.header("traceparent").split("-")
    assert (trace_id, parent_id) == (CLIENT_TRACE_ID, span.span_id)


async def test_held_stream_has_a_hold_child_span(receiver, backends, make_interceptor):
    b = await backends(http_app(named_app("awake")))
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    c = await H2Client.open(ic.proxy_address)
    try:
        sid = c.request("/", headers=[("traceparent", TRACEPARENT)])
        await eventually(lambda: (ic.route_stats(APP_KEY) or {}).get("held") == 1)
        ic.set_endpoints(APP_KEY, [b.endpoint])
        assert (await c.reply(sid)).status == 200
    finally:
        await c.aclose()
    spans = await receiver.wait_spans(2)
    (server,) = [s for s in spans if s.kind == SERVER]
    (hold,) = [s for s in spans if s.name == "hold"]
    assert hold.kind == INTERNAL and hold.parent_span_id == server.span_id
    assert hold.attributes == {"httpscale.cold_start": True}
