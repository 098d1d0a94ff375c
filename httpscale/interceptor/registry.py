"""Route states by key, and the table that finds them; both replaced whole on every update.

`set_routes` keeps the state (counters, endpoints, held requests) of every key that stays, so
a route update never resets what the autoscaler sees. Endpoints may arrive before their route
(sources are independent); they wait in `_pending` until the route exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from httpscale.interceptor.http1 import Headers
from httpscale.interceptor.routes import RouteState
from httpscale.routing.spec import Endpoint, RouteSpec
from httpscale.routing.table import RouteTable

__all__ = ["RouteRegistry"]

log = logging.getLogger(__name__)

_NO_HEADERS: Final[dict[str, str]] = {}


class RouteRegistry:
    def __init__(self, on_wake: Callable[[str], None]) -> None:
        self._on_wake = on_wake
        self.states: dict[str, RouteState] = {}
        self.table: RouteTable[RouteState] = RouteTable.build(())
        self.loaded = False  # set by the first set_routes: /readyz waits for it
        self.needs_headers = False  # some route matches on headers
        self._pending: dict[str, frozenset[Endpoint]] = {}

    def set_routes(self, specs: Sequence[RouteSpec]) -> list[RouteState]:
        """Swap in a new route list; returns the states of routes that went away."""
        states: dict[str, RouteState] = {}
        for spec in specs:
            state = self.states.get(spec.key)
            if state is None:
                state = RouteState(spec, self._on_wake)
                pending = self._pending.pop(spec.key, None)
                if pending is not None and spec.static_endpoints is None:
                    state.set_endpoints(pending)
            else:
                old_static = state.spec.static_endpoints
                state.use_spec(spec)
                if spec.static_endpoints is not None and spec.static_endpoints != old_static:
                    state.set_endpoints(spec.static_endpoints, static=True)
            states[spec.key] = state
        table = RouteTable.build((state.spec.match, state) for state in states.values())
        for conflict in table.conflicts:
            log.warning(
                "route %s loses host %s path %s to %s",
                conflict.loser.key, conflict.host, conflict.path_prefix, conflict.winner.key,
            )
        removed = [s for key, s in self.states.items() if key not in states]
        self.states, self.table = states, table
        self.needs_headers = any(spec.match.headers for spec in specs)
        self.loaded = True
        return removed

    def set_endpoints(self, key: str, endpoints: Iterable[Endpoint]) -> None:
        state = self.states.get(key)
        if state is None:
            self._pending[key] = frozenset(endpoints)
            return
        state.set_endpoints(endpoints)

    def lookup(self, host: str, path: str, headers: Headers) -> RouteState | None:
        if self.needs_headers:
            wanted = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in headers}
            return self.table.lookup(host, path, wanted)
        return self.table.lookup(host, path, _NO_HEADERS)
