"""Session fixture for tests marked `k8s`: a real control plane (see testcluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testcluster import Cluster, cluster_session


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster, up for the whole session, down after it (skips if it cannot run)."""
    yield from cluster_session(tmp_path_factory.mktemp("testcluster"))
