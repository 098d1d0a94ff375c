"""The InterceptorRoute (`http.keda.sh/v1beta1`), KEDA's newer routing API, parsed and validated.

Field names, defaults and rules follow the add-on's CRD (v0.14 on, plus what its 1.0 docs add:
`coldStart.maxPendingRequests`/`overflow` and `sessionPersistence`), so existing objects apply
unchanged. Unlike an HTTPScaledObject, an InterceptorRoute names no workload: the user writes
the ScaledObject, whose `external-push` trigger names the route (`interceptorRoute: <name>`).

    spec:
      target: {service: app, port: 8080}                 # or portName; exactly one
      rules:                                             # OR across rules, AND inside one
        - hosts: [app.example.com, "*.example.com"]
          paths: [{value: /api}]
          headers: [{name: X-Tenant, value: blue}]
      scalingMetric:                                     # at least one; KEDA takes the larger
        concurrency: {targetValue: 100}
        requestRate: {targetValue: 50, window: 1m, granularity: 1s}
      coldStart:
        fallback: {service: {name: app-fallback, port: 80}}
        placeholder: {response: {statusCode: 503, body: "warming up"}}
        maxPendingRequests: 200
        overflow: Placeholder                            # or Reject (the default)
      timeouts: {readiness: 30s, request: 1m, responseHeader: 10s}   # "0s" disables one
      staticRoutes:
        - rules: [{paths: [{value: /healthz}]}]
          response: {statusCode: 200, body: OK}
          responseMode: Always                           # or WhenUnavailable (the default)
      sessionPersistence: {type: Cookie, absoluteTimeout: 1h, cookie: {name: route}}

Durations are whole seconds or Go duration strings, as everywhere in a Kubernetes object
(`durations.py`). Hosts, paths and header names follow the HTTPScaledObject's rules
(`httpso.parse_hosts`, `parse_path_prefix`, `parse_header_matches`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

from httpscale.model.coldstart import get_response_headers
from httpscale.model.fields import HEADER_NAME, INT32_MAX, Fields
from httpscale.model.httpso import (
    DEFAULT_RATE_GRANULARITY,
    DEFAULT_RATE_WINDOW,
    HeaderSpec,
    ScalingMetric,
    parse_header_matches,
    parse_hosts,
    parse_path_prefix,
)
from httpscale.model.objects import read_object
from httpscale.model.refs import parse_port

__all__ = [
    "DEFAULT_OVERFLOW",
    "DEFAULT_RESPONSE_MODE",
    "DEFAULT_SESSION_PERSISTENCE_TYPE",
    "MAX_STATIC_BODY",
    "ConfigMapKeyRef",
    "InterceptorRoute",
    "InterceptorRouteSpec",
    "Overflow",
    "ResponseMode",
    "RouteColdStart",
    "RouteRule",
    "RouteTimeouts",
    "ServiceRef",
    "SessionPersistence",
    "StaticResponse",
    "StaticRoute",
    "TargetRef",
    "parse_interceptor_route",
    "parse_interceptor_route_spec",
]

Overflow = Literal["Reject", "Placeholder"]
ResponseMode = Literal["Always", "WhenUnavailable"]

DEFAULT_OVERFLOW: Overflow = "Reject"
DEFAULT_RESPONSE_MODE: ResponseMode = "WhenUnavailable"
DEFAULT_SESSION_PERSISTENCE_TYPE = "Cookie"
#: KEDA's limit on an inline response body, in characters.
MAX_STATIC_BODY = 32768

_SPEC_KEYS = (
    "target",
    "rules",
    "scalingMetric",
    "coldStart",
    "timeouts",
    "staticRoutes",
    "sessionPersistence",
)


@dataclass(frozen=True, slots=True)
class TargetRef:
    """`spec.target`: the Service requests go to, by `port` or `port_name` (exactly one)."""

    service: str
    port: int | None = None
    port_name: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceRef:
    """`spec.coldStart.fallback.service`: a Service in the route's namespace."""

    name: str
    port: int | None = None
    port_name: str | None = None


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One entry of `rules` (or of a static route's `rules`): a request matches when its host
    is one of `hosts`, its path starts with one of `paths` and it carries every header of
    `headers`; an empty part matches everything, so `RouteRule()` is a catch-all."""

    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    headers: tuple[HeaderSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigMapKeyRef:
    """`bodyFromConfigMap`: a ConfigMap in the route's namespace (KEDA requires it to carry the
    label `http.keda.sh/response-body: "true"`). `key` None: the request path without its
    leading "/" (`index.html` for "/")."""

    name: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class StaticResponse:
    """A response the interceptor answers itself: a placeholder or a static route's.

    `status_code` None is the user's "default": 503 for a placeholder, 200 for a static route.
    At most one of `body` and `body_from_config_map`; neither is an empty body.
    """

    status_code: int | None = None
    body: str | None = None
    body_from_config_map: ConfigMapKeyRef | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RouteColdStart:
    """`spec.coldStart`: what happens to requests while the target has no ready endpoint.

    `fallback`: where held requests go once the readiness timeout passes (KEDA applies 30 s
    when `timeouts.readiness` is "0s" and a fallback is set). `placeholder`: answered at once
    instead of holding. `max_pending_requests`: requests held at once (None: the interceptor's
    setting); the ones over it get 503 (`overflow` "Reject") or the placeholder ("Placeholder").
    """

    fallback: ServiceRef | None = None
    placeholder: StaticResponse | None = None
    max_pending_requests: int | None = None
    overflow: Overflow = DEFAULT_OVERFLOW


@dataclass(frozen=True, slots=True)
class RouteTimeouts:
    """`spec.timeouts`, seconds: None is the interceptor's global setting, 0 disables it.

    `readiness`: the wait for a ready endpoint; `request`: the whole request; `response_header`:
    from the request sent to the response head received (cold-start wait not included).
    """

    readiness: float | None = None
    request: float | None = None
    response_header: float | None = None


@dataclass(frozen=True, slots=True)
class StaticRoute:
    """One of `spec.staticRoutes`: requests matching any of `rules` get `response` (`Always`),
    or get it only while the target has no ready endpoint (`WhenUnavailable`). Never counted
    for scaling. The first matching static route wins."""

    rules: tuple[RouteRule, ...]
    response: StaticResponse
    response_mode: ResponseMode = DEFAULT_RESPONSE_MODE


@dataclass(frozen=True, slots=True)
class SessionPersistence:
    """`spec.sessionPersistence`: keep a client on one replica with a cookie.

    `absolute_timeout` seconds (None: the cookie lives as long as the browser session; 0 too);
    `cookie_name` None: the interceptor's default name.
    """

    type: Literal["Cookie"] = "Cookie"
    absolute_timeout: float | None = None
    cookie_name: str | None = None


@dataclass(frozen=True, slots=True)
class InterceptorRouteSpec:
    """A validated `InterceptorRoute.spec`; durations in seconds, KEDA's defaults applied.

    `scaling_metrics` holds one or two metrics, concurrency first; with both, KEDA scales to
    the larger replica count either asks for.
    """

    target: TargetRef
    scaling_metrics: tuple[ScalingMetric, ...]
    rules: tuple[RouteRule, ...] = ()
    cold_start: RouteColdStart | None = None
    timeouts: RouteTimeouts = RouteTimeouts()
    static_routes: tuple[StaticRoute, ...] = ()
    session_persistence: SessionPersistence | None = None

    @property
    def concurrency(self) -> ScalingMetric | None:
        return next((m for m in self.scaling_metrics if m.kind == "concurrency"), None)

    @property
    def request_rate(self) -> ScalingMetric | None:
        return next((m for m in self.scaling_metrics if m.kind == "requestRate"), None)


@dataclass(frozen=True, slots=True)
class InterceptorRoute:
    """A whole object as the API server returns it, reduced to what httpscale uses."""

    namespace: str
    name: str
    spec: InterceptorRouteSpec

    @property
    def key(self) -> str:
        """The route key, "<namespace>/<name>"."""
        return f"{self.namespace}/{self.name}"


def parse_interceptor_route(
    obj: Mapping[str, object], *, default_namespace: str = "default"
) -> InterceptorRoute:
    """Parse a full `InterceptorRoute`; errors are attributed to "<namespace>/<name>"."""
    namespace, name, spec = read_object(
        obj, kind="InterceptorRoute", default_namespace=default_namespace
    )
    parsed = parse_interceptor_route_spec(spec, source=f"{namespace}/{name}")
    return InterceptorRoute(namespace=namespace, name=name, spec=parsed)


def parse_interceptor_route_spec(
    spec: Mapping[str, object], *, source: str, key_prefix: str = "spec"
) -> InterceptorRouteSpec:
    """Validate `spec` (camelCase, as in the object) or raise the first `ConfigError`."""
    f = Fields(spec, source=source, key=key_prefix, kube=True)
    f.allow(*_SPEC_KEYS)
    target = f.sub("target")
    if target is None:
        raise f.error("target", "required")
    target_ref = _target(target)
    rules = tuple(_rule(r) for r in f.get_mappings("rules") or ())
    metric = f.sub("scalingMetric")
    if metric is None:
        raise f.error("scalingMetric", "required")
    metrics = _scaling_metrics(metric)
    cold_fields = f.sub("coldStart")
    cold_start = _cold_start(cold_fields) if cold_fields is not None else None
    timeout_fields = f.sub("timeouts")
    timeouts = _timeouts(timeout_fields) if timeout_fields is not None else RouteTimeouts()
    static_routes = tuple(_static_route(s) for s in f.get_mappings("staticRoutes") or ())
    session_fields = f.sub("sessionPersistence")
    session = _session_persistence(session_fields) if session_fields is not None else None
    f.finish()
    return InterceptorRouteSpec(
        target=target_ref,
        rules=rules,
        scaling_metrics=metrics,
        cold_start=cold_start,
        timeouts=timeouts,
        static_routes=static_routes,
        session_persistence=session,
    )


def _target(f: Fields) -> TargetRef:
    f.allow("service", "port", "portName")
    service = f.get_str("service", required=True, nonempty=True)
    assert service is not None
    port, port_name = parse_port(f)
    return TargetRef(service=service, port=port, port_name=port_name)


def _rule(f: Fields) -> RouteRule:
    f.allow("hosts", "paths", "headers")
    hosts = parse_hosts(f, "hosts", unique=True)  # the CRD makes `hosts` a set
    paths: list[str] = []
    for p in f.get_mappings("paths") or ():
        p.allow("value")
        value = p.get_str("value", required=True, nonempty=True)
        assert value is not None
        paths.append(parse_path_prefix(value, key=p.where("value"), source=p.source))
    headers = parse_header_matches(f, "headers")
    return RouteRule(hosts=hosts, paths=tuple(paths), headers=headers)


def _target_value(f: Fields) -> float:
    value = f.get_int("targetValue", minimum=1, maximum=INT32_MAX)
    if value is None:
        raise f.error("targetValue", "required")
    return float(value)


def _scaling_metrics(f: Fields) -> tuple[ScalingMetric, ...]:
    f.allow("concurrency", "requestRate")
    out: list[ScalingMetric] = []
    concurrency = f.sub("concurrency")
    if concurrency is not None:
        concurrency.allow("targetValue")
        out.append(ScalingMetric(kind="concurrency", target_value=_target_value(concurrency)))
    rate = f.sub("requestRate")
    if rate is not None:
        rate.allow("targetValue", "window", "granularity")
        target = _target_value(rate)
        window = rate.get_duration("window", positive=True)
        granularity = rate.get_duration("granularity", positive=True)
        window = window if window is not None else DEFAULT_RATE_WINDOW
        granularity = granularity if granularity is not None else DEFAULT_RATE_GRANULARITY
        if granularity > window:
            raise rate.error("granularity", "must not be longer than window")
        out.append(
            ScalingMetric(
                kind="requestRate", target_value=target, window=window, granularity=granularity
            )
        )
    if not out:
        raise f.error(None, "set at least one of concurrency or requestRate")
    return tuple(out)


def _service_ref(f: Fields) -> ServiceRef:
    f.allow("name", "port", "portName")
    name = f.get_str("name", required=True, nonempty=True)
    assert name is not None
    port, port_name = parse_port(f)
    return ServiceRef(name=name, port=port, port_name=port_name)


def _cold_start(f: Fields) -> RouteColdStart:
    f.allow("fallback", "placeholder", "maxPendingRequests", "overflow")
    fallback: ServiceRef | None = None
    fallback_fields = f.sub("fallback")
    if fallback_fields is not None:
        fallback_fields.allow("service")
        service = fallback_fields.sub("service")
        if service is None:
            raise fallback_fields.error("service", "required")
        fallback = _service_ref(service)
    placeholder: StaticResponse | None = None
    placeholder_fields = f.sub("placeholder")
    if placeholder_fields is not None:
        placeholder_fields.allow("response")
        response = placeholder_fields.sub("response")
        if response is None:
            raise placeholder_fields.error("response", "required")
        placeholder = _static_response(response)
    max_pending = f.get_int("maxPendingRequests", minimum=1, maximum=INT32_MAX)
    overflow = _enum(f, "overflow", ("Reject", "Placeholder")) or DEFAULT_OVERFLOW
    if fallback is None and placeholder is None and max_pending is None:
        raise f.error(None, "set at least one of fallback, placeholder or maxPendingRequests")
    if overflow == "Placeholder" and placeholder is None:
        raise f.error("overflow", "Placeholder needs coldStart.placeholder")
    return RouteColdStart(
        fallback=fallback,
        placeholder=placeholder,
        max_pending_requests=max_pending,
        overflow=cast(Overflow, overflow),
    )


def _static_response(f: Fields) -> StaticResponse:
    f.allow("statusCode", "body", "bodyFromConfigMap", "headers")
    status = f.get_int("statusCode", minimum=100, maximum=599)
    body = f.get_str("body")
    if body is not None and len(body) > MAX_STATIC_BODY:
        raise f.error("body", f"must be at most {MAX_STATIC_BODY} characters, got {len(body)}")
    from_config_map: ConfigMapKeyRef | None = None
    ref = f.sub("bodyFromConfigMap")
    if ref is not None:
        ref.allow("name", "key")
        name = ref.get_str("name", required=True, nonempty=True)
        assert name is not None
        key = ref.get_str("key")
        from_config_map = ConfigMapKeyRef(name=name, key=key or None)  # "" is unset in KEDA
        if body is not None:
            raise f.error("bodyFromConfigMap", "set at most one of body or bodyFromConfigMap")
    headers = get_response_headers(f, "headers")
    return StaticResponse(
        status_code=status, body=body, body_from_config_map=from_config_map, headers=headers
    )


def _timeouts(f: Fields) -> RouteTimeouts:
    f.allow("readiness", "request", "responseHeader")
    return RouteTimeouts(
        readiness=f.get_duration("readiness"),
        request=f.get_duration("request"),
        response_header=f.get_duration("responseHeader"),
    )


def _static_route(f: Fields) -> StaticRoute:
    f.allow("rules", "response", "responseMode")
    rule_fields = f.get_mappings("rules")
    if not rule_fields:
        raise f.error("rules", "required (at least one rule)")
    rules = tuple(_rule(r) for r in rule_fields)
    response = f.sub("response")
    if response is None:
        raise f.error("response", "required")
    mode = _enum(f, "responseMode", ("Always", "WhenUnavailable")) or DEFAULT_RESPONSE_MODE
    return StaticRoute(
        rules=rules, response=_static_response(response), response_mode=cast(ResponseMode, mode)
    )


def _session_persistence(f: Fields) -> SessionPersistence:
    f.allow("type", "absoluteTimeout", "cookie")
    _enum(f, "type", ("Cookie",))
    timeout = f.get_duration("absoluteTimeout")
    cookie_name: str | None = None
    cookie = f.sub("cookie")
    if cookie is not None:
        cookie.allow("name")
        cookie_name = cookie.get_str("name")
        if cookie_name is not None and not HEADER_NAME.fullmatch(cookie_name):
            raise cookie.error("name", f"not a valid cookie name: {cookie_name!r}")
    return SessionPersistence(absolute_timeout=timeout, cookie_name=cookie_name)


def _enum(f: Fields, name: str, allowed: tuple[str, ...]) -> str | None:
    value = f.get_str(name)
    if value is not None and value not in allowed:
        choices = " or ".join(allowed)
        raise f.error(name, f"expected {choices}, got {value!r}")
    return value
