"""Many clients and every core: the interceptor against nginx at 64-1,024 connections, with 1
and 2 workers, one host and random hosts among 10,000 routes, and 10,000 idle clients.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python loadtests/scalebench.py [--rounds 3] [--duration 10] [--quick]

Needs nginx and wrk. Every process runs on loopback in this one invocation; configurations
are interleaved round by round and each figure is a median over rounds, with per-round ratios
in the JSON (loadtests/results/scale-<UTC>.json). Method: docs/benchmarks.md, "Many clients
and workers".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import resource
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import uvloop
from benchkit import Processes, missing_tools
from held import raise_nofile
from scaleidle import idle_clients, idle_table
from scaleplan import Case, plan, round_order, summarize
from scaleprocs import kill_leftovers, start_interceptor, start_nginx, tree_pids, workers_option
from scalereport import scale_tables
from scalerun import Fleet, check, environment, measure

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CORE_PROXY, CORE_LOAD = "0", "1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    # wrk takes whole seconds.
    p.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    p.add_argument("--warmup", type=int, default=3,
                   help="seconds of wrk before each run (connection counts are sampled then)")
    p.add_argument("--connections", default="64,256,1024", help="wrk connection counts")
    p.add_argument("--workers", default="1,2", help="worker counts (1 and/or 2)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads, pinned (1-worker) rows")
    p.add_argument("--threads-shared", type=int, default=2,
                   help="wrk threads, unpinned 2-worker rows")
    p.add_argument("--routes", type=int, default=10_000, help="routes / nginx server names")
    p.add_argument("--idle", type=int, default=10_000, help="idle keep-alive client connections")
    p.add_argument("--idle-window", type=float, default=10.0, help="seconds of idle CPU reading")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, 2 s runs, 2 s warm-ups, 2 s idle window")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.idle_window = 1, 2, 2, 2.0
    try:
        args.conns = [int(c) for c in args.connections.split(",")]
        args.worker_counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        p.error("--connections and --workers take comma-separated integers, e.g. 64,256")
    if not set(args.worker_counts) <= {1, 2} or min(args.conns) < 1:
        p.error("--workers takes 1 and/or 2; --connections must be positive")
    if args.duration < 1 or args.warmup < 1 or args.rounds < 1:
        p.error("--duration, --warmup and --rounds must be at least 1")
    return args


def budget(args: argparse.Namespace, cases: int) -> float:
    """Upper bound for the whole run: a hang anywhere still ends the benchmark."""
    per_run = args.duration + args.warmup + 25
    idle = 4 * (args.idle_window + 200)
    return float(600 + args.rounds * cases * per_run + idle)


async def _start(args: argparse.Namespace, procs: Processes, tmp: Path,
                 why_no_workers: str | None, fleet: Fleet) -> None:
    for w in args.worker_counts:
        pinned = w == 1
        backend = await start_nginx(procs, tmp, workers=w, cpus=CORE_LOAD if pinned else None)
        fleet.backends[w] = backend
        fleet.servers[(w, "direct")] = backend
        fleet.servers[(w, "nginx")] = await start_nginx(
            procs, tmp, workers=w, cpus=CORE_PROXY if pinned else None, routes=args.routes,
            upstream_port=backend.port)
        if w >= 2 and why_no_workers is not None:
            fleet.not_started[w] = why_no_workers
            continue
        fleet.servers[(w, "interceptor")] = await start_interceptor(
            procs, tmp, workers=w, cpus=CORE_PROXY if pinned else None, routes=args.routes,
            upstream_port=backend.port, pass_workers=why_no_workers is None)


async def _idle(args: argparse.Namespace, fleet: Fleet) -> list[dict[str, Any]]:
    results = []
    for (_, server), target in sorted(fleet.servers.items()):
        if server == "direct":
            continue
        try:
            results.append(await idle_clients(target, args.idle, args.idle_window))
        except Exception as exc:
            traceback.print_exc()
            results.append({"server": target.name, "error": repr(exc)})
    for w, why in fleet.not_started.items():
        results.append({"server": f"interceptor-w{w}", "error": why})
    return results


async def _rounds(args: argparse.Namespace, procs: Processes, fleet: Fleet, cases: list[Case],
                  runs: dict[str, list[dict[str, Any]]], errors: list[dict[str, Any]]) -> None:
    """Fills `runs` (case key -> one entry per round) as it goes, so that a run cut short by
    the deadline still reports what it measured. A case that fails in one round (wrk's output
    unreadable, a server gone) is recorded in `errors` and the rounds go on."""
    for case in cases:
        if fleet.has(case):
            runs.setdefault(case.key, [])
    for r in range(args.rounds):
        for case in round_order(cases, r):
            if not fleet.has(case):
                continue
            try:
                run = await measure(args, procs, fleet, case)
            except Exception as exc:
                traceback.print_exc()
                errors.append({"round": r + 1, "case": case.key, "error": repr(exc)})
                continue
            runs[case.key].append({"round": r + 1, **run})
            _print_run(r, args.rounds, case, run)


def _print_run(r: int, rounds: int, case: Case, run: dict[str, Any]) -> None:
    print(
        f"round {r + 1}/{rounds} {case.key:<28} {run['rps']:>8.0f} req/s "
        f"p99 {run['p99_ms']:.2f} ms cpu {run['cpu_us_per_req']:.1f} us/req "
        f"({run['cpu_cores']:.2f} core)"
        + ("" if run["valid"] else "  INVALID (errors or non-2xx)"),
        flush=True,
    )


async def _main(args: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {int(CORE_LOAD)})  # with wrk, off the 1-worker proxies' core
    report: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "environment": {**environment(), "nofile": raise_nofile()},
    }
    cases = plan(args.worker_counts, args.conns)
    procs = Processes(pin=True)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="httpscale-scale-") as tmp:
        # `python -m httpscale` puts its cwd first on sys.path: run it from a directory with
        # no checkout in it, so it imports the installed (this venv's) httpscale.
        os.chdir(tmp)
        why_no_workers = workers_option()
        report["workers_option"] = why_no_workers or "supported"
        fleet = Fleet()
        runs: dict[str, list[dict[str, Any]]] = {}
        errors: list[dict[str, Any]] = []
        report["run_errors"] = errors
        try:
            async with asyncio.timeout(budget(args, len(cases))):
                await _start(args, procs, Path(tmp), why_no_workers, fleet)
                for server in fleet.servers.values():
                    await check(server, args.routes)
                report["idle"] = await _idle(args, fleet)
                report["pinning"] = procs.pinning()
                await _rounds(args, procs, fleet, cases, runs, errors)
        except Exception as exc:  # still write and print what was measured
            traceback.print_exc()
            report["error"] = repr(exc)
        finally:
            # Every process of every server tree, taken while their parents still live: a
            # worker that outlives its parent's stop is killed by pid below.
            started = [pid for server in fleet.servers.values() for pid in tree_pids(server.pid)]
            await procs.stop_all()
            kill_leftovers(started)
            os.chdir(HERE.parent)
    if any(runs.values()):
        report["throughput"] = {"runs": runs,
                                **summarize(runs, cases, fleet.not_measured(cases))}
    return _write(report, cases, args)


def _write(report: dict[str, Any], cases: list[Case], args: argparse.Namespace) -> int:
    report["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"scale-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    summary = report.get("throughput")
    if summary is not None:
        print(scale_tables(summary, cases, args.rounds))
    if "idle" in report:
        print(idle_table(report["idle"]))
    env = report["environment"]
    print(f"machine: {env['cpus']} cpus, load before {env['loadavg_before'][0]:.2f}, "
          f"hot path: {env['dataplane']}, --workers: {report['workers_option']}")
    print(f"JSON: {path}")
    if summary is None:
        print(f"FAILED: {report.get('error')}")
        return 1
    measured = [t for t in summary["targets"] if t["verdict"] != "NOT MEASURED"]
    if report["run_errors"] or "error" in report:
        print(f"ERRORS: {len(report['run_errors'])} failed runs, "
              f"{report.get('error', 'no run-wide error')} (see JSON)")
    ok = (summary["all_runs_valid"] and not report["run_errors"] and "error" not in report
          and all(t["verdict"] == "met" for t in measured))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    missing = missing_tools()
    if missing:
        print(f"missing: {', '.join(missing)}. Install with: apt-get install nginx wrk",
              file=sys.stderr)
        return 2
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs at least 2 CPUs (the 1-worker rows pin the proxy to core 0)",
              file=sys.stderr)
        return 2
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # This process holds the idle clients; each server holds them too, plus its upstreams.
    if hard < args.idle + 2000:
        print(f"RLIMIT_NOFILE hard limit {hard} is too low for {args.idle} idle connections; "
              f"raise it (ulimit -Hn) or pass --idle {max(100, hard - 2000)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; all benchmark processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
