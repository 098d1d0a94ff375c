"""A `CostReport` as a text table (for a terminal) and as a self-contained HTML page."""

from __future__ import annotations

import time
from collections.abc import Sequence

from httpscale.report.cost import DEFAULT_PRICES, CostReport, RouteCost, Usage
from httpscale.report.page import html_page, html_table
from httpscale.report.svg import Bar, BarChart, Chart, Series, escape, render, render_bars

__all__ = ["cost_html", "cost_text", "format_duration", "format_money"]

_HEADER = (
    "ROUTE", "MIN-MAX", "MEAN", "REPLICA-H", "CORE-H", "GIB-H", "COST",
    "AT MIN", "AT MAX", "SAVED VS MAX", "COLD STARTS", "WAIT P50", "WAIT P99",
)


def format_duration(seconds: float) -> str:
    whole = max(round(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if minutes or hours or days:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return "".join(parts)


def format_money(value: float, scale: float | None = None) -> str:
    """Decimals chosen by `scale` (the largest amount shown beside it, default the value):
    none for hundreds, cents for more than 1, four places for small change, so a column of
    amounts lines up."""
    scale = abs(value) if scale is None else abs(scale)
    if scale >= 100:
        return f"{value:,.0f}"
    if scale >= 1:
        return f"{value:,.2f}"
    return f"{value:.4f}"


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _row(label: str, bounds: str, mean: str, used: Usage, at_min: Usage, at_max: Usage,
         cold: Sequence[str], scale: float) -> list[str]:
    saved = at_max.cost - used.cost
    return [
        label, bounds, mean,
        f"{used.replica_seconds / 3600:.3f}",
        f"{used.cpu_core_hours:.3f}",
        f"{used.gib_hours:.3f}",
        format_money(used.cost, scale),
        format_money(at_min.cost, scale),
        format_money(at_max.cost, scale),
        f"{format_money(saved, scale)} ({saved / at_max.cost:.0%})" if at_max.cost > 0 else "-",
        *cold,
    ]


def _rows(report: CostReport) -> list[list[str]]:
    # One number of decimals for every amount: the largest one shown decides.
    scale = max(report.total_at_max.cost, report.total_used.cost)
    rows = []
    for r in report.routes:
        t, cs = r.timeline, r.cold_starts
        rows.append(_row(
            t.name, f"{t.min_replicas}-{t.max_replicas}", f"{r.mean_replicas:.2f}",
            r.used, r.at_min, r.at_max, [str(cs.count), _seconds(cs.p50), _seconds(cs.p99)],
            scale,
        ))
    if len(report.routes) > 1:
        count = sum(r.cold_starts.count for r in report.routes)
        rows.append(_row("TOTAL", "", "", report.total_used, report.total_at_min,
                         report.total_at_max, [str(count), "", ""], scale))
    return rows


def _heading(report: CostReport) -> list[str]:
    p = report.prices
    example = " (an example: set --price-cpu-hour, --price-gib-hour)" if p == DEFAULT_PRICES else ""
    return [
        f"period   {_stamp(report.start)} .. {_stamp(report.end)} "
        f"({format_duration(report.end - report.start)})",
        f"source   {report.source}",
        f"prices   {p.cpu_core_hour:g} {p.currency} per core-hour, {p.gib_hour:g} {p.currency} "
        f"per GiB-hour{example}",
    ]


def _notes(report: CostReport) -> list[str]:
    notes = [
        "AT MIN: max(min, 1) replicas always on; AT MAX: max replicas always on (no "
        f"autoscaling); costs in {report.prices.currency}.",
    ]
    for r in report.routes:
        t = r.timeline
        req = t.requests
        line = (
            f"{t.name}: route {t.route}, per replica {req.cpu_cores:g} CPU and "
            f"{req.memory_gib:g} GiB ({req.source or 'given'})"
        )
        if r.observed_from > report.start + 1e-6:
            line += (f"; observed from {_stamp(r.observed_from)} "
                     f"({format_duration(r.observed_seconds)})")
        if r.cold_starts.count:
            line += f"; waits: {r.cold_starts.basis}"
        notes.append(line)
    return notes


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return out


def cost_text(report: CostReport) -> str:
    lines = ["httpscale cost report", *_heading(report), ""]
    if not report.routes:
        lines.append("no routes with a replica timeline in this period")
        return "\n".join(lines)
    lines.extend(_table([list(_HEADER), *_rows(report)]))
    lines.append("")
    lines.extend(_notes(report))
    return "\n".join(lines)


def _time_unit(span: float) -> tuple[str, float]:
    """Seconds for a short period, minutes up to a few hours, then hours."""
    if span <= 900:
        return "seconds", 1.0
    if span <= 4 * 3600:
        return "minutes", 60.0
    return "hours", 3600.0


def _timeline_chart(r: RouteCost, start: float, end: float) -> str:
    t = r.timeline
    x0 = r.observed_from
    unit, per = _time_unit(end - x0)
    # The count at the observed start (the last point at or before it), then each change.
    before = [float(n) for ts, n in t.replicas if ts <= x0]
    pts = [(0.0, before[-1])] if before else []
    pts += [((ts - x0) / per, float(n)) for ts, n in t.replicas if x0 < ts < end]
    span = (0.0, max(end - x0, 1.0) / per)
    cold = [((ts - x0) / per, float(w)) for ts, w in t.cold_starts
            if w is not None and x0 <= ts < end]
    series = [
        Series("replicas running", pts, kind="step"),
        Series(f"always on at min ({max(t.min_replicas, 1)})",
               [(span[0], max(t.min_replicas, 1)), (span[1], max(t.min_replicas, 1))],
               dashed=True),
        Series(f"always on at max ({t.max_replicas})",
               [(span[0], t.max_replicas), (span[1], t.max_replicas)], dashed=True),
    ]
    y2 = None
    if cold:
        series.append(Series("cold start wait (s)", cold, kind="scatter", axis="right"))
        y2 = "cold start wait (s)"
    return render(Chart(
        title=f"{t.name}: replicas over time",
        x_label=f"{unit} since {_stamp(x0)}",
        y_label="replicas",
        y2_label=y2,
        series=series,
        x_range=span,
        height=280,
    ))


def cost_html(report: CostReport) -> str:
    body: list[str] = []
    if report.routes:
        body.append(html_table(_HEADER, _rows(report)))
        currency = report.prices.currency
        body.append(render_bars(BarChart(
            title=f"Cost over the period ({currency})",
            x_label=currency,
            groups=("used", "always on at min", "always on at max"),
            bars=[Bar(r.timeline.name, (r.used.cost, r.at_min.cost, r.at_max.cost))
                  for r in report.routes],
        )))
        for r in report.routes:
            body.append(f"<figure>{_timeline_chart(r, report.start, report.end)}</figure>")
        body.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in _notes(report)) + "</ul>")
    else:
        body.append("<p>No routes with a replica timeline in this period.</p>")
    return html_page("httpscale cost report", _heading(report), body)


