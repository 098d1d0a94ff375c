"""A SERVER span per gRPC call the scaler answers, when tracing is on (`httpscale.tracing`).

A grpc.aio server interceptor: each handler is wrapped so that its span starts when the call
is handled and ends with the call's status (`rpc.grpc.status_code`), whether the handler
returned, aborted (`context.abort`), raised, or was cancelled (the client went away, or the
server stopped). The parent comes from the call's metadata (`traceparent`, as the propagators
configured by OTEL_PROPAGATORS read it), so KEDA's spans, or a test client's, are the parents.

Health checks are not traced: Kubernetes probes and KEDA ask every few seconds, and a trace
per probe would drown the calls worth seeing. Without tracing, the server gets no
interceptor at all (`interceptors` returns none).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import grpc

from httpscale.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["RpcTracing", "interceptors"]

_UNTRACED_SERVICES: Final = frozenset({"grpc.health.v1.Health"})
# Statuses that mark a server span as failed (semantic conventions for gRPC: the server's
# own fault, not the client's request).
_SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def interceptors(tracing: Tracing | None) -> list[grpc.aio.ServerInterceptor]:
    """The server's interceptors: the tracing one when tracing is on, else none."""
    return [] if tracing is None else [RpcTracing(tracing)]


class RpcTracing(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # (grpc is untyped)
    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full = handler_call_details.method  # "/package.Service/Method"
        service, _, method = full.lstrip("/").rpartition("/")
        if handler is None or service in _UNTRACED_SERVICES:
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        fields = self._tracing.fields
        carrier = {k: v for k, v in metadata if k in fields and isinstance(v, str)}
        call = _Call(self._tracing, service, method, carrier)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                call.wrap(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                call.wrap(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                call.wrap(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            call.wrap(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _Call:
    """One call's span: started when its handler runs, ended with the call's status."""

    def __init__(
        self, tracing: Tracing, service: str, method: str, carrier: dict[str, str]
    ) -> None:
        self._tracing = tracing
        self._service = service
        self._method = method
        self._carrier = carrier

    def wrap(self, behavior: Any) -> Any:
        if inspect.isasyncgenfunction(behavior):
            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]
                             ) -> AsyncIterator[Any]:
                span = self._start(context)
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    self._end(span, context, exc)
                    raise
                self._end(span, context, None)

            return stream

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            span = self._start(context)
            try:
                result = await behavior(request, context)
            except BaseException as exc:
                self._end(span, context, exc)
                raise
            self._end(span, context, None)
            return result

        return unary

    def _start(self, context: grpc.aio.ServicerContext[Any, Any]) -> Span:
        tracing = self._tracing
        attributes: dict[str, str | int] = {
            "rpc.system": "grpc",
            "rpc.service": self._service,
            "rpc.method": self._method,
        }
        address, port = _peer(context.peer())
        if address:
            attributes["client.address"] = address
            attributes["client.port"] = port
        return tracing.tracer.start_span(
            f"{self._service}/{self._method}",
            context=tracing.extract(self._carrier),
            kind=tracing.SERVER,
            attributes=attributes,
        )

    def _end(
        self, span: Span, context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None
    ) -> None:
        code = context.code()  # set by context.abort / set_code; None when left alone
        if code is None:
            if exc is None:
                code = grpc.StatusCode.OK
            elif isinstance(exc, asyncio.CancelledError):
                code = grpc.StatusCode.CANCELLED
            else:
                code = grpc.StatusCode.UNKNOWN  # what grpc answers for an exception
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            tracing = self._tracing
            span.set_attribute("error.type", code.name)
            span.set_status(tracing.Status(tracing.ERROR, context.details() or code.name))
        span.end()


def _peer(peer: str) -> tuple[str, int]:
    """Address and port of a grpc peer string ("ipv4:10.0.0.1:5000", "ipv6:[::1]:5000")."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return "", 0
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0
