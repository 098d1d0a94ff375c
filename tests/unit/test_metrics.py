"""The interceptor's request counters against a plain Counter, in any interleaving.

The hot path keeps a run of same-keyed requests in a native integer and folds it into the
per-key dict only when the key changes; whatever the order, a scrape must see every request.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

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
            metrics.request(route, method, status, rng.random() / 10)
            name = method.decode() if method != b"BREW" else "other"
            expected[(route, name, str(status))] += 1
        assert _scraped(metrics) == expected, f"after round {round_}"
        by_status = Counter[int]()
        for (_, _, status), n in expected.items():
            by_status[int(status)] += n
        assert metrics.requests_by_status() == dict(by_status)
