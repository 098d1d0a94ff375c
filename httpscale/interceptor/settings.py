"""Interceptor settings: one frozen dataclass per concern, every field with its unit and default.

`interceptor_options` adds one click option per field (also `HTTPSCALE_<OPTION>`), so the
`interceptor` and `local` commands accept the same settings; `settings_from_options` builds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

import click

from httpscale.clikit import option

if TYPE_CHECKING:
    from httpscale.config.local_tls import TlsFileConfig


def _f(default: Any, help_text: str) -> Any:
    """A dataclass field whose help text becomes the CLI option's help."""
    return field(default=default, metadata={"help": help_text})

__all__ = [
    "Http2",
    "InterceptorSettings",
    "InterceptorShutdown",
    "Limits",
    "Listen",
    "Timeouts",
    "Tls",
    "interceptor_options",
    "listen_from_file",
    "settings_from_options",
    "tls_from_file",
]


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = _f("0.0.0.0", "proxy bind address")
    port: int = _f(8080, "proxy port")
    admin_host: str = _f("0.0.0.0", "admin server bind address (/queue, /metrics, ...)")
    admin_port: int = _f(9090, "admin port")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. Each bounds one wait so that no slow peer can hold a task forever."""

    request_head: float = _f(10.0, "client must send the full request head within this")
    keepalive_idle: float = _f(75.0, "idle client keep-alive connection closed after this")
    body_idle: float = _f(60.0, "no body byte in either direction for this long -> give up")
    upstream_connect: float = _f(5.0, "TCP connect to an endpoint")
    upstream_response_header: float = _f(
        60.0, "response head wait when a route sets no timeouts.responseHeader"
    )
    upstream_idle: float = _f(60.0, "pooled idle upstream connection closed after this")


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_line: int = _f(8192, "bytes; over it -> 414")
    max_header_bytes: int = _f(65536, "bytes for all request headers; over it -> 431")
    max_headers: int = _f(100, "header count; over it -> 431")
    max_response_head: int = _f(131072, "bytes of an upstream response head; over it -> 502")
    # As many as may be open: the pool reuses its most recently used connections first, so
    # the surplus of a past peak idles at the bottom and closes after `upstream_idle`. A lower
    # cap closes connections the load needs again at once (a reconnect per request beyond it).
    pool_max_idle_per_endpoint: int = _f(1024, "idle keep-alive connections kept per endpoint")
    pool_max_per_endpoint: int = _f(1024, "total upstream connections per endpoint")
    pool_max_connecting: int = _f(
        32, "connection attempts at once per endpoint; further requests wait for a connection"
    )
    write_high_water: int = _f(256 * 1024, "bytes buffered on one side before the other pauses")
    write_low_water: int = _f(64 * 1024, "bytes at which reading resumes")
    connect_retry_backoff: float = _f(0.05, "seconds between connect retries to a fresh replica")


@dataclass(frozen=True, slots=True)
class InterceptorShutdown:
    """Seconds, on SIGTERM/SIGINT: readyz 503 -> delay -> stop accepting -> drain -> exit."""

    readiness_delay: float = _f(2.0, "keep serving after /readyz turns 503, so LBs notice")
    drain_timeout: float = _f(30.0, "longest wait for in-flight requests before closing them")


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS termination on a second listener, and TLS to upstreams that ask for it."""

    listen: str = _f("", "HOST:PORT of the TLS listener (HTTP/1.1 and h2 by ALPN); empty: none")
    cert: str = _f("", "default certificate (PEM, leaf first, then its chain)")
    key: str = _f("", "private key of --tls-cert (PEM)")
    cert_dir: str = _f(
        "", "directory of certificates chosen by SNI: NAME.crt + NAME.key, or NAME/tls.crt + "
        "NAME/tls.key (a mounted Secret); host names from each certificate's SAN"
    )
    extra_certs: str = _f(
        "", "more certificates chosen by SNI: CERT,KEY file pairs separated by ';' (local "
        "mode's tls.certificates after the first)"
    )
    min_version: str = _f("1.2", "lowest TLS version accepted: 1.2 or 1.3")
    ciphers: str = _f("", "OpenSSL cipher list for TLS 1.2; empty: modern AEAD-only default")
    reload_interval: float = _f(
        2.0, "seconds between checks of the certificate files for a change (Secret rotation)"
    )
    upstream_ca_file: str = _f(
        "", "CA bundle verifying upstream TLS (https, h2); empty: the system's CAs"
    )
    upstream_verify: bool = _f(True, "verify upstream certificates and host names")
    upstream: bool = _f(
        False, "TLS to every upstream whose route does not say (as appProtocol: https would)"
    )


@dataclass(frozen=True, slots=True)
class Http2:
    """HTTP/2 on both sides (h2 over TLS by ALPN, h2c by prior knowledge)."""

    enabled: bool = _f(True, "HTTP/2 at all: ALPN offers h2 on the TLS listener, h2c is possible")
    h2c: bool = _f(True, "accept HTTP/2 with prior knowledge (h2c) on the plain port")
    max_concurrent_streams: int = _f(100, "streams one client connection may have open at once")
    max_header_list_size: int = _f(65536, "bytes of one header list (decoded); over it -> 431")
    max_frame_size: int = _f(16384, "largest frame payload accepted, bytes (16384-16777215)")
    initial_window_size: int = _f(
        1048576, "per-stream receive window advertised, bytes: how much a peer may send unread"
    )
    upstream_connections: int = _f(
        4, "HTTP/2 connections per endpoint at most; streams share them up to the peer's limit"
    )


@dataclass(frozen=True, slots=True)
class InterceptorSettings:
    listen: Listen = field(default_factory=Listen)
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    shutdown: InterceptorShutdown = field(default_factory=InterceptorShutdown)
    tls: Tls = field(default_factory=Tls)
    http2: Http2 = field(default_factory=Http2)


_GROUPS: tuple[tuple[str, type[Any]], ...] = (
    ("listen", Listen),
    ("timeouts", Timeouts),
    ("limits", Limits),
    ("shutdown", InterceptorShutdown),
    ("tls", Tls),
    ("http2", Http2),
)

F = TypeVar("F", bound=Callable[..., Any])


def _option_name(group: str, name: str) -> str:
    # Listen fields keep their plain names (--port, --admin-port); the others are prefixed
    # by concern so that names stay unambiguous (--timeouts-request-head).
    base = name if group in ("listen", "shutdown") else f"{group}_{name}"
    return base.replace("_", "-")


def interceptor_options(func: F) -> F:
    """Decorate a click command with one option per interceptor setting."""
    for group, cls in reversed(_GROUPS):
        for f in reversed(fields(cls)):
            default = f.default
            func = option(
                f"--{_option_name(group, f.name)}",
                f"interceptor__{group}__{f.name}",
                type=type(default),
                default=default,
                help=f.metadata.get("help", f.name),
            )(func)
    return func


def listen_from_file(
    ctx: click.Context, listen: tuple[str, int] | None, admin: tuple[str, int] | None
) -> dict[str, Any]:
    """`Listen` fields from a config file's `listen` and `admin` addresses (None: the file has
    none), for `settings_from_options(..., listen=...)`: each one the command line or its
    environment variable gave is left out, so what the user typed wins over the file, and the
    file over the defaults."""
    from_file: dict[str, Any] = {}
    if listen is not None:
        from_file.update(host=listen[0], port=listen[1])
    if admin is not None:
        from_file.update(admin_host=admin[0], admin_port=admin[1])
    return {
        name: value
        for name, value in from_file.items()
        if ctx.get_parameter_source(f"interceptor__listen__{name}")
        in (None, click.core.ParameterSource.DEFAULT)
    }


def tls_from_file(ctx: click.Context, tls: TlsFileConfig | None) -> dict[str, Any]:
    """`Tls` fields from a config file's `tls` section (None: it has none), for
    `settings_from_options(..., tls=...)`; like `listen_from_file`, a field the command line or
    its environment variable gave is left out. The first certificate is the default, the
    others go to `extra_certs`."""
    if tls is None:
        return {}
    host, port = tls.listen
    first, *others = tls.certificates
    from_file: dict[str, Any] = {
        "listen": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "cert": str(first[0]),
        "key": str(first[1]),
        "extra_certs": ";".join(f"{cert},{key}" for cert, key in others),
        "min_version": tls.min_version,
        "ciphers": tls.ciphers,
        "upstream_ca_file": None if tls.upstream_ca_file is None else str(tls.upstream_ca_file),
        "upstream_verify": tls.upstream_verify,
        "reload_interval": tls.reload_interval,
    }
    return {
        name: value
        for name, value in from_file.items()
        if value is not None
        and ctx.get_parameter_source(f"interceptor__tls__{name}")
        in (None, click.core.ParameterSource.DEFAULT)
    }


def settings_from_options(options: dict[str, Any], **overrides: Any) -> InterceptorSettings:
    """Build settings from the kwargs click passed (keys `interceptor__<group>__<field>`).

    Consumed keys are removed from `options`. `overrides` maps a group name to a dict of field
    values that win over the options (local mode takes listen addresses from its config file).
    """
    groups: dict[str, Any] = {}
    for group, cls in _GROUPS:
        values = {
            f.name: options.pop(f"interceptor__{group}__{f.name}", f.default) for f in fields(cls)
        }
        values.update(overrides.get(group, {}))
        groups[group] = cls(**values)
    return InterceptorSettings(**groups)
