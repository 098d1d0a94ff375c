"""The models of both CRD kinds, HTTPScaledObject and InterceptorRoute, shared by every
component: parsing, validation, defaults. docs/crds.md describes every field."""

from httpscale.model.coldstart import ColdStart
from httpscale.model.durations import format_duration, parse_duration
from httpscale.model.errors import ConfigError
from httpscale.model.httpso import (
    ColdStartTimeoutFailoverRef,
    HeaderSpec,
    HTTPScaledObjectSpec,
    HTTPScaledObjectTimeouts,
    MetricKind,
    ScaleTargetRef,
    ScalingMetric,
    parse_httpso_spec,
    to_route_spec,
)
from httpscale.model.interceptorroute import (
    ConfigMapKeyRef,
    InterceptorRoute,
    InterceptorRouteSpec,
    Overflow,
    ResponseMode,
    RouteColdStart,
    RouteRule,
    RouteTimeouts,
    ServiceRef,
    SessionPersistence,
    StaticResponse,
    StaticRoute,
    TargetRef,
    parse_interceptor_route,
    parse_interceptor_route_spec,
)
from httpscale.model.objects import HTTPScaledObject, parse_httpso

__all__ = [
    "ColdStart",
    "ColdStartTimeoutFailoverRef",
    "ConfigError",
    "ConfigMapKeyRef",
    "HTTPScaledObject",
    "HTTPScaledObjectSpec",
    "HTTPScaledObjectTimeouts",
    "HeaderSpec",
    "InterceptorRoute",
    "InterceptorRouteSpec",
    "MetricKind",
    "Overflow",
    "ResponseMode",
    "RouteColdStart",
    "RouteRule",
    "RouteTimeouts",
    "ScaleTargetRef",
    "ScalingMetric",
    "ServiceRef",
    "SessionPersistence",
    "StaticResponse",
    "StaticRoute",
    "TargetRef",
    "format_duration",
    "parse_duration",
    "parse_httpso",
    "parse_httpso_spec",
    "parse_interceptor_route",
    "parse_interceptor_route_spec",
    "to_route_spec",
]
