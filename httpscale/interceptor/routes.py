"""Live state of each route: counters, ready endpoints, the hold queue and load balancing.

Rules kept here, so that every path through the proxy obeys them:
- `concurrency` counts a request from its arrival to its end, held or in flight; `request_count`
  only grows. The Exchange updates both (inline, on the hot path) and ends every admitted
  request exactly once.
- A request with no usable endpoint waits in `waiters` (FIFO, bounded by max_pending_requests).
  It is released by an event: endpoints appearing, or an endpoint slot freeing up. Nothing polls.
- Picking an endpoint is "power of two choices" on outstanding requests, skipping endpoints at
  their per-endpoint cap. An endpoint that leaves the ready set takes no new request; its
  in-flight ones finish, and `wait_idle` lets a scaler stop it once they have.
- Fallback endpoints (`set_fallback_endpoints`, the failover Service's ready pods) take only
  held requests whose failover time came: the least loaded of them, else the spec's static
  `fallback`.
- A slot's cached pool is dropped when its endpoint leaves the route: the pool may then be
  retired (`upstream.Pools`), and a slot that comes back looks its pool up again.

What a request reads here is kept few objects deep (a single endpoint in `_only`, the held
count and a slot's `draining` as native fields, the counters in `stats`): behind an Ingress
with thousands of hosts, each route's state is cold in the CPU's caches when its request comes,
and every further object reached is one more cache miss (counters.py says more).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Final, Protocol

from httpscale.interceptor.counters import RouteRequests
from httpscale.routing.spec import CannedResponse, Endpoint, RouteSpec

if TYPE_CHECKING:
    from httpscale.interceptor.upstream import EndpointPool

__all__ = ["EndpointSlot", "RouteState", "Waiter"]

_DISPATCH_BATCH: Final = 64  # held requests handed an endpoint per loop turn


class EndpointSlot:
    """One endpoint as seen by one route: its in-flight count and when it became ready."""

    __slots__ = ("draining", "endpoint", "idle_event", "in_flight", "pool", "ready_since", "static")

    def __init__(self, endpoint: Endpoint, *, static: bool) -> None:
        # The fields a request reads first: compiled, they are laid out in this order, so
        # these share the object's first cache line (see the module's docstring).
        self.in_flight = 0
        self.draining = False  # in its route's `draining`: its last release must be seen
        self.idle_event: asyncio.Event | None = None  # made only when someone waits
        self.pool: EndpointPool | None = None  # the connection pool, cached by the proxy
        self.endpoint = endpoint
        self.ready_since = time.monotonic()
        self.static = static


class Waiter(Protocol):
    """A held request. `assign` hands it an endpoint slot already counted as in flight."""

    def assign(self, slot: EndpointSlot) -> None: ...

    def reject(self, status: int, message: str) -> None: ...


class RouteState:
    __slots__ = (
        "_choices",
        "_dispatch_pending",
        "_on_wake",
        "_only",
        "_static_fallback",
        "canned",
        "cap",
        "concurrency",
        "draining",
        "endpoints",
        "fallbacks",
        "held",
        "http2",
        "key",
        "request_count",
        "request_timeout",
        "response_header_timeout",
        "spec",
        "special",
        "stats",
        "waiters",
    )

    def __init__(self, spec: RouteSpec, on_wake: Callable[[str], None],
                 stats: RouteRequests | None = None) -> None:
        # The fields a request reads come first: compiled, they are laid out in the order
        # first assigned here, so these share the object's first cache lines (see above).
        self.concurrency = 0
        self.request_count = 0
        self.held = 0  # len(waiters), as a native field
        self.special = False  # (set by use_spec below, as is cap)
        self.cap: int | None = None
        self.response_header_timeout: float | None = None
        self._only: EndpointSlot | None = None  # the endpoint when there is exactly one
        # Its request counts (metrics.py reads them): given, so that they outlive the state.
        self.stats = stats if stats is not None else RouteRequests()
        self.key = spec.key
        self._static_fallback: EndpointSlot | None = None
        self.endpoints: dict[Endpoint, EndpointSlot] = {}
        self.draining: dict[Endpoint, EndpointSlot] = {}
        self.fallbacks: dict[Endpoint, EndpointSlot] = {}  # live fallback endpoints
        self.http2 = False
        self.use_spec(spec)
        self.waiters: dict[Waiter, None] = {}  # insertion-ordered set: FIFO with O(1) removal
        self._choices: list[EndpointSlot] = []
        self._dispatch_pending = False
        self._on_wake = on_wake
        if spec.static_endpoints is not None:
            self.set_endpoints(spec.static_endpoints, static=True)

    def use_spec(self, spec: RouteSpec) -> None:
        """Take `spec` (a changed route keeps its state: counters, endpoints, waiters)."""
        self.spec = spec
        # Copied out of the spec, a plain Python object whose attributes cost a lookup by
        # name from compiled code: these two are read per request.
        self.cap = spec.max_concurrency_per_endpoint
        self.response_header_timeout = spec.response_header_timeout
        self.canned: CannedResponse | None = spec.canned
        self.request_timeout: float | None = spec.request_timeout
        # HTTP/2 toward the app (h2c/h2): an HTTP/1.1 client's request is bridged to it. Its
        # slots cache no HTTP/1.1 pool (`Exchange._use` relies on it): dropped on a change.
        http2 = spec.upstream_scheme in ("h2c", "h2")
        if http2 != self.http2:
            for slot in (*self.endpoints.values(), *self.draining.values(),
                         *self.fallbacks.values(), self._static_fallback):
                if slot is not None:
                    slot.pool = None
        self.http2 = http2
        # Read per request: a route with neither a canned answer, a request timeout nor an
        # HTTP/2 upstream (nearly every one) pays this one test and nothing else for them.
        self.special = spec.canned is not None or spec.request_timeout is not None or http2
        static = self._static_fallback
        if spec.fallback is None:
            self._static_fallback = None
        elif static is None or static.endpoint != spec.fallback:
            self._static_fallback = EndpointSlot(spec.fallback, static=True)
        if static is not None and static is not self._static_fallback:
            static.pool = None

    # -- endpoints -------------------------------------------------------------------------

    def set_endpoints(self, endpoints: Iterable[Endpoint], *, static: bool = False) -> None:
        new = set(endpoints)
        for ep in list(self.endpoints):
            if ep not in new:
                slot = self.endpoints.pop(ep)
                slot.pool = None
                if slot.in_flight:
                    self.draining[ep] = slot
                    slot.draining = True
                elif slot.idle_event is not None:
                    slot.idle_event.set()
        for ep in new:
            if ep not in self.endpoints:
                # An endpoint that comes back while still draining keeps its in-flight count.
                back = self.draining.pop(ep, None)
                slot = back if back is not None else EndpointSlot(ep, static=static)
                slot.draining = False
                slot.ready_since = time.monotonic()
                self.endpoints[ep] = slot
        self._choices = list(self.endpoints.values())
        self._only = self._choices[0] if len(self._choices) == 1 else None
        self._dispatch()

    def set_fallback_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace where held requests fail over to; requests already there finish."""
        old = self.fallbacks
        new: dict[Endpoint, EndpointSlot] = {}
        for ep in endpoints:
            slot = old.get(ep)
            new[ep] = slot if slot is not None else EndpointSlot(ep, static=False)
        for ep, slot in old.items():
            if ep not in new:
                slot.pool = None
        self.fallbacks = new

    @property
    def has_fallback(self) -> bool:
        """A held request past its failover time has somewhere to go now."""
        return bool(self.fallbacks) or self._static_fallback is not None

    def pick_fallback(self, exclude: Collection[object]) -> EndpointSlot | None:
        """A slot for a held request whose failover time came, counted as in flight: the
        live fallback endpoint with the fewest requests outstanding (ties at random), else
        the spec's static `fallback`; never one in `exclude` (tried already). None: nowhere."""
        choices = [s for s in self.fallbacks.values() if s.endpoint not in exclude]
        slot: EndpointSlot | None
        if choices:
            least = min(s.in_flight for s in choices)
            slot = random.choice([s for s in choices if s.in_flight == least])
        else:
            slot = self._static_fallback
            if slot is None or slot.endpoint in exclude:
                return None
        slot.in_flight += 1
        return slot

    def pool_endpoints(self) -> set[Endpoint]:
        """Every endpoint this route may open connections to now: ready ones (static ones
        included), fallback ones and the static fallback. (Draining endpoints are not: their
        pools finish what is under way and are then dropped, see `upstream.Pools`.)"""
        out = set(self.endpoints)
        out.update(self.fallbacks)
        if self._static_fallback is not None:
            out.add(self._static_fallback.endpoint)
        return out

    def in_flight(self, endpoint: Endpoint) -> int:
        slot = self.endpoints.get(endpoint) or self.draining.get(endpoint)
        return slot.in_flight if slot is not None else 0

    async def wait_idle(self, endpoint: Endpoint) -> None:
        slot = self.endpoints.get(endpoint) or self.draining.get(endpoint)
        if slot is None or slot.in_flight == 0:
            return
        if slot.idle_event is None:
            slot.idle_event = asyncio.Event()
        await slot.idle_event.wait()

    # -- admission and holding -------------------------------------------------------------

    @property
    def at_zero(self) -> bool:
        return not self.endpoints

    def wake(self) -> None:
        """Tell the wake listeners this route is wanted (it is at zero)."""
        self._on_wake(self.key)

    def pick(self, exclude: Collection[object]) -> EndpointSlot | None:
        """An endpoint slot for a retry, avoiding endpoints that already failed this request."""
        if not exclude:
            return self._pick()
        choices = [s for s in self._choices if s.endpoint not in exclude]
        cap = self.cap
        if not choices:
            return None
        slot = min(choices, key=_in_flight)
        if cap is not None and slot.in_flight >= cap:
            return None
        slot.in_flight += 1
        return slot

    def try_acquire(self) -> EndpointSlot | None:
        """An endpoint slot for a new request, counted as in flight; None: hold or refuse."""
        if self.held:  # FIFO: nobody overtakes a held request
            return None
        return self._pick()

    def hold(self, waiter: Waiter) -> bool:
        """Queue a request; False when the hold queue is full (the caller answers 503)."""
        if self.held >= self.spec.max_pending_requests:
            return False
        first = not self.held
        self.waiters[waiter] = None
        self.held += 1
        if first and not self.endpoints and self.canned is None:  # static routes never wake
            self._on_wake(self.key)
        return True

    def unhold(self, waiter: Waiter) -> bool:
        """Drop a held request (client gone, or its timeout fired). True if it was held."""
        if not self.held or self.waiters.pop(waiter, 0) is not None:
            return False
        self.held -= 1
        return True

    def release(self, slot: EndpointSlot) -> None:
        slot.in_flight -= 1
        if slot.in_flight == 0 and slot.endpoint not in self.endpoints:
            # By identity: a fallback slot may have the address of a draining endpoint.
            if self.draining.get(slot.endpoint) is slot:
                del self.draining[slot.endpoint]
                slot.draining = False
            if slot.idle_event is not None:
                slot.idle_event.set()
        if self.held:
            self._dispatch()

    def _dispatch(self) -> None:
        # At most _DISPATCH_BATCH waiters per loop turn: releasing 10,000 held requests in one
        # go would keep the loop from connecting and forwarding the first of them until all
        # were handed out. The rest follow on the next turns, still in FIFO order.
        self._dispatch_pending = False
        for _ in range(_DISPATCH_BATCH):
            if not self.held:
                return
            slot = self._pick()
            if slot is None:
                return
            waiter = next(iter(self.waiters))
            del self.waiters[waiter]
            self.held -= 1
            waiter.assign(slot)
        if self.held and not self._dispatch_pending:
            self._dispatch_pending = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _pick(self) -> EndpointSlot | None:
        cap = self.cap
        only = self._only
        if only is not None:  # (one endpoint: the list and its array are not read)
            slot = only
        else:
            choices = self._choices
            n = len(choices)
            if n == 0:
                return None
            # Two *distinct* random endpoints (with two endpoints: always both), the one with
            # fewer requests outstanding wins: a fresh or fast replica draws the traffic.
            i = random.randrange(n)
            j = random.randrange(n - 1)
            if j >= i:
                j += 1
            a, b = choices[i], choices[j]
            slot = a if a.in_flight <= b.in_flight else b
        if cap is not None and slot.in_flight >= cap:
            # The two random picks were full; fall back to the least loaded of all (rare path).
            slot = min(self._choices, key=_in_flight)
            if slot.in_flight >= cap:
                return None
        slot.in_flight += 1
        return slot


def _in_flight(slot: EndpointSlot) -> int:
    return slot.in_flight
