"""The HTTPScaledObject spec, as KEDA's HTTP add-on defines it, parsed from its Kubernetes form.

Field names and defaults follow the add-on's `v1alpha1` CRD so existing objects apply
unchanged: `replicas` min 0 / max 100, `scaledownPeriod` 300 s, `initialCooldownPeriod` 0,
`scalingMetric.*.targetValue` 100, `requestRate.window` 1m and `granularity` 1s,
`targetPendingRequests` 100 (deprecated), `coldStartTimeoutFailoverRef.timeoutSeconds` 30.
Older spellings users still have are read too: `spec.host` (one host, before `hosts`),
`scaleTargetRef.deployment` (before `name`/`kind`/`apiVersion`) and
`scaleTargetRef.targetPendingRequests` (where some early docs put it).
httpscale's own knobs live under `spec.coldStart` so they never collide with KEDA's.
A Kubernetes object is read with the types of the CRD in manifests/crd (`Fields.kube`: JSON
integers, durations as whole seconds or Go duration strings); tests/k8s/test_crds.py holds the
two to the same rules against a real API server.

Local mode reads the same fields from each app (`local=True`), minus `scaleTargetRef` and
`coldStartTimeoutFailoverRef`: there the app's `run` section says how to reach it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from httpscale.model.coldstart import ColdStart, parse_cold_start
from httpscale.model.errors import ConfigError, join_key
from httpscale.model.fields import HEADER_NAME, HOST, INT32_MAX, Fields, parse_upstream_url
from httpscale.model.refs import (
    DEFAULT_FAILOVER_TIMEOUT_SECONDS,
    ColdStartTimeoutFailoverRef,
    ScaleTargetRef,
    parse_failover_ref,
    parse_scale_target_ref,
)
from httpscale.routing.spec import (
    DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_READINESS_TIMEOUT,
    Endpoint,
    HeaderMatch,
    RouteMatch,
    RouteSpec,
)

__all__ = [
    "DEFAULT_FAILOVER_TIMEOUT_SECONDS",
    "DEFAULT_INITIAL_COOLDOWN_PERIOD",
    "DEFAULT_RATE_GRANULARITY",
    "DEFAULT_RATE_WINDOW",
    "DEFAULT_REPLICAS_MAX",
    "DEFAULT_REPLICAS_MIN",
    "DEFAULT_SCALEDOWN_PERIOD",
    "DEFAULT_TARGET_PENDING_REQUESTS",
    "DEFAULT_TARGET_VALUE",
    "LOCAL_SPEC_KEYS",
    "SPEC_KEYS",
    "ColdStart",
    "ColdStartTimeoutFailoverRef",
    "HTTPScaledObjectSpec",
    "HTTPScaledObjectTimeouts",
    "HeaderSpec",
    "MetricKind",
    "ScaleTargetRef",
    "ScalingMetric",
    "parse_header_matches",
    "parse_hosts",
    "parse_httpso_spec",
    "parse_path_prefix",
    "parse_upstream_url",
    "to_route_spec",
]

DEFAULT_REPLICAS_MIN = 0
DEFAULT_REPLICAS_MAX = 100
DEFAULT_SCALEDOWN_PERIOD = 300.0  # seconds
DEFAULT_INITIAL_COOLDOWN_PERIOD = 0.0  # seconds
DEFAULT_TARGET_PENDING_REQUESTS = 100
DEFAULT_TARGET_VALUE = 100.0  # scalingMetric.*.targetValue
DEFAULT_RATE_WINDOW = 60.0  # seconds, requestRate.window "1m"
DEFAULT_RATE_GRANULARITY = 1.0  # seconds, requestRate.granularity "1s"

#: What a route scales on: requests in flight, or requests per second (`spec.scalingMetric`'s
#: two keys; the scaler's metric names and local mode's policy use the same two words).
MetricKind = Literal["concurrency", "requestRate"]

# Keys of a local-mode app's spec part, and of a Kubernetes spec (which adds the Service refs).
LOCAL_SPEC_KEYS = (
    "hosts",
    "host",
    "pathPrefixes",
    "headers",
    "replicas",
    "scaledownPeriod",
    "initialCooldownPeriod",
    "scalingMetric",
    "targetPendingRequests",
    "timeouts",
    "coldStart",
)
SPEC_KEYS = (*LOCAL_SPEC_KEYS, "scaleTargetRef", "coldStartTimeoutFailoverRef")

# What a path prefix may not contain: it is matched against the request path alone, so a query,
# a fragment, whitespace or a whole URL can never match.
_PATH_FORBIDDEN = "?# \t"


@dataclass(frozen=True, slots=True)
class ScalingMetric:
    """What the scaler holds per replica: in-flight requests, or requests per second averaged
    over `window` in buckets of `granularity` (seconds; only meaningful for requestRate)."""

    kind: MetricKind
    target_value: float
    window: float = DEFAULT_RATE_WINDOW
    granularity: float = DEFAULT_RATE_GRANULARITY


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    """`spec.headers[]`: `value` None means the header only has to be present."""

    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class HTTPScaledObjectTimeouts:
    """`spec.timeouts`, seconds; None means the interceptor's global setting. (An
    InterceptorRoute's are `RouteTimeouts`; the interceptor's own, `interceptor.settings`.)"""

    condition_wait: float | None = None
    response_header: float | None = None


@dataclass(frozen=True, slots=True)
class HTTPScaledObjectSpec:
    """A validated `HTTPScaledObject.spec`; durations in seconds, KEDA defaults applied."""

    hosts: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    headers: tuple[HeaderSpec, ...] = ()
    scale_target_ref: ScaleTargetRef | None = None  # None only in local mode
    replicas_min: int = DEFAULT_REPLICAS_MIN
    replicas_max: int = DEFAULT_REPLICAS_MAX
    scaledown_period: float = DEFAULT_SCALEDOWN_PERIOD
    initial_cooldown_period: float = DEFAULT_INITIAL_COOLDOWN_PERIOD
    scaling_metric: ScalingMetric | None = None
    target_pending_requests: int | None = None  # deprecated KEDA field, kept as given
    timeouts: HTTPScaledObjectTimeouts = HTTPScaledObjectTimeouts()
    cold_start_timeout_failover_ref: ColdStartTimeoutFailoverRef | None = None
    cold_start: ColdStart = field(default_factory=ColdStart)

    def effective_scaling_metric(self) -> ScalingMetric:
        """What the scaler targets, resolved the way KEDA's scaler does.

        `scalingMetric` when set; else the deprecated `targetPendingRequests` as a concurrency
        target; else concurrency with target 100 (KEDA's default for both).
        """
        if self.scaling_metric is not None:
            return self.scaling_metric
        target = self.target_pending_requests
        return ScalingMetric(
            kind="concurrency",
            target_value=float(target if target is not None else DEFAULT_TARGET_PENDING_REQUESTS),
        )


def parse_httpso_spec(
    spec: Mapping[str, object], *, source: str, key_prefix: str = "spec", local: bool = False
) -> HTTPScaledObjectSpec:
    """Validate `spec` (camelCase, as in the Kubernetes object) or raise the first ConfigError.

    `local=True` reads a local-mode app: no `scaleTargetRef`/`coldStartTimeoutFailoverRef`,
    and the lenient local types; otherwise the Kubernetes types of the CRD (`Fields.kube`).
    """
    f = Fields(spec, source=source, key=key_prefix, kube=not local)
    f.allow(*(LOCAL_SPEC_KEYS if local else SPEC_KEYS))
    hosts = _hosts(f)
    path_prefixes = f.get_str_list("pathPrefixes") or ()
    for index, prefix in enumerate(path_prefixes):
        parse_path_prefix(prefix, key=join_key(f.where("pathPrefixes"), index), source=source)
    headers = parse_header_matches(f, "headers")

    legacy_target: int | None = None
    target_ref: ScaleTargetRef | None = None
    failover: ColdStartTimeoutFailoverRef | None = None
    if not local:
        ref = f.sub("scaleTargetRef")
        if ref is None:
            raise f.error("scaleTargetRef", "required")
        target_ref, legacy_target = parse_scale_target_ref(ref)
        failover_fields = f.sub("coldStartTimeoutFailoverRef")
        if failover_fields is not None:
            failover = parse_failover_ref(failover_fields)

    replicas_min, replicas_max = DEFAULT_REPLICAS_MIN, DEFAULT_REPLICAS_MAX
    replicas = f.sub("replicas")
    if replicas is not None:
        replicas.allow("min", "max")
        got_min = replicas.get_int("min", minimum=0, maximum=INT32_MAX)
        got_max = replicas.get_int("max", minimum=1, maximum=INT32_MAX)
        replicas.finish()
        replicas_min = got_min if got_min is not None else DEFAULT_REPLICAS_MIN
        replicas_max = got_max if got_max is not None else DEFAULT_REPLICAS_MAX
        if replicas_max < replicas_min:
            given = "" if got_max is not None else " (the default)"
            raise replicas.error(
                "max", f"must be at least min ({replicas_min}), got {replicas_max}{given}"
            )

    # Whole seconds in KEDA; a Go duration string ("5m") is httpscale's extension, in
    # Kubernetes objects too (the CRD makes both periods int-or-string).
    scaledown = f.get_duration("scaledownPeriod")
    initial_cooldown = f.get_duration("initialCooldownPeriod")
    target_pending = f.get_int("targetPendingRequests", minimum=1, maximum=INT32_MAX)
    if target_pending is None:
        target_pending = legacy_target

    timeouts = HTTPScaledObjectTimeouts()
    timeout_fields = f.sub("timeouts")
    if timeout_fields is not None:
        timeout_fields.allow("conditionWait", "responseHeader")
        # 0 means "not set" (the interceptor's global value), as in KEDA, whose Go types
        # write an unset metav1.Duration as "0s": objects round-tripped by Go tools carry it.
        timeouts = HTTPScaledObjectTimeouts(
            condition_wait=timeout_fields.get_duration("conditionWait") or None,
            response_header=timeout_fields.get_duration("responseHeader") or None,
        )
        timeout_fields.finish()

    metric_fields = f.sub("scalingMetric")
    metric = _scaling_metric(metric_fields) if metric_fields is not None else None
    cold_fields = f.sub("coldStart")
    cold_start = parse_cold_start(cold_fields) if cold_fields is not None else ColdStart()
    if failover is not None and cold_start.fallback_upstream is not None:
        raise f.error(
            "coldStart.fallbackUpstream",
            "set either coldStartTimeoutFailoverRef or coldStart.fallbackUpstream, not both",
        )
    f.finish()
    return HTTPScaledObjectSpec(
        hosts=hosts,
        path_prefixes=path_prefixes,
        headers=headers,
        scale_target_ref=target_ref,
        replicas_min=replicas_min,
        replicas_max=replicas_max,
        scaledown_period=scaledown if scaledown is not None else DEFAULT_SCALEDOWN_PERIOD,
        initial_cooldown_period=(
            initial_cooldown if initial_cooldown is not None else DEFAULT_INITIAL_COOLDOWN_PERIOD
        ),
        scaling_metric=metric,
        target_pending_requests=target_pending,
        timeouts=timeouts,
        cold_start_timeout_failover_ref=failover,
        cold_start=cold_start,
    )


def _scaling_metric(f: Fields) -> ScalingMetric | None:
    f.allow("concurrency", "requestRate")
    concurrency = f.sub("concurrency")
    rate = f.sub("requestRate")
    f.finish()
    if concurrency is not None and rate is not None:
        # KEDA's operator refuses this too; picking one silently would scale on the wrong signal.
        raise f.error("requestRate", "concurrency and requestRate are mutually exclusive")
    if concurrency is not None:
        target = concurrency.get_number("targetValue", positive=True)
        concurrency.finish()
        return ScalingMetric(
            kind="concurrency", target_value=target if target is not None else DEFAULT_TARGET_VALUE
        )
    if rate is not None:
        target = rate.get_number("targetValue", positive=True)
        window = rate.get_duration("window", positive=True)
        granularity = rate.get_duration("granularity", positive=True)
        rate.finish()
        window = window if window is not None else DEFAULT_RATE_WINDOW
        granularity = granularity if granularity is not None else DEFAULT_RATE_GRANULARITY
        if granularity > window:
            raise rate.error("granularity", "must not be longer than window")
        return ScalingMetric(
            kind="requestRate",
            target_value=target if target is not None else DEFAULT_TARGET_VALUE,
            window=window,
            granularity=granularity,
        )
    return None  # `scalingMetric: {}`: KEDA falls back as if it were absent


def _hosts(f: Fields) -> tuple[str, ...]:
    legacy = f.get_str("host")  # before v0.6 an object had exactly one host
    if legacy is None:
        return parse_hosts(f, "hosts")
    if f.has("hosts"):
        raise f.error("host", "set either hosts or the older host, not both")
    _check_host(legacy, key=f.where("host"), source=f.source)
    return (legacy,)


def parse_hosts(f: Fields, name: str, *, unique: bool = False) -> tuple[str, ...]:
    """A list of hosts: `app.example.com`, `*.example.com`, `*`, or "" (KEDA's catch-all).

    `unique` refuses a host listed twice (the InterceptorRoute CRD makes the list a set).
    """
    hosts = f.get_str_list(name) or ()
    for index, host in enumerate(hosts):
        key = join_key(f.where(name), index)
        _check_host(host, key=key, source=f.source)
        if unique and host in hosts[:index]:
            raise ConfigError(f.source, key, f"host {host!r} is listed twice")
    return hosts


def _check_host(host: str, *, key: str, source: str) -> None:
    if host and not HOST.fullmatch(host):
        raise ConfigError(
            source,
            key,
            f"expected a host name like app.example.com or *.example.com, got {host!r}"
            " (no scheme, port or path)",
        )


def parse_path_prefix(prefix: str, *, key: str, source: str) -> str:
    """A path prefix as written (`/api`); refused if it could never match a request path."""
    if any(c in prefix for c in _PATH_FORBIDDEN) or "://" in prefix:
        raise ConfigError(source, key, f"expected a path like /api, got {prefix!r}")
    return prefix


def parse_header_matches(f: Fields, name: str) -> tuple[HeaderSpec, ...]:
    """A list of `{name, value?}` header matches (HTTPSO `spec.headers`, IR `rules[].headers`).

    Both CRDs make `name` the list's map key, so the API server refuses a name listed twice;
    HTTP header names are case-insensitive, so this refuses `X-A` beside `x-a` too.
    """
    out: list[HeaderSpec] = []
    seen: set[str] = set()
    for h in f.get_mappings(name) or ():
        h.allow("name", "value")
        header = h.get_str("name", required=True, nonempty=True)
        assert header is not None
        if not HEADER_NAME.fullmatch(header):
            raise h.error("name", f"not a valid header name: {header!r}")
        if header.lower() in seen:
            raise h.error("name", f"header {header!r} is listed twice")
        seen.add(header.lower())
        value = h.get_str("value")
        h.finish()
        out.append(HeaderSpec(name=header, value=value))
    return tuple(out)


def to_route_spec(
    key: str,
    spec: HTTPScaledObjectSpec,
    *,
    static_endpoints: tuple[Endpoint, ...] | None = None,
    failover_endpoint: Endpoint | None = None,
) -> RouteSpec:
    """The interceptor's view of `spec`, routed under `key` ("<namespace>/<name>").

    The failover target is `coldStart.fallbackUpstream`, else `coldStartTimeoutFailoverRef` as
    `<service>.<namespace>:<port>`; a ref given by `portName` needs the Service looked up, so
    the caller passes the resolved `failover_endpoint` (without it there is no failover).
    Held requests fail over after `timeoutSeconds` (default 30), never later than they would
    time out: KEDA likewise makes that timeout the wait for readiness.
    """
    cold = spec.cold_start
    readiness = cold.readiness_timeout
    if readiness is None:
        readiness = spec.timeouts.condition_wait
    if readiness is None:
        readiness = DEFAULT_READINESS_TIMEOUT

    ref = spec.cold_start_timeout_failover_ref
    fallback = cold.fallback_upstream or failover_endpoint
    if fallback is None and ref is not None and ref.port is not None:
        namespace = key.partition("/")[0]
        fallback = Endpoint(f"{ref.service}.{namespace}", ref.port)
    failover_timeout: float | None = None
    if fallback is not None:
        wanted = float(ref.timeout_seconds if ref else DEFAULT_FAILOVER_TIMEOUT_SECONDS)
        failover_timeout = min(wanted, readiness)

    return RouteSpec(
        key=key,
        match=RouteMatch(
            hosts=tuple(h.lower() for h in spec.hosts),
            path_prefixes=spec.path_prefixes,
            headers=tuple(HeaderMatch(h.name.lower(), h.value) for h in spec.headers),
        ),
        response_header_timeout=spec.timeouts.response_header,
        readiness_timeout=readiness,
        max_pending_requests=(
            cold.max_pending_requests
            if cold.max_pending_requests is not None
            else DEFAULT_MAX_PENDING_REQUESTS
        ),
        max_concurrency_per_endpoint=cold.max_concurrency_per_endpoint,
        placeholder=cold.placeholder,
        fallback=fallback,
        failover_timeout=failover_timeout,
        static_endpoints=static_endpoints,
    )
