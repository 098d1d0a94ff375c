"""TLS in local-mode files: the top-level `tls` section, and the `upstream` URL's scheme.

    tls:
      listen: 127.0.0.1:8443            # the TLS listener (default), beside `listen`
      certificates:                     # the first is the default; the others by SNI
        - {cert: certs/site.crt, key: certs/site.key}
        - {cert: certs/api.crt, key: certs/api.key}
      minVersion: "1.2"                 # or "1.3"
      ciphers: ECDHE+AESGCM             # TLS 1.2 cipher list; default: AEAD only
      upstreamCA: certs/ca.pem          # verifies https:// and h2:// upstreams; default: system CAs
      upstreamVerify: true
      reloadInterval: 2s                # how often the certificate files are checked for changes

Relative paths are relative to the file. Certificates are loaded here too, so that a file
that is missing, not PEM or whose key does not match is reported with its key
(`tls.certificates[1].key`) rather than when the interceptor starts.

An app's `run.upstream` URL scheme chooses how the interceptor talks to it: `http://`
(HTTP/1.1), `https://` (HTTP/1.1 over TLS), `h2c://` (HTTP/2, clear text) and `h2://` (HTTP/2
over TLS); the URL's host is the TLS server name verified. (`parse_address` reads the
file's addresses, `listen`, `admin` and `tls.listen`, alike.)
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from httpscale.model.errors import ConfigError
from httpscale.model.fields import Fields
from httpscale.routing.spec import Endpoint

__all__ = [
    "DEFAULT_TLS_LISTEN",
    "UPSTREAM_SCHEMES",
    "TlsFileConfig",
    "UpstreamUrl",
    "parse_address",
    "parse_tls",
    "parse_upstream",
]

DEFAULT_TLS_LISTEN = ("127.0.0.1", 8443)
#: Scheme -> default port.
UPSTREAM_SCHEMES = {"http": 80, "https": 443, "h2c": 80, "h2": 443}
_VERSIONS = ("1.2", "1.3")


@dataclass(frozen=True, slots=True)
class TlsFileConfig:
    """The `tls` section; None fields were not written (the interceptor's defaults apply)."""

    listen: tuple[str, int]
    certificates: tuple[tuple[Path, Path], ...]  # (cert, key); the first is the default
    min_version: str | None = None
    ciphers: str | None = None
    upstream_ca_file: Path | None = None
    upstream_verify: bool | None = None
    reload_interval: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamUrl:
    endpoint: Endpoint
    scheme: str  # a RouteSpec.upstream_scheme
    server_name: str  # the URL's host, for https and h2 ("" otherwise)


def parse_tls(f: Fields, *, listen: tuple[str, int], base: Path) -> TlsFileConfig:
    """The `tls` section in `f`; `listen` is its address, already parsed (default
    DEFAULT_TLS_LISTEN); `base` the directory relative paths start from."""
    f.allow("listen", "certificates", "minVersion", "ciphers", "upstreamCA", "upstreamVerify",
            "reloadInterval")
    items = f.get_mappings("certificates")
    if not items:
        raise f.error("certificates", "list at least one {cert: FILE, key: FILE}")
    certificates = tuple(_certificate(item, base) for item in items)
    version = f.raw("minVersion")
    if version is not None and str(version) not in _VERSIONS:
        raise f.error("minVersion", f'expected "1.2" or "1.3", got {version!r}')
    ciphers = f.get_str("ciphers", nonempty=True)
    if ciphers is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
        except ssl.SSLError:
            raise f.error("ciphers", f"OpenSSL accepts no cipher of {ciphers!r}") from None
    ca = _file(f, "upstreamCA", base)
    if ca is not None:
        try:
            ssl.create_default_context(cafile=str(ca))
        except ssl.SSLError as exc:
            raise f.error("upstreamCA", f"{ca}: not a PEM CA bundle ({exc.reason})") from None
    verify = f.raw("upstreamVerify")
    if verify is not None and not isinstance(verify, bool):
        raise f.error("upstreamVerify", f"expected true or false, got {verify!r}")
    f.finish()
    return TlsFileConfig(
        listen=listen,
        certificates=certificates,
        min_version=None if version is None else str(version),
        ciphers=ciphers,
        upstream_ca_file=ca,
        upstream_verify=verify,
        reload_interval=f.get_duration("reloadInterval", positive=True),
    )


def _certificate(f: Fields, base: Path) -> tuple[Path, Path]:
    f.allow("cert", "key")
    cert, key = _file(f, "cert", base, required=True), _file(f, "key", base, required=True)
    assert cert is not None and key is not None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(cert))
    except ssl.SSLError as exc:
        raise f.error("cert", f"{cert}: not a PEM certificate ({exc.reason})") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise f.error("key", f"{key}: not the PEM private key of {cert} ({exc.reason})") from None
    return cert, key


def _file(f: Fields, name: str, base: Path, *, required: bool = False) -> Path | None:
    text = f.get_str(name, required=required, nonempty=True)
    if text is None:
        return None
    path = Path(os.path.abspath(base / os.path.expanduser(text)))
    if not path.is_file():
        raise f.error(name, f"file not found: {path}")
    return path


def parse_address(f: Fields, name: str, default: tuple[str, int]) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `:port` (all interfaces) or a bare port (on the default host)."""
    value = f.raw(name)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        host, port_text = default[0], str(value)
    elif isinstance(value, str):
        host, sep, port_text = value.strip().rpartition(":")
        if not sep:
            host, port_text = default[0], value.strip()
        elif host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise f.error(name, f"write IPv6 addresses as [addr]:port, got {value!r}")
        host = host or "0.0.0.0"
    else:
        raise f.error(name, f"expected host:port like 127.0.0.1:8080, got {value!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise f.error(name, f"expected host:port like 127.0.0.1:8080, got {value!r}")
    return host, int(port_text)


def parse_upstream(value: object, *, key: str, source: str) -> UpstreamUrl:
    """`SCHEME://host:port` (no path) -> where and how to reach a fixed upstream."""
    example = "like http://127.0.0.1:9001"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, f"expected a URL {example}, got {value!r}")
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(source, key, f"invalid URL {text!r}: {exc}") from None
    if parts.scheme not in UPSTREAM_SCHEMES:
        raise ConfigError(
            source, key, "the scheme must be http, https, h2c or h2, got "
            f"{parts.scheme + '://' if parts.scheme else 'none'}"
        )
    if not parts.hostname:
        raise ConfigError(source, key, f"URL {text!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(
            source, key, f"URL {text!r} must be just {parts.scheme}://host:port (no path, query "
            "or user)"
        )
    port = port if port is not None else UPSTREAM_SCHEMES[parts.scheme]
    tls = parts.scheme in ("https", "h2")
    return UpstreamUrl(
        Endpoint(parts.hostname, port), parts.scheme, parts.hostname if tls else ""
    )
