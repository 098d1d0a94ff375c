"""Test certificates, made at test time with the `openssl` CLI (the `cryptography` package is
not installed): a CA, leaf certificates for DNS names, wildcards and IP addresses, each with a
serial number of its own so that a test can tell which one a handshake got.

    ca = TestCA(tmp_path, "test CA")
    leaf = ca.issue("site-a", dns=["a.test"], serial=0xA1)   # leaf.cert, leaf.key (Paths)
    ctx = ca.client_context()                                # verifies against this CA

Keys are EC P-256 (fast to make); the certificates are valid from a minute ago for 30 days.
"""

from __future__ import annotations

import itertools
import os
import socket
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Leaf", "TestCA", "handshake", "install_pair", "secret_dir", "swap_secret"]

_serials = itertools.count(0x1000)


def _openssl(*args: str | Path, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {done.stderr}")


@dataclass(frozen=True)
class Leaf:
    cert: Path
    key: Path
    serial: int

    @property
    def serial_hex(self) -> str:
        """As `getpeercert()["serialNumber"]` spells it."""
        text = f"{self.serial:X}"
        return text if len(text) % 2 == 0 else "0" + text


class TestCA:
    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "httpscale test CA") -> None:
        self.dir = directory / name.replace(" ", "-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / "ca.crt"
        self.key = self.dir / "ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "30", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=self.dir,
        )

    def issue(
        self,
        name: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        serial: int | None = None,
    ) -> Leaf:
        """A leaf certificate for `dns` names and `ips`, in `<dir>/<name>.crt` and `.key`."""
        serial = next(_serials) if serial is None else serial
        base = self.dir / f"{name}-{serial:x}"
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        ext = base.with_suffix(".ext")
        ext.write_text(
            ("subjectAltName=" + ",".join(sans) + "\n" if sans else "")
            + "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
        )
        key, csr = base.with_suffix(".key"), base.with_suffix(".csr")
        cert = base.with_suffix(".crt")
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={(list(dns) or list(ips) or [name])[0]}",
            cwd=self.dir,
        )
        _openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
            "-set_serial", str(serial), "-days", "30", "-out", cert, "-extfile", ext,
            cwd=self.dir,
        )
        return Leaf(cert, key, serial)

    def client_context(self, *, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def server_context(self, leaf: Leaf) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(leaf.cert, leaf.key)
        return ctx


def handshake(
    address: tuple[str, int],
    ctx: ssl.SSLContext,
    server_name: str | None,
    *,
    timeout: float = 10.0,
) -> tuple[str, str | None]:
    """A blocking handshake (run it in a thread): the serial of the certificate the server
    sent and the ALPN protocol chosen; `server_name` None: no SNI. The chain is verified, the
    host name not (a default certificate is sent for names it does not carry)."""
    ctx.check_hostname = False
    with socket.create_connection(address, timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            cert = tls.getpeercert()
            assert cert is not None
            return str(cert["serialNumber"]), tls.selected_alpn_protocol()


def install_pair(leaf: Leaf, cert: Path, key: Path) -> None:
    """Replace `cert` and `key` with `leaf`'s, each by an atomic rename (two renames: a reader
    may see the new certificate with the old key in between)."""
    for src, dst in ((leaf.cert, cert), (leaf.key, key)):
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)


def secret_dir(directory: Path, leaf: Leaf, version: str = "1") -> Path:
    """`directory` laid out as the kubelet mounts a Secret: `tls.crt -> ..data/tls.crt`,
    `..data -> ..<version>/`, the files in `..<version>/`."""
    directory.mkdir(parents=True, exist_ok=True)
    _write_version(directory, leaf, version)
    os.symlink(f"..{version}", directory / "..data")
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", directory / name)
    return directory


def swap_secret(directory: Path, leaf: Leaf, version: str) -> None:
    """Rotate as the kubelet does: write a new version dir, swap `..data` atomically."""
    _write_version(directory, leaf, version)
    tmp = directory / "..data_tmp"
    os.symlink(f"..{version}", tmp)
    os.replace(tmp, directory / "..data")


def _write_version(directory: Path, leaf: Leaf, version: str) -> None:
    target = directory / f"..{version}"
    target.mkdir()
    (target / "tls.crt").write_bytes(leaf.cert.read_bytes())
    (target / "tls.key").write_bytes(leaf.key.read_bytes())
