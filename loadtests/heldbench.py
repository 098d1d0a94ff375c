"""Part 2 of the benchmark: requests held while a route is at zero, then released at once.

One interceptor (harness, core 0) has a route with no endpoints; the client (this process,
core 1) opens N connections with one GET each; once the interceptor reports all N held, the
harness is told `ready` with an endpoint it has never seen (a fresh port of the timestamping
backend, like a new pod), so the release includes the TCP connect a real cold start pays.

Measured:
* RSS growth of the interceptor from idle to its peak (VmHWM, reset just before) with 10,000
  held and released; every one of them must be answered 200;
* "ready -> first forwarded": backend's arrival stamp of the first request minus the harness's
  stamp taken just before `set_endpoints`; both are CLOCK_MONOTONIC, one clock per machine.
  p99 over `--releases` releases of `--release-held` requests each (with 20 releases the
  nearest-rank p99 is the maximum, which is the honest reading of 20 samples).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchkit import Child, Processes
from held import HeldClient

__all__ = ["held_benchmark", "held_table"]

HERE = Path(__file__).resolve().parent
CORE_PROXY = "0"
CORE_LOAD = "1"
KEY = "bench/held"
HOST = "held.bench"
RSS_TARGET_MIB = 150.0
FIRST_TARGET_MS = 10.0


async def _wait_held(ic: Child, count: int, wait_s: float) -> None:
    # Polling the harness is fine here: it is the benchmark watching, not the product waiting.
    deadline = time.monotonic() + wait_s
    held = -1
    while time.monotonic() < deadline:
        held = int((await ic.command(f"stats {KEY}"))["held"])
        if held >= count:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"only {held} of {count} requests held after {wait_s:.0f} s")


async def _release(
    ic: Child, backend: Child, proxy: tuple[str, int], count: int, port: int, *, rss: bool
) -> dict[str, Any]:
    await ic.command(f"zero {KEY}")
    out: dict[str, Any] = {"held": count}
    if rss:
        await ic.command("reset_hwm")
        out["rss_idle_kb"] = (await ic.command("rss"))["rss_kb"]
    client = HeldClient(proxy, HOST, count)
    try:
        started = time.monotonic()
        await client.open()
        await _wait_held(ic, count, wait_s=120)
        out["hold_all_s"] = round(time.monotonic() - started, 3)
        if rss:
            out["rss_held_kb"] = (await ic.command("rss"))["rss_kb"]
        await backend.command("arm")
        ready = await ic.command(f"ready {KEY} 127.0.0.1:{port}")
        results = await client.wait_all(wait_s=120)
        first = await backend.command("first")
        if rss:
            after = await ic.command("rss")
            out["rss_after_kb"], out["rss_peak_kb"] = after["rss_kb"], after["hwm_kb"]
    finally:
        client.close()
    statuses = Counter(r.status for r in results)
    out["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    out["answered_200"] = statuses.get(200, 0)
    out["set_endpoints_call_ms"] = ready["call_ns"] / 1e6
    out["ready_to_first_ms"] = (
        (first["t_ns"] - ready["t_ns"]) / 1e6 if first["t_ns"] is not None else None
    )
    out["ready_to_all_answered_ms"] = (max(r.done_ns for r in results) - ready["t_ns"]) / 1e6
    if rss:
        out["rss_growth_mib"] = (out["rss_peak_kb"] - out["rss_idle_kb"]) / 1024
    return out


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def held_benchmark(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    backend = await procs.start(
        "held-backend",
        [sys.executable, str(HERE / "held.py"), "backend", "--ports", str(args.releases + 2)],
        CORE_LOAD,
        pipes=True,
    )
    ports = iter((await backend.read_json())["ports"])
    ic = await procs.start(
        "interceptor-held", [sys.executable, str(HERE / "harness.py")], CORE_PROXY, pipes=True
    )
    proxy_host, proxy_port = (await ic.read_json())["proxy"]
    proxy = (str(proxy_host), int(proxy_port))
    most = 2 * max(args.held, args.release_held)
    await ic.command(f"held {KEY} {HOST} {most} {args.held_endpoint_cap}")

    # A small release first, so lazily built parts (pools, code paths) are not counted as
    # growth caused by holding requests.
    await _release(ic, backend, proxy, 100, next(ports), rss=False)
    big = await _release(ic, backend, proxy, args.held, next(ports), rss=True)
    print(
        f"held {args.held}: answered 200 {big['answered_200']}, RSS growth "
        f"{big['rss_growth_mib']:.1f} MiB, ready->first {big['ready_to_first_ms']:.2f} ms, "
        f"ready->all {big['ready_to_all_answered_ms']:.0f} ms",
        flush=True,
    )
    releases = []
    for i in range(args.releases):
        one = await _release(ic, backend, proxy, args.release_held, next(ports), rss=False)
        releases.append(one)
        print(
            f"release {i + 1}/{args.releases}: held {args.release_held}, ready->first "
            f"{one['ready_to_first_ms']:.2f} ms, answered 200 {one['answered_200']}",
            flush=True,
        )

    firsts = [r["ready_to_first_ms"] for r in releases if r["ready_to_first_ms"] is not None]
    all_answered = big["answered_200"] == args.held and all(
        r["answered_200"] == args.release_held for r in releases
    )
    p99 = _nearest_rank(firsts, 0.99) if firsts else None
    summary = {
        "ready_to_first_ms": {
            "samples": len(firsts),
            "p50": statistics.median(firsts) if firsts else None,
            "p99": p99,
            "max": max(firsts) if firsts else None,
        },
        "ready_to_all_answered_ms_p50": statistics.median(
            r["ready_to_all_answered_ms"] for r in releases
        )
        if releases
        else None,
    }
    targets = [
        {
            "name": f"RSS growth, {args.held} held (MiB)",
            "value": round(big["rss_growth_mib"], 1),
            "target": f"<= {RSS_TARGET_MIB:g}",
            "pass": big["rss_growth_mib"] <= RSS_TARGET_MIB,
        },
        {
            "name": "all held requests answered 200",
            "value": all_answered,
            "target": "true",
            "pass": all_answered,
        },
        {
            "name": "ready -> first forwarded, p99 (ms)",
            "value": round(p99, 3) if p99 is not None else None,
            "target": f"<= {FIRST_TARGET_MS:g}",
            "pass": p99 is not None and p99 <= FIRST_TARGET_MS,
        },
    ]
    return {
        "big": big,
        "releases": releases,
        "summary": summary,
        "targets": targets,
        "release_held": args.release_held,
    }


def held_table(result: dict[str, Any]) -> str:
    big, s = result["big"], result["summary"]
    first = s["ready_to_first_ms"]
    fmt = "{:.2f}".format
    lines = [
        "Held at zero, then released",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| held at once | {big['held']} |",
        f"| answered 200 | {big['answered_200']} |",
        f"| RSS idle / with all held / peak (MiB) | {big['rss_idle_kb'] / 1024:.1f} / "
        f"{big['rss_held_kb'] / 1024:.1f} / {big['rss_peak_kb'] / 1024:.1f} |",
        f"| RSS growth (MiB) | {big['rss_growth_mib']:.1f} |",
        f"| time to get all held (s) | {big['hold_all_s']} |",
        f"| ready -> first forwarded, this release (ms) | {fmt(big['ready_to_first_ms'])} |",
        f"| ready -> all answered, this release (ms) | {big['ready_to_all_answered_ms']:.0f} |",
        f"| ready -> first forwarded over {first['samples']} releases of "
        f"{result['release_held']}: p50 / p99 / max (ms) | {fmt(first['p50'])} / "
        f"{fmt(first['p99'])} / {fmt(first['max'])} |",
        f"| ready -> all answered, p50 over releases (ms) | "
        f"{s['ready_to_all_answered_ms_p50']:.1f} |",
        "",
        "| target | value | wanted | pass |",
        "|---|---:|---|---|",
    ]
    for t in result["targets"]:
        verdict = "yes" if t["pass"] else "NO"
        lines.append(f"| {t['name']} | {t['value']} | {t['target']} | {verdict} |")
    return "\n".join(lines) + "\n"
