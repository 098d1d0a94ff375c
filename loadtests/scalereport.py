"""Markdown tables of `loadtests/scalebench.py`'s summary (see scaleplan.summarize)."""

from __future__ import annotations

from typing import Any

from scaleplan import Case

__all__ = ["scale_tables"]


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _vs(m: dict[str, Any], ref: dict[str, Any] | None, key: str) -> str:
    if ref is None or not m.get(key) or not ref.get(key):
        return "-"
    return f"{m[key] / ref[key]:.2f}x"


def _throughput(summary: dict[str, Any], cases: list[Case], rounds: int) -> list[str]:
    med = summary["medians"]
    lines = [
        f"Throughput, median of {rounds} interleaved rounds (w1: proxy alone on core 0, wrk and "
        "backend on core 1; w2: 2 worker processes, nobody pinned, wrk shares both cores)",
        "",
        "| workers | conns | config | req/s | p50 ms | p99 ms | req/s vs nginx | p99 vs nginx "
        "| server CPU us/req | req per CPU-s vs nginx | server cores | backend cores "
        "| upstream conns (peak) | in flight (peak) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        head = f"| {case.workers} | {case.conns} | {case.name} "
        why = summary["not_measured"].get(case.key)
        m = med.get(case.key)
        if why is not None or m is None:
            lines.append(head + f"| NOT MEASURED: {why or 'no run'} |||||||||||")
            continue
        ref_hosts = case.hosts if case.server != "direct" else "one"
        ref = med.get(f"{case.group} nginx {ref_hosts}")
        lines.append(
            head + f"| {_f(m['rps'], '.0f')} | {_f(m['p50_ms'], '.2f')} "
            f"| {_f(m['p99_ms'], '.2f')} | {_vs(m, ref, 'rps')} | {_vs(m, ref, 'p99_ms')} "
            f"| {_f(m['cpu_us_per_req'], '.1f')} | {_vs(m, ref, 'req_per_cpu_s')} "
            f"| {_f(m['cpu_cores'], '.2f')} | {_f(m['backend_cpu_cores'], '.2f')} "
            f"| {_f(m['upstream_conns_peak'], '.0f')} | {_f(m['in_flight_peak'], '.0f')} |"
        )
    return lines


def _ratios(summary: dict[str, Any]) -> list[str]:
    lines = ["", "| ratio | of medians | median of per-round ratios |", "|---|---:|---:|"]
    for name, r in summary["ratios"].items():
        if "not_measured" in r:
            lines.append(f"| {name} | NOT MEASURED: {r['not_measured']} | |")
        else:
            lines.append(
                f"| {name} | {r['of_medians']:.3f} | {_f(r['median_per_round'], '.3f')} |"
            )
    return lines


def _targets(summary: dict[str, Any]) -> list[str]:
    lines = ["", "Targets of issue 21 (interceptor / nginx, same run, same group)", "",
             "| target | value | wanted | verdict |", "|---|---:|---|---|"]
    for t in summary["targets"]:
        verdict = t["verdict"] + (f" ({t['why']})" if "why" in t else "")
        lines.append(f"| {t['name']} | {_f(t['value'], '.3f')} | {t['target']} | {verdict} |")
    return lines


def _pools(summary: dict[str, Any], cases: list[Case]) -> list[str]:
    lines = ["", "Upstream connections vs requests in flight (one host; peaks during the warm-up)",
             "", "| workers | conns | interceptor: in flight (/queue) "
             "| interceptor: sockets to backend | nginx: sockets to backend |",
             "|---:|---:|---:|---:|---:|"]
    med = summary["medians"]
    for case in cases:
        if case.server != "interceptor" or case.hosts != "one":
            continue
        ic = med.get(case.key) or {}
        ng = med.get(f"{case.group} nginx one") or {}
        why = summary["not_measured"].get(case.key)
        head = f"| {case.workers} | {case.conns} "
        tail = f"| {_f(ng.get('upstream_conns_peak'), '.0f')} |"
        if why is not None:
            lines.append(head + f"| NOT MEASURED: {why} | " + tail)
            continue
        lines.append(head + f"| {_f(ic.get('in_flight_peak'), '.0f')} "
                     f"| {_f(ic.get('upstream_conns_peak'), '.0f')} " + tail)
    return lines


def _scaling(summary: dict[str, Any], cases: list[Case]) -> list[str]:
    conns = sorted({c.conns for c in cases})
    lines = ["", "Scaling, req/s with 2 workers / with 1 (w2 rows unpinned, w1 rows pinned: see "
             "above); ratio of medians (median of per-round ratios)", "",
             "| server | " + " | ".join(f"{c} conns" for c in conns) + " |",
             "|---|" + "---:|" * len(conns)]
    for server in ("direct", "nginx", "interceptor"):
        cells = []
        for c in conns:
            r = summary["ratios"].get(f"c{c} {server} 2 workers/1 worker rps")
            if r is None:
                cells.append("-")
            elif "not_measured" in r:
                cells.append(f"NOT MEASURED: {r['not_measured']}")
            else:
                cells.append(f"{r['of_medians']:.2f}x ({_f(r['median_per_round'], '.2f')}x)")
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return lines


def scale_tables(summary: dict[str, Any], cases: list[Case], rounds: int) -> str:
    lines = _throughput(summary, cases, rounds)
    lines += _targets(summary)
    if len({c.workers for c in cases}) > 1:
        lines += _scaling(summary, cases)
    lines += _pools(summary, cases)
    lines += _ratios(summary)
    if not summary["all_runs_valid"]:
        lines.append("\nWARNING: some runs had socket errors or non-2xx answers (see JSON).")
    return "\n".join(lines) + "\n"
