"""TLS on both sides: the TLS listener (termination, SNI, ALPN) and contexts for upstreams.

The listener is a second server beside the plain one, on `--tls-listen`. After the handshake
a small protocol looks at the ALPN choice and hands the transport over for good: "h2" to the
HTTP/2 protocol (`proxy.h2_protocol_factory`, offered only when there is one), anything else
to the same `ClientConnection` as clear text, marked `https` (X-Forwarded-Proto: https). So
the HTTP/1.1 path over TLS is the clear-text one, and those connections are in
`proxy.connections`: the shutdown's drain covers them.

Certificates (`tls_certs.CertStore`) are checked for changes every `--tls-reload-interval`
seconds by a task of the interceptor's supervisor. Polling, not a watch: a Kubernetes Secret
volume rotates by swapping a symlink (`..data`) atomically, which an inotify watch on the
files does not see, and the standard library has no inotify; a few stat calls per interval
cost nothing.

Upstreams: `upstream_context` verifies against `--tls-upstream-ca-file` (else the system's
CAs) unless `--tls-upstream-verify` is off; `UpstreamTls` says per route whether its endpoints
are reached over TLS and as which server name (the pools connect with it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from httpscale.interceptor.settings import InterceptorSettings, Tls
from httpscale.interceptor.tls_certs import CertStore, TlsConfigError
from httpscale.routing.spec import RouteSpec

if TYPE_CHECKING:
    from httpscale.interceptor.downstream import ClientConnection
    from httpscale.interceptor.proxy import Proxy

__all__ = [
    "TlsConfigError",
    "TlsListener",
    "UpstreamTls",
    "UpstreamTlsConfig",
    "UpstreamTlsError",
    "describe_handshake_error",
    "parse_listen",
    "upstream_context",
]

log = logging.getLogger(__name__)

_HTTP11: tuple[str, ...] = ("http/1.1",)
_H2_AND_HTTP11: tuple[str, ...] = ("h2", "http/1.1")


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (all interfaces)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise TlsConfigError(f"--tls-listen: expected HOST:PORT like 0.0.0.0:8443, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


def _h2_factory(proxy: Proxy) -> Callable[[], asyncio.Protocol] | None:
    # `Proxy.h2_protocol_factory` comes with the HTTP/2 part (None while HTTP/2 is off).
    factory: Callable[[], asyncio.Protocol] | None = proxy.h2_protocol_factory
    return factory


class _Handshaken(asyncio.Protocol):
    """Made per TLS connection; on `connection_made` (the handshake is done) it hands the
    transport to the protocol the ALPN choice names and is never called again."""

    __slots__ = ("client_connection", "proxy")

    def __init__(self, proxy: Proxy, client_connection: type[ClientConnection]) -> None:
        self.proxy = proxy
        self.client_connection = client_connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        protocol: asyncio.Protocol
        factory = _h2_factory(self.proxy) if alpn == "h2" else None
        if factory is not None:
            protocol = factory()
        else:
            conn = self.client_connection(self.proxy)  # the clear-text path's own
            conn.https = True
            protocol = conn
        # uvloop's transports do not subclass asyncio.Transport but implement it.
        cast(asyncio.Transport, transport).set_protocol(protocol)
        protocol.connection_made(transport)


class TlsListener:
    """The TLS server of one interceptor: its certificates, socket and reload task."""

    def __init__(self, proxy: Proxy, settings: InterceptorSettings) -> None:
        # Imported here: downstream imports the upstream pools, which import this module.
        from httpscale.interceptor.downstream import ClientConnection

        self._client_connection = ClientConnection
        self.proxy = proxy
        self.settings = settings
        self.host, self.port = parse_listen(settings.tls.listen)
        if not settings.tls.reload_interval > 0:
            raise TlsConfigError(
                f"--tls-reload-interval: must be > 0 seconds, got {settings.tls.reload_interval}"
            )
        h2 = _h2_factory(proxy) is not None
        self.certs = CertStore(settings.tls, _H2_AND_HTTP11 if h2 else _HTTP11)
        self.certs.load()  # a TlsConfigError before anything listens
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)

    async def start(
        self, *, sock: socket.socket | None = None, start_serving: bool = True
    ) -> tuple[str, int]:
        """Listen on `--tls-listen`, or on `sock` (a worker's, made by its parent), accepting
        at once or once `start_serving()` is called."""
        def factory() -> _Handshaken:
            return _Handshaken(self.proxy, self._client_connection)

        common: dict[str, Any] = {
            "ssl": self.certs.front, "backlog": 2048, "start_serving": start_serving,
            "ssl_handshake_timeout": self.settings.timeouts.request_head,
        }
        if sock is not None:
            self._server = await self.proxy.loop.create_server(factory, sock=sock, **common)
        else:
            self._server = await self.proxy.loop.create_server(
                factory, self.host, self.port, reuse_address=True, **common
            )
        sockname = self._server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        default = self.certs.default
        assert default is not None
        log.info("TLS on %s:%d (ALPN %s), %d certificate(s), default %s", *self.address,
                 ", ".join(self.certs.alpn), len(self.certs.certs()), default.name)
        return self.address

    async def start_serving(self) -> None:
        if self._server is not None:
            await self._server.start_serving()

    async def watch(self) -> None:
        """Reload changed certificate files, every `reload_interval` seconds, until cancelled."""
        interval = self.settings.tls.reload_interval
        while True:
            # A deliberate period, not synchronisation (see the module's docstring).
            await asyncio.sleep(interval)
            self.certs.reload()

    def close(self) -> None:
        """Stop accepting; connections already made drain with the plain ones."""
        if self._server is not None:
            self._server.close()


# -- upstreams ---------------------------------------------------------------------------------


def upstream_context(settings: Tls, *, alpn: Sequence[str]) -> ssl.SSLContext:
    """A client context for upstream TLS: TLS 1.2+, verifying the certificate and host name
    against `settings.upstream_ca_file` (empty: the system's CAs) unless `upstream_verify` is
    off."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    if settings.upstream_verify:
        try:
            if settings.upstream_ca_file:
                ctx.load_verify_locations(cafile=settings.upstream_ca_file)
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise TlsConfigError(
                f"--tls-upstream-ca-file: cannot load {settings.upstream_ca_file}: {reason}"
            ) from None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    return ctx


class UpstreamTlsConfig(NamedTuple):
    """How a pool connects to its endpoint over TLS. `server_name` "" is the endpoint's IP
    (verified against the certificate's IP addresses)."""

    context: ssl.SSLContext
    server_name: str


class UpstreamTlsError(ConnectionError):
    """A TLS handshake with an upstream failed; `strerror` says why, for the 502's body."""


class UpstreamTls:
    """Which routes reach their endpoints over TLS, with one HTTP/1.1 context shared by all
    (made when a route first needs it, or at start with `check()`)."""

    def __init__(self, settings: Tls) -> None:
        self.settings = settings
        self._context: ssl.SSLContext | None = None

    def check(self) -> None:
        """Make the context now, so that a bad CA file fails the start."""
        self.context()

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = upstream_context(self.settings, alpn=_HTTP11)
        return self._context

    def for_route(self, spec: RouteSpec) -> UpstreamTlsConfig | None:
        scheme = spec.upstream_scheme
        if scheme in ("https", "h2") or (scheme == "http" and self.settings.upstream):
            return UpstreamTlsConfig(self.context(), spec.upstream_server_name)
        return None


def describe_handshake_error(exc: ssl.SSLError, server_name: str) -> str:
    """Why a handshake with an upstream failed, for the 502's body (which names the endpoint)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS handshake failed: certificate verify failed: {exc.verify_message} "
                f"(server name {server_name})")
    return f"TLS handshake failed: {exc.reason or exc} (server name {server_name})"
