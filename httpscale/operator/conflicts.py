"""Which objects lose a route to another, decided as the interceptors decide it.

The interceptors build one route table from every HTTPScaledObject and InterceptorRoute
(`httpscale/kube/routes.py`): in `serving_order` (older first), an InterceptorRoute shadowing
an HTTPScaledObject of its name, and the first of two equal claims on a host, path and set of
headers keeping it. The operator builds the same table from the same objects to tell the
loser why part of its traffic goes elsewhere (`RouteConflict` in its Ready condition): the
interceptors can only log it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from httpscale.kube.cache import Snapshot
from httpscale.model import HTTPScaledObject, InterceptorRoute, to_route_spec
from httpscale.model.routespecs import Served, interceptor_route_specs, serving_order
from httpscale.routing.spec import RouteSpec
from httpscale.routing.table import RouteTable

__all__ = ["RouteClaims"]

Owner = tuple[str, str]  # (kind, "<namespace>/<name>")


def _no_bodies(namespace: str, name: str) -> None:
    return None  # bodies do not decide who gets a route


@dataclass(slots=True)
class _Mapped:
    version: str
    created: str
    specs: list[RouteSpec]


class RouteClaims:
    def __init__(self) -> None:
        self._mapped: dict[Owner, _Mapped] = {}
        self.losses: dict[Owner, str] = {}  # the loser -> why

    def loss(self, kind: str, key: str) -> str | None:
        return self.losses.get((kind, key))

    def update(
        self,
        httpsos: Snapshot[HTTPScaledObject],
        routes: Snapshot[InterceptorRoute],
        changed: Iterable[Owner],
    ) -> set[Owner]:
        """Take the objects in `changed` anew; the objects whose loss (or its reason) changed."""
        for kind, key in changed:
            snapshot: Snapshot[HTTPScaledObject | InterceptorRoute] = (
                httpsos if kind == "HTTPScaledObject" else routes
            )
            item, raw = snapshot.items.get(key), snapshot.raw.get(key)
            if item is None or raw is None:
                self._mapped.pop((kind, key), None)
                continue
            meta = raw.get("metadata") or {}
            version = str(meta.get("resourceVersion"))
            known = self._mapped.get((kind, key))
            if known is not None and known.version == version:
                continue
            specs = (
                interceptor_route_specs(item, _no_bodies)
                if isinstance(item, InterceptorRoute)
                else [to_route_spec(item.key, item.spec)]
            )
            self._mapped[(kind, key)] = _Mapped(
                version, str(meta.get("creationTimestamp") or ""), specs
            )
        losses = self._decide()
        moved = {o for o in losses.keys() | self.losses.keys()
                 if losses.get(o) != self.losses.get(o)}
        self.losses = losses
        return moved

    def _decide(self) -> dict[Owner, str]:
        served = serving_order(Served(k, key, m.created, m) for (k, key), m in self._mapped.items())
        served_keys = {(s.kind, s.key) for s in served}
        reasons: dict[Owner, list[str]] = {}
        for kind, key in self._mapped.keys() - served_keys:
            reasons.setdefault((kind, key), []).append(
                f"the InterceptorRoute {key} takes its place (it wins over an "
                "HTTPScaledObject of the same name)"
            )
        claims: list[tuple[Owner, RouteSpec]] = []
        for entry in served:
            mapped = entry.value
            assert isinstance(mapped, _Mapped)
            claims += [((entry.kind, entry.key), spec) for spec in mapped.specs]
        table = RouteTable.build(
            (match, owner) for owner, spec in claims for match in spec.matches
        )
        for c in table.conflicts:
            if c.loser == c.winner:
                continue  # an object's own rules overlapping: no one else is involved
            headers = "".join(f", header {h.name}" + (f"={h.value}" if h.value else "")
                              for h in c.headers)
            reasons.setdefault(c.loser, []).append(
                f"host {c.host} path {c.path_prefix}{headers} goes to the older "
                f"{c.winner[0]} {c.winner[1]}"
            )
        return {owner: "route conflict: " + "; ".join(_unique(r)) for owner, r in reasons.items()}


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))

