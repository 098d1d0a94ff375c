"""RouteState is the interceptor's pure core for holding and balancing: fed endpoints and
requests, no sockets."""

from __future__ import annotations

import asyncio

from httpscale.interceptor.routes import EndpointSlot, RouteState
from httpscale.interceptor.upstream import EndpointPool, PoolLimits
from httpscale.routing.spec import CannedResponse, Endpoint, RouteSpec

A = Endpoint("127.0.0.1", 1)
B = Endpoint("127.0.0.1", 2)
C = Endpoint("127.0.0.1", 3)
LIMITS = PoolLimits(max_idle=4, max_total=8, max_connecting=2, idle_timeout=5.0,
                    connect_timeout=1.0, write_high_water=65536, write_low_water=16384,
                    max_head=65536)


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


def test_only_routes_with_a_canned_answer_or_a_request_timeout_are_special() -> None:
    assert not _route()[0].special
    assert _route(request_timeout=5.0)[0].special
    assert _route(canned=CannedResponse())[0].special
    route, _ = _route()
    route.use_spec(RouteSpec(key="ns/app", request_timeout=1.0))
    assert route.special and route.request_timeout == 1.0
    route.use_spec(RouteSpec(key="ns/app"))
    assert not route.special and route.request_timeout is None


def test_fallback_picks_the_least_loaded_then_the_static_one() -> None:
    route, _ = _route(fallback=C)
    assert route.has_fallback
    only = route.pick_fallback(())
    assert only is not None and only.endpoint == C
    route.set_fallback_endpoints([A, B])
    first = route.pick_fallback(())
    second = route.pick_fallback(())
    assert first is not None and second is not None
    assert {first.endpoint, second.endpoint} == {A, B}, "least outstanding: one on each"
    third = route.pick_fallback(exclude={A, B})
    assert third is not None and third.endpoint == C, "all live ones tried: the static one"
    assert route.pick_fallback(exclude={A, B, C}) is None
    route.release(first)
    again = route.pick_fallback(())
    assert again is first
    assert route.pool_endpoints() == {A, B, C}


def test_fallback_slots_survive_an_update_that_keeps_them() -> None:
    route, _ = _route()
    assert not route.has_fallback and route.pick_fallback(()) is None
    route.set_fallback_endpoints([A])
    slot = route.pick_fallback(())
    route.set_fallback_endpoints([A, B])
    assert route.fallbacks[A] is slot and slot is not None and slot.in_flight == 1
    route.set_fallback_endpoints([])
    assert route.pool_endpoints() == set()


def test_release_of_a_fallback_slot_leaves_a_draining_endpoint_of_that_address() -> None:
    route, _ = _route()
    route.set_endpoints([A])
    busy = route.try_acquire()
    route.set_endpoints([])  # A drains with one request in flight
    route.set_fallback_endpoints([A])
    fb = route.pick_fallback(())
    assert fb is not None and fb is not busy
    route.release(fb)
    assert route.in_flight(A) == 1, "the draining slot is still there"


async def test_leaving_endpoints_forget_their_cached_pool() -> None:
    route, _ = _route()
    route.set_endpoints([A])
    slot = route.endpoints[A]
    slot.pool = EndpointPool(A, LIMITS)
    route.set_endpoints([B])
    assert slot.pool is None
