"""One self-contained HTML page from a locust run and httpscale's view of it.

    .venv/bin/python loadtests/report.py run/spike [-o report.html]

reads `run/spike_stats_history.csv` (locust `--csv run/spike --csv-full-history`: each second,
the users, requests/s and response-time percentiles over locust's last 10 s) and
`run/spike_httpscale.jsonl` (recorder.py: the interceptor's and scaler's admin status each
second, cold starts as visitors and as the autoscaler saw them), and writes
`run/spike_report.html` with four charts:

1. requests/s and latency percentiles (p50, p95, p99) over time;
2. replicas per app over time (ready; running, from local mode's /history) and held
   requests;
3. cold-start latencies: each visitor's wait, and each activation (time to first ready);
4. the capacity curve: throughput and p99 against offered load (users).

No script, stylesheet or font is fetched: the page opens from a file anywhere.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from httpscale.report.cost import percentile
from httpscale.report.page import html_page, html_table
from httpscale.report.svg import Chart, Series, escape, render

__all__ = ["HistoryRow", "Run", "build_report", "capacity_points", "load_run"]

# locust's "current" requests/s and percentiles cover its last 10 seconds, so the first 10
# samples after the user count changes still mix in the previous level.
_SETTLE_SAMPLES = 10


@dataclass(frozen=True, slots=True)
class HistoryRow:
    t: float
    users: int
    rps: float
    failures_per_s: float
    p50: float | None  # ms; None before the first response
    p95: float | None
    p99: float | None
    requests: int
    failures: int


@dataclass
class Run:
    history: list[HistoryRow]
    lines: list[dict[str, Any]] = field(default_factory=list)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("kind") == kind]

    @property
    def t0(self) -> float:
        starts = [r.t for r in self.history[:1]] + [line["t"] for line in self.lines[:1]]
        return min(starts, default=0.0)

    @property
    def t_end(self) -> float:
        ends = [r.t for r in self.history[-1:]] + [line["t"] for line in self.lines[-1:]]
        return max(ends, default=0.0)


def _ms(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None  # "N/A": no response yet


def read_history(path: Path) -> list[HistoryRow]:
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["Name"] != "Aggregated":
                continue
            rows.append(HistoryRow(
                t=float(row["Timestamp"]),
                users=int(row["User Count"]),
                rps=float(row["Requests/s"]),
                failures_per_s=float(row["Failures/s"]),
                p50=_ms(row["50%"]),
                p95=_ms(row["95%"]),
                p99=_ms(row["99%"]),
                requests=int(row["Total Request Count"]),
                failures=int(row["Total Failure Count"]),
            ))
    return rows


def read_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    with path.open(encoding="utf-8") as f:
        for text in f:
            if text.strip():
                lines.append(json.loads(text))
    return lines


def load_run(prefix: Path) -> Run:
    history = read_history(Path(f"{prefix}_stats_history.csv"))
    recorded = Path(f"{prefix}_httpscale.jsonl")
    return Run(history, read_lines(recorded) if recorded.exists() else [])


def capacity_points(history: Sequence[HistoryRow]) -> list[tuple[int, float, float | None]]:
    """(users, throughput req/s, p99 ms) per offered load: the medians of the samples taken
    once a user count has held for locust's 10 s window (or, in a shorter stretch, its later
    half)."""
    segments: list[list[HistoryRow]] = []
    for row in history:
        if segments and segments[-1][0].users == row.users:
            segments[-1].append(row)
        else:
            segments.append([row])
    settled: dict[int, list[HistoryRow]] = {}
    for seg in segments:
        if seg[0].users <= 0:
            continue
        skip = min(_SETTLE_SAMPLES, len(seg) // 2)
        settled.setdefault(seg[0].users, []).extend(seg[skip:])
    out = []
    for users in sorted(settled):
        rows = settled[users]
        p99s = [r.p99 for r in rows if r.p99 is not None]
        out.append((users, statistics.median(r.rps for r in rows),
                    statistics.median(p99s) if p99s else None))
    return out


def _span(run: Run) -> tuple[float, float]:
    """The x range of every time chart: the whole run, so the charts line up."""
    return (0.0, max(run.t_end - run.t0, 1.0))


def _latency_chart(run: Run) -> str:
    t0 = run.t0
    h = run.history
    series = [
        Series("requests/s", [(r.t - t0, r.rps) for r in h]),
        Series("failures/s", [(r.t - t0, r.failures_per_s) for r in h]),
        Series("users", [(r.t - t0, float(r.users)) for r in h], kind="step", dashed=True),
    ]
    for name in ("p50", "p95", "p99"):
        pts = [(r.t - t0, v) for r in h if (v := getattr(r, name)) is not None]
        series.append(Series(f"{name} (ms)", pts, axis="right"))
    return render(Chart("Requests per second and latency percentiles over time",
                        "seconds since start", "requests/s, users", series,
                        y2_label="latency (ms)", x_range=_span(run)))


def _replica_chart(run: Run) -> str:
    t0 = run.t0
    samples = run.kind("sample")
    names = sorted({n for s in samples for n in s.get("apps", {})})
    series: list[Series] = []
    if names:
        for n in names:
            series.append(Series(f"ready {n}", [
                (s["t"] - t0, float(s["apps"][n].get("ready") or 0))
                for s in samples if n in s.get("apps", {})], kind="step"))
        for n, points in _running(run).items():
            # Local mode's exact record: every process that ran, starting and draining ones
            # too, so it rises before "ready" does and falls after it.
            series.append(Series(f"running {n}", points, kind="step", dashed=True))
        for n in names:
            series.append(Series(f"held {n}", [
                (s["t"] - t0, float(s["apps"][n].get("held") or 0))
                for s in samples if n in s.get("apps", {})], axis="right"))
    else:
        # On a cluster the interceptor knows endpoints, not replicas: ready endpoints are
        # the replicas that serve.
        keys = sorted({k for s in samples for k in s.get("routes", {})})
        for k in keys:
            series.append(Series(f"endpoints {k}", [
                (s["t"] - t0, float(s["routes"][k].get("endpoints") or 0))
                for s in samples if k in s.get("routes", {})], kind="step"))
        for k in keys:
            series.append(Series(f"held {k}", [
                (s["t"] - t0, float(s["routes"][k].get("held") or 0))
                for s in samples if k in s.get("routes", {})], axis="right"))
    return render(Chart("Replicas over time", "seconds since start", "ready replicas", series,
                        y2_label="held requests", x_range=_span(run)))


def _running(run: Run) -> dict[str, list[tuple[float, float]]]:
    """Per app, running processes over the run from local mode's /history (when recorded):
    the count at the run's start, then each change."""
    out: dict[str, list[tuple[float, float]]] = {}
    for line in run.kind("history"):
        for name, app in sorted(((line.get("doc") or {}).get("apps") or {}).items()):
            points = [(float(t), float(n)) for t, n in app.get("replicas") or ()]
            before = [n for t, n in points if t <= run.t0]
            pts = [(0.0, before[-1])] if before else []
            pts += [(t - run.t0, n) for t, n in points if run.t0 < t <= run.t_end]
            out[str(name)] = pts
    return out


def _activations(run: Run) -> list[tuple[float, float]]:
    """(unix time, seconds) of each cold start the autoscaler measured during the run:
    local mode's exact /history when recorded, else what the samples caught."""
    for line in run.kind("history"):
        apps = (line.get("doc") or {}).get("apps") or {}
        return sorted((float(t), float(w)) for app in apps.values()
                      for t, w in app.get("cold_starts") or () if run.t0 <= t <= run.t_end)
    return [(line["t"], float(line["seconds"])) for line in run.kind("activation")
            if line.get("seconds") is not None]


def _cold_start_chart(run: Run) -> str:
    t0 = run.t0
    # A visitor's line is written when the response came; plot it where the request began,
    # beside the activation it waited for.
    visitors = [(line["t"] - float(line["seconds"]) - t0, float(line["seconds"]))
                for line in run.kind("visitor_cold_start")]
    series = [
        Series("visitor wait (locust)", visitors, kind="scatter"),
        Series("activation (autoscaler)", [(t - t0, w) for t, w in _activations(run)],
               kind="scatter"),
    ]
    return render(Chart("Cold-start latencies", "seconds since start", "seconds", series,
                        x_range=_span(run)))


def _capacity_chart(run: Run) -> str:
    points = capacity_points(run.history)
    series = [
        Series("throughput (req/s)", [(u, rps) for u, rps, _ in points], markers=True),
        Series("p99 (ms)", [(u, p) for u, _, p in points if p is not None], axis="right",
               markers=True),
    ]
    # From zero users: one level of load is still a point on a curve, not a lone axis.
    top = max((u for u, _, _ in points), default=1)
    return render(Chart("Capacity curve: throughput and p99 against offered load",
                        "users (offered load)", "requests/s", series, y2_label="p99 (ms)",
                        x_range=(0.0, top * 1.05)))


def _seconds(values: Iterable[float]) -> list[str]:
    v = list(values)
    p50, p99 = percentile(v, 50), percentile(v, 99)
    return [str(len(v)), *("-" if p is None else f"{p:.2f}s" for p in (p50, p99))]


def _summary(run: Run) -> str:
    last = run.history[-1] if run.history else None
    rows = [
        ["requests", str(last.requests if last else 0), "", ""],
        ["failures", str(last.failures if last else 0), "", ""],
        ["visitor cold starts", *_seconds(float(line["seconds"])
                                          for line in run.kind("visitor_cold_start"))],
        ["activations", *_seconds(w for _, w in _activations(run))],
    ]
    for name in sorted({n for s in run.kind("sample") for n in s.get("apps", {})}):
        peak = max(int(s["apps"][name].get("ready") or 0) for s in run.kind("sample")
                   if name in s.get("apps", {}))
        held = max(int(s["apps"][name].get("held") or 0) for s in run.kind("sample")
                   if name in s.get("apps", {}))
        rows.append([f"{name}: peak replicas / peak held", f"{peak} / {held}", "", ""])
    return html_table(["", "count", "p50", "p99"], rows)


def build_report(run: Run, title: str = "httpscale load test") -> str:
    meta = next(iter(run.kind("meta")), {})
    lines = [f"{k}: {meta[k]}" for k in ("scenario", "host", "host_header", "users", "run_time",
                                           "admin", "scaler") if meta.get(k) is not None]
    duration = run.t_end - run.t0
    lines.append(f"duration: {duration:.0f}s, {len(run.kind('sample'))} httpscale samples")
    body = [_summary(run)]
    for chart in (_latency_chart(run), _replica_chart(run), _cold_start_chart(run),
                  _capacity_chart(run)):
        body.append(f"<figure>{chart}</figure>")
    errors = run.kind("error")
    if errors:
        body.append(f"<p>{len(errors)} samples of the admin server failed; the first: "
                    f"{escape(str(errors[0].get('error')))}</p>")
    return html_page(title, lines, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", type=Path, help="the --csv prefix of the locust run")
    parser.add_argument("-o", "--output", type=Path, default=None)
    parser.add_argument("--title", default="httpscale load test")
    args = parser.parse_args()
    out = args.output or Path(f"{args.prefix}_report.html")
    out.write_text(build_report(load_run(args.prefix), args.title), encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
