"""TLS to upstreams: a route whose `upstream_scheme` is https (or any route with
`--tls-upstream`) reaches a TLS backend, verified against the CA file, as the route's server
name or else the endpoint's IP; a certificate that does not verify is a 502 that says so."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from tlskit import TestCA

from httpscale.interceptor.settings import Tls

from .backends import Backend, echo_app, http_app
from .client import get
from .conftest import InterceptorFactory
from .helpers import admin_get, app_route, settings


class TlsBackend(Backend):
    """The tests' echo backend behind TLS."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(http_app(echo_app), "tls-backend")
        self.context = context

    async def start(self) -> TlsBackend:
        self._server = await asyncio.start_server(
            self._on_conn, "127.0.0.1", 0, ssl=self.context
        )
        return self


@dataclasses.dataclass
class Pki:
    ca: TestCA
    other: TestCA
    tmp: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    return Pki(TestCA(tmp, "upstream CA"), TestCA(tmp, "other CA"), tmp)


@pytest.fixture
async def tls_backend(pki: Pki) -> Any:
    made: list[Backend] = []

    async def make(ca: TestCA, **names: Any) -> Backend:
        leaf = ca.issue("backend", **names)
        b = await TlsBackend(ca.server_context(leaf)).start()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()


def upstream_settings(pki: Pki, **tls: Any) -> Any:
    return dataclasses.replace(
        settings(), tls=Tls(upstream_ca_file=str(pki.ca.cert), **tls)
    )


async def test_https_upstream_verified_against_the_ca_file_as_its_ip(
    make_interceptor: InterceptorFactory, tls_backend: Any, pki: Pki
) -> None:
    backend = await tls_backend(pki.ca, ips=["127.0.0.1"])
    ic = await make_interceptor(
        routes=[app_route(backend.endpoint, upstream_scheme="https")],
        settings=upstream_settings(pki),
    )
    first = await get(ic.proxy_address, "/one")
    second = await get(ic.proxy_address, "/two")
    assert (first.status, second.status) == (200, 200), first.body
    seen = [json.loads(r.body) for r in (first, second)]
    assert [s["target"] for s in seen] == ["/one", "/two"]
    assert seen[0]["conn"] == seen[1]["conn"]  # the pooled TLS connection was reused
    assert backend.requests[0].header("x-forwarded-proto") == "http"  # how the client came


async def test_https_upstream_with_a_server_name_and_the_global_flag(
    make_interceptor: InterceptorFactory, tls_backend: Any, pki: Pki
) -> None:
    backend = await tls_backend(pki.ca, dns=["backend.test"])
    # --tls-upstream: a route that says "http" goes over TLS too.
    ic = await make_interceptor(
        routes=[app_route(backend.endpoint, upstream_server_name="backend.test")],
        settings=upstream_settings(pki, upstream=True),
    )
    resp = await get(ic.proxy_address, "/named")
    assert resp.status == 200, resp.body
    assert json.loads(resp.body)["target"] == "/named"


async def test_a_certificate_that_does_not_verify_is_a_502_naming_the_failure(
    make_interceptor: InterceptorFactory, tls_backend: Any, pki: Pki
) -> None:
    stranger = await tls_backend(pki.other, ips=["127.0.0.1"])  # signed by another CA
    ic = await make_interceptor(
        routes=[app_route(stranger.endpoint, upstream_scheme="https")],
        settings=upstream_settings(pki),
    )
    resp = await get(ic.proxy_address, "/")
    assert resp.status == 502
    body = resp.text
    assert "certificate verify failed" in body
    assert f"cannot connect to {stranger.endpoint}: TLS handshake failed" in body
    assert stranger.requests == []

    # Without verification (--tls-upstream-verify false) the same backend is reached.
    ic2 = await make_interceptor(
        routes=[app_route(stranger.endpoint, upstream_scheme="https")],
        settings=upstream_settings(pki, upstream_verify=False),
    )
    ok = await get(ic2.proxy_address, "/unverified")
    assert ok.status == 200


async def test_a_host_name_mismatch_is_a_502_naming_the_name(
    make_interceptor: InterceptorFactory, tls_backend: Any, pki: Pki
) -> None:
    backend = await tls_backend(pki.ca, dns=["backend.test"])
    ic = await make_interceptor(
        routes=[app_route(backend.endpoint, upstream_scheme="https",
                          upstream_server_name="wrong.test")],
        settings=upstream_settings(pki),
    )
    resp = await get(ic.proxy_address, "/")
    assert resp.status == 502
    assert "certificate verify failed" in resp.text
    assert "(server name wrong.test)" in resp.text


async def test_a_route_that_turns_https_reconnects_with_tls(
    make_interceptor: InterceptorFactory, tls_backend: Any, pki: Pki
) -> None:
    secure = await tls_backend(pki.ca, ips=["127.0.0.1"])
    ic = await make_interceptor(
        routes=[app_route(secure.endpoint)], settings=upstream_settings(pki)
    )
    assert (await get(ic.proxy_address, "/")).status == 502  # clear text to a TLS server
    ic.set_routes([app_route(secure.endpoint, upstream_scheme="https")])  # same endpoint
    resp = await get(ic.proxy_address, "/now-tls")
    assert resp.status == 200, resp.body
    assert [r.target for r in secure.requests] == ["/now-tls"]


async def test_a_failed_handshake_with_a_fresh_replica_is_not_retried(
    make_interceptor: InterceptorFactory, tls_backend: Any, pki: Pki
) -> None:
    # A replica just reported ready is retried while it may not listen yet (for up to the
    # readiness timeout); a certificate that does not verify will not get better: 502 now.
    stranger = await tls_backend(pki.other, ips=["127.0.0.1"])
    ic = await make_interceptor(
        routes=[app_route(dynamic=True, upstream_scheme="https", readiness_timeout=60.0)],
        settings=upstream_settings(pki),
    )
    ic.set_endpoints("default/app", [stranger.endpoint])
    resp = await get(ic.proxy_address, "/", within=15)  # not held for the 60 s
    assert resp.status == 502
    assert "certificate verify failed" in resp.text
    metrics = (await admin_get(ic.admin_address, "/metrics")).text
    assert 'httpscale_upstream_errors_total{kind="tls",route="default/app"} 1.0' in metrics
