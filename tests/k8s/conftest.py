"""Session fixtures for tests marked `k8s`: a real control plane (see testcluster.py)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
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
