"""What the interceptor serves for an InterceptorRoute: its `RouteSpec`s (pure).

An InterceptorRoute becomes one route keyed `<namespace>/<name>` (its `rules` are the route's
matches, OR across rules), plus one route per static route, keyed
`<namespace>/<name>#static-<i>` and listed first, so that a static route wins a tie with the
route it belongs to (the route table keeps the first of two equal claims) and the first
static route wins among its siblings, as KEDA evaluates them in list order.

Timeouts, as KEDA documents them: unset is the interceptor's global value, `0s` disables.
Nothing is held forever, though: a disabled readiness wait is bounded by the request timeout,
else by 30 s when a fallback exists (KEDA's rule), else by the interceptor's default (120 s).

Response bodies from ConfigMaps (`bodyFromConfigMap`) are looked up through `config_maps`,
which the caller backs with a watch of ConfigMaps labelled `http.keda.sh/response-body:
"true"` (KEDA requires the label, so one without it is as good as missing: answered 500).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, TypeVar

from httpscale.model.interceptorroute import (
    InterceptorRoute,
    RouteRule,
    StaticResponse,
)
from httpscale.routing.spec import (
    DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_READINESS_TIMEOUT,
    BodyFiles,
    CannedResponse,
    HeaderMatch,
    Placeholder,
    RouteMatch,
    RouteSpec,
)

__all__ = [
    "BODY_LABEL",
    "DISABLED",
    "ConfigMaps",
    "Served",
    "interceptor_route_specs",
    "serving_order",
    "static_route_key",
]

#: The label KEDA requires on a ConfigMap that holds response bodies.
BODY_LABEL = "http.keda.sh/response-body"
#: A timeout set to "0s" (disabled): ten years, so that timers stay finite.
DISABLED = 10 * 365 * 86400.0
#: KEDA's readiness wait when a fallback is set and `timeouts.readiness` is "0s".
_FALLBACK_READINESS = 30.0

ConfigMaps = Callable[[str, str], Mapping[str, bytes] | None]
"""(namespace, name) -> the ConfigMap's data (binaryData included), None if there is none."""


def static_route_key(route_key: str, index: int) -> str:
    return f"{route_key}#static-{index}"


def _match(rule: RouteRule) -> RouteMatch:
    return RouteMatch(
        hosts=tuple(h.lower() for h in rule.hosts),
        path_prefixes=rule.paths,
        headers=tuple(HeaderMatch(h.name.lower(), h.value) for h in rule.headers),
    )


def _matches(rules: tuple[RouteRule, ...]) -> tuple[RouteMatch, tuple[RouteMatch, ...]]:
    if not rules:
        return RouteMatch(), ()  # no rules: a catch-all, as an HTTPSO without hosts
    first, *rest = (_match(r) for r in rules)
    return first, tuple(rest)


def _body(
    response: StaticResponse, namespace: str, config_maps: ConfigMaps
) -> tuple[bytes, BodyFiles | None]:
    """The inline body, or what `bodyFromConfigMap` points at."""
    ref = response.body_from_config_map
    if ref is None:
        return (response.body or "").encode(), None
    data = config_maps(namespace, ref.name)
    where = f"ConfigMap {namespace}/{ref.name}"
    if data is None:
        return b"", BodyFiles(missing=f"{where} not found, or not labelled {BODY_LABEL}=true")
    if ref.key is None:
        return b"", BodyFiles(files=tuple(sorted(data.items())))
    if ref.key not in data:
        return b"", BodyFiles(missing=f"{where} has no key {ref.key!r}")
    return data[ref.key], None


def interceptor_route_specs(route: InterceptorRoute, config_maps: ConfigMaps) -> list[RouteSpec]:
    """The static routes (first) and the route itself."""
    spec = route.spec
    key = route.key
    cold = spec.cold_start
    timeouts = spec.timeouts
    fallback = cold is not None and cold.fallback is not None

    request_timeout = timeouts.request or None  # 0 and unset: no whole-request deadline
    readiness = timeouts.readiness
    if readiness is None:
        readiness = DEFAULT_READINESS_TIMEOUT
    elif readiness == 0:
        readiness = request_timeout or (_FALLBACK_READINESS if fallback else
                                        DEFAULT_READINESS_TIMEOUT)
    response_header = timeouts.response_header
    if response_header == 0:
        response_header = DISABLED

    placeholder = None
    if cold is not None and cold.placeholder is not None:
        body, files = _body(cold.placeholder, route.namespace, config_maps)
        placeholder = Placeholder(
            status=cold.placeholder.status_code or 503,
            headers=cold.placeholder.headers,
            body=body.decode("utf-8", "replace"),
            for_all=True,  # KEDA answers every request of the route with it
            files=files,
        )

    out: list[RouteSpec] = []
    for index, static in enumerate(spec.static_routes):
        body, files = _body(static.response, route.namespace, config_maps)
        match, extra = _matches(static.rules)
        out.append(RouteSpec(
            key=static_route_key(key, index),
            match=match,
            extra_matches=extra,
            canned=CannedResponse(
                status=static.response.status_code or 200,
                headers=static.response.headers,
                body=body,
                files=files,
                always=static.response_mode == "Always",
            ),
            response_header_timeout=response_header,
            readiness_timeout=readiness,
            request_timeout=request_timeout,
        ))

    match, extra = _matches(spec.rules)
    out.append(RouteSpec(
        key=key,
        match=match,
        extra_matches=extra,
        response_header_timeout=response_header,
        readiness_timeout=readiness,
        request_timeout=request_timeout,
        max_pending_requests=(
            cold.max_pending_requests
            if cold is not None and cold.max_pending_requests is not None
            else DEFAULT_MAX_PENDING_REQUESTS
        ),
        placeholder=placeholder,
        overflow_placeholder=(
            placeholder is not None and cold is not None and cold.overflow == "Placeholder"
        ),
        # Held requests go to the fallback Service's endpoints (set live by the source) once
        # the readiness wait is over, as in KEDA.
        failover_timeout=readiness if fallback else None,
    ))
    return out


T = TypeVar("T")


class Served(NamedTuple):
    """One object whose routes go into the table, for `serving_order`."""

    kind: str  # "HTTPScaledObject" or "InterceptorRoute"
    key: str  # "<namespace>/<name>"
    created: str  # metadata.creationTimestamp (RFC 3339: sorts as text)
    value: object  # what the caller keeps with it (its routes)


def serving_order(objects: Iterable[Served]) -> list[Served]:
    """The objects whose routes are served, in the order their routes go into the table.

    Older objects first, since the route table keeps the first of two equal claims: a new
    object never takes a host and path from one that serves it. At the same second an
    InterceptorRoute goes first, then by key, for a stable order. An HTTPScaledObject with
    the name of an InterceptorRoute is left out: the InterceptorRoute wins, as in KEDA.
    The interceptor and the operator (which reports the losers) share this order.
    """
    objects = list(objects)
    irs = {o.key for o in objects if o.kind == "InterceptorRoute"}
    ordered = sorted(objects, key=lambda o: (o.created, o.kind != "InterceptorRoute", o.key))
    return [o for o in ordered if not (o.kind == "HTTPScaledObject" and o.key in irs)]
