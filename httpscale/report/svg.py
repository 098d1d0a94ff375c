"""Charts as inline SVG text: lines, steps, scatter and bars, with axes, ticks and a legend.

Reports must open anywhere, offline and years later, so they carry no JavaScript, no
stylesheet or font from elsewhere and no plotting dependency: a chart is a string of SVG that
an HTML page embeds as it is. Every piece of text from data (series names, titles) goes
through `escape`, so a route called `<script>` stays text.

Each series is drawn in its own `<g class="series" data-series="NAME">`, so a test (or a
person reading the source) finds a series by name. Colours come from a fixed palette in
series order; `PALETTE[0]` is the first series' colour wherever it is drawn.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "PALETTE",
    "Bar",
    "BarChart",
    "Chart",
    "Series",
    "escape",
    "format_number",
    "nice_ticks",
    "render",
    "render_bars",
]

# Distinguishable for common colour blindness (Okabe-Ito), first the three most distinct.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")

Kind = Literal["line", "step", "scatter"]
Axis = Literal["left", "right"]

_MARGIN_LEFT = 64
_MARGIN_RIGHT = 64
_MARGIN_TOP = 36
_MARGIN_BOTTOM = 48
_LEGEND_ROW = 18


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  # (x, y), x ascending for line and step
    kind: Kind = "line"
    axis: Axis = "left"  # "right": scaled against the chart's second y axis
    color: str | None = None  # None: the palette colour of the series' position
    dashed: bool = False
    markers: bool = False  # a dot on each point of a line (a line of one point shows too)


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    x_label: str
    y_label: str
    series: Sequence[Series]
    y2_label: str | None = None  # the right axis, for series with axis="right"
    width: int = 880
    height: int = 340
    x_range: tuple[float, float] | None = None  # None: from the data
    y_min: float | None = 0.0  # None: from the data; counts and latencies start at 0


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    values: Sequence[float]  # one per group of the chart, same order


@dataclass(frozen=True, slots=True)
class BarChart:
    """Horizontal bars: one row per `Bar`, one bar per group within a row."""

    title: str
    x_label: str
    groups: Sequence[str]
    bars: Sequence[Bar]
    width: int = 880
    colors: Sequence[str] = field(default_factory=lambda: PALETTE)


def escape(text: str) -> str:
    """Text safe inside SVG/HTML elements and double-quoted attributes."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def format_number(value: float) -> str:
    """Short tick text: 0.25, 3, 1.5k, 2M; no float noise such as 0.30000000000000004."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{round(value, 6):g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (steps of 1, 2 or 5 x 10^n) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def _f(value: float) -> str:
    return f"{value:.1f}"


class _Scale:
    """Maps data values on [lo, hi] onto pixels [p0, p1]. The range is widened to round
    ticks, unless `exact` (a range the caller fixed: a report's period)."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, exact: bool = False) -> None:
        ticks = nice_ticks(lo, hi)
        if exact and hi > lo:
            self.lo, self.hi = lo, hi
            self.ticks = [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]
        else:
            self.lo, self.hi = ticks[0], ticks[-1]
            self.ticks = ticks
        if self.hi <= self.lo:
            self.hi = self.lo + 1.0
        self.p0, self.p1 = p0, p1

    def __call__(self, value: float) -> float:
        return self.p0 + (value - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)


def _extent(values: Sequence[float], floor: float | None) -> tuple[float, float]:
    lo = min(values) if values else 0.0
    hi = max(values) if values else 1.0
    if floor is not None:
        lo = min(lo, floor)
    return lo, hi


def render(chart: Chart) -> str:
    """The chart as one `<svg>` element (its own width and height, no outside references)."""
    width, plot_top = chart.width, _MARGIN_TOP
    legend_h = _LEGEND_ROW * ((len(chart.series) + 3) // 4)
    height = chart.height + legend_h
    plot_bottom = chart.height - _MARGIN_BOTTOM
    plot_left, plot_right = _MARGIN_LEFT, width - _MARGIN_RIGHT
    drawn = [s for s in chart.series if s.points]
    xs = [x for s in drawn for x, _ in s.points]
    x_lo, x_hi = chart.x_range if chart.x_range is not None else _extent(xs, None)
    x = _Scale(x_lo, x_hi, plot_left, plot_right, exact=chart.x_range is not None)
    left = [y for s in drawn if s.axis == "left" for _, y in s.points]
    right = [y for s in drawn if s.axis == "right" for _, y in s.points]
    y = _Scale(*_extent(left, chart.y_min), plot_bottom, plot_top)
    y2 = _Scale(*_extent(right, chart.y_min), plot_bottom, plot_top) if right else None

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(chart.title)}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{plot_left}" y="20" font-size="14" font-weight="bold">'
        f"{escape(chart.title)}</text>",
    ]
    out.extend(_axes(chart, x, y, y2, plot_left, plot_right, plot_top, plot_bottom))
    if not drawn:
        out.append(
            f'<text x="{(plot_left + plot_right) / 2:.0f}" y="{(plot_top + plot_bottom) / 2:.0f}"'
            f' text-anchor="middle" fill="#777777">no data</text>'
        )
    # Clip to the plot area: a series outside a fixed x_range must not paint over the axes.
    # Same title and size give the same id: their clip rectangles are then the same too.
    digest = hashlib.sha1(f"{chart.title}|{width}|{height}".encode()).hexdigest()[:10]
    clip = f"clip-{digest}"
    out.append(
        f'<clipPath id="{clip}"><rect x="{plot_left}" y="{plot_top - 4}" '
        f'width="{plot_right - plot_left}" height="{plot_bottom - plot_top + 8}"/></clipPath>'
    )
    for index, series in enumerate(chart.series):
        color = series.color or PALETTE[index % len(PALETTE)]
        scale_y = y2 if series.axis == "right" and y2 is not None else y
        out.append(
            f'<g class="series" data-series="{escape(series.name)}" clip-path="url(#{clip})">'
        )
        out.append(_series_shape(series, color, x, scale_y, x(x_hi)))
        out.append("</g>")
    out.extend(_legend(chart.series, plot_left, chart.height + 4))
    out.append("</svg>")
    return "\n".join(out)


def _axes(
    chart: Chart, x: _Scale, y: _Scale, y2: _Scale | None,
    left: float, right: float, top: float, bottom: float,
) -> list[str]:
    out = ['<g class="axes" stroke="#cccccc" stroke-width="1">']
    for tick in y.ticks:
        py = y(tick)
        out.append(f'<line x1="{left}" y1="{_f(py)}" x2="{right}" y2="{_f(py)}"/>')
    out.append(
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333333"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333333"/>'
    )
    if y2 is not None:
        out.append(f'<line x1="{right}" y1="{top}" x2="{right}" y2="{bottom}" stroke="#333333"/>')
    out.append("</g>")
    out.append('<g class="ticks" fill="#333333">')
    for tick in x.ticks:
        px = x(tick)
        out.append(
            f'<line x1="{_f(px)}" y1="{bottom}" x2="{_f(px)}" y2="{bottom + 4}" stroke="#333333"/>'
            f'<text x="{_f(px)}" y="{bottom + 16}" text-anchor="middle">'
            f"{format_number(tick)}</text>"
        )
    for tick in y.ticks:
        out.append(
            f'<text x="{left - 6}" y="{_f(y(tick) + 4)}" text-anchor="end">'
            f"{format_number(tick)}</text>"
        )
    if y2 is not None:
        for tick in y2.ticks:
            out.append(
                f'<text x="{right + 6}" y="{_f(y2(tick) + 4)}">{format_number(tick)}</text>'
            )
    out.append("</g>")
    mid_y = (top + bottom) / 2
    out.append(
        f'<text x="{(left + right) / 2:.0f}" y="{bottom + 34}" text-anchor="middle">'
        f"{escape(chart.x_label)}</text>"
        f'<text transform="translate(16 {mid_y:.0f}) rotate(-90)" text-anchor="middle">'
        f"{escape(chart.y_label)}</text>"
    )
    if y2 is not None and chart.y2_label:
        out.append(
            f'<text transform="translate({chart.width - 12} {mid_y:.0f}) rotate(90)" '
            f'text-anchor="middle">{escape(chart.y2_label)}</text>'
        )
    return out


def _series_shape(series: Series, color: str, x: _Scale, y: _Scale, x_end: float) -> str:
    if series.kind == "scatter":
        return "".join(
            f'<circle cx="{_f(x(px))}" cy="{_f(y(py))}" r="3.5" fill="{color}"/>'
            for px, py in series.points
        )
    coords: list[tuple[float, float]] = []
    for i, (px, py) in enumerate(series.points):
        if series.kind == "step" and i:
            coords.append((x(px), coords[-1][1]))  # hold the previous value up to this x
        coords.append((x(px), y(py)))
    if series.kind == "step" and coords:
        # A step function holds its last value to the end of the data (or the fixed range).
        coords.append((max(coords[-1][0], x_end), coords[-1][1]))
    path = " ".join(f"{_f(cx)},{_f(cy)}" for cx, cy in coords)
    dash = ' stroke-dasharray="6 4"' if series.dashed else ""
    dots = "".join(
        f'<circle cx="{_f(x(px))}" cy="{_f(y(py))}" r="3" fill="{color}"/>'
        for px, py in series.points
    ) if series.markers else ""
    return (
        f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"'
        f' stroke-linejoin="round"{dash}/>{dots}'
    )


def _legend(series: Sequence[Series], left: float, top: float) -> list[str]:
    out = ['<g class="legend">']
    for index, s in enumerate(series):
        color = s.color or PALETTE[index % len(PALETTE)]
        col, row = index % 4, index // 4
        lx, ly = left + col * 200, top + row * _LEGEND_ROW
        out.append(
            f'<rect x="{lx}" y="{ly}" width="14" height="10" fill="{color}"/>'
            f'<text x="{lx + 20}" y="{ly + 9}">{escape(s.name)}</text>'
        )
    out.append("</g>")
    return out


def render_bars(chart: BarChart) -> str:
    """Horizontal grouped bars against one shared x axis starting at 0."""
    row_h = 14 * len(chart.groups) + 14
    label_w = 180
    top = _MARGIN_TOP
    plot_h = row_h * max(len(chart.bars), 1)
    left, right = label_w, chart.width - _MARGIN_RIGHT
    height = top + plot_h + _MARGIN_BOTTOM + _LEGEND_ROW
    values = [v for bar in chart.bars for v in bar.values]
    x = _Scale(0.0, max(values) if values else 1.0, left, right)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{chart.width}" '
        f'height="{height}" viewBox="0 0 {chart.width} {height}" role="img" '
        f'aria-label="{escape(chart.title)}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect width="{chart.width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(chart.title)}</text>',
        '<g class="axes" stroke="#cccccc">',
    ]
    bottom = top + plot_h
    for tick in x.ticks:
        px = _f(x(tick))
        out.append(f'<line x1="{px}" y1="{top}" x2="{px}" y2="{bottom}"/>')
    out.append("</g><g class=\"ticks\" fill=\"#333333\">")
    for tick in x.ticks:
        out.append(
            f'<text x="{_f(x(tick))}" y="{bottom + 16}" text-anchor="middle">'
            f"{format_number(tick)}</text>"
        )
    out.append(
        f'</g><text x="{(left + right) / 2:.0f}" y="{bottom + 34}" text-anchor="middle">'
        f"{escape(chart.x_label)}</text>"
    )
    for gi, group in enumerate(chart.groups):
        color = chart.colors[gi % len(chart.colors)]
        out.append(f'<g class="series" data-series="{escape(group)}">')
        for bi, bar in enumerate(chart.bars):
            value = bar.values[gi] if gi < len(bar.values) else 0.0
            by = top + bi * row_h + 7 + gi * 14
            out.append(
                f'<rect x="{left}" y="{by}" width="{_f(max(x(value) - left, 0.0))}" '
                f'height="12" fill="{color}"/>'
            )
        out.append("</g>")
    for bi, bar in enumerate(chart.bars):
        ly = top + bi * row_h + row_h / 2 + 4
        out.append(
            f'<text x="{left - 8}" y="{_f(ly)}" text-anchor="end">{escape(bar.label)}</text>'
        )
    out.append(f'<g class="legend" transform="translate(0 {bottom + 44})">')
    for gi, group in enumerate(chart.groups):
        color = chart.colors[gi % len(chart.colors)]
        out.append(
            f'<rect x="{left + gi * 200}" y="0" width="14" height="10" fill="{color}"/>'
            f'<text x="{left + gi * 200 + 20}" y="9">{escape(group)}</text>'
        )
    out.append("</g></svg>")
    return "\n".join(out)
