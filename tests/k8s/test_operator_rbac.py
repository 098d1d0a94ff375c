"""The operator works with exactly the rights manifests/operator/ gives it, and no more.

The manifests are applied as written (namespace filled in, as kustomize would), a token is
requested for the operator's ServiceAccount, and the operator runs as that ServiceAccount,
with leader election on: every API call it makes is decided by the real RBAC authorizer.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubetools import create_app, temporary_namespace, until
from test_operator import create, httpso, ready, settings_for
from testcluster import Cluster, allowed, service_account_token

from httpscale.kube.api import APPLY_PATCH, ApiError, Kube, Obj
from httpscale.kube.leader import LeaderElectionSettings
from httpscale.kube.resources import EVENTS, HTTPSCALEDOBJECTS, LEASES, SCALEDOBJECTS, Resource
from httpscale.operator.app import Operator

pytestmark = pytest.mark.k8s

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "operator"
_RBAC = "rbac.authorization.k8s.io"
_PATHS: dict[str, Resource] = {
    "ServiceAccount": Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    "ClusterRole": Resource(_RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
    "ClusterRoleBinding": Resource(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding",
                                   namespaced=False),
    "Role": Resource(_RBAC, "v1", "roles", "Role"),
    "RoleBinding": Resource(_RBAC, "v1", "rolebindings", "RoleBinding"),
}


def _manifests(namespace: str) -> list[Obj]:
    """The operator's manifests as kustomize would render them into `namespace`."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    docs: list[Obj] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]
    for doc in docs:
        if _PATHS[doc["kind"]].namespaced:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or ():
            subject["namespace"] = namespace
    return docs


async def _apply(kube: Kube, doc: Obj) -> None:
    resource = _PATHS[doc["kind"]]
    meta = doc["metadata"]
    await kube.request(
        "PATCH",
        resource.path(meta.get("namespace"), meta["name"]),
        query=[("fieldManager", "httpscale-tests"), ("force", "true")],
        body=doc,
        content_type=APPLY_PATCH,
    )


@pytest.fixture
async def admin(k8s_cluster: Cluster, crds: list[str]) -> AsyncIterator[Kube]:
    async with k8s_cluster.client() as api:
        yield Kube(api)


@pytest.fixture
async def ns(admin: Kube) -> AsyncIterator[str]:
    async with temporary_namespace(admin, f"rbac-{secrets.token_hex(3)}") as name:
        yield name


async def test_the_operator_runs_on_exactly_its_manifests_rights(
    k8s_cluster: Cluster, admin: Kube, ns: str
) -> None:
    for doc in _manifests(ns):
        await _apply(admin, doc)
    token = await service_account_token(admin.api, ns, "httpscale-operator")
    await create_app(admin, ns, "app", ("http", 8080))
    await create(admin, ns, httpso("app"))
    # Both metrics at once: InvalidSpec, written through the status subresource too.
    await create(admin, ns, httpso("twice", scalingMetric={
        "concurrency": {"targetValue": 1}, "requestRate": {"targetValue": 1}}))

    async with k8s_cluster.client(token=token) as api:
        kube = Kube(api)
        leader = LeaderElectionSettings(lease_namespace=ns, lease_duration=4,
                                        renew_deadline=3, retry_period=0.5)
        op = Operator(settings_for(ns, leader_election=True, leader=leader), kube)
        await op.start()
        try:
            objs = await until(admin, HTTPSCALEDOBJECTS, ns, lambda o: (
                ready(o.get(f"{ns}/app")).get("reason") == "Reconciled"
                and ready(o.get(f"{ns}/twice")).get("reason") == "InvalidSpec"))
            assert objs
            so = await admin.request("GET", SCALEDOBJECTS.path(ns, "app"))
            assert so["spec"]["triggers"][0]["metadata"]["httpScaledObject"] == "app"
            await until(admin, EVENTS, ns, lambda e: any(
                v["reason"] == "ScaledObjectCreated" for v in e.values()))
            lease = await admin.request("GET", LEASES.path(ns, leader.lease_name))
            assert lease["spec"]["holderIdentity"] == op.identity
            # Skip annotation: the operator deletes the ScaledObject it owns.
            skip = "httpscaledobject.keda.sh/skip-scaledobject-creation"
            await admin.request("PATCH", HTTPSCALEDOBJECTS.path(ns, "app"),
                                body={"metadata": {"annotations": {skip: "true"}}},
                                content_type="application/merge-patch+json")
            await until(admin, SCALEDOBJECTS, ns, lambda o: f"{ns}/app" not in o)
            assert op._health_problem() is None
            watches: dict[str, Any] = op.status()["watches"]
            assert all(w["failures"] == 0 for w in watches.values()), watches
        finally:
            await op.stop()

        # And nothing more: no Secrets, no other writes.
        for verb, resource, group in (
            ("get", "secrets", ""), ("list", "secrets", ""), ("list", "configmaps", ""),
            ("update", "deployments", "apps"), ("create", "httpscaledobjects", "http.keda.sh"),
            ("delete", "httpscaledobjects", "http.keda.sh"), ("list", "pods", ""),
            ("create", "leases", "coordination.k8s.io"),
        ):
            where = "default" if resource == "leases" else ns
            assert not await allowed(api, verb, resource, namespace=where, group=group), (
                f"the operator may {verb} {resource}")
        with pytest.raises(ApiError) as refused:
            await kube.request("GET", f"/api/v1/namespaces/{ns}/secrets")
        assert refused.value.status == 403
