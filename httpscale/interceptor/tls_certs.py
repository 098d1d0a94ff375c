"""Server certificates for the TLS listener: loaded from files, chosen by SNI, reloaded in place.

Sources: the default certificate (`--tls-cert`/`--tls-key`), more pairs (`--tls-extra-certs`,
local mode's `tls.certificates` after the first) and a directory (`--tls-cert-dir`) holding
`NAME.crt` + `NAME.key` or `NAME/tls.crt` + `NAME/tls.key` (a mounted Secret, whose files are
symlinks through `..data`, swapped atomically on rotation). Every certificate gets its own
`ssl.SSLContext` with the same policy; the host names it serves are its subjectAltName DNS
names (`*.example.com` covers one label; an exact name beats a wildcard; the first
certificate listed wins a name two claim). The default (no SNI, or no match) is the default
certificate, else the first of the directory by name.

The listener's SNI callback looks the host up in the table of the moment, so a reload applies
to the next handshake, and a connection keeps the context it was made with: nothing drops.
A reload that cannot read a new file logs it and keeps serving the certificate it has.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from httpscale.interceptor.settings import Tls

__all__ = ["DEFAULT_CIPHERS", "CertStore", "LoadedCert", "TlsConfigError", "server_context"]

log = logging.getLogger(__name__)

#: TLS 1.2 suites when `--tls-ciphers` is empty: forward secret (ECDHE) and AEAD only. (TLS 1.3
#: suites are all AEAD and not set by this list.)
DEFAULT_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"

_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# The standard library's only certificate decoder (what `getpeercert()` returns, from a file);
# the `cryptography` package is not a dependency of httpscale.
_decode_cert: Callable[[str], dict[str, Any]] = ssl._ssl._test_decode_cert  # type: ignore[attr-defined]


class TlsConfigError(ValueError):
    """A TLS setting or certificate file that cannot be used; the message names which."""


class _Replaced(Exception):
    """A file was replaced while being read: which version was loaded is unknown."""


def min_version(settings: Tls) -> ssl.TLSVersion:
    version = _VERSIONS.get(settings.min_version.strip())
    if version is None:
        raise TlsConfigError(
            f"--tls-min-version: expected 1.2 or 1.3, got {settings.min_version!r}"
        )
    return version


def server_context(settings: Tls, alpn: Sequence[str]) -> ssl.SSLContext:
    """A server context with the policy of `settings` and no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = min_version(settings)
    try:
        ctx.set_ciphers(settings.ciphers.strip() or DEFAULT_CIPHERS)
    except ssl.SSLError:
        raise TlsConfigError(
            f"--tls-ciphers: OpenSSL accepts no cipher of {settings.ciphers!r}"
        ) from None
    # No compression (CRIME), no renegotiation (a client-driven CPU cost, and nothing here
    # needs it), the server's cipher order. Session tickets stay on: resumption is cheap.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def _identity(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced: the target's inode, size and mtime (after the
    symlinks: a Secret's rotation swaps `..data`, the paths stay the same)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


_PairIdentity = tuple[tuple[int, ...], tuple[int, ...]]


def _pair_identity(cert: Path, key: Path) -> _PairIdentity | None:
    try:
        return (_identity(cert), _identity(key))
    except OSError:
        return None


@dataclass(slots=True)
class LoadedCert:
    """One certificate and key, as loaded: its context, the names it serves, its identity."""

    name: str  # where it came from, for logs ("--tls-cert", "cert-dir/site-a")
    cert_path: Path
    key_path: Path
    context: ssl.SSLContext
    hosts: tuple[str, ...]
    serial: str
    identity: _PairIdentity


class CertStore:
    """The certificates of one TLS listener (see the module's docstring)."""

    def __init__(self, settings: Tls, alpn: Sequence[str]) -> None:
        self.settings = settings
        self.alpn = tuple(alpn)
        self._certs: dict[str, LoadedCert] = {}  # by source name, in the order listed
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcard: dict[str, ssl.SSLContext] = {}  # "example.com" for "*.example.com"
        self.default: LoadedCert | None = None
        # Sources whose files on disk could not be loaded: their identity then (None: a file
        # is missing) and whether that was reported.
        self._failing: dict[str, tuple[_PairIdentity | None, bool]] = {}
        self._listing_failed = False
        # What the listening socket is made with: the policy, and no certificate, since the
        # SNI callback (called with or without SNI) swaps every connection to the context of
        # the certificate it gets. Version and ciphers stay the front's (OpenSSL keeps them
        # across the swap), so every context is made with the same policy.
        self.front = server_context(settings, self.alpn)
        self.front.sni_callback = self._on_sni

    # -- sources -----------------------------------------------------------------------------

    def _sources(self) -> list[tuple[str, Path, Path]]:
        s = self.settings
        out: list[tuple[str, Path, Path]] = []
        if s.cert or s.key:
            if not (s.cert and s.key):
                missing = "--tls-key" if s.cert else "--tls-cert"
                raise TlsConfigError(f"{missing}: needed with --tls-cert/--tls-key")
            out.append(("--tls-cert", Path(s.cert), Path(s.key)))
        for i, pair in enumerate(p for p in s.extra_certs.split(";") if p.strip()):
            cert, sep, key = pair.partition(",")
            if not sep or not cert.strip() or not key.strip():
                raise TlsConfigError(
                    f"--tls-extra-certs: expected CERT,KEY pairs separated by ';', got {pair!r}"
                )
            out.append((f"--tls-extra-certs[{i}]", Path(cert.strip()), Path(key.strip())))
        if s.cert_dir:
            out += _scan_dir(Path(s.cert_dir))
        return out

    # -- loading -----------------------------------------------------------------------------

    def load(self) -> None:
        """Load every certificate at start; a file that cannot be used is a TlsConfigError."""
        sources = self._sources()
        if not sources:
            raise TlsConfigError(
                "--tls-listen is set but no certificate is: give --tls-cert and --tls-key, "
                "or --tls-cert-dir"
            )
        certs = {}
        for name, cert, key in sources:
            try:
                certs[name] = self._load(name, cert, key)
            except (OSError, ValueError) as exc:
                raise TlsConfigError(f"{name}: {_reason(exc, cert, key)}") from None
            except _Replaced:
                raise TlsConfigError(f"{name}: {cert} changed while being read") from None
        self._install(certs)

    def _load(self, name: str, cert: Path, key: Path) -> LoadedCert:
        before = (_identity(cert), _identity(key))
        ctx = server_context(self.settings, self.alpn)
        ctx.load_cert_chain(cert, key)
        decoded = _decode_cert(str(cert))
        after = (_identity(cert), _identity(key))
        if after != before:
            # Replaced while being read (the key and the certificate are two writes unless a
            # Secret's symlink swap): which pair was loaded is unknown; the next check retries.
            raise _Replaced()
        hosts = tuple(
            value.lower() for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"
        )
        return LoadedCert(name, cert, key, ctx, hosts, str(decoded.get("serialNumber", "")), after)

    def _install(self, certs: dict[str, LoadedCert]) -> None:
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        for c in certs.values():
            for host in c.hosts:
                if host.startswith("*."):
                    wildcard.setdefault(host[2:], c.context)
                else:
                    exact.setdefault(host, c.context)
        # Swapped whole: a handshake on the loop sees the old table or the new one.
        self._certs, self._exact, self._wildcard = certs, exact, wildcard
        self.default = next(iter(certs.values()))

    def certs(self) -> list[LoadedCert]:
        return list(self._certs.values())

    # -- choosing ----------------------------------------------------------------------------

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        """The context of the certificate for `server_name` (SNI), else the default's."""
        if server_name:
            host = server_name.lower().rstrip(".")
            ctx = self._exact.get(host)
            if ctx is not None:
                return ctx
            _, dot, parent = host.partition(".")
            if dot:
                ctx = self._wildcard.get(parent)
                if ctx is not None:
                    return ctx
        assert self.default is not None
        return self.default.context

    def _on_sni(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        ssl_object.context = self.context_for(server_name)

    # -- reloading ---------------------------------------------------------------------------

    def reload(self) -> list[str]:
        """Reload what changed on disk; the names of the certificates replaced, added or
        removed. A file that cannot be read is logged (once per version of it) and the
        certificate loaded before keeps being served."""
        try:
            sources = self._sources()
        except (OSError, TlsConfigError) as exc:  # the directory gone, unreadable
            if not self._listing_failed:  # said once, until it can be listed again
                self._listing_failed = True
                log.error("TLS: cannot list %s: %s; serving the certificates loaded before",
                          self.settings.cert_dir, getattr(exc, "strerror", None) or exc)
            return []
        self._listing_failed = False
        changed: list[str] = []
        certs: dict[str, LoadedCert] = {}
        for name, cert, key in sources:
            old = self._certs.get(name)
            identity = _pair_identity(cert, key)
            failing = self._failing.get(name)
            if (old is not None and identity == old.identity) or (
                failing is not None and failing == (identity, True)
            ):
                if old is not None:
                    certs[name] = old  # unchanged, or a broken version already reported
                continue
            try:
                loaded = certs[name] = self._load(name, cert, key)
            except _Replaced:
                if old is not None:
                    certs[name] = old  # mid-rotation: the next check loads the finished pair
                continue
            except (OSError, ValueError) as exc:
                if old is not None:
                    certs[name] = old
                if failing is None or failing[0] != identity:
                    # Maybe caught between two writes (a new certificate, the old key): only
                    # files that stay this way until the next check are broken.
                    self._failing[name] = (identity, False)
                    continue
                self._failing[name] = (identity, True)
                log.error("TLS: cannot load %s: %s; %s", name, _reason(exc, cert, key),
                          "still serving the certificate loaded before" if old else "skipped")
                continue
            self._failing.pop(name, None)
            changed.append(name)
            log.info("TLS: loaded %s (%s), serial %s, for %s", name, cert, loaded.serial,
                     ", ".join(loaded.hosts) or "no DNS name")
        listed = {name for name, _, _ in sources}
        self._failing = {k: v for k, v in self._failing.items() if k in listed}
        removed = [name for name in self._certs if name not in certs]
        if removed:
            log.info("TLS: %s removed", ", ".join(removed))
        if not certs:
            log.error("TLS: no certificate left to serve; keeping the ones loaded before")
            return []
        if changed or removed:
            self._install(certs)
        return changed + removed


def _scan_dir(directory: Path) -> list[tuple[str, Path, Path]]:
    """`NAME.crt` + `NAME.key`, and `NAME/tls.crt` + `NAME/tls.key`, sorted by NAME. Names
    starting with a dot are a Secret volume's own (`..data`, `..2026_...`): skipped."""
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise TlsConfigError(f"--tls-cert-dir: {directory} does not exist") from None
    except NotADirectoryError:
        raise TlsConfigError(f"--tls-cert-dir: {directory} is not a directory") from None
    out: list[tuple[str, Path, Path]] = []
    for entry in entries:
        if entry.startswith("."):
            continue
        path = directory / entry
        if entry.endswith(".crt") and (directory / (entry[:-4] + ".key")).exists():
            out.append((f"{directory}/{entry[:-4]}", path, directory / (entry[:-4] + ".key")))
        elif path.is_dir() and (path / "tls.crt").exists() and (path / "tls.key").exists():
            out.append((f"{directory}/{entry}", path / "tls.crt", path / "tls.key"))
    return out


def _reason(exc: BaseException, cert: Path, key: Path) -> str:
    if isinstance(exc, ssl.SSLError):
        # load_cert_chain says little ("[SSL] PEM lib"): say which files it was given.
        return f"{cert} with {key}: not a usable PEM certificate and matching key ({exc.reason})"
    if isinstance(exc, OSError):
        return f"{exc.filename or cert}: {exc.strerror or exc}"
    return f"{cert}: {exc}"
