"""The pure scaling policy, fed numbers and times (no loop, no processes)."""

from __future__ import annotations

import pytest

from httpscale.local.policy import Policy, ScalingParams


def params(**kw: float) -> ScalingParams:
    base: dict[str, float] = dict(
        min_replicas=0, max_replicas=5, target=10, scaledown_period=30, stabilization_window=20
    )
    base.update(kw)
    return ScalingParams(**base)  # type: ignore[arg-type]


def test_wake_from_zero_starts_floor_once() -> None:
    p = Policy(params(), now=0)
    assert p.wake(1.0, current=0) == (1, "request while at zero")
    assert p.wake(1.1, current=1) is None  # already active: nothing to do
    p2 = Policy(params(min_replicas=2), now=0)
    decision = p2.wake(1.0, current=0)
    assert decision is not None and decision.desired == 2


def test_scale_up_is_immediate_and_capped() -> None:
    p = Policy(params(), now=0)
    assert p.evaluate(1, current=1, metric=35, active=True).desired == 4
    assert p.evaluate(2, current=4, metric=500, active=True).desired == 5  # max
    assert p.evaluate(3, current=5, metric=500, active=True).reason == "steady"


def test_tolerance_dead_band() -> None:
    p = Policy(params(), now=0)
    # 21 / (10 * 2) = 1.05: within 10 %, stay at 2 instead of going to 3.
    assert p.evaluate(1, current=2, metric=21, active=True).desired == 2
    assert p.evaluate(2, current=2, metric=25, active=True).desired == 3


def test_scale_down_waits_for_stabilization_window() -> None:
    p = Policy(params(), now=0)
    assert p.evaluate(0, current=1, metric=40, active=True).desired == 4
    # Load drops: the recommendation of 4 from t=0 holds until it leaves the 20 s window.
    for t in (1, 5, 10, 19.5):
        assert p.evaluate(t, current=4, metric=5, active=True).desired == 4
    decision = p.evaluate(20.5, current=4, metric=5, active=True)
    assert decision.desired == 1
    assert decision.reason == "metric 5 / target 10, stable for 20s"


def test_scale_down_goes_to_highest_recent_recommendation() -> None:
    p = Policy(params(), now=0)
    p.evaluate(0, current=1, metric=50, active=True)  # 5
    p.evaluate(10, current=5, metric=30, active=True)  # 3 recommended, 5 held
    assert p.evaluate(21, current=5, metric=10, active=True).desired == 3


def test_to_zero_only_after_scaledown_period_of_no_activity() -> None:
    p = Policy(params(scaledown_period=30), now=0)
    p.wake(0, current=0)
    assert p.evaluate(10, current=1, metric=0, active=True).desired == 1  # a request came
    assert p.evaluate(39.9, current=1, metric=0, active=False).desired == 1
    decision = p.evaluate(40, current=1, metric=0, active=False)
    assert decision.desired == 0
    assert decision.reason == "no traffic for 30.0s"
    assert p.evaluate(41, current=0, metric=0, active=False).desired == 0


def test_in_flight_request_keeps_it_up() -> None:
    p = Policy(params(scaledown_period=5), now=0)
    # A long request: concurrency 1 means active even without new requests.
    for t in range(1, 20):
        assert p.evaluate(t, current=1, metric=1, active=True).desired == 1


def test_min_replicas_never_zero_and_started_at_once() -> None:
    p = Policy(params(min_replicas=2, scaledown_period=1), now=0)
    assert p.evaluate(0, current=0, metric=0, active=False).desired == 2
    assert p.evaluate(100, current=2, metric=0, active=False).desired == 2


def test_activity_while_at_zero_activates() -> None:
    p = Policy(params(), now=0)
    assert p.evaluate(1, current=0, metric=3, active=True).desired == 1


def test_bad_params_refused() -> None:
    with pytest.raises(ValueError):
        ScalingParams(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError):
        ScalingParams(target=0)
