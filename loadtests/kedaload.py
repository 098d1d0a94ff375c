"""KEDA's load on an external scaler, from a real gRPC client (loadtests/resources.py).

For each ScaledObject, what KEDA v2 and the HPA do with an `external` trigger:

- one `StreamIsActive` stream, open for as long as the ScaledObject exists (KEDA's
  `external-push` path keeps one per object);
- every polling interval (15 s by default), KEDA's scale loop: `IsActive` and `GetMetrics`
  (KEDA's `GetMetricsAndActivity`, for the metric name it learnt when it set the object up);
- every HPA sync (15 s by default), through KEDA's metrics adapter: `GetMetricSpec`, then
  `GetMetrics` for the metric it names.

The metric names are asked once (`GetMetricSpec`) before the loops start, as KEDA does when it
creates the HPA; those calls are not counted in the load.

The objects' loops are spread evenly over the interval, as ScaledObjects created at different
times are. The scaler metadata of each call is what the operator wrote into the ScaledObject.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc

from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.proto import externalscaler_pb2_grpc as pb_grpc

__all__ = ["KedaLoad"]

Stub = pb_grpc.ExternalScalerStub
Loop = Callable[[Stub, pb.ScaledObjectRef], Awaitable[None]]


class KedaLoad:
    """Streams and periodic calls for `refs` against the scaler at `target` (host:port)."""

    def __init__(self, target: str, refs: Sequence[tuple[str, str, Mapping[str, str]]],
                 interval: float = 15.0) -> None:
        self.target = target
        self.refs = [pb.ScaledObjectRef(name=n, namespace=ns, scalerMetadata=dict(meta))
                     for n, ns, meta in refs]
        self.interval = interval
        self.calls: Counter[str] = Counter()  # "<rpc> <status>"
        self.streams_open = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: grpc.aio.Channel | None = None
        self._first_cycle = asyncio.Event()
        self._cycled = 0
        self._metric: dict[int, str] = {}  # id(ref) -> its metric's name

    def snapshot(self) -> Counter[str]:
        return Counter(self.calls)

    async def start(self) -> None:
        """Open every stream, then start the loops; returns once each object's two loops have
        made their first round (a whole interval: the steady state from then on)."""
        self._channel = grpc.aio.insecure_channel(self.target)
        stub = pb_grpc.ExternalScalerStub(self._channel)
        await asyncio.wait_for(self._channel.channel_ready(), 30)
        gate = asyncio.Semaphore(32)

        async def learn(ref: pb.ScaledObjectRef) -> None:
            async with gate:
                spec = await stub.GetMetricSpec(ref, timeout=30)
            self._metric[id(ref)] = spec.metricSpecs[0].metricName

        await asyncio.gather(*(learn(ref) for ref in self.refs))
        n = len(self.refs)
        for i, ref in enumerate(self.refs):
            self._tasks.append(asyncio.create_task(self._stream(stub, ref), name=f"stream {i}"))
        start = time.monotonic()
        for i, ref in enumerate(self.refs):
            offset = start + self.interval * i / n
            for loop in (self._keda_loop, self._hpa_loop):
                self._tasks.append(asyncio.create_task(self._every(offset, loop, stub, ref)))
        await asyncio.wait_for(self._first_cycle.wait(), self.interval * 3 + 30)

    async def _stream(self, stub: Stub, ref: pb.ScaledObjectRef) -> None:
        call = stub.StreamIsActive(ref)
        self.streams_open += 1
        try:
            async for _ in call:
                self.calls["StreamIsActive message"] += 1
        except grpc.aio.AioRpcError as exc:
            self.calls[f"StreamIsActive {exc.code().name}"] += 1
        finally:
            self.streams_open -= 1
            call.cancel()

    async def _every(self, first: float, loop: Loop, stub: Stub, ref: pb.ScaledObjectRef) -> None:
        at = first
        counted = False
        while True:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            await loop(stub, ref)
            if not counted:
                counted = True
                self._cycled += 1
                if self._cycled == 2 * len(self.refs):
                    self._first_cycle.set()
            at += self.interval

    async def _call(self, name: str, call: Awaitable[object]) -> object | None:
        try:
            result = await call
        except grpc.aio.AioRpcError as exc:
            self.calls[f"{name} {exc.code().name}"] += 1
            return None
        self.calls[f"{name} OK"] += 1
        return result

    async def _keda_loop(self, stub: Stub, ref: pb.ScaledObjectRef) -> None:
        request = pb.GetMetricsRequest(scaledObjectRef=ref, metricName=self._metric[id(ref)])
        await self._call("GetMetrics", stub.GetMetrics(request, timeout=10))
        await self._call("IsActive", stub.IsActive(ref, timeout=10))

    async def _hpa_loop(self, stub: Stub, ref: pb.ScaledObjectRef) -> None:
        spec = await self._call("GetMetricSpec", stub.GetMetricSpec(ref, timeout=10))
        if not isinstance(spec, pb.GetMetricSpecResponse) or not spec.metricSpecs:
            return
        request = pb.GetMetricsRequest(scaledObjectRef=ref,
                                       metricName=spec.metricSpecs[0].metricName)
        await self._call("GetMetrics", stub.GetMetrics(request, timeout=10))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._channel is not None:
            await self._channel.close()
