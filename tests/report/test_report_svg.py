"""Inline SVG charts and Kubernetes quantities: pure functions fed values."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from httpscale.report.quantity import GIB, parse_quantity, pod_requests
from httpscale.report.svg import (
    PALETTE,
    Bar,
    BarChart,
    Chart,
    Series,
    escape,
    format_number,
    nice_ticks,
    render,
    render_bars,
)

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0, 7.3) == [0, 2, 4, 6, 8]
    assert nice_ticks(0.013, 0.048) == [0.01, 0.02, 0.03, 0.04, 0.05]
    assert nice_ticks(5, 5) == [5, 5.2, 5.4, 5.6, 5.8, 6]  # a flat series still gets an axis
    assert nice_ticks(-3, 3) == [-4, -2, 0, 2, 4]


def test_numbers_are_short() -> None:
    assert [format_number(v) for v in (0.30000000000000004, 3, 15000, 2_500_000)] == [
        "0.3", "3", "15k", "2.5M"]


def test_text_from_data_is_escaped() -> None:
    assert escape('<b a="1">&\'') == "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
    svg = render(Chart("t <x>", "x & y", "y", [Series('"><script>', [(0, 1), (1, 2)])]))
    assert "<script>" not in svg
    root = ET.fromstring(svg)  # well-formed XML whatever the names held
    groups = root.findall(f".//{SVG}g[@class='series']")
    assert [g.get("data-series") for g in groups] == ['"><script>']


def test_each_kind_of_series_is_drawn_in_its_palette_colour() -> None:
    chart = Chart("c", "x", "y", [
        Series("line", [(0, 0), (10, 5)]),
        Series("step", [(0, 1), (4, 3), (8, 0)], kind="step"),
        Series("dots", [(2, 2), (6, 4)], kind="scatter", axis="right"),
        Series("empty", []),
    ], y2_label="right axis")
    root = ET.fromstring(render(chart))
    groups = {g.get("data-series"): g for g in root.findall(f".//{SVG}g[@class='series']")}
    line = groups["line"].find(f"{SVG}polyline")
    assert line is not None and line.get("stroke") == PALETTE[0]
    step = groups["step"].find(f"{SVG}polyline")
    assert step is not None and step.get("stroke") == PALETTE[1]
    # A step holds each value until the next x: 2 points per change, plus the held end.
    points = (step.get("points") or "").split()
    assert len(points) == 3 + 2 + 1
    assert points[1].split(",")[1] == points[0].split(",")[1]  # horizontal, then vertical
    dots = groups["dots"].findall(f"{SVG}circle")
    assert [d.get("fill") for d in dots] == [PALETTE[2], PALETTE[2]]
    assert "right axis" in render(chart)


def test_a_chart_without_data_says_so() -> None:
    assert "no data" in render(Chart("c", "x", "y", [Series("a", [])]))


def test_bars_have_one_rect_per_route_and_group() -> None:
    svg = render_bars(BarChart("cost", "EUR", ("used", "max"),
                               [Bar("a", (1.0, 4.0)), Bar("b", (0.5, 2.0))]))
    root = ET.fromstring(svg)
    used = root.find(f".//{SVG}g[@data-series='used']")
    assert used is not None
    widths = [float(r.get("width") or 0) for r in used.findall(f"{SVG}rect")]
    assert len(widths) == 2 and widths[0] == pytest.approx(2 * widths[1], rel=0.01)


@pytest.mark.parametrize(("text", "value"), [
    ("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("0.1", 0.1), (".5", 0.5), ("1e3", 1000.0),
    ("256Mi", 256 * 2**20), ("1Gi", 2**30), ("1G", 1e9), ("128974848", 128974848.0),
    ("2E", 2e18), (3, 3.0),
])
def test_quantities(text: str | int, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


def test_bad_quantities_are_refused() -> None:
    for text in ("", "lots", "1 Gi", "1GB", "Mi"):
        with pytest.raises(ValueError, match="not a Kubernetes quantity"):
            parse_quantity(text)


def test_pod_requests_follow_the_scheduler() -> None:
    spec = {
        "containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
            {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},  # request = limit
            {},
        ],
        "initContainers": [
            {"resources": {"requests": {"cpu": "2", "memory": "64Mi"}}},  # only while it runs
            {"restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},  # sidecar
        ],
    }
    cpu, mem = pod_requests(spec) or (0.0, 0.0)
    assert cpu == pytest.approx(2.0)  # the init container's 2 beats 0.25 + 1 + 0.1
    assert mem / GIB == pytest.approx(1.25)
    assert pod_requests({"containers": [{"name": "app"}]}) is None
