"""InterceptorRoute -> the interceptor's RouteSpecs (pure)."""

from __future__ import annotations

from typing import Any

from httpscale.model import parse_interceptor_route
from httpscale.model.routespecs import DISABLED, interceptor_route_specs
from httpscale.routing.spec import (
    DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_READINESS_TIMEOUT,
    BodyFiles,
    HeaderMatch,
    RouteMatch,
)


def _route(**spec: Any) -> Any:
    body = {"target": {"service": "app", "port": 8080},
            "scalingMetric": {"concurrency": {"targetValue": 10}}}
    body.update(spec)
    return parse_interceptor_route({
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": {"name": "app", "namespace": "shop"}, "spec": body})


def _no_config_maps(namespace: str, name: str) -> None:
    return None


def test_rules_become_one_route_with_several_matches() -> None:
    (spec,) = interceptor_route_specs(_route(rules=[
        {"hosts": ["App.example.com"], "paths": [{"value": "/api"}],
         "headers": [{"name": "X-Tenant", "value": "blue"}]},
        {"hosts": ["*.example.org"]},
    ]), _no_config_maps)
    assert spec.key == "shop/app"
    assert spec.match == RouteMatch(("app.example.com",), ("/api",),
                                    (HeaderMatch("x-tenant", "blue"),))
    assert spec.matches == (spec.match, RouteMatch(("*.example.org",)))
    assert spec.max_pending_requests == DEFAULT_MAX_PENDING_REQUESTS
    assert spec.placeholder is None and spec.canned is None and spec.scaled


def test_no_rules_is_a_catch_all() -> None:
    (spec,) = interceptor_route_specs(_route(), _no_config_maps)
    assert spec.matches == (RouteMatch(),)


def test_timeouts_unset_global_zero_disabled_but_never_unbounded() -> None:
    (spec,) = interceptor_route_specs(_route(), _no_config_maps)
    assert spec.readiness_timeout == DEFAULT_READINESS_TIMEOUT
    assert spec.request_timeout is None and spec.response_header_timeout is None
    (spec,) = interceptor_route_specs(_route(timeouts={
        "readiness": "10s", "request": "1m", "responseHeader": "0s"}), _no_config_maps)
    assert (spec.readiness_timeout, spec.request_timeout) == (10, 60)
    assert spec.response_header_timeout == DISABLED
    # Readiness disabled: the request timeout bounds the wait ...
    (spec,) = interceptor_route_specs(_route(timeouts={"readiness": "0s", "request": "45s"}),
                                      _no_config_maps)
    assert spec.readiness_timeout == 45
    # ... else KEDA's 30 s with a fallback, else the interceptor's default.
    (spec,) = interceptor_route_specs(_route(
        timeouts={"readiness": "0s"},
        coldStart={"fallback": {"service": {"name": "spare", "port": 80}}}), _no_config_maps)
    assert spec.readiness_timeout == 30 and spec.failover_timeout == 30
    (spec,) = interceptor_route_specs(_route(timeouts={"readiness": "0s"}), _no_config_maps)
    assert spec.readiness_timeout == DEFAULT_READINESS_TIMEOUT and spec.failover_timeout is None


def test_placeholder_for_all_and_overflow() -> None:
    cold = {"placeholder": {"response": {"statusCode": 202, "body": "soon",
                                         "headers": {"Refresh": "5"}}},
            "maxPendingRequests": 50, "overflow": "Placeholder"}
    (spec,) = interceptor_route_specs(_route(coldStart=cold), _no_config_maps)
    assert spec.placeholder is not None
    assert (spec.placeholder.status, spec.placeholder.body) == (202, "soon")
    assert spec.placeholder.headers == (("Refresh", "5"),)
    assert spec.placeholder.for_all
    assert spec.max_pending_requests == 50 and spec.overflow_placeholder
    cold["overflow"] = "Reject"
    (spec,) = interceptor_route_specs(_route(coldStart=cold), _no_config_maps)
    assert not spec.overflow_placeholder


def test_static_routes_come_first_and_bodies_come_from_config_maps() -> None:
    pages = {"index.html": b"<h1>hi</h1>", "a/b.css": b"x"}

    def config_maps(namespace: str, name: str) -> dict[str, bytes] | None:
        assert namespace == "shop"
        return pages if name == "pages" else None

    specs = interceptor_route_specs(_route(staticRoutes=[
        {"rules": [{"paths": [{"value": "/healthz"}]}],
         "response": {"statusCode": 200, "body": "OK"}, "responseMode": "Always"},
        {"rules": [{"paths": [{"value": "/"}]}],
         "response": {"bodyFromConfigMap": {"name": "pages"}}},
        {"rules": [{"paths": [{"value": "/x"}]}],
         "response": {"bodyFromConfigMap": {"name": "pages", "key": "nope"}}},
        {"rules": [{"paths": [{"value": "/y"}]}],
         "response": {"bodyFromConfigMap": {"name": "absent", "key": "k"}}},
    ]), config_maps)
    assert [s.key for s in specs] == ["shop/app#static-0", "shop/app#static-1",
                                      "shop/app#static-2", "shop/app#static-3", "shop/app"]
    healthz, site, nokey, absent, main = specs
    assert healthz.canned is not None and healthz.canned.always
    assert (healthz.canned.status, healthz.canned.body) == (200, b"OK")
    assert not healthz.scaled and main.scaled
    assert site.canned is not None and not site.canned.always  # WhenUnavailable, the default
    assert site.canned.files == BodyFiles(files=(("a/b.css", b"x"),
                                                 ("index.html", b"<h1>hi</h1>")))
    assert nokey.canned is not None and nokey.canned.files is not None
    assert "has no key 'nope'" in nokey.canned.files.missing
    assert absent.canned is not None and absent.canned.files is not None
    assert "ConfigMap shop/absent not found" in absent.canned.files.missing
