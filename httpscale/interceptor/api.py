"""The interceptor's control surface, as seen by whatever drives it in-process.

Local mode's autoscaler and the Kubernetes sources use only this; they never reach into the
proxy's internals. `httpscale.interceptor.app.Interceptor` implements it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypedDict

from httpscale.routing.spec import Endpoint, RouteSpec

__all__ = ["InterceptorControl", "QueueEntry", "RouteStats", "StatusProvider", "WakeListener"]


class QueueEntry(TypedDict):
    """One route in `GET /queue` (wire-compatible with KEDA's add-on)."""

    Concurrency: int  # requests in flight or held now
    RequestCount: int  # monotonic since the interceptor started


class RouteStats(TypedDict):
    concurrency: int  # in flight + held
    held: int  # waiting for a ready endpoint (or for an endpoint slot)
    request_count: int  # monotonic
    endpoints: int  # ready endpoints now


#: Called with a route key when a route at zero gets its first held request.
#: Must not block: it runs on the event loop in the request path.
WakeListener = Callable[[str], None]
#: Returns extra JSON-able sections for the admin `/status` page.
StatusProvider = Callable[[], Mapping[str, object]]


class InterceptorControl(Protocol):
    def set_routes(self, routes: Sequence[RouteSpec]) -> None:
        """Swap the route table atomically. Routes keep their counters and endpoints by key."""

    def set_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None:
        """Replace a route's ready endpoints. Held requests for it are released at once.

        An endpoint that leaves the set gets no new requests; its in-flight ones finish.
        """

    def set_fallback_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None:
        """Replace where a route's held requests fail over to once its failover time passes
        (the fallback Service's ready endpoints): the least loaded of them, trying another
        when a connect fails; empty: the route's static `fallback`, if any, else they stay
        held until the readiness timeout (504). Buffered until the route exists."""

    def add_wake_listener(self, listener: WakeListener) -> None: ...

    def add_status_provider(self, name: str, provider: StatusProvider) -> None: ...

    def queue(self) -> dict[str, QueueEntry]:
        """The `/queue` snapshot: routes whose traffic counts for scaling (`RouteSpec.scaled`;
        not an InterceptorRoute's static routes)."""

    def route_stats(self, route_key: str) -> RouteStats | None: ...

    def endpoint_in_flight(self, route_key: str, endpoint: Endpoint) -> int: ...

    async def wait_endpoint_idle(self, route_key: str, endpoint: Endpoint) -> None:
        """Return once `endpoint` has no request in flight (use after removing it)."""
