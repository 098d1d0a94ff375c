"""Process handling and wrk output parsing for `loadtests/bench.py`.

Every process the benchmark starts goes through `Processes`, which owns it until the end: each
child runs in its own session (so a Ctrl-C in the terminal reaches only the benchmark, which
then stops the children in order) and is stopped by its pid, or its process group when it
forked workers (nginx), with SIGTERM and then SIGKILL. Nothing outlives the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "Child",
    "Processes",
    "WrkResult",
    "cpu_seconds",
    "free_port",
    "missing_tools",
    "parse_wrk",
    "stop_group",
]

_TOOLS = {"nginx": "nginx", "wrk": "wrk", "taskset": "util-linux"}


def missing_tools() -> list[str]:
    """Names of the required programs not on PATH (nginx also lives in /usr/sbin)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [tool for tool in _TOOLS if shutil.which(tool, path=path) is None]


def tool_path(tool: str) -> str:
    found = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert found is not None, tool
    return found


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in process group `pgid` (nginx: master and
    worker). On a shared machine req/s depends on how much CPU the proxy got; CPU per request
    does not, so it is the steadier figure to compare proxies with."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces
        if int(fields[2]) == pgid:  # fields: state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def free_port() -> int:
    # Bind-then-close has a small race with other programs; on a benchmark box it is fine and
    # nginx has no "port 0" to report back.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the benchmark itself is SIGKILLed and gets
    # no chance to clean up, the kernel still stops its direct children.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class Child:
    """A started process; for harness-style children, one JSON reply line per command."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, cpus: str | None) -> None:
        self.name = name
        self.proc = proc
        self.cpus = cpus

    async def read_json(self, wait_s: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), wait_s)
        if not line:
            raise RuntimeError(f"{self.name} exited (code {self.proc.returncode}) before replying")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply

    async def command(self, line: str, wait_s: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read_json(wait_s)


async def stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the process group `proc` leads (it was started in a session of its own, so
    its pid is the group's id: a forked worker gets the signal too, nothing else does), up to
    `grace` seconds, then SIGKILL; returns once it has exited."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


class Processes:
    """Starts children (optionally pinned with taskset) and stops all of them on exit."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self._children: list[Child] = []

    async def start(
        self, name: str, argv: list[str], cpus: str | None, *, pipes: bool = False
    ) -> Child:
        cpus = cpus if self.pin else None
        full = [tool_path("taskset"), "-c", cpus, *argv] if cpus is not None else argv
        proc = await asyncio.create_subprocess_exec(
            *full,
            stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # errors from children show up on the benchmark's terminal
            start_new_session=True,
            preexec_fn=_die_with_parent,
            # Large reads: wrk output and reply lines are small, but never block on them.
            limit=1 << 20,
        )
        child = Child(name, proc, cpus)
        self._children.append(child)
        return child

    async def stop(self, child: Child, grace: float = 5.0) -> None:
        proc = child.proc
        if proc.returncode is None:
            await stop_group(proc, grace)
        else:
            # Exited on its own; a forked worker could still hold the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if child in self._children:
            self._children.remove(child)

    async def stop_all(self) -> None:
        # Shielded so a second Ctrl-C during cleanup cannot leave a child behind.
        for child in reversed(list(self._children)):
            await asyncio.shield(self.stop(child))

    def pinning(self) -> dict[str, str | None]:
        return {c.name: c.cpus for c in self._children}


@dataclass(frozen=True, slots=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def valid(self) -> bool:
        return self.non_2xx == 0 and self.socket_errors == 0 and self.requests > 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "valid": self.valid}


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"unknown wrk duration {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Read `wrk --latency` text: Requests/sec, the 50% and 99% lines, error counters."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"(\d+) requests in", output)
    if rps is None or p50 is None or p99 is None or total is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )
