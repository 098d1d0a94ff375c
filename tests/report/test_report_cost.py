"""The cost arithmetic on a recorded timeline, against values worked out by hand."""

from __future__ import annotations

import pytest

from httpscale.report.cost import (
    Prices,
    Requests,
    RouteTimeline,
    WaitSummary,
    cost_report,
    percentile,
    replica_seconds,
    route_cost,
)
from httpscale.report.costview import cost_html, cost_text, format_duration, format_money

# hello, recorded: at zero, woken at 1100 (1.2 s to ready), out to 3 at 1400, back to 1 at
# 1500, to zero at 1700, woken again at 2000 (0.8 s). A cold start at 900 lies before the
# period and must not count.
REPLICAS = [(1000.0, 0.0), (1100.0, 1.0), (1400.0, 3.0), (1500.0, 1.0), (1700.0, 0.0),
            (2000.0, 1.0)]
HELLO = RouteTimeline(
    name="hello",
    route="local/hello",
    min_replicas=0,
    max_replicas=4,
    replicas=REPLICAS,
    cold_starts=[(900.0, 5.0), (1100.0, 1.2), (2000.0, 0.8)],
    requests=Requests(cpu_cores=0.5, memory_gib=1.0, source="test"),
)
# Round prices so the money is checkable by hand: 3.6 per core-hour is 0.001 per core-second.
PRICES = Prices(cpu_core_hour=3.6, gib_hour=0.36, currency="EUR")


def test_replica_seconds_integrate_the_step_function() -> None:
    # 1100-1400: 1 x 300, 1400-1500: 3 x 100, 1500-1700: 1 x 200, 2000-2200: 1 x 200
    assert replica_seconds(REPLICAS, 1000.0, 2200.0) == (1000.0, 1000.0)
    # Cut inside a segment: 1450-1500: 3 x 50, 1500-1700: 200, 2000-2200: 200
    assert replica_seconds(REPLICAS, 1450.0, 2200.0) == (550.0, 1450.0)
    # Ending inside a segment: 1100-1400: 300, 1400-1450: 150
    assert replica_seconds(REPLICAS, 1000.0, 1450.0) == (450.0, 1000.0)


def test_time_before_the_first_point_is_not_counted_as_zero() -> None:
    used, covered_from = replica_seconds(REPLICAS, 500.0, 1200.0)
    assert (used, covered_from) == (100.0, 1000.0)
    cost = route_cost(HELLO, 500.0, 1200.0, PRICES)
    assert cost.observed_seconds == 200.0
    assert cost.at_min.replica_seconds == 200.0  # the baseline covers the same 200 s
    assert cost.at_max.replica_seconds == 800.0


def test_empty_or_inverted_periods_cost_nothing() -> None:
    assert replica_seconds([], 0.0, 10.0) == (0.0, 10.0)
    assert replica_seconds(REPLICAS, 10.0, 5.0) == (0.0, 5.0)
    assert replica_seconds(REPLICAS, 3000.0, 3000.0) == (0.0, 3000.0)
    later = [(5000.0, 2.0)]
    assert replica_seconds(later, 1000.0, 2000.0) == (0.0, 2000.0)


def test_route_cost_in_core_hours_gib_hours_and_money() -> None:
    cost = route_cost(HELLO, 1000.0, 2200.0, PRICES)
    # 1000 replica-seconds = 0.2777... replica-hours; x 0.5 core, x 1 GiB
    assert cost.used.replica_seconds == 1000.0
    assert cost.used.cpu_core_hours == pytest.approx(1000 / 3600 * 0.5)
    assert cost.used.gib_hours == pytest.approx(1000 / 3600)
    # 500 core-seconds x 0.001 + 1000 GiB-seconds x 0.0001 = 0.5 + 0.1
    assert cost.used.cost == pytest.approx(0.6)
    assert cost.mean_replicas == pytest.approx(1000 / 1200)
    # Always on at max(min 0, 1) = 1 replica for 1200 s: 0.6 + 0.12
    assert cost.at_min.replica_seconds == 1200.0
    assert cost.at_min.cost == pytest.approx(0.72)
    # Always on at max 4 replicas: 4800 replica-seconds, 4 x 0.72
    assert cost.at_max.replica_seconds == 4800.0
    assert cost.at_max.cost == pytest.approx(2.88)


def test_cold_starts_in_the_period_with_nearest_rank_percentiles() -> None:
    cold = route_cost(HELLO, 1000.0, 2200.0, PRICES).cold_starts
    assert cold.count == 2  # 900 is before the period
    assert cold.p50 == 0.8  # rank ceil(0.5 x 2) = 1 of [0.8, 1.2]
    assert cold.p99 == 1.2  # rank ceil(0.99 x 2) = 2
    assert route_cost(HELLO, 1000.0, 2000.0, PRICES).cold_starts.count == 1  # end excluded


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([], 50) is None


def test_waits_measured_elsewhere_replace_per_cold_start_waits() -> None:
    summary = WaitSummary(0.4, 2.5, "held requests' wait")
    timeline = RouteTimeline("x", "ns/x", 1, 3, REPLICAS,
                             cold_starts=[(1100.0, None), (2000.0, None)],
                             requests=HELLO.requests, waits=summary)
    cold = route_cost(timeline, 1000.0, 2200.0, PRICES).cold_starts
    assert (cold.count, cold.p50, cold.p99, cold.basis) == (2, 0.4, 2.5, "held requests' wait")
    # min 1: the min baseline is 1 replica, whatever it costs
    assert route_cost(timeline, 1000.0, 2200.0, PRICES).at_min.replica_seconds == 1200.0


def test_totals_add_routes_up() -> None:
    other = RouteTimeline("api", "local/api", 2, 2, [(1000.0, 2.0)],
                          requests=Requests(1.0, 2.0, "test"))
    report = cost_report([HELLO, other], 1000.0, 2200.0, PRICES, "recorded")
    # api: 2 replicas x 1200 s = 2400 replica-seconds = 2/3 replica-hours;
    # 0.6667 core-h x 3.6 + 1.3333 GiB-h x 0.36 = 2.4 + 0.48
    assert report.routes[1].used.cost == pytest.approx(2.88)
    assert report.total_used.replica_seconds == 3400.0
    assert report.total_used.cost == pytest.approx(0.6 + 2.88)
    assert report.total_at_max.cost == pytest.approx(2.88 + 2.88)


def test_text_table_shows_the_numbers() -> None:
    other = RouteTimeline("api", "local/api", 2, 2, [(1000.0, 2.0)],
                          requests=Requests(1.0, 2.0, "test"))
    text = cost_text(cost_report([HELLO, other], 1000.0, 2200.0, PRICES, "recorded"))
    lines = text.splitlines()
    assert lines[1] == "period   1970-01-01 00:16:40Z .. 1970-01-01 00:36:40Z (20m0s)"
    assert lines[3] == "prices   3.6 EUR per core-hour, 0.36 EUR per GiB-hour"
    header = next(i for i, line in enumerate(lines) if line.startswith("ROUTE"))
    hello = lines[header + 1].split()
    # route, min-max, mean, replica-h, core-h, GiB-h, cost, at min, at max, saved (x%), ...
    assert hello[:10] == ["hello", "0-4", "0.83", "0.278", "0.139", "0.278", "0.60",
                          "0.72", "2.88", "2.28"]
    assert hello[10:] == ["(79%)", "2", "0.80s", "1.20s"]
    total = lines[header + 3].split()
    assert total[:3] == ["TOTAL", "0.944", "0.806"]  # 0.139 + 2/3 core-hours
    assert "hello: route local/hello, per replica 0.5 CPU and 1 GiB (test)" in text


def test_html_has_the_table_and_a_chart_per_route() -> None:
    html = cost_html(cost_report([HELLO], 1000.0, 2200.0, PRICES, "recorded <run>"))
    assert html.count("<svg") == 2  # the cost bars, hello's timeline
    assert 'data-series="replicas running"' in html
    assert 'data-series="always on at max (4)"' in html
    assert 'data-series="cold start wait (s)"' in html
    assert "recorded &lt;run&gt;" in html and "<run>" not in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")


def test_formats() -> None:
    assert format_duration(3725) == "1h2m5s"
    assert format_duration(90061) == "1d1h1m1s"
    assert format_duration(59.6) == "1m0s"
    assert format_money(1234.5) == "1,234"
    assert format_money(12.345) == "12.35"
    assert format_money(0.01234) == "0.0123"
    assert format_money(0.5, scale=2.88) == "0.50"  # a column's decimals follow its largest
