"""gRPC backend and one-call client for `loadtests/protobench.py`: a real grpcio server.

    python loadtests/grpcbackend.py serve [--port 0]   prints {"port": N} once serving, then
                                                       serves until SIGTERM
    python loadtests/grpcbackend.py call HOST:PORT     one unary call, exits 0 when the reply and
                                                       the status (OK, from the trailers) are right

One method, `/bench.Bench/Unary`, answering each request with its own bytes. A generic handler
with no (de)serializers: messages stay bytes, so no generated code and no protobuf work beyond
what grpcio itself does. The load generator (h2load) sends `REQUEST`, a fixed protobuf message
(field 1, 16 bytes) in gRPC's length-prefixed framing (`grpc_frame`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys

import grpc

__all__ = ["METHOD", "REQUEST", "grpc_frame"]

SERVICE = "bench.Bench"
METHOD = f"/{SERVICE}/Unary"
#: Protobuf wire format of a message with field 1 (bytes) = 16 x "x": tag 0x0a, length 16.
REQUEST = b"\x0a\x10" + b"x" * 16


def grpc_frame(message: bytes) -> bytes:
    """gRPC's framing of one message on the HTTP/2 stream: not compressed, 4-byte length."""
    return struct.pack(">BI", 0, len(message)) + message


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(_unary)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Unary": handler}),)
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(json.dumps({"port": bound}) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.stop(grace=1.0)


def _call(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        unary = channel.unary_unary(METHOD)
        try:
            reply, call = unary.with_call(REQUEST, timeout=10.0)
        except grpc.RpcError as exc:
            print(f"gRPC call to {address}: {exc.code()} {exc.details()}", file=sys.stderr)
            return 1
    if reply != REQUEST or call.code() != grpc.StatusCode.OK:
        print(f"gRPC call to {address}: {call.code()}, reply {reply!r}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--port", type=int, default=0)
    call = sub.add_parser("call")
    call.add_argument("address")
    args = parser.parse_args()
    if args.cmd == "call":
        return _call(args.address)
    asyncio.run(_serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
