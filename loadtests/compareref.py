"""`protobench.py --compare-ref REF`: the plain HTTP/1.1 benchmark (`bench.py --part 1`) on a
git worktree of REF and on this tree, alternated round by round, so "no slower than before" is
one command.

Each round runs `bench.py --part 1 --rounds 1 --no-lua` once per tree (REF first in odd rounds,
this tree first in even ones), each tree's own `bench.py` importing its own `httpscale`
(PYTHONPATH: the editable install's finder comes after it). Both run the same build kind: when
this tree's hot path is compiled, REF's worktree is compiled too (`scripts/compile`, once);
HTTPSCALE_PURE_PYTHON=1 in the environment makes both run the source instead. Each run's
table row says which build it measured. What compares is each tree's interceptor/nginx ratio
(nginx is the same binary in both), and the ratio of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchkit import Processes

from httpscale import dataplane

__all__ = ["compare_ref", "compare_table"]

ROOT = Path(__file__).resolve().parents[1]
_KEYS = ("rps", "p99_ms", "req_per_cpu_s")


def _git(*argv: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                   capture_output=True, timeout=120, check=False)


async def _bench_once(procs: Processes, tree: Path, label: str, args: argparse.Namespace
                      ) -> dict[str, Any]:
    """One `bench.py --part 1 --rounds 1` of `tree`; its interceptor and nginx medians."""
    argv = [sys.executable, str(tree / "loadtests" / "bench.py"), "--part", "1", "--rounds", "1",
            "--duration", f"{args.duration:g}", "--warmup", f"{args.warmup:g}", "--no-lua",
            "--routes", str(args.plain_routes), *(["--no-pin"] if args.no_pin else [])]
    os.environ["PYTHONPATH"] = str(tree)  # inherited by the child only for this start
    try:
        child = await procs.start(f"bench-{label}", argv, None)
    finally:
        del os.environ["PYTHONPATH"]
    assert child.proc.stdout is not None
    json_path = ""
    try:
        while line := (await child.proc.stdout.readline()).decode():
            print(f"[{label}] {line}", end="", flush=True)
            if line.startswith("JSON: "):
                json_path = line[len("JSON: "):].strip()
        await child.proc.wait()
    finally:
        await procs.stop(child)
    if not json_path:
        raise RuntimeError(f"bench.py of {label} ({tree}) wrote no JSON (exit "
                           f"{child.proc.returncode})")
    report = _load(Path(json_path))
    med = report["throughput"]["medians"]
    ic, ng = med["interceptor"], med["nginx"]
    return {
        "interceptor": ic, "nginx": ng,
        "vs_nginx": {k: ic[k] / ng[k] for k in _KEYS},
        "dataplane": report["environment"]["dataplane"],
    }


async def compare_ref(args: argparse.Namespace, procs: Processes, tmp: Path) -> dict[str, Any]:
    ref = args.compare_ref
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    worktree = tmp / "ref"
    _git("worktree", "add", "--detach", str(worktree), commit)
    result: dict[str, Any] = {"ref": ref, "ref_commit": commit,
                              "head": _git("rev-parse", "HEAD"), "rounds": []}
    try:
        if dataplane.active().name == "compiled" and os.environ.get(dataplane.PURE_ENV) != "1":
            print(f"compiling {ref}'s hot path in {worktree} (this tree runs compiled)",
                  flush=True)
            compiled = await asyncio.create_subprocess_exec(
                sys.executable, str(worktree / "scripts" / "compile"), cwd=worktree)
            if await asyncio.wait_for(compiled.wait(), 1200) != 0:
                print(f"WARNING: {ref} did not compile: it runs as Python", file=sys.stderr)
        trees = {"ref": worktree, "current": ROOT}
        for r in range(args.rounds):
            order = ("ref", "current") if r % 2 == 0 else ("current", "ref")
            result["rounds"].append(
                {label: await _bench_once(procs, trees[label], label, args) for label in order}
            )
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        result["error"] = repr(exc)
    finally:
        await procs.stop_all()
        _remove_worktree(worktree)
    return result


def compare_table(result: dict[str, Any]) -> str:
    lines = [f"Plain HTTP/1.1, {result['ref']} ({result['ref_commit'][:10]}) vs this tree "
             f"({result['head'][:10]}), alternated", ""]
    rounds = result["rounds"]
    if rounds:
        lines += ["| round | tree | build | interceptor req/s | nginx req/s | req/s vs nginx "
                  "| p99 vs nginx | req per CPU-s vs nginx |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for i, rnd in enumerate(rounds, 1):
            for label, run in rnd.items():
                vs = run["vs_nginx"]
                lines.append(
                    f"| {i} | {label} | {run['dataplane']} | {run['interceptor']['rps']:.0f} "
                    f"| {run['nginx']['rps']:.0f} | {vs['rps']:.3f} | {vs['p99_ms']:.3f} "
                    f"| {vs['req_per_cpu_s']:.3f} |")
        lines += ["", "| figure (median over rounds) | ref | current | current / ref |",
                  "|---|---:|---:|---:|"]
        for key in _KEYS:
            ref = statistics.median(rnd["ref"]["vs_nginx"][key] for rnd in rounds)
            cur = statistics.median(rnd["current"]["vs_nginx"][key] for rnd in rounds)
            lines.append(
                f"| interceptor {key} vs nginx | {ref:.3f} | {cur:.3f} | {cur / ref:.3f} |")
    if "error" in result:
        lines.append(f"\nERROR: {result['error']}")
    return "\n".join(lines) + "\n"
