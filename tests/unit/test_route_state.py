"""RouteState is the interceptor's pure core for holding and balancing: fed endpoints and
requests, no sockets."""

from __future__ import annotations

import asyncio

from httpscale.interceptor.routes import EndpointSlot, RouteState
from httpscale.routing.spec import Endpoint, RouteSpec

A = Endpoint("127.0.0.1", 1)
B = Endpoint("127.0.0.1", 2)


class Waiter:
    def __init__(self) -> None:
        self.slot: EndpointSlot | None = None
        self.rejected: tuple[int, str] | None = None

    def assign(self, slot: EndpointSlot) -> None:
        self.slot = slot

    def reject(self, status: int, message: str) -> None:
        self.rejected = (status, message)


def _route(**kw: object) -> tuple[RouteState, list[str]]:
    woken: list[str] = []
    return RouteState(RouteSpec(key="ns/app", **kw), woken.append), woken  # type: ignore[arg-type]


def test_first_held_request_at_zero_wakes_once_and_is_released_in_order() -> None:
    route, woken = _route()
    waiters = [Waiter() for _ in range(3)]
    assert route.try_acquire() is None
    for w in waiters:
        assert route.hold(w)
    assert woken == ["ns/app"]
    route.set_endpoints([A])
    assert [w.slot.endpoint for w in waiters if w.slot] == [A, A, A]
    assert route.held == 0
    assert route.in_flight(A) == 3


def test_hold_queue_is_bounded() -> None:
    route, _ = _route(max_pending_requests=2)
    assert route.hold(Waiter()) and route.hold(Waiter())
    assert not route.hold(Waiter())
    assert route.held == 2


def test_unhold_removes_a_waiter_so_it_is_never_assigned() -> None:
    route, _ = _route()
    gone, stays = Waiter(), Waiter()
    route.hold(gone)
    route.hold(stays)
    assert route.unhold(gone)
    assert not route.unhold(gone)
    route.set_endpoints([A])
    assert gone.slot is None and stays.slot is not None


def test_two_choices_prefer_the_endpoint_with_fewer_outstanding() -> None:
    route, _ = _route()
    route.set_endpoints([A, B])
    busy = route.try_acquire()
    assert busy is not None
    # With two endpoints both are always compared: the idle one wins every time.
    for _ in range(20):
        slot = route.try_acquire()
        assert slot is not None and slot.endpoint != busy.endpoint
        route.release(slot)


def test_per_endpoint_cap_queues_and_a_release_dispatches() -> None:
    route, woken = _route(max_concurrency_per_endpoint=1)
    route.set_endpoints([A])
    first = route.try_acquire()
    assert first is not None
    assert route.try_acquire() is None
    w = Waiter()
    route.hold(w)
    assert woken == []  # not at zero: holding for capacity is no cold start
    route.release(first)
    assert w.slot is not None and w.slot.endpoint == A


async def test_removed_endpoint_drains_and_wait_idle_returns_after_its_last_request() -> None:
    route, _ = _route()
    route.set_endpoints([A])
    slot = route.try_acquire()
    assert slot is not None
    route.set_endpoints([B])
    assert route.in_flight(A) == 1
    idle = asyncio.ensure_future(route.wait_idle(A))
    await asyncio.sleep(0)
    assert not idle.done()
    nxt = route.try_acquire()
    assert nxt is not None and nxt.endpoint == B  # no new request for the leaving endpoint
    route.release(slot)
    await asyncio.wait_for(idle, 1)
    assert route.in_flight(A) == 0
