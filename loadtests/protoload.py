"""Load generators of the protocol benchmark (`loadtests/protobench.py`): wrk for HTTP/1.1 over
TLS, h2load (nghttp2-client) for h2 over TLS, h2c and gRPC, and one-request checks that a target
answers what it should before it is measured.

h2load prints no latency percentiles, so every run writes its per-request log (`--log-file`:
start, status, microseconds to the end of the response) and p50/p99 come from it (nearest
rank over the measured requests; the warm-up is a separate run, as for wrk).
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchkit import Processes, WrkResult, parse_wrk, tool_path

__all__ = [
    "H2LOAD_INSTALL",
    "LoadResult",
    "h2load_missing",
    "http1_get_status",
    "parse_h2load",
    "run_h2load",
    "run_wrk",
]

H2LOAD_INSTALL = "apt-get install -y nghttp2-client"


def h2load_missing() -> bool:
    return shutil.which("h2load") is None


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One measured run, from either tool (wrk's figures mapped onto the same fields)."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int  # h2load: failed + errored + timeout + non-2xx; wrk: socket errors + non-2xx

    @property
    def valid(self) -> bool:
        return self.failed == 0 and self.requests > 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "valid": self.valid}

    @classmethod
    def from_wrk(cls, r: WrkResult) -> LoadResult:
        return cls(r.rps, r.p50_ms, r.p99_ms, r.requests, r.non_2xx + r.socket_errors)


def _nearest_rank(sorted_us: list[int], q: float) -> float:
    if not sorted_us:
        return math.nan
    return sorted_us[max(0, math.ceil(q * len(sorted_us)) - 1)] / 1000.0


def parse_h2load(output: str, log: str) -> LoadResult:
    """h2load's summary (req/s, request and status counters) and its per-request log."""
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    req = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if rps is None or req is None or codes is None:
        raise ValueError(f"unexpected h2load output:\n{output}")
    durations = sorted(
        int(cols[2]) for line in log.splitlines() if len(cols := line.split("\t")) >= 3
    )
    done, failed, errored, timeout = (int(req.group(i)) for i in (2, 4, 5, 6))
    not_2xx = sum(int(codes.group(i)) for i in (2, 3, 4))
    return LoadResult(
        rps=float(rps.group(1)),
        p50_ms=_nearest_rank(durations, 0.50),
        p99_ms=_nearest_rank(durations, 0.99),
        requests=done,
        failed=failed + errored + timeout + not_2xx,
    )


async def _output(procs: Processes, name: str, argv: list[str], cpus: str, wait_s: float) -> str:
    child = await procs.start(name, argv, cpus)
    try:
        assert child.proc.stdout is not None
        out = await asyncio.wait_for(child.proc.stdout.read(), wait_s)
        await asyncio.wait_for(child.proc.wait(), 10)
    finally:
        await procs.stop(child)
    return out.decode(errors="replace")


async def run_wrk(
    procs: Processes, name: str, url: str, secs: float, connections: int, cpus: str
) -> LoadResult:
    argv = [tool_path("wrk"), "-t1", f"-c{connections}", f"-d{secs:g}s", "--latency"]
    out = await _output(procs, name, [*argv, "--timeout", "5s", url], cpus, secs + 30)
    return LoadResult.from_wrk(parse_wrk(out))


async def run_h2load(
    procs: Processes,
    name: str,
    url: str,
    *,
    secs: float | None,
    requests: int = 0,
    connections: int,
    streams: int,
    cpus: str,
    log: Path,
    data: Path | None = None,
    headers: tuple[str, ...] = (),
) -> tuple[LoadResult, str]:
    """h2load for `secs` seconds (or `requests` requests); (result, h2load's own output).
    Over https it offers only h2 by ALPN: a server that cannot speak it fails the run rather
    than being measured over HTTP/1.1."""
    argv = [tool_path("h2load"), "-t1", f"-c{connections}", f"-m{streams}"]
    argv += [f"-D{secs:g}"] if secs is not None else [f"-n{requests}"]
    argv += ["-N5s", "--npn-list=h2", f"--log-file={log}"]
    argv += ["-d", str(data)] if data is not None else []
    for header in headers:
        argv += ["-H", header]
    out = await _output(procs, name, [*argv, url], cpus, (secs or 20) + 30)
    text = await asyncio.to_thread(_read, log)
    return parse_h2load(out, text), out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:  # h2load never got to write it (it failed first)
        return ""


async def http1_get_status(port: int, path: str, *, tls: bool, wait_s: float = 10.0) -> int:
    """Status of one HTTP/1.1 GET, over TLS when `tls` (no certificate check: a throwaway
    certificate; ALPN offers http/1.1 only)."""
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
    async with asyncio.timeout(wait_s):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            line = await reader.readline()
        finally:
            writer.close()
    parts = line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise RuntimeError(f"not an HTTP/1.1 answer: {line!r}")
    return int(parts[1])
