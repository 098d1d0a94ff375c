"""The HTTPScaledObject model shared by every component: parsing, validation, defaults."""

from httpscale.model.coldstart import ColdStart
from httpscale.model.durations import format_duration, parse_duration
from httpscale.model.errors import ConfigError
from httpscale.model.httpso import (
    ColdStartTimeoutFailoverRef,
    HeaderSpec,
    HTTPScaledObjectSpec,
    ScaleTargetRef,
    ScalingMetric,
    Timeouts,
    parse_httpso_spec,
    to_route_spec,
)
from httpscale.model.objects import HTTPScaledObject, parse_httpso

__all__ = [
    "ColdStart",
    "ColdStartTimeoutFailoverRef",
    "ConfigError",
    "HTTPScaledObject",
    "HTTPScaledObjectSpec",
    "HeaderSpec",
    "ScaleTargetRef",
    "ScalingMetric",
    "Timeouts",
    "format_duration",
    "parse_duration",
    "parse_httpso",
    "parse_httpso_spec",
    "to_route_spec",
]
