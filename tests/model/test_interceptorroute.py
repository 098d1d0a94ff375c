"""InterceptorRoute parsing: KEDA's documented shapes, defaults, and errors that name the key.

The same rules are checked against a real API server by tests/k8s/test_crds.py; these are the
fast, pure checks of what each rule says.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from httpscale.model import (
    ConfigError,
    ConfigMapKeyRef,
    HeaderSpec,
    InterceptorRoute,
    RouteColdStart,
    RouteRule,
    RouteTimeouts,
    ScalingMetric,
    ServiceRef,
    SessionPersistence,
    StaticResponse,
    StaticRoute,
    TargetRef,
    parse_duration,
    parse_interceptor_route,
    parse_interceptor_route_spec,
)

# KEDA's reference example, as its docs lay it out (v0.15+: staticRoutes).
REFERENCE = """
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: my-app
  namespace: default
spec:
  target:
    service: my-app-svc
    port: 8080
  rules:
    - hosts:
        - app.example.com
      paths:
        - value: /api
  scalingMetric:
    concurrency:
      targetValue: 100
  staticRoutes:
    - rules:
        - paths:
            - value: /healthz
      response:
        statusCode: 200
        body: "OK"
status:
  conditions:
    - type: Ready
      status: "True"
      reason: Reconciled
      message: ""
      lastTransitionTime: "2026-01-01T00:00:00Z"
"""

# The cold-start guide's shapes: placeholder (inline and from a ConfigMap), fallback, and the
# 1.0 additions (pending-request limit, overflow, session persistence).
COLD_START = """
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: shop
  namespace: web
spec:
  target:
    service: shop
    portName: http
  rules:
    - hosts: ["shop.example.com", "*.shop.example.com"]
      headers:
        - name: X-Tenant
          value: blue
        - name: X-Canary
    - paths: [{value: /shop}]
  scalingMetric:
    concurrency:
      targetValue: 20
    requestRate:
      targetValue: 50
      window: 2m
      granularity: 5s
  coldStart:
    fallback:
      service:
        name: shop-static
        port: 80
    placeholder:
      response:
        statusCode: 503
        body: "<h1>Loading...</h1>"
        headers:
          Refresh: "5"
          Content-Type: text/html
    maxPendingRequests: 200
    overflow: Placeholder
  timeouts:
    readiness: 5s
    request: 1m
    responseHeader: "0s"
  staticRoutes:
    - rules: [{paths: [{value: /maintenance}]}, {hosts: [status.example.com]}]
      response:
        bodyFromConfigMap:
          name: pages
          key: maintenance.html
      responseMode: Always
  sessionPersistence:
    type: Cookie
    absoluteTimeout: 1h
    cookie:
      name: shop-backend
"""

MINIMAL: dict[str, Any] = {
    "target": {"service": "app", "port": 80},
    "scalingMetric": {"concurrency": {"targetValue": 10}},
}


def parse(spec: dict[str, Any]) -> Any:
    return parse_interceptor_route_spec(spec, source="ns/r")


def error_of(spec: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(spec)
    return info.value


def test_reference_example_parses_unchanged() -> None:
    route = parse_interceptor_route(yaml.safe_load(REFERENCE))
    assert isinstance(route, InterceptorRoute)
    assert route.key == "default/my-app"
    spec = route.spec
    assert spec.target == TargetRef(service="my-app-svc", port=8080)
    assert spec.rules == (RouteRule(hosts=("app.example.com",), paths=("/api",)),)
    assert spec.scaling_metrics == (ScalingMetric("concurrency", 100.0),)
    assert spec.concurrency == ScalingMetric("concurrency", 100.0)
    assert spec.request_rate is None
    assert spec.static_routes == (
        StaticRoute(
            rules=(RouteRule(paths=("/healthz",)),),
            response=StaticResponse(status_code=200, body="OK"),
            response_mode="WhenUnavailable",
        ),
    )
    assert spec.cold_start is None
    assert spec.timeouts == RouteTimeouts()
    assert spec.session_persistence is None


def test_cold_start_guide_shapes() -> None:
    route = parse_interceptor_route(yaml.safe_load(COLD_START))
    assert route.key == "web/shop"
    spec = route.spec
    assert spec.target == TargetRef(service="shop", port_name="http")
    assert spec.rules == (
        RouteRule(
            hosts=("shop.example.com", "*.shop.example.com"),
            headers=(HeaderSpec("X-Tenant", "blue"), HeaderSpec("X-Canary")),
        ),
        RouteRule(paths=("/shop",)),
    )
    assert spec.scaling_metrics == (
        ScalingMetric("concurrency", 20.0),
        ScalingMetric("requestRate", 50.0, 120.0, 5.0),
    )
    assert spec.cold_start == RouteColdStart(
        fallback=ServiceRef(name="shop-static", port=80),
        # As the API server stores a map: keys sorted.
        placeholder=StaticResponse(
            status_code=503,
            body="<h1>Loading...</h1>",
            headers=(("Content-Type", "text/html"), ("Refresh", "5")),
        ),
        max_pending_requests=200,
        overflow="Placeholder",
    )
    # "0s" disables a timeout; unset (None) means the interceptor's global setting.
    assert spec.timeouts == RouteTimeouts(readiness=5.0, request=60.0, response_header=0.0)
    assert spec.static_routes[0].response == StaticResponse(
        body_from_config_map=ConfigMapKeyRef(name="pages", key="maintenance.html")
    )
    assert spec.static_routes[0].response_mode == "Always"
    assert spec.static_routes[0].rules[1] == RouteRule(hosts=("status.example.com",))
    assert spec.session_persistence == SessionPersistence(
        type="Cookie", absolute_timeout=3600.0, cookie_name="shop-backend"
    )


def test_defaults() -> None:
    spec = parse(
        {
            **MINIMAL,
            "scalingMetric": {"requestRate": {"targetValue": 3}},
            "coldStart": {"maxPendingRequests": 5},
            "staticRoutes": [{"rules": [{}], "response": {}}],
            "sessionPersistence": {},
        }
    )
    assert spec.scaling_metrics == (ScalingMetric("requestRate", 3.0, 60.0, 1.0),)
    assert spec.cold_start == RouteColdStart(max_pending_requests=5, overflow="Reject")
    assert spec.static_routes == (
        StaticRoute(
            rules=(RouteRule(),), response=StaticResponse(), response_mode="WhenUnavailable"
        ),
    )
    assert spec.session_persistence == SessionPersistence()
    assert spec.rules == ()


def test_durations_are_whole_seconds_or_go_strings() -> None:
    spec = parse({**MINIMAL, "timeouts": {"readiness": 0, "request": 90, "responseHeader": "1.5s"}})
    assert spec.timeouts == RouteTimeouts(readiness=0.0, request=90.0, response_header=1.5)
    assert "timeouts.request: invalid duration '90'" in str(
        error_of({**MINIMAL, "timeouts": {"request": "90"}})
    )
    assert error_of({**MINIMAL, "timeouts": {"request": 1.5}}).key == "spec.timeouts.request"


def test_empty_string_key_of_config_map_means_derived_from_the_path() -> None:
    spec = parse(
        {**MINIMAL, "coldStart": {"placeholder": {"response": {"bodyFromConfigMap": {
            "name": "p", "key": ""}}}}}
    )
    assert spec.cold_start is not None and spec.cold_start.placeholder is not None
    assert spec.cold_start.placeholder.body_from_config_map == ConfigMapKeyRef(name="p")


def test_null_counts_as_absent() -> None:
    spec = parse({**MINIMAL, "rules": None, "timeouts": {"readiness": None}})
    assert spec.rules == () and spec.timeouts == RouteTimeouts()


def _with(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL plus a full cold start, with `value` put at dotted `path` (None deletes)."""
    spec: dict[str, Any] = yaml.safe_load(yaml.safe_dump({
        **MINIMAL,
        "rules": [{"hosts": ["a.example"], "paths": [{"value": "/a"}],
                   "headers": [{"name": "X-A"}]}],
        "coldStart": {"fallback": {"service": {"name": "f", "port": 80}},
                      "placeholder": {"response": {"statusCode": 503}}},
        "staticRoutes": [{"rules": [{"paths": [{"value": "/h"}]}], "response": {}}],
    }))
    *parents, last = path.split(".")
    node: Any = spec
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return spec


@pytest.mark.parametrize(
    ("spec", "key", "message"),
    [
        ({"scalingMetric": MINIMAL["scalingMetric"]}, "spec.target", "required"),
        ({"target": MINIMAL["target"]}, "spec.scalingMetric", "required"),
        (_with("target.port", None), "spec.target.port", "set exactly one of port or portName"),
        (_with("target.portName", "http"), "spec.target.port", "set exactly one"),
        (_with("target.port", 0), "spec.target.port", "must be at least 1"),
        (_with("target.port", 65536), "spec.target.port", "must be at most 65535"),
        (_with("target.port", 80.0), "spec.target.port", "expected an integer"),
        (_with("target.service", " "), "spec.target.service", "must not be empty"),
        (_with("target.sevrice", "x"), "spec.target.sevrice", "unknown key (did you mean"),
        (_with("rules.0.hosts", ["a.example", "http://b"]), "spec.rules[0].hosts[1]",
         "expected a host name"),
        (_with("rules.0.hosts", ["a.example", "a.example"]), "spec.rules[0].hosts[1]",
         "listed twice"),
        (_with("rules.0.hosts", ["b:80"]), "spec.rules[0].hosts[0]", "no scheme, port or path"),
        (_with("rules.0.paths", [{"value": "/a"}, {"value": "/a?b"}]),
         "spec.rules[0].paths[1].value", "expected a path like /api"),
        (_with("rules.0.paths", [{"value": ""}]), "spec.rules[0].paths[0].value",
         "must not be empty"),
        (_with("rules.0.paths", ["/a"]), "spec.rules[0].paths[0]", "expected a mapping"),
        (_with("rules.0.headers", [{"name": "X A"}]), "spec.rules[0].headers[0].name",
         "not a valid header name"),
        (_with("rules.0.headers", [{"name": "X-A"}, {"name": "x-a"}]),
         "spec.rules[0].headers[1].name", "listed twice"),
        (_with("rules.0.hots", []), "spec.rules[0].hots", "did you mean 'hosts'"),
        (_with("scalingMetric", {}), "spec.scalingMetric",
         "set at least one of concurrency or requestRate"),
        (_with("scalingMetric.concurrency", {}), "spec.scalingMetric.concurrency.targetValue",
         "required"),
        (_with("scalingMetric.concurrency.targetValue", 0),
         "spec.scalingMetric.concurrency.targetValue", "must be at least 1"),
        (_with("scalingMetric.concurrency.targetValue", 2**31),
         "spec.scalingMetric.concurrency.targetValue", "must be at most 2147483647"),
        (_with("scalingMetric.requestRate", {"targetValue": 1, "window": "forever"}),
         "spec.scalingMetric.requestRate.window", "invalid duration 'forever'"),
        (_with("scalingMetric.requestRate", {"targetValue": 1, "window": "0s"}),
         "spec.scalingMetric.requestRate.window", "must be longer than 0"),
        (_with("scalingMetric.requestRate", {"targetValue": 1, "granularity": "2m"}),
         "spec.scalingMetric.requestRate.granularity", "must not be longer than window"),
        (_with("coldStart", {}), "spec.coldStart",
         "set at least one of fallback, placeholder or maxPendingRequests"),
        (_with("coldStart", {"overflow": "Reject"}), "spec.coldStart", "set at least one"),
        (_with("coldStart", {"maxPendingRequests": 1, "overflow": "Placeholder"}),
         "spec.coldStart.overflow", "Placeholder needs coldStart.placeholder"),
        (_with("coldStart.overflow", "Spill"), "spec.coldStart.overflow",
         "expected Reject or Placeholder"),
        (_with("coldStart.maxPendingRequests", 0), "spec.coldStart.maxPendingRequests",
         "must be at least 1"),
        (_with("coldStart.fallback", {}), "spec.coldStart.fallback.service", "required"),
        (_with("coldStart.fallback.service.name", None), "spec.coldStart.fallback.service.name",
         "required"),
        (_with("coldStart.fallback.service.portName", "http"),
         "spec.coldStart.fallback.service.port", "set exactly one"),
        (_with("coldStart.placeholder", {}), "spec.coldStart.placeholder.response", "required"),
        (_with("coldStart.placeholder.response.statusCode", 99),
         "spec.coldStart.placeholder.response.statusCode", "must be at least 100"),
        (_with("coldStart.placeholder.response.statusCode", 600),
         "spec.coldStart.placeholder.response.statusCode", "must be at most 599"),
        (_with("coldStart.placeholder.response.body", "x" * 32769),
         "spec.coldStart.placeholder.response.body", "at most 32768 characters"),
        (_with("coldStart.placeholder.response.bodyFromConfigMap", {"key": "k"}),
         "spec.coldStart.placeholder.response.bodyFromConfigMap.name", "required"),
        (_with("coldStart.placeholder.response", {"body": "", "bodyFromConfigMap": {"name": "c"}}),
         "spec.coldStart.placeholder.response.bodyFromConfigMap",
         "set at most one of body or bodyFromConfigMap"),
        (_with("coldStart.placeholder.response.headers", {"Bad Name": "x"}),
         "spec.coldStart.placeholder.response.headers", "not a valid header name"),
        (_with("coldStart.placeholder.response.headers", {"Transfer-Encoding": "chunked"}),
         "spec.coldStart.placeholder.response.headers", "set by the interceptor"),
        (_with("coldStart.placeholder.response.headers", {"X-A": "a\r\nSet-Cookie: x"}),
         "spec.coldStart.placeholder.response.headers.X-A", "one line"),
        (_with("coldStart.placeholder.response.headers", {"X-A": 5}),
         "spec.coldStart.placeholder.response.headers.X-A", "expected a string"),
        (_with("timeouts", {"readiness": "-1s"}), "spec.timeouts.readiness",
         "must not be negative"),
        (_with("timeouts", {"request": "1d"}), "spec.timeouts.request", "invalid duration"),
        (_with("timeouts", {"request": "600000h"}), "spec.timeouts.request", "at most"),
        (_with("timeouts", {"idle": "1s"}), "spec.timeouts.idle", "unknown key"),
        (_with("staticRoutes.0.rules", []), "spec.staticRoutes[0].rules", "at least one rule"),
        (_with("staticRoutes.0.response", None), "spec.staticRoutes[0].response", "required"),
        (_with("staticRoutes.0.responseMode", "always"), "spec.staticRoutes[0].responseMode",
         "expected Always or WhenUnavailable"),
        (_with("staticRoutes.0.rules.0.paths.0.value", "http://x/h"),
         "spec.staticRoutes[0].rules[0].paths[0].value", "expected a path"),
        (_with("sessionPersistence", {"type": "Header"}), "spec.sessionPersistence.type",
         "expected Cookie"),
        (_with("sessionPersistence", {"cookie": {"name": "a b"}}),
         "spec.sessionPersistence.cookie.name", "not a valid cookie name"),
        (_with("sessionPersistence", {"absoluteTimeout": "soon"}),
         "spec.sessionPersistence.absoluteTimeout", "invalid duration"),
        (_with("replicas", {"min": 1}), "spec.replicas", "unknown key"),
    ],
)
def test_errors_name_the_key(spec: dict[str, Any], key: str, message: str) -> None:
    error = error_of(spec)
    assert (error.source, error.key) == ("ns/r", key)
    assert message in error.message


def test_whole_object_envelope() -> None:
    obj = yaml.safe_load(REFERENCE)
    obj["metadata"]["labels"] = {"a": "b"}
    assert parse_interceptor_route(obj).name == "my-app"
    del obj["metadata"]["namespace"]
    assert parse_interceptor_route(obj, default_namespace="team").key == "team/my-app"
    obj["extra"] = 1
    with pytest.raises(ConfigError, match=r"^team/my-app: extra: unknown key$"):
        parse_interceptor_route(obj, default_namespace="team")
    with pytest.raises(ConfigError, match=r"^default/<unnamed>: metadata.name: required$"):
        parse_interceptor_route({"spec": MINIMAL})
    with pytest.raises(ConfigError, match=r"^default/r: spec: required$"):
        parse_interceptor_route({"metadata": {"name": "r"}})
    with pytest.raises(ConfigError, match=r"^x/r: spec.scalingMetric: required$"):
        parse_interceptor_route({"metadata": {"name": "r", "namespace": "x"},
                                 "spec": {"target": MINIMAL["target"]}})


def test_spec_is_frozen_and_hashable() -> None:
    spec = parse_interceptor_route(yaml.safe_load(COLD_START)).spec
    assert hash(spec) == hash(parse_interceptor_route(yaml.safe_load(COLD_START)).spec)
    with pytest.raises(AttributeError):
        spec.rules = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (30, 30.0), ("0", 0.0), ("+5s", 5.0), ("1.5s", 1.5), ("1h30m", 5400.0),
     ("10\u00b5s", 1e-05), (2**31 - 1, float(2**31 - 1))],
)
def test_kubernetes_durations(value: object, seconds: float) -> None:
    assert parse_duration(value, key="k", kube=True) == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("30", "invalid duration '30'"), (" 30s", "invalid duration"), (2.5, "expected a duration"),
     (30.0, "expected a duration"), (True, "expected a duration"), ("-0s", "not be negative"),
     (-1, "not be negative"), (2**31, "at most 2147483647s"), ("596524h", "at most"),
     ("1" + "0" * 70 + "ns", "at most 64 characters")],
)
def test_kubernetes_durations_refused(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        parse_duration(value, key="k", kube=True)
