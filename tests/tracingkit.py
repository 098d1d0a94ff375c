"""An OTLP/HTTP trace receiver on loopback, for tests that check the spans httpscale exports.

`OtlpReceiver` is an aiohttp server accepting `POST /v1/traces` (protobuf, gzip or not), as a
collector's port 4318 does; each request is decoded with opentelemetry-proto's
`ExportTraceServiceRequest` (which comes with the exporter) into `ReceivedSpan`s. Tests await
the spans they expect (`wait_for`), woken by each export, never by sleeping.

`trace_to(monkeypatch, receiver)` points the OTEL_* environment at it (the SDK reads the
process environment when a component starts), with a short batch delay so spans leave soon
after they end; `tracing_off(monkeypatch)` clears every OTEL_* variable.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = [
    "CLIENT_SPAN_ID",
    "CLIENT_TRACE_ID",
    "INTERNAL",
    "SERVER",
    "STATUS_ERROR",
    "TRACEPARENT",
    "OtlpReceiver",
    "ReceivedSpan",
    "trace_to",
    "traceparent",
    "tracing_off",
]

# A client's trace context, as a browser or a service mesh would send it.
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"
SERVER = 2  # Span.SpanKind.SPAN_KIND_SERVER
INTERNAL = 1
STATUS_ERROR = 2


def traceparent(value: str) -> tuple[str, str, str]:
    """(trace id, parent span id, flags) of a W3C traceparent value."""
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16, value
    return trace_id, span_id, flags


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root span
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.exports = 0
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text=f"unexpected {request.content_type}")
        export = ExportTraceServiceRequest.FromString(body)
        for rs in export.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            status_code=s.status.code,
                            status_message=s.status.message,
                            resource=resource,
                            scope=ss.scope.name,
                        )
                    )
        self.exports += 1
        self._arrived.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], within: float = 10.0,
        what: str = "spans",
    ) -> list[ReceivedSpan]:
        """The spans received, once `predicate` holds for them (woken by each export)."""
        deadline = time.monotonic() + within
        while not predicate(self.spans):
            self._arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {within}s waiting for {what}; received "
                    f"{[(s.name, s.attributes) for s in self.spans]}"
                )
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                continue
        return self.spans

    async def wait_spans(self, n: int, within: float = 10.0) -> list[ReceivedSpan]:
        return await self.wait_for(lambda spans: len(spans) >= n, within, f"{n} span(s)")


def tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def trace_to(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver, **extra: str) -> None:
    """The OTEL_* environment of a component exporting to `receiver`."""
    tracing_off(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # ms: spans leave soon after ending
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
