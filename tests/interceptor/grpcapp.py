"""A real grpcio server for the gRPC tests: service `test.Echo` with unary, server-streaming
(`Stream`, and `Big`: COUNTxSIZE messages) and bidirectional methods, registered by a generic
handler with bytes in and out (no serializers: grpcio passes the raw message bytes), so no
.proto needs compiling."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

__all__ = ["GRPC_STALE_LOOP", "SERVICE", "GrpcApp", "start_grpc_app"]

# grpc.aio keeps one completion queue per process and delivers each event to the loop that
# started the operation. Tests run each on a loop of their own (pytest-asyncio), so an event of
# a finished test's channel or server (a shutdown completing late, on a loaded machine) can
# reach grpc after that loop closed, and grpc's callback, run on the next test's loop, logs
# "Event loop is closed". A process with one loop, as every httpscale component is, never sees
# it; only that record is tolerated (`expected_errors`), any other error still fails the test.
GRPC_STALE_LOOP = r"PollerCompletionQueue\._handle_events[\s\S]*Event loop is closed"

SERVICE = "test.Echo"


async def _unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    if request == b"fail":
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail")
    return b"echo:" + request


async def _stream(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for i in range(int(request or b"3")):
        yield b"part%d" % i


async def _big(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    count, size = (int(x) for x in request.split(b"x"))
    for i in range(count):
        yield bytes([65 + i % 26]) * size


async def _bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message.upper()


class GrpcApp:
    def __init__(self) -> None:
        self.server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                "Stream": grpc.unary_stream_rpc_method_handler(_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
                "Big": grpc.unary_stream_rpc_method_handler(_big),
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def start(self) -> GrpcApp:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop(grace=None)


async def start_grpc_app() -> GrpcApp:
    return await GrpcApp().start()
