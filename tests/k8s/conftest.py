"""Session fixtures for tests marked `k8s`: a real control plane (see testcluster.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from testcluster import Cluster, cluster_session, install_httpscale_crds, install_keda_crds


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
