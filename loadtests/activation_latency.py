"""Activation latency: a request held at an idle route -> `true` on KEDA's StreamIsActive.

    .venv/bin/python loadtests/activation_latency.py [--trials 30] [--interceptors 2]

Runs real interceptor processes (`httpscale interceptor --config FILE`, routes with no endpoint,
so every request is held), a scaler in this process, and a gRPC StreamIsActive client per route.
Each trial sends one request to a route never used before (a genuine idle -> held transition)
and times, on one monotonic clock:
  send -> wake   the request leaving the client until the scaler reads the interceptor's
                 `/wake` line (interceptor hold + NDJSON push over loopback)
  wake -> true   until the stream client receives `true` (board + gRPC)
  send -> true   the whole path; the issue's budget is 50 ms from the request's arrival
Then the same with the push disabled (`--no-wake`): activation waits for a `/queue` poll,
which is what KEDA's add-on does (plus its 200 ms stream tick). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc

from httpscale.scaler.app import Scaler
from httpscale.scaler.discovery import StaticDiscovery
from httpscale.scaler.proto import externalscaler_pb2 as pb
from httpscale.scaler.proto import externalscaler_pb2_grpc as pb_grpc
from httpscale.scaler.routes import StaticRouteSource, routes_from_local_config
from httpscale.scaler.settings import (
    CollectorSettings,
    ListenSettings,
    ScalerSettings,
    WakeSettings,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, routes: int) -> None:
    lines = ["apps:"]
    for i in range(routes):
        # `run` is required by the file format; `httpscale interceptor` never runs it, so the
        # route has no endpoint and every request to it is held.
        lines += [
            f"  - name: cold-{i}",
            f"    hosts: [cold-{i}.bench]",
            '    run: {command: ["true"]}',
        ]
    path.write_text("\n".join(lines) + "\n")


def interceptor_argv(config: Path, port: int, admin_port: int) -> list[str]:
    return [
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config),
        "--host", "127.0.0.1", "--port", str(port),
        "--admin-host", "127.0.0.1", "--admin-port", str(admin_port),
        "--log-level", "warning",
    ]  # fmt: skip


async def start_interceptor(config: Path) -> tuple[asyncio.subprocess.Process, int, str]:
    port, admin_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        *interceptor_argv(config, port, admin_port), start_new_session=True
    )
    admin = f"http://127.0.0.1:{admin_port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            if process.returncode is not None:
                raise SystemExit(f"interceptor exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(admin + "/queue") as response:
                    if response.status == 200:
                        return process, port, admin
            await asyncio.sleep(0.05)
    raise SystemExit("interceptor did not start")


async def stop_interceptor(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return f"  {name:<14} (no samples)"
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return (
        f"  {name:<14} p50 {statistics.median(ms):7.2f} ms   p90 {p90:7.2f} ms   "
        f"min {ms[0]:7.2f}   max {ms[-1]:7.2f}   n={len(ms)}"
    )


async def run_mode(
    push: bool,
    config: Path,
    first_route: int,
    trials: int,
    proxies: list[int],
    admins: list[str],
    poll_interval: float,
) -> dict[str, list[float]]:
    settings = ScalerSettings(
        listen=ListenSettings(host="127.0.0.1", grpc_port=0, admin_port=0),
        collector=CollectorSettings(poll_interval=poll_interval),
        wake=WakeSettings(enabled=push),
    )
    routes = routes_from_local_config(config)
    scaler = Scaler(settings, StaticRouteSource(routes), StaticDiscovery(admins))
    await scaler.start()
    wake_seen: dict[str, float] = {}
    board_wake = scaler.board.wake

    def timed_wake(key: str) -> None:
        wake_seen.setdefault(key, time.perf_counter())
        board_wake(key)

    scaler.board.wake = timed_wake  # type: ignore[method-assign]
    results: dict[str, list[float]] = {"send -> wake": [], "wake -> true": [], "send -> true": []}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not scaler.ready or (
            push
            and not (
                len(scaler.collector.replicas) == len(admins)
                and all(r.wake_connected for r in scaler.collector.replicas)
            )
        ):
            if loop.time() > deadline:
                raise SystemExit("scaler did not connect to the interceptors")
            await asyncio.sleep(0.02)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scaler.grpc_port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[misc]
            for trial in range(trials):
                name = f"cold-{first_route + trial}"
                key = f"local/{name}"
                ref = pb.ScaledObjectRef(
                    name=name, namespace="local", scalerMetadata={"httpScaledObject": name}
                )
                stream = stub.StreamIsActive(ref)
                first = await stream.read()
                assert first.result is False, "route not idle"
                port = proxies[trial % len(proxies)]
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                # Let the loop settle, then send at a random phase of the poll cycle: each trial
                # ends right after a poll, so a fixed pause would always hit the same phase.
                await asyncio.sleep(0.05 + random.uniform(0, poll_interval))
                sent = time.perf_counter()
                writer.write(f"GET / HTTP/1.1\r\nHost: {name}.bench\r\n\r\n".encode())
                got = await asyncio.wait_for(stream.read(), 5)
                done = time.perf_counter()
                assert got.result is True
                results["send -> true"].append(done - sent)
                if key in wake_seen:
                    results["send -> wake"].append(wake_seen[key] - sent)
                    results["wake -> true"].append(done - wake_seen[key])
                stream.cancel()
                writer.close()  # abandon the held request
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                del reader
    finally:
        await scaler.stop()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--interceptors", type=int, default=2)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "routes.yaml"
        write_config(config, 2 * args.trials)
        started = [await start_interceptor(config) for _ in range(args.interceptors)]
        try:
            proxies = [port for _, port, _ in started]
            admins = [admin for _, _, admin in started]
            print(
                f"activation latency: {args.trials} trials, {args.interceptors} interceptor "
                f"processes, poll interval {args.poll_interval * 1000:.0f} ms, "
                f"{os.cpu_count()} CPUs"
            )
            for push, first in ((True, 0), (False, args.trials)):
                results = await run_mode(
                    push, config, first, args.trials, proxies, admins, args.poll_interval
                )
                print("push (/wake stream):" if push else "poll only (--no-wake):")
                for name, values in results.items():
                    if values:
                        print(summary(name, values))
        finally:
            for process, _, _ in started:
                await stop_interceptor(process)


if __name__ == "__main__":
    asyncio.run(main())
