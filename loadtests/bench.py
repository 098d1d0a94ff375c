"""Interceptor benchmark: throughput against nginx, and requests held at zero then released.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python loadtests/bench.py [--duration 10] [--rounds 3] [--part all|1|2]

Needs nginx and wrk (`apt-get install nginx wrk`). Everything runs on loopback, in this one
invocation, because on a shared 2-core machine only figures taken side by side compare: the
configurations are interleaved round by round and each figure is the median over the rounds.
Results are printed as Markdown tables and written as JSON to `loadtests/results/`.
Method and figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvloop
from benchkit import Processes, missing_tools, tool_path
from held import raise_nofile
from heldbench import held_benchmark, held_table
from throughput import throughput_benchmark, throughput_table

from httpscale import dataplane

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="httpscale interceptor benchmark")
    p.add_argument(
        "--part",
        choices=["all", "1", "2"],
        default="all",
        help="1: throughput vs nginx; 2: held requests; all: both",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk before each run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument("--connections", type=int, default=64, help="wrk connections")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--routes", type=int, default=10_000, help="routes in the large table")
    p.add_argument(
        "--no-lua",
        action="store_true",
        help="skip the configurations where wrk spreads requests over many hosts",
    )
    p.add_argument("--held", type=int, default=10_000, help="requests held at once (RSS run)")
    p.add_argument("--releases", type=int, default=20, help="releases timed for ready->first")
    p.add_argument("--release-held", type=int, default=500, help="requests held per release")
    p.add_argument(
        "--held-endpoint-cap",
        type=int,
        default=0,
        help="max_concurrency_per_endpoint of the held route (0: unset, the default)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    return p.parse_args(argv)


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return repr(exc)
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else ""


def _environment(pin: bool) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": getattr(uvloop, "__version__", "?"),
        "nginx": _version([tool_path("nginx"), "-v"]),
        "wrk": _version([tool_path("wrk"), "-v"]),
        "git": _version(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"]),
        # Uncommitted changes under httpscale/ mean the figures are for a newer proxy than HEAD.
        "git_dirty_interceptor": _version(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "httpscale"]
        )
        != "",
        # The harness imports the same build (scripts/compile's, unless stale or disabled).
        "dataplane": dataplane.active().name,
        "dataplane_why": dataplane.active().reason,
        "loadavg_before": os.getloadavg(),
        "pinned": pin,
    }


def _budget(args: argparse.Namespace) -> float:
    """Upper bound for the whole run, so that a hang anywhere still ends the benchmark."""
    configs = 4 if args.no_lua else 6
    part1 = args.rounds * configs * (args.duration + args.warmup + 20) + 180
    part2 = 300 + args.releases * 30
    return (part1 if args.part != "2" else 0) + (part2 if args.part != "1" else 0)


async def _part(run: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """A part that fails is recorded as such; the other part's figures are still written."""
    try:
        return await run
    except Exception as exc:
        traceback.print_exc()
        return {"error": repr(exc)}


async def _main(args: argparse.Namespace) -> int:
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pin:
        # The benchmark process drives wrk and, in part 2, 10,000 client connections: it sits
        # with the load generators on core 1 so that core 0 is the proxy's alone.
        os.sched_setaffinity(0, {1})
    nofile = raise_nofile()
    report: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "environment": {**_environment(pin), "nofile": nofile},
    }
    procs = Processes(pin)
    # SIGTERM ends the run like Ctrl-C does: cancel, then stop every child in `finally`.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    # The children stop before their temporary directory (nginx's config and pid) goes.
    with tempfile.TemporaryDirectory(prefix="httpscale-bench-") as tmp:
        try:
            async with asyncio.timeout(_budget(args)):
                if args.part in ("all", "1"):
                    report["throughput"] = await _part(throughput_benchmark(args, procs, Path(tmp)))
                    report["pinning_throughput"] = {
                        **procs.pinning(),
                        "wrk": "1" if pin else None,
                        "benchmark": "1" if pin else None,
                    }
                    await procs.stop_all()
                if args.part in ("all", "2"):
                    report["held"] = await _part(held_benchmark(args, procs))
                    report["pinning_held"] = {
                        **procs.pinning(),
                        "held client (benchmark process)": "1" if pin else None,
                    }
        finally:
            await procs.stop_all()

    report["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")

    print()
    if "targets" in report.get("throughput", {}):
        print(throughput_table(report["throughput"]))
    if "targets" in report.get("held", {}):
        print(held_table(report["held"]))
    print(
        f"machine: {report['environment']['cpus']} cpus, load before "
        f"{report['environment']['loadavg_before'][0]:.2f}, pinned: {pin}, "
        f"hot path: {report['environment']['dataplane']}"
    )
    print(f"JSON: {path}")
    parts = [report[p] for p in ("throughput", "held") if p in report]
    failed = any("error" in part for part in parts)
    return 0 if not failed and all(t["pass"] for part in parts for t in part["targets"]) else 1


def main(argv: list[str] | None = None) -> int:
    missing = missing_tools()
    if missing:
        print(
            f"missing: {', '.join(missing)}. Install with: apt-get install nginx wrk "
            "(taskset comes with util-linux)",
            file=sys.stderr,
        )
        return 2
    args = _parse_args(argv)
    # Ctrl-C must reach us even when started from a shell that ignores SIGINT in background
    # jobs: the cleanup of every child hangs on it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Each side (this client, the interceptor) needs one fd per held connection, plus the
    # interceptor's upstream pool (at most Limits.pool_max_per_endpoint = 1024).
    if args.part != "1" and hard < args.held + 2000:
        print(
            f"RLIMIT_NOFILE hard limit {hard} is too low for {args.held} held connections; "
            f"raise it (ulimit -Hn) or pass --held {max(100, hard - 2000)}",
            file=sys.stderr,
        )
        return 2
    try:
        # uvloop here too: part 2's client drives 10,000 connections from this process.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; all benchmark processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
