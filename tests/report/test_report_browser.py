"""The report pages in a real browser: headless Chromium renders each page to a PNG, and the
PNG is checked for what the charts draw (their exact fill colours) and for text.

Skipped without Chromium, unless HTTPSCALE_REQUIRE_BROWSER=1 (as in CI) makes that a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner
from reportkit import (
    DATA,
    LOADTESTS,
    colour_counts,
    hex_rgb,
    load_module,
    read_png,
    recorded_server,
    require_browser,
)

from httpscale.report.browser import screenshot
from httpscale.report.cli import report_command
from httpscale.report.svg import PALETTE

HISTORY = (DATA / "history.json").read_text()


def _dark_pixels(counts: dict[tuple[int, int, int], int]) -> int:
    """Pixels of text and axes (near black), antialiased edges included."""
    return sum(n for (r, g, b), n in counts.items() if max(r, g, b) < 100)


def test_cost_report_png_is_the_page_as_chromium_draws_it(tmp_path: Path) -> None:
    require_browser()

    def history(path: str, q: dict[str, str]) -> tuple[int, Any]:
        import json

        return (200, json.loads(HISTORY)) if path == "/history" else (404, {})

    png = tmp_path / "cost.png"
    with recorded_server(history) as server:
        result = CliRunner().invoke(report_command, [
            "cost", "--admin", server.url, "--format", "png", "-o", str(png)])
    assert result.exit_code == 0, result.output
    width, height, rows = read_png(png)
    assert (width, height) == (1000, 400 + 330 * 2)  # two routes
    counts = colour_counts(rows, len(rows[0]) // width)
    # The cost bars are solid rectangles of the palette's first three colours (used, always
    # on at min, always on at max): each drawn, the max bars the widest.
    used, at_min, at_max = (counts.get(hex_rgb(c), 0) for c in PALETTE[:3])
    assert 0 < used < at_max and 0 < at_min < at_max
    assert at_max > 12 * 300  # two bars of 12 px, one of them most of the plot's width
    assert _dark_pixels(counts) > 2000  # the heading, the table, the axes' text


def test_load_test_report_renders_every_chart(tmp_path: Path) -> None:
    require_browser()
    report = load_module("loadtest_report", LOADTESTS / "report.py")
    page = tmp_path / "report.html"
    page.write_text(report.build_report(report.load_run(DATA / "ramp")), encoding="utf-8")
    png = tmp_path / "report.png"
    screenshot(page, png, width=1000, height=2000)
    width, height, rows = read_png(png)
    assert (width, height) == (1000, 2000)
    counts = colour_counts(rows, len(rows[0]) // width)
    # Each chart's legend alone shows a 14 x 10 swatch per series; the series themselves
    # (lines, steps, dots) add far more pixels of the first two colours than four charts'
    # swatches would.
    swatch = 14 * 10
    for colour in PALETTE[:2]:
        assert counts.get(hex_rgb(colour), 0) > 4 * swatch + 500, colour
    assert _dark_pixels(counts) > 4000
    # Nothing drawn below the last chart: the page ended inside the window (white rows).
    assert set(rows[-1][:: len(rows[0]) // width]) <= {255}
