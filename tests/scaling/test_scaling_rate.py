"""RequestRate: pure arithmetic fed numbers, no event loop."""

from __future__ import annotations

import pytest

from httpscale.scaling.rate import RequestRate, counter_delta


def test_first_sight_is_a_baseline_not_a_burst() -> None:
    rate = RequestRate(window=10, granularity=1)
    rate.observe("a", 1_000_000, now=100.0)
    assert rate.rate(100.0) == 0.0
    rate.observe("a", 1_000_050, now=101.0)
    assert rate.total(101.0) == 50
    assert rate.rate(101.0) == pytest.approx(5.0)


def test_steady_rate_over_the_window() -> None:
    rate = RequestRate(window=10, granularity=1)
    count = 0
    for step in range(0, 31):  # 30 s at 20 req/s, observed every 0.5 s
        rate.observe("a", count, now=step * 0.5)
        count += 10
    # The window is full by now: 20 req/s on average.
    assert rate.rate(15.0) == pytest.approx(20.0, rel=0.06)


def test_sum_over_sources() -> None:
    rate = RequestRate(window=10, granularity=1)
    rate.observe("a", 0, now=0.0)
    rate.observe("b", 500, now=0.0)
    rate.observe("a", 30, now=1.0)
    rate.observe("b", 570, now=1.0)
    assert rate.total(1.0) == 100
    assert rate.rate(1.0) == pytest.approx(10.0)


def test_counter_reset_is_not_negative() -> None:
    assert counter_delta(100, 7) == 7
    assert counter_delta(100, 130) == 30
    rate = RequestRate(window=10, granularity=1)
    rate.observe("a", 1000, now=0.0)
    rate.observe("a", 1010, now=1.0)
    rate.observe("a", 4, now=2.0)  # restarted, counted 4 since
    assert rate.total(2.0) == 14
    assert rate.rate(2.0) >= 0


def test_old_buckets_leave_the_window() -> None:
    rate = RequestRate(window=5, granularity=1)
    rate.observe("a", 0, now=0.0)
    rate.observe("a", 100, now=0.5)
    assert rate.total(4.9) == 100
    assert rate.total(5.0) == 0  # bucket [0, 1) no longer overlaps (0, 5]
    assert rate.rate(60.0) == 0.0


def test_forget_makes_the_next_reading_a_first_sight() -> None:
    rate = RequestRate(window=10, granularity=1)
    rate.observe("a", 10, now=0.0)
    rate.observe("a", 20, now=1.0)
    rate.forget("a")
    assert rate.sources == frozenset()
    rate.observe("a", 5_000, now=2.0)  # back after a gap: no burst
    assert rate.total(2.0) == 10


def test_memory_is_bounded_by_the_window() -> None:
    rate = RequestRate(window=2, granularity=0.1)
    count = 0
    for i in range(10_000):
        count += 1
        rate.observe("a", count, now=i * 0.01)
    assert len(rate._buckets) <= 21


def test_granularity_buckets_coarse() -> None:
    rate = RequestRate(window=60, granularity=10)
    rate.observe("a", 0, now=0.0)
    rate.observe("a", 600, now=5.0)
    assert rate.rate(5.0) == pytest.approx(10.0)
    assert rate.rate(59.9) == pytest.approx(10.0)
    assert rate.rate(60.0) == 0.0


def test_clock_going_back_does_not_reorder() -> None:
    rate = RequestRate(window=10, granularity=1)
    rate.observe("a", 0, now=5.0)
    rate.observe("a", 10, now=6.0)
    rate.observe("b", 0, now=5.5)
    rate.observe("b", 10, now=5.2)  # stamped before the newest bucket
    assert rate.total(6.0) == 20


@pytest.mark.parametrize(("window", "granularity"), [(0, 1), (10, 0), (1, 2), (float("inf"), 1)])
def test_bad_parameters(window: float, granularity: float) -> None:
    with pytest.raises(ValueError):
        RequestRate(window, granularity)
