"""Helpers for the scaler tests: a stand-in interceptor admin server and a gRPC client.

The stand-in serves the interceptor admin contract (`GET /queue`, `GET /wake` NDJSON) on a real
loopback port, with values the test sets. It exists for what a real interceptor cannot be made
to do on demand (report a counter reset, hang, fail); tests with real traffic use real
`httpscale local` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

from httpscale.model.httpso import MetricKind, ScalingMetric
from httpscale.scaler.app import Scaler
from httpscale.scaler.discovery import StaticDiscovery
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.proto import externalscaler_pb2_grpc as pb_grpc
from httpscale.scaler.routes import ScalerRoute, StaticRouteSource, httpso_route
from httpscale.scaler.settings import (
    CollectorSettings,
    ListenSettings,
    ScalerSettings,
    ScalerShutdown,
    WakeSettings,
)


@dataclass
class StandIn:
    """A fake interceptor admin server. `mode`: "ok", "error" (500) or "hang"."""

    queue: dict[str, dict[str, int]] = field(default_factory=dict)
    mode: str = "ok"
    polls: int = 0
    _streams: list[web.StreamResponse] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, route: str, concurrency: int, count: int) -> None:
        self.queue[route] = {"Concurrency": concurrency, "RequestCount": count}

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/queue", self._queue)
        app.router.add_get("/wake", self._wake)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._release.set()
        for stream in self._streams:
            stream.force_close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def wake_streams(self) -> int:
        return len(self._streams)

    async def wake(self, route: str) -> None:
        line = json.dumps({"event": "wake", "route": route}).encode() + b"\n"
        for stream in list(self._streams):
            await stream.write(line)

    async def _queue(self, request: web.Request) -> web.Response:
        self.polls += 1
        if self.mode == "error":
            return web.Response(status=500, text="broken")
        if self.mode == "hang":
            await self._release.wait()
        return web.json_response(self.queue)

    async def _wake(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        self._streams.append(response)
        try:
            await self._release.wait()
        finally:
            self._streams.remove(response)
        return response


def route(
    key: str,
    kind: MetricKind = "concurrency",
    *,
    target: float = 100.0,
    window: float = 60.0,
    granularity: float = 1.0,
    active_for: float | None = None,
) -> ScalerRoute:
    """An HTTPScaledObject's route with one metric (`active_for` None: the rate window)."""
    metric = ScalingMetric(kind, target, window=window, granularity=granularity)
    return httpso_route(key, metric, scaledown_period=active_for)


def fast_settings(**collector: float) -> ScalerSettings:
    return ScalerSettings(
        listen=ListenSettings(host="127.0.0.1", grpc_port=0, admin_port=0),
        collector=CollectorSettings(
            poll_interval=collector.get("poll_interval", 0.05),
            poll_timeout=collector.get("poll_timeout", 0.5),
            stale_grace=collector.get("stale_grace", 0.6),
        ),
        wake=WakeSettings(hold=collector.get("hold", 2.0), backoff_initial=0.05, backoff_max=0.2),
        shutdown=ScalerShutdown(grpc_grace=0.5, admin_grace=0.5),
    )


@asynccontextmanager
async def running_scaler(
    routes: list[ScalerRoute], interceptor_urls: list[str], settings: ScalerSettings | None = None
) -> AsyncIterator[Scaler]:
    before = asyncio.all_tasks()
    scaler = Scaler(
        settings or fast_settings(), StaticRouteSource(routes), StaticDiscovery(interceptor_urls)
    )
    await scaler.start()
    try:
        yield scaler
    finally:
        await scaler.stop()
    # Every task the scaler started is gone once stop() returns (owned, awaited), and so is every
    # gRPC call's task (grpc names them after the method and "rpc_task"). Unnamed tasks belong to
    # the stand-ins' servers or to the test's own gRPC channel.
    assert scaler.service.calls_in_progress == 0
    leaked = [
        t
        for t in asyncio.all_tasks() - before
        if t is not asyncio.current_task() and not t.get_name().startswith("Task-")
    ]
    assert not leaked, f"tasks left after stop: {[(t.get_name(), t.get_coro()) for t in leaked]}"


@asynccontextmanager
async def grpc_client(port: int) -> AsyncIterator[pb_grpc.ExternalScalerAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.ExternalScalerStub(channel)  # type: ignore[misc]


def ref(name: str, namespace: str = "local", **metadata: str) -> pb.ScaledObjectRef:
    meta = {"httpScaledObject": name, **metadata}
    return pb.ScaledObjectRef(name=f"{name}-so", namespace=namespace, scalerMetadata=meta)


async def eventually(predicate: object, within: float = 5.0, what: str = "") -> None:
    """Wait until `predicate()` is true (test helper, for values produced by the poll loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_mode_argv(config: Path) -> list[str]:
    """`python -m httpscale local -c FILE`."""
    return [sys.executable, "-m", "httpscale", "local", "-c", str(config)]


class LocalInterceptor:
    """A real `httpscale local` process (interceptor + local autoscaler) on free ports."""

    def __init__(self, config_body: str, workdir: Path, name: str) -> None:
        self.proxy_port = free_port()
        self.admin_port = free_port()
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(
            f"listen: 127.0.0.1:{self.proxy_port}\nadmin: 127.0.0.1:{self.admin_port}\n"
            + config_body
        )
        self.log = workdir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *local_mode_argv(self.config),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        async with aiohttp.ClientSession() as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30  # a loaded 2-CPU box starts Python slowly
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(f"local mode exited: {self.log.read_text()}")
                try:
                    async with http.get(self.admin_url + "/queue") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise AssertionError(f"local mode did not start: {self.log.read_text()}")
                await asyncio.sleep(0.05)

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        # The whole session: local mode's app replicas must not outlive the test.
        os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def kill_app_group(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def wake_connected(scaler: Scaler, replicas: int) -> bool:
    """All `replicas` interceptors are known and their /wake streams are open."""
    known = scaler.collector.replicas
    return len(known) == replicas and all(r.wake_connected for r in known)


@asynccontextmanager
async def cpu_contention(processes: int, seconds: float) -> AsyncIterator[None]:
    """Busy-looping processes, to widen races that only show on a contended CPU. Each one ends by
    itself after `seconds` even if the test dies; they are killed on exit anyway."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", spin) for _ in range(processes)
    ]
    try:
        yield
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
        for proc in procs:
            await proc.wait()
