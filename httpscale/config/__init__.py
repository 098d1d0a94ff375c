"""Configuration files: the local-mode YAML (`httpscale local -c FILE`), and the interceptor's
route source that reads it (`httpscale interceptor --config FILE`)."""

from httpscale.config.local_file import (
    DEFAULT_ADMIN,
    DEFAULT_LISTEN,
    AppConfig,
    CommandRun,
    HttpGetProbe,
    LocalConfig,
    ReadinessProbe,
    TcpSocketProbe,
    UpstreamRun,
    load_local_config,
    parse_local_config,
)
from httpscale.config.local_tls import TlsFileConfig
from httpscale.config.route_source import FileRouteSource
from httpscale.model.errors import ConfigError

__all__ = [
    "DEFAULT_ADMIN",
    "DEFAULT_LISTEN",
    "AppConfig",
    "CommandRun",
    "ConfigError",
    "FileRouteSource",
    "HttpGetProbe",
    "LocalConfig",
    "ReadinessProbe",
    "TcpSocketProbe",
    "TlsFileConfig",
    "UpstreamRun",
    "load_local_config",
    "parse_local_config",
]
