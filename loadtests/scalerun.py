"""One measured case of `loadtests/scalebench.py`: wrk's warm-up and measured run against one
server, its CPU time around the run, and the connection counts sampled meanwhile.

* CPU: user + system seconds of the server's whole process tree (nginx's master and workers,
  the interceptor's parent and workers) and of the backend's, read before and after the run.
* Upstream connections: established sockets from the server's processes to the backend
  (/proc/net/tcp against the processes' socket inodes): the same count for nginx and the
  interceptor, at no cost to either. For the interceptor with one host also its requests in
  flight, from its admin /queue (the parent's sum over workers, or here over the workers' own
  admin sockets when the parent's admin has no /queue).
  Both are sampled during the warm-up run only, from 0.5 s in (wrk has connected), as often
  as they answer: at 1,024 connections a socket count costs the benchmark process a few
  hundred ms of CPU on wrk's core, and a /queue of 10,000 routes costs the interceptor some.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from benchkit import Processes, WrkResult, parse_wrk, tool_path
from held import HeldClient
from scaleplan import Case, host_name
from scaleprocs import Server, server_in_flight, tree_cpu_seconds, upstream_conns

from httpscale import dataplane

__all__ = ["Fleet", "check", "environment", "measure"]

HERE = Path(__file__).resolve().parent
CORE_LOAD = "1"


@dataclass
class Fleet:
    """The servers of one run, by (workers, "direct" | "nginx" | "interceptor")."""

    servers: dict[tuple[int, str], Server] = field(default_factory=dict)
    backends: dict[int, Server] = field(default_factory=dict)
    not_started: dict[int, str] = field(default_factory=dict)  # workers -> why no interceptor

    def has(self, case: Case) -> bool:
        return (case.workers, case.server) in self.servers

    def not_measured(self, cases: list[Case]) -> dict[str, str]:
        return {
            c.key: self.not_started.get(c.workers, "server not started")
            for c in cases
            if not self.has(c)
        }


async def _get(server: Server, host: str) -> int:
    client = HeldClient(("127.0.0.1", server.port), host, 1)
    try:
        await client.open()
        (result,) = await client.wait_all(wait_s=10)
    finally:
        client.close()
    return result.status


async def check(server: Server, routes: int) -> None:
    """Before measuring: the first and last host answer 200 and, through a proxy, an unknown
    host 404, so neither a wrong route nor a catch-all can pass for speed."""
    wanted = {host_name(0): 200}
    if server.upstream_port:
        wanted |= {host_name(routes - 1): 200, "unknown.bench": 404}
    for host, status in wanted.items():
        got = await _get(server, host)
        if got != status:
            raise RuntimeError(f"{server.name}: GET / for {host} answered {got}, not {status}")


def _wrk_argv(args: argparse.Namespace, case: Case, server: Server, secs: float) -> list[str]:
    threads = args.threads if case.workers == 1 else args.threads_shared
    argv = [tool_path("wrk"), f"-t{min(threads, case.conns)}", f"-c{case.conns}", f"-d{secs:g}s",
            "--latency", "--timeout", "5s"]
    url = f"http://127.0.0.1:{server.port}/"
    if case.hosts == "one":
        return [*argv, "-H", f"Host: {host_name(0)}", url]
    spread = 1 if case.hosts == "lua-1" else args.routes
    return [*argv, "-s", str(HERE / "nginx" / "many_hosts.lua"), url, "--", str(spread)]


async def _wrk(procs: Processes, argv: list[str], case: Case, secs: float) -> WrkResult:
    child = await procs.start(f"wrk-{case.key}", argv, CORE_LOAD if case.workers == 1 else None)
    try:
        assert child.proc.stdout is not None
        out = await asyncio.wait_for(child.proc.stdout.read(), secs + 30)
        await asyncio.wait_for(child.proc.wait(), 10)
    finally:
        await procs.stop(child)
    return parse_wrk(out.decode())


async def _sample(read: Callable[[], Coroutine[Any, Any, dict[str, int]]],
                  peaks: dict[str, int], stop: asyncio.Event, *, every_s: float,
                  after_s: float) -> None:
    """Keeps the largest value of each figure `read` returns, and how many samples answered,
    until `stop` is set. `after_s`: wait that long first, so that wrk has connected."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), after_s)
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ValueError):
            for key, value in (await read()).items():
                peaks[key] = max(peaks.get(key, 0), value)
            peaks["samples"] = peaks.get("samples", 0) + 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


async def _while(work: Coroutine[Any, Any, WrkResult],
                 sampler: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None
                 ) -> WrkResult:
    """`work`, with `sampler` running beside it. The sampler is stopped, not cancelled: an
    admin request being answered finishes before this returns, so none is still costing the
    interceptor CPU when the measured run starts."""
    if sampler is None:
        return await work
    stop = asyncio.Event()
    task = asyncio.ensure_future(sampler(stop))
    try:
        return await work
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 15)  # an admin request times out after 5 s
        except TimeoutError:
            pass  # wait_for cancelled it


async def measure(args: argparse.Namespace, procs: Processes, fleet: Fleet, case: Case
                  ) -> dict[str, Any]:
    server = fleet.servers[(case.workers, case.server)]
    backend = fleet.backends[case.workers]
    # Counted during the warm-up only: at 1,024 connections one socket count takes the
    # benchmark process a few hundred ms of CPU, on the core wrk uses in the pinned rows.
    peaks: dict[str, int] = {}
    sampler: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None
    if server.upstream_port:
        with_queue = case.server == "interceptor" and case.hosts == "one"

        async def sample() -> dict[str, int]:
            found = {"upstream": upstream_conns(server)}
            if with_queue:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ValueError):
                    found |= await server_in_flight(server)
            return found

        def start(stop: asyncio.Event) -> Coroutine[Any, Any, None]:
            return _sample(sample, peaks, stop, every_s=0.1, after_s=min(0.5, args.warmup / 4))

        sampler = start

    await _while(_wrk(procs, _wrk_argv(args, case, server, args.warmup), case, args.warmup),
                 sampler)

    cpu_before, backend_before = tree_cpu_seconds(server.pid), tree_cpu_seconds(backend.pid)
    result = await _wrk(procs, _wrk_argv(args, case, server, args.duration), case, args.duration)
    cpu = tree_cpu_seconds(server.pid) - cpu_before
    backend_cpu = tree_cpu_seconds(backend.pid) - backend_before
    return {
        **result.as_dict(),
        "cpu_us_per_req": cpu * 1e6 / max(1, result.requests),
        # What one full core would serve at this cost: steadier than req/s on a shared machine.
        "req_per_cpu_s": result.requests / cpu if cpu > 0 else None,
        "cpu_cores": cpu / args.duration,
        "backend_cpu_cores": backend_cpu / args.duration,
        "upstream_conns_peak": peaks.get("upstream"),
        "in_flight_peak": peaks.get("in_flight"),
        "warmup_samples": peaks.get("samples", 0),
        "loadavg_1m": os.getloadavg()[0],
    }


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return repr(exc)
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else ""


def environment() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _version([tool_path("nginx"), "-v"]),
        "wrk": _version([tool_path("wrk"), "-v"]),
        "git": _version(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"]),
        "git_dirty_interceptor": _version(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "httpscale"]) != "",
        "dataplane": dataplane.active().name,
        "dataplane_why": dataplane.active().reason,
        "loadavg_before": os.getloadavg(),
    }
