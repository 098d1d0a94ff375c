"""Part 1 of the benchmark: wrk through nginx and through the interceptor, same backend.

Configurations, all hitting one nginx backend (1 worker, `return 200 "hello\\n"`, keep-alive):

* `direct`: wrk -> backend, the ceiling of this machine;
* `nginx`: wrk -> nginx (1 worker, keep-alive upstream) -> backend, the yardstick;
* `interceptor`: wrk -> interceptor (1 process, 1 route) -> backend;
* `interceptor-10k`: the same with 10,000 routes loaded, wrk hitting the last one;
* `interceptor-lua` / `interceptor-10k-lua`: wrk's Lua script picks a random host per request
  (one host / all 10,000), so lookups do not hit one hot entry. Lua request generation costs
  wrk throughput, so these two only compare with each other.

The proxies run on core 0, wrk and the backend on core 1. Each round runs every configuration
once (warm-up, then the measured run), starting one configuration later than the round before,
so that drift in the machine's load spreads evenly; figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit import Child, Processes, WrkResult, cpu_seconds, free_port, parse_wrk, tool_path
from held import HeldClient

__all__ = ["throughput_benchmark", "throughput_table"]

HERE = Path(__file__).resolve().parent
CORE_PROXY = "0"  # the proxy under test, alone
CORE_LOAD = "1"  # wrk and the backend


@dataclass(frozen=True, slots=True)
class _Config:
    name: str
    port: int
    host: str  # Host header (single-host configs)
    proxy_pgid: int  # process group whose CPU time is charged to this config (the server hit)
    lua_hosts: int = 0  # >0: the Lua script spreads requests over app0..app{n-1}.bench


async def _start_nginx(
    procs: Processes, name: str, tmp: Path, cpus: str, **subst: int
) -> tuple[int, int]:
    """Render loadtests/nginx/<name>.conf into `tmp` and run nginx on it in the foreground."""
    port = free_port()
    text = (HERE / "nginx" / f"{name}.conf").read_text()
    for key, value in {"PREFIX": str(tmp), "PORT": str(port), **subst}.items():
        text = text.replace(f"@{key}@", str(value))
    conf = tmp / f"{name}.conf"
    conf.write_text(text)
    child = await procs.start(
        f"nginx-{name}",
        [tool_path("nginx"), "-p", str(tmp), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
        cpus,
    )
    await _wait_port(port)
    return port, child.proc.pid


async def _wait_port(port: int, wait_s: float = 10.0) -> None:
    async with asyncio.timeout(wait_s):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


async def _start_harness(
    procs: Processes, name: str, routes: int, upstream: int
) -> tuple[int, int]:
    child = await procs.start(
        name,
        [
            sys.executable,
            str(HERE / "harness.py"),
            "--routes",
            str(routes),
            "--upstream",
            f"127.0.0.1:{upstream}",
        ],
        CORE_PROXY,
        pipes=True,
    )
    hello = await child.read_json(wait_s=120)  # 10,000 routes take a moment to build
    return int(hello["proxy"][1]), child.proc.pid


async def _check(config: _Config) -> None:
    """One request first: a 404 from a wrong route would otherwise look like great speed."""
    client = HeldClient(("127.0.0.1", config.port), config.host, 1)
    try:
        await client.open()
        (result,) = await client.wait_all(wait_s=10)
    finally:
        client.close()
    if result.status != 200:
        raise RuntimeError(f"{config.name}: GET / answered {result.status}, not 200")


async def _wrk(procs: Processes, args: argparse.Namespace, cfg: _Config, secs: float) -> WrkResult:
    argv = [
        tool_path("wrk"),
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{secs:g}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    url = f"http://127.0.0.1:{cfg.port}/"
    if cfg.lua_hosts:
        argv += ["-s", str(HERE / "nginx" / "many_hosts.lua"), url, "--", str(cfg.lua_hosts)]
    else:
        argv += ["-H", f"Host: {cfg.host}", url]
    child: Child = await procs.start(f"wrk-{cfg.name}", argv, CORE_LOAD)
    try:
        assert child.proc.stdout is not None
        out = await asyncio.wait_for(child.proc.stdout.read(), secs + 30)
        await asyncio.wait_for(child.proc.wait(), 10)
    finally:
        await procs.stop(child)
    return parse_wrk(out.decode())


async def throughput_benchmark(
    args: argparse.Namespace, procs: Processes, tmp: Path
) -> dict[str, Any]:
    backend, backend_pg = await _start_nginx(procs, "backend", tmp, CORE_LOAD)
    proxy, proxy_pg = await _start_nginx(procs, "proxy", tmp, CORE_PROXY, UPSTREAM_PORT=backend)
    ic1, ic1_pg = await _start_harness(procs, "interceptor-1route", 1, backend)
    ic_many, many_pg = await _start_harness(
        procs, f"interceptor-{args.routes}routes", args.routes, backend
    )
    last = f"app{args.routes - 1}.bench"
    configs = [
        _Config("direct", backend, "app0.bench", backend_pg),
        _Config("nginx", proxy, "app0.bench", proxy_pg),
        _Config("interceptor", ic1, "app0.bench", ic1_pg),
        _Config("interceptor-10k", ic_many, last, many_pg),
    ]
    if not args.no_lua:
        configs += [
            _Config("interceptor-lua", ic1, "app0.bench", ic1_pg, lua_hosts=1),
            _Config("interceptor-10k-lua", ic_many, last, many_pg, lua_hosts=args.routes),
        ]
    for cfg in configs:
        await _check(cfg)

    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configs}
    for r in range(args.rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for cfg in order:
            await _wrk(procs, args, cfg, args.warmup)
            cpu_before, backend_before = cpu_seconds(cfg.proxy_pgid), cpu_seconds(backend_pg)
            result = await _wrk(procs, args, cfg, args.duration)
            cpu = cpu_seconds(cfg.proxy_pgid) - cpu_before
            backend_cpu = cpu_seconds(backend_pg) - backend_before
            extra = {
                "cpu_us_per_req": cpu * 1e6 / max(1, result.requests),
                # What one full core would serve at this cost: req/s without the noise of
                # how much CPU the shared machine happened to give the server.
                "req_per_cpu_s": result.requests / cpu if cpu > 0 else 0.0,
                "cpu_cores": cpu / args.duration,  # share of a core the server hit got
                "backend_cpu_cores": backend_cpu / args.duration,
                "loadavg_1m": os.getloadavg()[0],
            }
            print(
                f"round {r + 1}/{args.rounds} {cfg.name:<20} {result.rps:>8.0f} req/s "
                f"p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms "
                f"cpu {extra['cpu_us_per_req']:.1f} us/req ({extra['cpu_cores']:.2f} core)"
                + ("" if result.valid else "  INVALID (errors or non-2xx)"),
                flush=True,
            )
            runs[cfg.name].append({"round": r + 1, **result.as_dict(), **extra})
    return _summarize(runs, args.rounds)


_FIGURES = (
    "rps",
    "p50_ms",
    "p99_ms",
    "cpu_us_per_req",
    "req_per_cpu_s",
    "cpu_cores",
    "backend_cpu_cores",
)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def _summarize(runs: dict[str, list[dict[str, Any]]], rounds: int) -> dict[str, Any]:
    medians = {name: {k: _median(rs, k) for k in _FIGURES} for name, rs in runs.items()}

    def paired(a: str, b: str, key: str) -> list[float]:
        # Ratios within one round: both runs saw nearly the same machine load.
        return [ra[key] / rb[key] for ra, rb in zip(runs[a], runs[b], strict=True)]

    ratios: dict[str, Any] = {}
    pairs = [
        ("interceptor", "nginx", "rps"),
        ("interceptor", "nginx", "p99_ms"),
        ("interceptor", "nginx", "req_per_cpu_s"),
        ("interceptor-10k", "interceptor", "rps"),
        ("interceptor-10k", "interceptor", "req_per_cpu_s"),
        ("interceptor-10k-lua", "interceptor-lua", "rps"),
        ("interceptor-10k-lua", "interceptor-lua", "req_per_cpu_s"),
    ]
    for a, b, key in pairs:
        if a in runs and b in runs:
            ratios[f"{a}/{b} {key}"] = {
                "of_medians": medians[a][key] / medians[b][key],
                "per_round": paired(a, b, key),
                "median_per_round": statistics.median(paired(a, b, key)),
            }
    targets = [
        _target("interceptor req/s vs nginx", ratios["interceptor/nginx rps"], ">=", 0.8),
        _target("interceptor p99 vs nginx", ratios["interceptor/nginx p99_ms"], "<=", 1.5),
        _target(
            "10k routes req/s vs 1 route", ratios["interceptor-10k/interceptor rps"], ">=", 0.95
        ),
        # The same two throughput targets per CPU-second: on a shared machine these are the
        # steadier reading of "how fast would it be with the core to itself".
        _target(
            "interceptor req per CPU-second vs nginx",
            ratios["interceptor/nginx req_per_cpu_s"],
            ">=",
            0.8,
        ),
        _target(
            "10k routes req per CPU-second vs 1 route",
            ratios["interceptor-10k/interceptor req_per_cpu_s"],
            ">=",
            0.95,
        ),
    ]
    valid = all(run["valid"] for rs in runs.values() for run in rs)
    return {
        "rounds": rounds,
        "runs": runs,
        "medians": medians,
        "ratios": ratios,
        "targets": targets,
        "all_runs_valid": valid,
    }


def _target(name: str, ratio: dict[str, Any], op: str, bound: float) -> dict[str, Any]:
    value = ratio["of_medians"]
    ok = value >= bound if op == ">=" else value <= bound
    return {"name": name, "value": round(value, 3), "target": f"{op} {bound}", "pass": ok}


def throughput_table(result: dict[str, Any]) -> str:
    med = result["medians"]
    nginx = med.get("nginx")
    lines = [
        f"Throughput, median of {result['rounds']} interleaved rounds",
        "",
        "| config | req/s | p50 ms | p99 ms | req/s vs nginx | p99 vs nginx "
        "| server CPU us/req | req per CPU-s vs nginx | server cores used | backend cores used |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in med.items():
        vs = (
            f"{m['rps'] / nginx['rps']:.2f}x | {m['p99_ms'] / nginx['p99_ms']:.2f}x"
            if nginx
            else "- | -"
        )
        per_cpu = f"{m['req_per_cpu_s'] / nginx['req_per_cpu_s']:.2f}x" if nginx else "-"
        lines.append(
            f"| {name} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {vs} "
            f"| {m['cpu_us_per_req']:.1f} | {per_cpu} | {m['cpu_cores']:.2f} "
            f"| {m['backend_cpu_cores']:.2f} |"
        )
    lines += ["", "| ratio | of medians | median of per-round ratios |", "|---|---:|---:|"]
    for name, r in result["ratios"].items():
        lines.append(f"| {name} | {r['of_medians']:.3f} | {r['median_per_round']:.3f} |")
    lines += ["", "| target | value | wanted | pass |", "|---|---:|---|---|"]
    for t in result["targets"]:
        verdict = "yes" if t["pass"] else "NO"
        lines.append(f"| {t['name']} | {t['value']} | {t['target']} | {verdict} |")
    if not result["all_runs_valid"]:
        lines.append("\nWARNING: some runs had socket errors or non-2xx answers (see JSON).")
    return "\n".join(lines) + "\n"
