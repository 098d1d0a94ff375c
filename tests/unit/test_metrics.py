"""The interceptor's request counters against a plain Counter, in any interleaving.

The hot path keeps a run of same-keyed requests (and of durations in one bucket) in a native
integer and folds it into the per-key dict (the bucket list) only when the key changes;
whatever the order, a scrape must see every request.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from httpscale.interceptor.counters import DURATION_BUCKETS, Histogram
from httpscale.interceptor.metrics import InterceptorMetrics

_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE", b"BREW"]


def _scraped(metrics: InterceptorMetrics) -> Counter[tuple[str, str, str]]:
    out: Counter[tuple[str, str, str]] = Counter()
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            if sample.name == "httpscale_requests_total":
                labels = sample.labels
                out[(labels["route"], labels["method"], labels["status"])] += int(sample.value)
    return out


@pytest.mark.parametrize("seed", range(10))
def test_request_counts_exact_in_any_order(seed: int) -> None:
    rng = random.Random(seed)
    metrics = InterceptorMetrics(lambda: (), lambda: 0)
    routes = ["default/a", "default/b", ""]
    expected: Counter[tuple[str, str, str]] = Counter()
    for round_ in range(5):
        for _ in range(rng.randint(0, 300)):
            # Mostly runs of one key, as real traffic is, with switches in between.
            route = rng.choice(routes) if rng.random() < 0.2 else routes[0]
            method = rng.choice(_METHODS) if rng.random() < 0.2 else b"GET"
            status = rng.choice([200, 404, 502, 499]) if rng.random() < 0.2 else 200
            metrics.request(metrics.route_stats(route), method, status, rng.random() / 10)
            name = method.decode() if method != b"BREW" else "other"
            expected[(route, name, str(status))] += 1
        assert _scraped(metrics) == expected, f"after round {round_}"
        by_status = Counter[int]()
        for (_, _, status), n in expected.items():
            by_status[int(status)] += n
        assert metrics.requests_by_status() == dict(by_status)


@pytest.mark.parametrize("seed", range(10))
def test_histogram_exact_in_any_order(seed: int) -> None:
    """The hot path keeps a run of values in the same bucket in a native counter; buckets,
    count and total read at any time must match a plain reference count."""
    rng = random.Random(seed)
    hist = Histogram(DURATION_BUCKETS)
    expected = [0] * (len(DURATION_BUCKETS) + 1)
    total = 0.0
    for round_ in range(5):
        for _ in range(rng.randint(0, 300)):
            # Runs in one bucket, as real traffic is, with jumps to any bucket (and past all),
            # to a bound itself (it counts in the bucket it bounds: `le`) and to zero.
            pick = rng.random()
            if pick < 0.6:
                value = rng.choice([0.001, 0.002])
            elif pick < 0.8:
                value = rng.choice([0.0, *DURATION_BUCKETS])
            else:
                value = rng.random() * 80
            hist.observe(value)
            expected[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
            total += value
        cumulative = list(itertools.accumulate(expected))
        assert [n for _, n in hist.buckets()] == cumulative, f"after round {round_}"
        assert [le for le, _ in hist.buckets()] == [repr(b) for b in DURATION_BUCKETS] + ["+Inf"]
        assert hist.count() == sum(expected)
        assert hist.total == pytest.approx(total)
