"""Route states by key, and the table that finds them; both replaced whole on every update.

`set_routes` keeps the state (counters, endpoints, held requests) of every key that stays, so
a route update never resets what the autoscaler sees, and never drops a held or in-flight
request. Endpoints may arrive before their route (sources are independent); they wait in
`_pending` (fallback endpoints in `_pending_fallback`) until the route exists.

A route answers every one of its matches (`RouteSpec.matches`: an InterceptorRoute's rules).
Every change is also counted in the upstream pools (`Pools.use` / `unuse`), so that the pool of
an endpoint no route uses any more is retired. `use` also tells the pool how to connect: over
TLS, and as which server name, when the route says so (`upstream_tls.for_route`: the route's
`upstream_scheme`, or `--tls-upstream`); a route whose TLS choice changes re-tags its pools.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from httpscale.interceptor.counters import RouteRequests
from httpscale.interceptor.http1 import Headers
from httpscale.interceptor.routes import RouteState
from httpscale.interceptor.settings import Tls
from httpscale.interceptor.tls import UpstreamTls, UpstreamTlsConfig
from httpscale.interceptor.upstream import Pools
from httpscale.routing.spec import Endpoint, RouteSpec
from httpscale.routing.table import RouteTable

__all__ = ["RouteRegistry"]

log = logging.getLogger(__name__)

_NO_HEADERS: Final[dict[str, str]] = {}


class RouteRegistry:
    def __init__(self, on_wake: Callable[[str], None], pools: Pools,
                 stats_for: Callable[[str], RouteRequests] | None = None) -> None:
        """`stats_for(key)`: the counters a new state of route `key` counts on (a route that
        goes and comes back must continue its counts); by default, new ones."""
        self._on_wake = on_wake
        self._pools = pools
        self._stats_for = stats_for
        self.states: dict[str, RouteState] = {}
        self.table: RouteTable[RouteState] = RouteTable.build(())
        self.loaded = False  # set by the first set_routes: /readyz waits for it
        self.needs_headers = False  # some route matches on headers
        self._pending: dict[str, frozenset[Endpoint]] = {}
        self._pending_fallback: dict[str, frozenset[Endpoint]] = {}
        # Replaced by the Interceptor with one made of its settings, before any route.
        self.upstream_tls = UpstreamTls(Tls())

    def set_routes(self, specs: Sequence[RouteSpec]) -> list[RouteState]:
        """Swap in a new route list; returns the states of routes that went away."""
        states: dict[str, RouteState] = {}
        gained: list[tuple[set[Endpoint], UpstreamTlsConfig | None]] = []
        lost: list[Endpoint] = []
        tls_of = self.upstream_tls.for_route
        for spec in specs:
            if spec.key in states:
                log.warning("route %s is listed twice; the first one is served", spec.key)
                continue
            state = self.states.get(spec.key)
            if state is None:
                stats = self._stats_for(spec.key) if self._stats_for is not None else None
                state = RouteState(spec, self._on_wake, stats)
                pending = self._pending.pop(spec.key, None)
                if pending is not None and spec.static_endpoints is None:
                    state.set_endpoints(pending)
                fallback = self._pending_fallback.pop(spec.key, None)
                if fallback is not None:
                    state.set_fallback_endpoints(fallback)
                gained.append((state.pool_endpoints(), tls_of(spec)))
            else:
                before = state.pool_endpoints()
                old_spec = state.spec
                old_static = old_spec.static_endpoints
                state.use_spec(spec)
                if spec.static_endpoints is not None and spec.static_endpoints != old_static:
                    state.set_endpoints(spec.static_endpoints, static=True)
                after = state.pool_endpoints()
                tls = tls_of(spec)
                if tls != tls_of(old_spec):
                    gained.append((after, tls))  # every pool of the route, re-tagged
                    lost += before
                elif after != before:
                    gained.append((after - before, tls))
                    lost += before - after
            states[spec.key] = state
        table = RouteTable.build(
            (match, state) for state in states.values() for match in state.spec.matches
        )
        # Two matches of one route may claim the same host and path (overlapping rules): that
        # route still gets the request, so it is no conflict.
        table.conflicts = tuple(c for c in table.conflicts if c.loser is not c.winner)
        for conflict in table.conflicts:
            log.warning(
                "route %s loses host %s path %s to %s",
                conflict.loser.key, conflict.host, conflict.path_prefix, conflict.winner.key,
            )
        removed = [s for key, s in self.states.items() if key not in states]
        for state in removed:
            lost += state.pool_endpoints()
        self.states, self.table = states, table
        self.needs_headers = any(
            match.headers for state in states.values() for match in state.spec.matches
        )
        self.loaded = True
        # Gains first: an endpoint moving from one route to another keeps its idle connections.
        for endpoints, tls in gained:
            self._pools.use(endpoints, tls)
        self._pools.unuse(lost)
        return removed

    def set_endpoints(self, key: str, endpoints: Iterable[Endpoint]) -> None:
        state = self.states.get(key)
        if state is None:
            self._pending[key] = frozenset(endpoints)
            return
        before = state.pool_endpoints()
        state.set_endpoints(endpoints)
        self._account(state, before)

    def set_fallback_endpoints(self, key: str, endpoints: Iterable[Endpoint]) -> None:
        state = self.states.get(key)
        if state is None:
            self._pending_fallback[key] = frozenset(endpoints)
            return
        before = state.pool_endpoints()
        state.set_fallback_endpoints(endpoints)
        self._account(state, before)

    def _account(self, state: RouteState, before: set[Endpoint]) -> None:
        after = state.pool_endpoints()
        if after != before:
            self._pools.use(after - before, self.upstream_tls.for_route(state.spec))
            self._pools.unuse(before - after)

    def lookup(self, host: str, path: str, headers: Headers) -> RouteState | None:
        if self.needs_headers:
            wanted = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in headers}
            return self.table.lookup(host, path, wanted)
        return self.table.lookup(host, path, _NO_HEADERS)
