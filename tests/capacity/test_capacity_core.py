"""The capacity finder's pure parts: rules, search, arithmetic, URL, wire and output formats."""

from __future__ import annotations

import json
import math

import pytest

from httpscale.capacity.core import Finder, Judged, KneeRules, StepPlan, StepStats, Verdict, judge
from httpscale.capacity.outcome import Outcome, format_text, to_json
from httpscale.capacity.recommend import recommend
from httpscale.capacity.target import TargetError, parse_url, route_for
from httpscale.capacity.wire import LoadSpec, judged_from_json, judged_to_json
from httpscale.routing.spec import RouteMatch


def stats(users: int, rps: float, mean: float = 0.05, p99: float | None = None,
          failures: int = 0, cpu: float = 0.05) -> StepStats:
    seconds = 10.0
    requests = round(rps * seconds)
    return StepStats(users, seconds, requests, failures, mean, mean, p99 or mean, cpu)


def worker_pool(users: int, slots: int = 8, service: float = 0.05) -> StepStats:
    """What closed-loop users measure against `slots` workers of fixed service time."""
    rps = min(users, slots) / service
    return stats(users, rps, mean=users / rps)


def run(finder: Finder, app: object) -> list[int]:
    tried = []
    while (users := finder.next_users()) is not None:
        tried.append(users)
        finder.record(app(users))  # type: ignore[operator]
    return tried


# -- rules --------------------------------------------------------------------------------------


def test_rules_in_order_errors_before_slo_before_flat() -> None:
    rules = KneeRules(slo_p99=0.2, error_budget=0.01)
    good = stats(4, 80)
    assert judge(stats(8, 0), good, rules)[0] is Verdict.EMPTY
    verdict, reason = judge(stats(8, 100, p99=0.5, failures=20), good, rules)
    assert verdict is Verdict.ERRORS and reason.startswith("errors 2% above the budget 1%")
    verdict, reason = judge(stats(8, 160, p99=0.5), good, rules)
    assert (verdict, reason) == (Verdict.SLO, "p99 500ms above the SLO 200ms")
    verdict, reason = judge(stats(8, 100), good, rules)
    assert verdict is Verdict.FLAT
    assert reason == "throughput no longer rising: 4 -> 8 users (+100.0%) gave +25.0% requests/s"
    assert judge(stats(8, 160), good, rules) == (Verdict.OK, "ok")
    # Exactly at the budget and the SLO still serves; no SLO rule at all when None.
    assert judge(stats(8, 160, p99=0.2, failures=16), good, rules)[0] is Verdict.OK
    assert judge(stats(8, 160, p99=9.0), good, KneeRules(slo_p99=None))[0] is Verdict.OK


def test_flat_is_efficiency_of_the_added_users() -> None:
    rules = KneeRules(min_efficiency=0.5)
    good = stats(8, 160)
    assert judge(stats(12, 200), good, rules)[0] is Verdict.OK  # +50% users, +25%: exactly half
    assert judge(stats(12, 199), good, rules)[0] is Verdict.FLAT
    assert judge(stats(12, 150), good, rules)[0] is Verdict.FLAT  # falling is flat too


def test_a_saturated_generator_stops_the_search_without_a_knee() -> None:
    finder = Finder(StepPlan(), KneeRules(max_generator_cpu=0.9))
    assert finder.next_users() == 1
    finder.record(stats(1, 1000, mean=0.001))
    assert finder.next_users() == 2
    step = finder.record(stats(2, 1100, mean=0.001, cpu=0.95))
    assert step.verdict is Verdict.GENERATOR
    assert finder.next_users() is None and finder.stopped == "load generator saturated"
    knee, limit = finder.steps[0], None
    assert Outcome("u", "h", {}, 1, KneeRules(), 0.25, finder.steps, "x").knee == knee
    assert Outcome("u", "h", {}, 1, KneeRules(), 0.25, finder.steps, "x").limit is limit


# -- search -------------------------------------------------------------------------------------


def test_search_climbs_then_bisects_to_the_saturation_point() -> None:
    finder = Finder(StepPlan(growth=1.5, resolution=0.15))
    assert run(finder, worker_pool) == [1, 2, 3, 5, 8, 12, 10, 9]
    assert finder.stopped == "knee"
    outcome = Outcome("u", "h", {}, 1, finder.rules, 0.25, finder.steps, finder.stopped)
    assert outcome.knee is not None and outcome.knee.stats.users == 8
    assert outcome.limit is not None and outcome.limit.stats.users == 9
    assert outcome.knee_reached


@pytest.mark.parametrize("slots", [3, 7, 10, 16, 40, 100])
def test_knee_lands_within_one_growth_step_of_any_capacity(slots: int) -> None:
    finder = Finder(StepPlan(max_users=500))
    run(finder, lambda u: worker_pool(u, slots=slots))
    outcome = Outcome("u", "h", {}, 1, finder.rules, 0.25, finder.steps, finder.stopped)
    assert outcome.knee is not None
    knee = outcome.knee.stats
    # Bisection stops within `resolution` of the saturation point, on the side of the midpoint
    # rule: the knee's throughput and concurrency are within 20% of the truth.
    assert abs(knee.rps / (slots / 0.05) - 1) <= 0.2, [s.stats.users for s in finder.steps]
    assert abs(knee.concurrency / slots - 1) <= 0.2


def test_slo_bound_knee() -> None:
    # Latency grows slowly with load (50 ms + 1 ms per user), so throughput keeps rising;
    # with an SLO of 70 ms the knee is at 20 users (p99 at the SLO still meets it).
    def app(users: int) -> StepStats:
        latency = 0.05 + 0.001 * users
        return stats(users, users / latency, mean=latency, p99=latency)

    finder = Finder(rules=KneeRules(slo_p99=0.07))
    assert run(finder, app) == [1, 2, 3, 5, 8, 12, 18, 27, 22, 20]
    outcome = Outcome("u", "h", {}, 1, finder.rules, 0.25, finder.steps, finder.stopped)
    assert outcome.knee is not None and outcome.knee.stats.users == 20
    assert outcome.limit is not None and outcome.limit.verdict is Verdict.SLO


def test_first_step_bad_means_no_knee() -> None:
    finder = Finder(rules=KneeRules(slo_p99=0.1))
    assert run(finder, lambda u: stats(u, 2, mean=0.5, p99=0.5)) == [1]
    assert finder.stopped == "no step met the rules"
    outcome = Outcome("u", "local app x", {}, 1, finder.rules, 0.25, finder.steps, "x")
    assert outcome.knee is None and outcome.recommendation is None
    doc = to_json(outcome)
    assert doc["knee_rps"] is None and doc["recommended"] is None
    assert "no step met the rules: nothing to recommend" in format_text(outcome)


def test_bounds_stop_the_search_with_the_knee_not_reached() -> None:
    finder = Finder(StepPlan(max_users=20))
    assert run(finder, lambda u: worker_pool(u, slots=1000)) == [1, 2, 3, 5, 8, 12, 18, 20]
    assert finder.stopped == "max users"
    finder = Finder(StepPlan(max_steps=3))
    assert run(finder, worker_pool) == [1, 2, 3]
    assert finder.stopped == "max steps"
    outcome = Outcome("u", "h", {}, 1, finder.rules, 0.25, finder.steps, finder.stopped)
    assert not outcome.knee_reached and outcome.knee is not None
    assert "knee NOT reached" in format_text(outcome)
    finder = Finder()
    finder.stop("interrupted")
    assert finder.next_users() is None and finder.stopped == "interrupted"


def test_plan_is_validated() -> None:
    with pytest.raises(ValueError):
        StepPlan(growth=1.0)
    with pytest.raises(ValueError):
        StepPlan(start_users=0)


# -- arithmetic ---------------------------------------------------------------------------------


def test_recommendation_arithmetic_and_yaml() -> None:
    knee = stats(8, 157.9, mean=0.052)  # 8.2108 in flight
    rec = recommend(knee, replicas=1, headroom=0.25)
    assert rec.concurrency.value == round(157.9 * 0.052 * 0.75) == 6
    assert rec.request_rate.value == round(157.9 * 0.75) == 118
    assert rec.concurrency.arithmetic() == (
        "8.211 in flight x (1 - 0.25) = 6.158 -> 6 (headroom used: 26.9%)"
    )
    assert rec.request_rate.arithmetic() == (
        "157.9 requests/s x (1 - 0.25) = 118.4 -> 118 (headroom used: 25.3%)"
    )
    assert rec.yaml().splitlines() == [
        "scalingMetric:", "  concurrency:", "    targetValue: 6", "# or", "scalingMetric:",
        "  requestRate:", "    targetValue: 118", "    window: 1m", "    granularity: 1s",
    ]


def test_recommendation_is_per_replica_and_at_least_one() -> None:
    rec = recommend(stats(16, 320, mean=0.05), replicas=2, headroom=0.2)
    assert rec.request_rate.per_replica == 160
    assert rec.request_rate.value == 128 and rec.concurrency.value == 6  # 16/2 x 0.8 = 6.4
    assert rec.request_rate.arithmetic().startswith("320 requests/s / 2 replicas = 160 x ")
    tiny = recommend(stats(1, 1, mean=0.5), replicas=1, headroom=0.25)
    assert tiny.concurrency.value == 1 and tiny.request_rate.value == 1
    with pytest.raises(ValueError):
        recommend(stats(1, 1), replicas=1, headroom=1.0)


def test_json_output_has_the_documented_keys() -> None:
    finder = Finder()
    run(finder, worker_pool)
    outcome = Outcome(
        "http://a.localhost:8080/", "local app a", {"mode": "local", "app": "a"}, 1,
        finder.rules, 0.25, finder.steps, finder.stopped, report="/tmp/r.html",
    )
    doc = json.loads(json.dumps(to_json(outcome)))
    assert doc["knee_rps"] == pytest.approx(160) and doc["knee_concurrency"] == pytest.approx(8)
    assert doc["recommended"] == {"concurrency": 6, "requestRate": 120}
    assert doc["knee_reached"] is True and doc["stopped"] == "knee"
    assert [s["users"] for s in doc["steps"]] == [1, 2, 3, 5, 8, 12, 10, 9]
    assert doc["knee"]["users"] == 8 and doc["limit"]["users"] == 9
    assert doc["arithmetic"]["concurrency"].endswith("-> 6 (headroom used: 25.0%)")
    text = format_text(outcome)
    assert "knee: step 5, 8 users (step 8, 9 users: throughput no longer rising" in text
    assert "targetValue: 120" in text and "report: /tmp/r.html" in text


# -- URL, routes, wire --------------------------------------------------------------------------


def test_parse_url() -> None:
    t = parse_url("http://hello.localhost:8080/a/b?x=1")
    assert (t.base_url, t.path, t.host_header, t.route_path) == (
        "http://127.0.0.1:8080", "/a/b?x=1", "hello.localhost:8080", "/a/b"
    )
    t = parse_url("https://app.example.com")
    assert (t.base_url, t.path, t.host_header) == ("https://app.example.com:443", "/",
                                                   "app.example.com")
    t = parse_url("http://127.0.0.1:8080/", host_header="hello.localhost")
    assert (t.base_url, t.host_header) == ("http://127.0.0.1:8080", "hello.localhost")
    assert parse_url("http://[::1]:81/").base_url == "http://[::1]:81"
    for bad, why in [
        ("hello.localhost:8080", "must start with http"),
        ("ftp://x/", "must start with http"),
        ("http:///x", "no host"),
        ("http://x:99999/", "bad URL"),
        ("http://u:p@x/", "credentials"),
    ]:
        with pytest.raises(TargetError, match=why):
            parse_url(bad)


def test_route_for_uses_the_interceptors_rules() -> None:
    routes = [
        (RouteMatch(hosts=("*.localhost",)), "wild"),
        (RouteMatch(hosts=("hello.localhost",), path_prefixes=("/api",)), "api"),
        (RouteMatch(hosts=("hello.localhost",)), "hello"),
    ]
    assert route_for(routes, parse_url("http://hello.localhost:8080/api/x")) == "api"
    assert route_for(routes, parse_url("http://hello.localhost:8080/apix")) == "hello"
    assert route_for(routes, parse_url("http://other.localhost/")) == "wild"
    assert route_for(routes, parse_url("http://example.com/")) is None


def test_wire_round_trips() -> None:
    spec = LoadSpec("http://127.0.0.1:1", "/", "h", plan=StepPlan(max_users=7), report="/r")
    assert LoadSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    step = Judged(3, stats(5, 99.5, failures=2), Verdict.ERRORS, "why")
    assert judged_from_json(json.loads(json.dumps(judged_to_json(step)))) == step


def test_littles_law() -> None:
    s = stats(10, 200, mean=0.04)
    assert math.isclose(s.concurrency, 8.0) and math.isclose(s.rps, 200)
