"""HTTPScaledObject parsing: KEDA's fields and defaults, legacy forms, errors, route mapping."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from httpscale.model import (
    ConfigError,
    HeaderSpec,
    HTTPScaledObjectSpec,
    ScaleTargetRef,
    ScalingMetric,
    parse_httpso,
    parse_httpso_spec,
    to_route_spec,
)
from httpscale.routing import (
    DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_READINESS_TIMEOUT,
    Endpoint,
    HeaderMatch,
    Placeholder,
)

# Written the way KEDA's add-on documents an HTTPScaledObject (v0.8+), applied unchanged.
KEDA_EXAMPLE = """
kind: HTTPScaledObject
apiVersion: http.keda.sh/v1alpha1
metadata:
  name: xkcd
  namespace: web
  annotations:
    httpscaledobject.keda.sh/skip-scaledobject-creation: "false"
spec:
  hosts:
    - myhost.com
    - "*.example.com"
  pathPrefixes:
    - /test
  headers:
    - name: X-Custom-Header
      value: CustomValue
    - name: X-Canary
  scaleTargetRef:
    name: xkcd
    kind: Deployment
    apiVersion: apps/v1
    service: xkcd
    port: 8080
  replicas:
    min: 5
    max: 10
  scaledownPeriod: 300
  initialCooldownPeriod: 60
  scalingMetric:
    requestRate:
      granularity: 1s
      targetValue: 100
      window: 1m
  timeouts:
    conditionWait: 20s
    responseHeader: 500ms
  coldStartTimeoutFailoverRef:
    service: xkcd-fallback
    port: 8080
    timeoutSeconds: 10
status:
  conditions:
    - type: Ready
      status: "True"
"""

MINIMAL: dict[str, Any] = {"scaleTargetRef": {"name": "app", "service": "app", "port": 80}}


def parse(spec: dict[str, Any], **kwargs: Any) -> HTTPScaledObjectSpec:
    return parse_httpso_spec(spec, source="ns/app", **kwargs)


def error_of(spec: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(spec, **kwargs)
    return str(info.value)


def test_keda_example_parses_unchanged() -> None:
    obj = parse_httpso(yaml.safe_load(KEDA_EXAMPLE))
    assert obj.key == "web/xkcd"
    spec = obj.spec
    assert spec.hosts == ("myhost.com", "*.example.com")
    assert spec.path_prefixes == ("/test",)
    assert spec.headers == (HeaderSpec("X-Custom-Header", "CustomValue"), HeaderSpec("X-Canary"))
    assert spec.scale_target_ref == ScaleTargetRef(
        name="xkcd", service="xkcd", kind="Deployment", api_version="apps/v1", port=8080
    )
    assert (spec.replicas_min, spec.replicas_max) == (5, 10)
    assert spec.scaledown_period == 300.0
    assert spec.initial_cooldown_period == 60.0
    assert spec.effective_scaling_metric() == ScalingMetric("requestRate", 100.0, 60.0, 1.0)
    assert spec.timeouts.condition_wait == 20.0
    assert spec.timeouts.response_header == 0.5
    ref = spec.cold_start_timeout_failover_ref
    assert ref is not None and (ref.service, ref.port, ref.timeout_seconds) == (
        "xkcd-fallback",
        8080,
        10,
    )

    route = to_route_spec(obj.key, spec)
    assert route.key == "web/xkcd"
    assert route.match.hosts == ("myhost.com", "*.example.com")
    assert route.match.headers == (
        HeaderMatch("x-custom-header", "CustomValue"),
        HeaderMatch("x-canary", None),
    )
    assert route.readiness_timeout == 20.0
    assert route.response_header_timeout == 0.5
    assert route.fallback == Endpoint("xkcd-fallback.web", 8080)
    assert route.failover_timeout == 10.0


def test_keda_defaults() -> None:
    spec = parse(MINIMAL)
    assert spec.hosts == () and spec.path_prefixes == () and spec.headers == ()
    assert (spec.replicas_min, spec.replicas_max) == (0, 100)
    assert spec.scaledown_period == 300.0
    assert spec.initial_cooldown_period == 0.0
    assert spec.scaling_metric is None
    assert spec.effective_scaling_metric() == ScalingMetric("concurrency", 100.0)
    ref = spec.scale_target_ref
    assert ref is not None and (ref.kind, ref.api_version) == ("Deployment", "apps/v1")
    route = to_route_spec("ns/app", spec)
    assert route.readiness_timeout == DEFAULT_READINESS_TIMEOUT
    assert route.max_pending_requests == DEFAULT_MAX_PENDING_REQUESTS
    assert route.fallback is None and route.failover_timeout is None
    assert route.placeholder is None and route.static_endpoints is None


def test_scaling_metric_defaults_inside_each_kind() -> None:
    spec = parse({**MINIMAL, "scalingMetric": {"requestRate": {}}})
    assert spec.effective_scaling_metric() == ScalingMetric("requestRate", 100.0, 60.0, 1.0)
    spec = parse({**MINIMAL, "scalingMetric": {"concurrency": {"targetValue": 7}}})
    assert spec.effective_scaling_metric() == ScalingMetric("concurrency", 7.0)
    spec = parse({**MINIMAL, "scalingMetric": {"concurrency": {}}})
    assert spec.effective_scaling_metric() == ScalingMetric("concurrency", 100.0)


def test_target_pending_requests_is_concurrency_unless_scaling_metric_set() -> None:
    spec = parse({**MINIMAL, "targetPendingRequests": 25})
    assert spec.effective_scaling_metric() == ScalingMetric("concurrency", 25.0)
    spec = parse(
        {**MINIMAL, "targetPendingRequests": 25, "scalingMetric": {"requestRate": {"window": "2m"}}}
    )
    assert spec.effective_scaling_metric() == ScalingMetric("requestRate", 100.0, 120.0, 1.0)
    spec = parse({**MINIMAL, "targetPendingRequests": 25, "scalingMetric": {}})
    assert spec.effective_scaling_metric() == ScalingMetric("concurrency", 25.0)


def test_zero_timeouts_mean_unset_as_in_keda() -> None:
    # KEDA's Go types write an unset timeout as "0s"; it means "the interceptor's default".
    spec = parse_httpso_spec(
        {**MINIMAL, "timeouts": {"conditionWait": "0s", "responseHeader": 0}}, source="t"
    )
    assert spec.timeouts.condition_wait is None and spec.timeouts.response_header is None


def test_legacy_host_and_deployment() -> None:
    # v0.2-era object: one `host`, `scaleTargetRef.deployment`, spec-level targetPendingRequests.
    spec = parse(
        {
            "host": "MyHost.com",
            "targetPendingRequests": 50,
            "scaleTargetRef": {"deployment": "xkcd", "service": "xkcd", "port": 8080},
        }
    )
    assert spec.hosts == ("MyHost.com",)
    assert spec.scale_target_ref == ScaleTargetRef(name="xkcd", service="xkcd", port=8080)
    assert spec.effective_scaling_metric().target_value == 50.0
    assert to_route_spec("ns/app", spec).match.hosts == ("myhost.com",)


def test_legacy_target_pending_requests_under_scale_target_ref() -> None:
    spec = parse(
        {
            "scaleTargetRef": {
                "deployment": "x",
                "service": "x",
                "port": 1,
                "targetPendingRequests": 9,
            }
        }
    )
    assert spec.effective_scaling_metric() == ScalingMetric("concurrency", 9.0)


def test_port_name_and_failover_port_name() -> None:
    spec = parse(
        {
            "scaleTargetRef": {"name": "a", "service": "a", "portName": "http"},
            "coldStartTimeoutFailoverRef": {"service": "b", "portName": "http"},
        }
    )
    assert spec.scale_target_ref is not None and spec.scale_target_ref.port_name == "http"
    ref = spec.cold_start_timeout_failover_ref
    assert ref is not None and ref.timeout_seconds == 30
    # A named port needs the Service looked up: without it there is no failover target...
    assert to_route_spec("ns/app", spec).fallback is None
    # ...and with it, the caller's resolved endpoint is used.
    route = to_route_spec("ns/app", spec, failover_endpoint=Endpoint("10.0.0.9", 8080))
    assert route.fallback == Endpoint("10.0.0.9", 8080)
    assert route.failover_timeout == 30.0


def test_cold_start_additions() -> None:
    spec = parse(
        {
            **MINIMAL,
            "timeouts": {"conditionWait": "20s"},
            "coldStart": {
                "readinessTimeout": "1m",
                "maxPendingRequests": 50,
                "maxConcurrencyPerEndpoint": 4,
                "placeholder": {
                    "status": 202,
                    "headers": {"Retry-After": "5"},
                    "body": "warming up",
                    "refreshSeconds": 3,
                },
                "fallbackUpstream": "http://127.0.0.1:9001",
            },
        }
    )
    route = to_route_spec("ns/app", spec, static_endpoints=(Endpoint("127.0.0.1", 1),))
    assert route.readiness_timeout == 60.0  # coldStart wins over timeouts.conditionWait
    assert route.max_pending_requests == 50
    assert route.max_concurrency_per_endpoint == 4
    assert route.placeholder == Placeholder(202, (("Retry-After", "5"),), "warming up", 3)
    assert route.fallback == Endpoint("127.0.0.1", 9001)
    assert route.failover_timeout == 30.0
    assert route.static_endpoints == (Endpoint("127.0.0.1", 1),)


def test_failover_never_later_than_the_readiness_timeout() -> None:
    spec = parse({**MINIMAL, "coldStart": {"readinessTimeout": 5, "fallbackUpstream": "http://h"}})
    route = to_route_spec("ns/app", spec)
    assert route.fallback == Endpoint("h", 80)
    assert route.failover_timeout == 5.0


def test_empty_placeholder_turns_it_on_with_defaults() -> None:
    spec = parse({**MINIMAL, "coldStart": {"placeholder": {}}})
    assert spec.cold_start.placeholder == Placeholder()
    assert not spec.cold_start.placeholder.for_all  # browsers only, unless asked


@pytest.mark.parametrize(("clients", "for_all"), [("Browsers", False), ("All", True)])
def test_placeholder_clients(clients: str, for_all: bool) -> None:
    spec = parse({**MINIMAL, "coldStart": {"placeholder": {"clients": clients}}})
    assert spec.cold_start.placeholder == Placeholder(for_all=for_all)
    route = to_route_spec("ns/app", spec)
    assert route.placeholder is not None and route.placeholder.for_all is for_all


def test_local_mode_has_no_service_refs() -> None:
    spec = parse({"hosts": ["a.localhost"]}, local=True)
    assert spec.scale_target_ref is None
    assert "scaleTargetRef: unknown key" in error_of({**MINIMAL}, local=True)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "ns/app: spec.scaleTargetRef: required"),
        ({**MINIMAL, "hots": ["a"]}, "ns/app: spec.hots: unknown key (did you mean 'hosts'?)"),
        ({**MINIMAL, "replicas": {"min": 3, "max": 2}}, "spec.replicas.max: must be at least min"),
        ({**MINIMAL, "replicas": {"max": 0}}, "spec.replicas.max: must be at least 1"),
        ({**MINIMAL, "replicas": {"min": -1}}, "spec.replicas.min: must be at least 0"),
        ({**MINIMAL, "replicas": {"min": "1"}}, "spec.replicas.min: expected an integer"),
        ({**MINIMAL, "replicas": {"min": True}}, "spec.replicas.min: expected an integer"),
        ({**MINIMAL, "hosts": "a.com"}, "spec.hosts: expected a list"),
        ({**MINIMAL, "hosts": ["ok.com", 3]}, "spec.hosts[1]: expected a string"),
        ({**MINIMAL, "hosts": ["http://a.com"]}, "spec.hosts[0]: expected a host name"),
        ({**MINIMAL, "hosts": ["a.com:80"]}, "spec.hosts[0]: expected a host name"),
        ({**MINIMAL, "hosts": ["a.*.com"]}, "spec.hosts[0]: expected a host name"),
        ({**MINIMAL, "host": "a", "hosts": ["b"]}, "spec.host: set either hosts"),
        ({**MINIMAL, "pathPrefixes": ["/a?b"]}, "spec.pathPrefixes[0]: expected a path"),
        ({**MINIMAL, "headers": [{"value": "x"}]}, "spec.headers[0].name: required"),
        ({**MINIMAL, "headers": [{"name": "a b"}]}, "spec.headers[0].name: not a valid header"),
        (
            {**MINIMAL, "headers": [{"name": "X-A"}, {"name": "x-a"}]},
            "spec.headers[1].name: header 'x-a' is listed twice",
        ),
        ({**MINIMAL, "headers": [{"name": "a", "vlaue": "b"}]}, "spec.headers[0].vlaue: unknown"),
        (
            {"scaleTargetRef": {"name": "a", "service": "a"}},
            "spec.scaleTargetRef.port: set exactly one of port or portName",
        ),
        (
            {"scaleTargetRef": {"name": "a", "service": "a", "port": 1, "portName": "http"}},
            "spec.scaleTargetRef.port: set exactly one of port or portName",
        ),
        (
            {"scaleTargetRef": {"name": "a", "service": "a", "port": 70000}},
            "spec.scaleTargetRef.port: must be at most 65535",
        ),
        ({"scaleTargetRef": {"service": "a", "port": 1}}, "spec.scaleTargetRef.name: required"),
        ({"scaleTargetRef": {"name": "a", "port": 1}}, "spec.scaleTargetRef.service: required"),
        (
            {"scaleTargetRef": {"name": "a", "deployment": "b", "service": "a", "port": 1}},
            "spec.scaleTargetRef.deployment: deprecated; conflicts with name 'a'",
        ),
        (
            {**MINIMAL, "scalingMetric": {"concurrency": {}, "requestRate": {}}},
            "spec.scalingMetric.requestRate: concurrency and requestRate are mutually exclusive",
        ),
        (
            {**MINIMAL, "scalingMetric": {"requestRate": {"window": "forever"}}},
            "spec.scalingMetric.requestRate.window: invalid duration 'forever'",
        ),
        (
            {**MINIMAL, "scalingMetric": {"requestRate": {"window": "1s", "granularity": "2s"}}},
            "spec.scalingMetric.requestRate.granularity: must not be longer than window",
        ),
        (
            {**MINIMAL, "scalingMetric": {"concurrency": {"targetValue": 0}}},
            "spec.scalingMetric.concurrency.targetValue: must be greater than 0",
        ),
        ({**MINIMAL, "scalingMetric": {"rate": {}}}, "spec.scalingMetric.rate: unknown key"),
        (
            {**MINIMAL, "timeouts": {"conditionWait": "-1s"}},
            "timeouts.conditionWait: duration must not be negative",
        ),
        ({**MINIMAL, "scaledownPeriod": "soon"}, "spec.scaledownPeriod: invalid duration"),
        (
            {**MINIMAL, "coldStart": {"maxPendingRequests": 0}},
            "spec.coldStart.maxPendingRequests: must be at least 1",
        ),
        (
            {**MINIMAL, "coldStart": {"maxConcurrencyPerEndpoint": 0}},
            "spec.coldStart.maxConcurrencyPerEndpoint: must be at least 1",
        ),
        (
            {**MINIMAL, "coldStart": {"fallbackUpstream": "https://a:1"}},
            "spec.coldStart.fallbackUpstream: only http:// upstreams",
        ),
        (
            {**MINIMAL, "coldStart": {"fallbackUpstream": "http://a:1/base"}},
            "spec.coldStart.fallbackUpstream: URL 'http://a:1/base' must be just http://host:port",
        ),
        (
            {**MINIMAL, "coldStart": {"placeholder": {"status": 99}}},
            "spec.coldStart.placeholder.status: must be at least 200",
        ),
        (
            {**MINIMAL, "coldStart": {"placeholder": {"headers": {"Content-Length": "1"}}}},
            "spec.coldStart.placeholder.headers: Content-Length is set by the interceptor",
        ),
        (
            {**MINIMAL, "coldStart": {"placeholder": {"headers": {"X-N": 5}}}},
            "spec.coldStart.placeholder.headers.X-N: expected a string",
        ),
        (
            {**MINIMAL, "coldStart": {"placeholder": {"clients": "browsers"}}},
            "spec.coldStart.placeholder.clients: expected Browsers or All, got 'browsers'",
        ),
        (
            {**MINIMAL, "coldStart": {"placeholder": {"clients": ["All"]}}},
            "spec.coldStart.placeholder.clients: expected a string",
        ),
        (
            {**MINIMAL, "coldStart": {"placeholder": {"client": "All"}}},
            "spec.coldStart.placeholder.client: unknown key (did you mean 'clients'?)",
        ),
        ({**MINIMAL, "coldStart": {"readyTimeout": "1s"}}, "spec.coldStart.readyTimeout: unknown"),
        (
            {
                **MINIMAL,
                "coldStartTimeoutFailoverRef": {"service": "b", "port": 1},
                "coldStart": {"fallbackUpstream": "http://a:1"},
            },
            "spec.coldStart.fallbackUpstream: set either coldStartTimeoutFailoverRef",
        ),
    ],
)
def test_errors_name_the_key(spec: dict[str, Any], expected: str) -> None:
    assert expected in error_of(spec)


def test_key_prefix_is_used_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_httpso_spec(
            {"replicas": {"max": 0}}, source="f.yaml", key_prefix="apps[2]", local=True
        )
    assert str(info.value) == "f.yaml: apps[2].replicas.max: must be at least 1, got 0"


def test_whole_object_ignores_metadata_and_status_but_not_unknown_top_keys() -> None:
    obj = yaml.safe_load(KEDA_EXAMPLE)
    obj["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    assert parse_httpso(obj).name == "xkcd"
    obj["extra"] = 1
    with pytest.raises(ConfigError, match=r"^web/xkcd: extra: unknown key$"):
        parse_httpso(obj)
    with pytest.raises(ConfigError, match=r"^default/<unnamed>: metadata.name: required$"):
        parse_httpso({"spec": MINIMAL})
    with pytest.raises(ConfigError, match=r"^default/a: spec: required$"):
        parse_httpso({"metadata": {"name": "a"}})
    bad = yaml.safe_load(KEDA_EXAMPLE)
    bad["spec"]["replicas"]["max"] = 1
    with pytest.raises(ConfigError, match=r"^web/xkcd: spec.replicas.max: must be at least min"):
        parse_httpso(bad)


def test_spec_objects_are_frozen_and_hashable() -> None:
    spec = parse(MINIMAL)
    assert hash(spec) == hash(parse(MINIMAL))
    with pytest.raises(AttributeError):
        spec.replicas_max = 3  # type: ignore[misc]
