"""Protocol benchmark: the interceptor beside nginx over HTTPS/1.1, h2 (TLS and h2c), h2c to the
upstream and gRPC, plus the plain HTTP/1.1 benchmark of `bench.py`, in one run.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python loadtests/protobench.py [--duration 10] [--rounds 3]
    .venv/bin/python loadtests/protobench.py --only nginx --duration 3 --rounds 1 --no-plain
    .venv/bin/python loadtests/protobench.py --compare-ref main    # plain HTTP/1.1: main vs here

Needs nginx, wrk, h2load and openssl (`apt-get install nginx wrk nghttp2-client openssl`).
Everything runs on loopback and is stopped at exit; the proxies under test share core 0 in turn,
the load generators and backends run on core 1 (`benchkit.Processes`, as `bench.py` does).
Each round measures every (proxy, protocol) once, starting one later each round; figures are
medians over rounds, and what compares is the ratio to nginx. Method: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop
from bench import _environment, _version
from benchkit import Processes, cpu_seconds, missing_tools, tool_path
from compareref import compare_ref, compare_table
from protoload import H2LOAD_INSTALL, LoadResult, h2load_missing, run_h2load, run_wrk
from prototargets import PROTOCOLS, Setup, Target, preflight, start_all
from throughput import CORE_LOAD, throughput_benchmark, throughput_table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
_FIGURES = ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "req_per_cpu_s", "cpu_cores")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (HTTPS/1.1)")
    p.add_argument("--h2-connections", type=int, default=4, help="h2load connections")
    p.add_argument("--h2-streams", type=int, default=16, help="h2load streams per connection")
    names = [proto.name for proto in PROTOCOLS]
    p.add_argument("--protocols", default=",".join(names),
                   help=f"comma-separated, of {', '.join(names)}; 'none' for none")
    p.add_argument("--only", choices=["both", "nginx", "interceptor"], default="both",
                   help="measure one proxy only (ratios need both)")
    p.add_argument("--no-plain", action="store_true",
                   help="skip the plain HTTP/1.1 benchmark (bench.py's part 1)")
    p.add_argument("--plain-routes", type=int, default=10_000,
                   help="routes of the plain benchmark's large table")
    p.add_argument("--compare-ref", metavar="REF", default="",
                   help="plain HTTP/1.1 benchmark on a git worktree of REF and on this tree, "
                   "alternated round by round (instead of the in-process plain run)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    args = p.parse_args(argv)
    wanted = [] if args.protocols == "none" else args.protocols.split(",")
    unknown = set(wanted) - set(names)
    if unknown:
        p.error(f"--protocols: unknown {', '.join(sorted(unknown))}; known: {', '.join(names)}")
    args.protocol_list = [proto for proto in PROTOCOLS if proto.name in wanted]
    return args


async def _measure(procs: Processes, args: argparse.Namespace, setup: Setup, target: Target,
                   secs: float) -> LoadResult:
    proto = target.protocol
    name = f"{proto.tool}-{target.proxy}-{proto.name}"
    if proto.tool == "wrk":
        return await run_wrk(procs, name, target.url, secs, args.connections, CORE_LOAD)
    grpc = proto.name == "grpc"
    result, _ = await run_h2load(
        procs, name, target.url, secs=secs, connections=args.h2_connections,
        streams=args.h2_streams, cpus=CORE_LOAD, log=setup.tmp / f"{name}.log",
        data=setup.body if grpc else None,
        headers=("content-type: application/grpc", "te: trailers") if grpc else (),
    )
    return result


async def protocol_benchmark(args: argparse.Namespace, procs: Processes, tmp: Path
                             ) -> dict[str, Any]:
    setup = await start_all(procs, tmp, args.protocol_list, args.only)
    for target in setup.targets:
        await preflight(procs, setup, target)
        if target.error:
            print(f"NOT MEASURED {target.name}: {target.error}", file=sys.stderr, flush=True)
    live = [t for t in setup.targets if not t.error]
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in live}
    for r in range(args.rounds):
        order = live[r % len(live):] + live[: r % len(live)] if live else []
        for target in order:
            await _measure(procs, args, setup, target, args.warmup)
            before = cpu_seconds(target.pgid)
            result = await _measure(procs, args, setup, target, args.duration)
            cpu = cpu_seconds(target.pgid) - before
            run = {
                "round": r + 1, **result.as_dict(),
                "cpu_us_per_req": cpu * 1e6 / max(1, result.requests),
                "req_per_cpu_s": result.requests / cpu if cpu > 0 else 0.0,
                "cpu_cores": cpu / args.duration,
                "loadavg_1m": os.getloadavg()[0],
            }
            runs[target.name].append(run)
            print(f"round {r + 1}/{args.rounds} {target.name:<20} {result.rps:>8.0f} req/s "
                  f"p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms "
                  f"cpu {run['cpu_us_per_req']:.1f} us/req ({run['cpu_cores']:.2f} core)"
                  + ("" if result.valid else "  INVALID (errors or non-2xx)"), flush=True)
    return _summarize(setup, runs)


def _summarize(setup: Setup, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    medians = {name: {k: float(statistics.median(run[k] for run in rs)) for k in _FIGURES}
               for name, rs in runs.items() if rs}
    ratios: dict[str, dict[str, Any]] = {}
    for proto in {t.protocol.name for t in setup.targets}:
        a, b = f"interceptor {proto}", f"nginx {proto}"
        if a not in medians or b not in medians:
            continue
        for key in ("rps", "p99_ms", "req_per_cpu_s"):
            per_round = [x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True) if y[key]]
            ratios[f"{proto} {key}"] = {
                "of_medians": medians[a][key] / medians[b][key] if medians[b][key] else 0.0,
                "per_round": per_round,
                "median_per_round": statistics.median(per_round) if per_round else 0.0,
            }
    return {
        "targets": [{"name": t.name, "url": t.url, "error": t.error} for t in setup.targets],
        "runs": runs, "medians": medians, "ratios": ratios,
        "all_runs_valid": all(run["valid"] for rs in runs.values() for run in rs),
    }


def protocol_table(result: dict[str, Any]) -> str:
    med, ratios = result["medians"], result["ratios"]
    lines = [
        "| protocol | proxy | req/s | p50 ms | p99 ms | req/s vs nginx | p99 vs nginx "
        "| server CPU us/req | req per CPU-s vs nginx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for proto in PROTOCOLS:
        for target in (t for t in result["targets"] if t["name"].endswith(f" {proto.name}")):
            proxy = target["name"].split()[0]
            m = med.get(target["name"])
            if m is None:
                lines.append(f"| {proto.title} | {proxy} | not measured (see below) "
                             "| | | | | | |")
                continue
            vs = ["1.00x"] * 3 if proxy == "nginx" else [
                f"{ratios[f'{proto.name} {k}']['of_medians']:.2f}x"
                if f"{proto.name} {k}" in ratios else "-"
                for k in ("rps", "p99_ms", "req_per_cpu_s")
            ]
            lines.append(
                f"| {proto.title} | {proxy} | {m['rps']:.0f} | {m['p50_ms']:.2f} "
                f"| {m['p99_ms']:.2f} | {vs[0]} | {vs[1]} | {m['cpu_us_per_req']:.1f} | {vs[2]} |"
            )
    for target in result["targets"]:
        if target["error"]:
            lines.append(f"\nNOT MEASURED: {target['name']}: {target['error']}")
    if not result["all_runs_valid"]:
        lines.append("\nWARNING: some runs had failed requests or non-2xx answers (see JSON).")
    return "\n".join(lines) + "\n"


def _budget(args: argparse.Namespace) -> float:
    per_run = args.duration + args.warmup + 45
    protocols = args.rounds * 2 * len(args.protocol_list) * per_run + 240
    plain = 0 if args.no_plain else args.rounds * 4 * per_run + 240
    if args.compare_ref:  # two trees, bench.py per round each, and maybe a compile of REF
        plain = args.rounds * 2 * (4 * per_run + 120) + 1200
    return protocols + plain


async def _main(args: argparse.Namespace) -> int:
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {int(CORE_LOAD)})  # this process drives the load generators
    report: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k != "protocol_list"},
        # bench.py's record of the machine, the tools and the interceptor's build, plus h2load.
        "environment": {
            **_environment(pin), "h2load": _version([tool_path("h2load"), "--version"])
        },
    }
    procs = Processes(pin)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="httpscale-protobench-") as tmp:
        try:
            async with asyncio.timeout(_budget(args)):
                if args.protocol_list:
                    report["protocols"] = await protocol_benchmark(args, procs, Path(tmp))
                    await procs.stop_all()
                if args.compare_ref:
                    report["compare_ref"] = await compare_ref(args, procs, Path(tmp))
                elif not args.no_plain:
                    plain = argparse.Namespace(
                        duration=args.duration, warmup=args.warmup, rounds=args.rounds,
                        connections=args.connections, threads=1, routes=args.plain_routes,
                        no_lua=True,
                    )
                    report["plain"] = await throughput_benchmark(plain, procs, Path(tmp))
        finally:
            await procs.stop_all()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"protobench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    if "protocols" in report:
        print(f"Protocols, median of {args.rounds} interleaved rounds\n")
        print(protocol_table(report["protocols"]))
    if "plain" in report:
        print("Plain HTTP/1.1 (bench.py part 1), same run\n")
        print(throughput_table(report["plain"]))
    if "compare_ref" in report:
        print(compare_table(report["compare_ref"]))
    env = report["environment"]
    print(f"machine: {env['cpus']} cpus, load before {env['loadavg_before'][0]:.2f}, "
          f"pinned: {pin}, hot path: {env['dataplane']}\nJSON: {path}")
    proto = report.get("protocols", {})
    failed = any(t["error"] for t in proto.get("targets", [])) or not proto.get(
        "all_runs_valid", True)
    return 1 if failed or report.get("compare_ref", {}).get("error") else 0


def main(argv: list[str] | None = None) -> int:
    missing = missing_tools() + (["h2load"] if h2load_missing() else [])
    if missing:
        print(f"missing: {', '.join(missing)}. Install with: apt-get install nginx wrk; "
              f"h2load: {H2LOAD_INSTALL} (taskset comes with util-linux)", file=sys.stderr)
        return 2
    args = _parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # uvloop, as bench.py: the plain part's checks run on this loop.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; all benchmark processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
