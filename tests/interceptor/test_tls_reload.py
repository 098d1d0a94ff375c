"""Certificate rotation on the TLS listener: files replaced by atomic renames and a Secret
volume's `..data` symlink swap are picked up by new handshakes while clients keep going
(no request fails, a connection made before keeps its certificate), and a broken
replacement is logged while the old certificate is still served."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tlskit import Leaf, TestCA, handshake, install_pair, secret_dir, swap_secret

from httpscale.interceptor.settings import Tls

from .client import Conn
from .conftest import BackendFactory, InterceptorFactory
from .helpers import app_route, eventually, settings

RELOAD = 0.05  # seconds between checks of the files, short for the test


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


async def serial_for(ca: TestCA, address: tuple[str, int], sni: str) -> str:
    return (await asyncio.to_thread(handshake, address, ca.client_context(), sni))[0]


async def until_serial(ca: TestCA, address: tuple[str, int], sni: str, leaf: Leaf) -> None:
    """New handshakes until one gets `leaf` (the reload is observed, not waited out)."""
    async with asyncio.timeout(15):
        while await serial_for(ca, address, sni) != leaf.serial_hex:
            pass


class Load:
    """Requests in a loop until stopped: one keep-alive connection, and a new connection per
    request; every failure is kept."""

    def __init__(self, ca: TestCA, address: tuple[str, int], snis: tuple[str, ...]) -> None:
        self.ca, self.address, self.snis = ca, address, snis
        self.ok = 0
        self.failures: list[str] = []
        self.stop = asyncio.Event()
        self.first: Conn | None = None  # the keep-alive connection, made before any rotation

    async def _open(self, sni: str) -> Conn:
        reader, writer = await asyncio.open_connection(
            *self.address, ssl=self.ca.client_context(), server_hostname=sni
        )
        return Conn(reader, writer)

    async def _one(self, conn: Conn, sni: str) -> None:
        try:
            resp = await conn.request("GET", f"/{sni}")
            if resp.status == 200:
                self.ok += 1
            else:
                self.failures.append(f"{sni}: {resp.status} {resp.body[:200]!r}")
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self.failures.append(f"{sni}: {exc!r}")

    async def keep_alive(self) -> None:
        conn = self.first = await self._open(self.snis[0])
        try:
            while not self.stop.is_set():
                await self._one(conn, self.snis[0])
        finally:
            await conn.aclose()

    async def new_connections(self) -> None:
        i = 0
        while not self.stop.is_set():
            sni = self.snis[i % len(self.snis)]
            i += 1
            try:
                conn = await self._open(sni)
            except (OSError, TimeoutError) as exc:
                self.failures.append(f"connect {sni}: {exc!r}")
                continue
            try:
                await self._one(conn, sni)
            finally:
                await conn.aclose()

    async def during(self, rotate: Callable[[], Awaitable[None]]) -> None:
        tasks = [
            asyncio.create_task(self.keep_alive()), asyncio.create_task(self.new_connections())
        ]
        try:
            await eventually(lambda: self.ok >= 10, within=15, what="load running")
            await rotate()
            after = self.ok
            await eventually(lambda: self.ok >= after + 10, within=15, what="load after rotation")
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)


async def test_rotation_by_rename_and_secret_swap_under_load_fails_no_request(
    backends: BackendFactory, make_interceptor: InterceptorFactory, ca: TestCA, tmp_path: Path
) -> None:
    old_default = ca.issue("default", dns=["default.test"])
    new_default = ca.issue("default", dns=["default.test"])
    old_secret = ca.issue("secret", dns=["secret.test"])
    new_secret = ca.issue("secret", dns=["secret.test"])
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "default.crt", live / "default.key"
    shutil.copy(old_default.cert, cert)
    shutil.copy(old_default.key, key)
    certs = tmp_path / "certs"
    secret = secret_dir(certs / "secret", old_secret)
    backend = await backends()
    ic = await make_interceptor(
        routes=[app_route(backend.endpoint, hosts=())],
        settings=dataclasses.replace(settings(), tls=Tls(
            listen="127.0.0.1:0", cert=str(cert), key=str(key), cert_dir=str(certs),
            reload_interval=RELOAD,
        )),
    )
    address = ic.tls_address
    assert address is not None
    assert await serial_for(ca, address, "default.test") == old_default.serial_hex
    assert await serial_for(ca, address, "secret.test") == old_secret.serial_hex
    load = Load(ca, address, ("default.test", "secret.test"))

    async def rotate() -> None:
        install_pair(new_default, cert, key)  # two atomic renames, as a script would
        swap_secret(secret, new_secret, "2")  # one atomic symlink swap, as the kubelet does
        await until_serial(ca, address, "default.test", new_default)
        await until_serial(ca, address, "secret.test", new_secret)

    await load.during(rotate)
    assert load.failures == []
    # The connection made before the rotation kept its certificate (and its requests went on).
    assert load.first is not None
    peer = load.first.writer.get_extra_info("ssl_object").getpeercert()
    assert peer["serialNumber"] == old_default.serial_hex


@pytest.mark.expected_errors(r"TLS: cannot load .*default\.crt.*still serving")
async def test_a_broken_replacement_is_logged_and_the_old_certificate_served(
    make_interceptor: InterceptorFactory, ca: TestCA, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = ca.issue("default", dns=["default.test"])
    fixed = ca.issue("default", dns=["default.test"])
    cert, key = tmp_path / "default.crt", tmp_path / "default.key"
    shutil.copy(good.cert, cert)
    shutil.copy(good.key, key)
    ic = await make_interceptor(settings=dataclasses.replace(settings(), tls=Tls(
        listen="127.0.0.1:0", cert=str(cert), key=str(key), reload_interval=RELOAD,
    )))
    address = ic.tls_address
    assert address is not None
    broken = tmp_path / "broken.tmp"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    broken.replace(cert)

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == logging.ERROR and "TLS: cannot load" in r.getMessage()]

    await eventually(lambda: bool(logged()), within=15, what="the error log")
    assert str(cert) in logged()[0]
    assert await serial_for(ca, address, "default.test") == good.serial_hex
    install_pair(fixed, cert, key)
    await until_serial(ca, address, "default.test", fixed)
    assert len(logged()) == 1  # reported once, not at every check


async def test_certificates_added_to_and_removed_from_the_directory(
    make_interceptor: InterceptorFactory, ca: TestCA, tmp_path: Path
) -> None:
    default = ca.issue("default", dns=["default.test"])
    added = ca.issue("added", dns=["added.test"])
    certs = tmp_path / "certs"
    certs.mkdir()
    ic = await make_interceptor(settings=dataclasses.replace(settings(), tls=Tls(
        listen="127.0.0.1:0", cert=str(default.cert), key=str(default.key),
        cert_dir=str(certs), reload_interval=RELOAD,
    )))
    address = ic.tls_address
    assert address is not None
    assert await serial_for(ca, address, "added.test") == default.serial_hex
    # The key first, then the certificate: the pair is listed once both are there.
    shutil.copy(added.key, certs / "added.key")
    shutil.copy(added.cert, certs / "added.crt")
    await until_serial(ca, address, "added.test", added)
    (certs / "added.crt").unlink()
    await until_serial(ca, address, "added.test", default)
