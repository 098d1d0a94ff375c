"""Session fixtures for tests marked `k8s`: a real control plane (see testcluster.py)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import pytest
from keda import Keda, start_keda
from kubetools import temporary_namespace, until
from testcluster import Cluster, cluster_session, install_httpscale_crds, install_keda_crds

from httpscale.kube.api import Kube
from httpscale.kube.resources import Resource


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster, up for the whole session, down after it (skips if it cannot run)."""
    yield from cluster_session(tmp_path_factory.mktemp("testcluster"))


@pytest.fixture(scope="session")
def keda_crds(k8s_cluster: Cluster) -> list[str]:
    """KEDA's own CRDs (KEDA_VERSION, scripts/k8s-versions.env), installed once; their names."""

    async def install() -> list[str]:
        async with k8s_cluster.client() as api:
            return await install_keda_crds(api)

    # Each test runs on an event loop of its own (pyproject: function scope), none of which
    # outlives it, so a session fixture does its async work on a short loop of its own. With
    # a loop_factory the Runner never makes that loop the thread's current one, so it leaves
    # pytest-asyncio's loops alone.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(install())


@pytest.fixture(scope="session")
def keda(k8s_cluster: Cluster, keda_crds: list[str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keda]:
    """KEDA's operator and metrics adapter (KEDA_VERSION) as local processes, for the whole
    session, with KEDA's ServiceAccount and RBAC, serving `v1beta1.external.metrics.k8s.io`
    (Available) to the HPA controller; see keda.py. Stopped after the session, checked gone;
    a failing test that uses it gets both logs' tails in its report."""
    if not k8s_cluster.local:
        pytest.skip("KEDA runs as local processes: needs the cluster of scripts/testcluster")
    # Under the cluster's state directory when there is one: its leftover check then covers
    # KEDA's processes too (their command lines name it).
    base = k8s_cluster.state_dir or tmp_path_factory.getbasetemp()
    workdir = base / f"keda-{secrets.token_hex(3)}"

    async def start() -> Keda:
        async with k8s_cluster.client() as api:
            return await start_keda(api, k8s_cluster, workdir)

    async def stop(running: Keda) -> None:
        async with k8s_cluster.client() as api:
            await running.stop(api)

    # Processes, not tasks: they outlive this short loop and every test's own loop.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        running = runner.run(start())
    print(f"KEDA ready in {running.startup_s:.1f}s ({workdir})")
    try:
        yield running
    finally:
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            runner.run(stop(running))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failing test that used KEDA gets the tail of KEDA's logs in its report."""
    outcome = yield
    report = outcome.get_result()
    running = getattr(item, "funcargs", {}).get("keda")
    if report.failed and isinstance(running, Keda):
        report.sections.append(("KEDA logs", running.logs()))


@pytest.fixture(scope="session")
def httpscale_crds(k8s_cluster: Cluster) -> list[str]:
    """httpscale's CRDs (manifests/crd: HTTPScaledObject, InterceptorRoute), installed once."""

    async def install() -> list[str]:
        async with k8s_cluster.client() as api:
            return await install_httpscale_crds(api)

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(install())


@pytest.fixture(scope="session")
def crds(httpscale_crds: list[str], keda_crds: list[str]) -> list[str]:
    """Every CRD the operator's tests need: httpscale's and KEDA's."""
    return [*httpscale_crds, *keda_crds]


@pytest.fixture
async def kube(k8s_cluster: Cluster, crds: list[str]) -> AsyncIterator[Kube]:
    """An httpscale client as the cluster's admin, with httpscale's and KEDA's CRDs in place."""
    async with k8s_cluster.client() as api:
        yield Kube(api)


_SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")


@pytest.fixture
async def ns(kube: Kube, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A namespace of the test's own (named after its module), deleted after it; ready for
    pods (its default ServiceAccount exists, without which they are refused)."""
    prefix = re.sub(r"[^a-z0-9]+", "-", request.module.__name__.removeprefix("test_"))[:20]
    async with temporary_namespace(kube, f"{prefix}-{secrets.token_hex(3)}") as name:
        await until(kube, _SERVICE_ACCOUNTS, name, lambda sas: f"{name}/default" in sas)
        yield name
