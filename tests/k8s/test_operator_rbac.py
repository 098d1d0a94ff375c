"""The operator works with exactly the rights manifests/operator/ gives it, and no more.

The manifests are applied as written (namespace filled in, as kustomize would), a token is
requested for the operator's ServiceAccount, and the operator runs as that ServiceAccount,
with leader election on: every API call it makes is decided by the real RBAC authorizer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubetools import apply_manifests, create_app, until
from test_operator import create, httpso, ready, settings_for
from testcluster import Cluster, allowed, service_account_token

from httpscale.kube.api import ApiError, Kube
from httpscale.kube.leader import LeaderElectionSettings
from httpscale.kube.resources import EVENTS, HTTPSCALEDOBJECTS, LEASES, SCALEDOBJECTS
from httpscale.operator.app import Operator

pytestmark = pytest.mark.k8s


async def test_the_operator_runs_on_exactly_its_manifests_rights(
    k8s_cluster: Cluster, kube: Kube, ns: str
) -> None:
    await apply_manifests(kube, "operator", ns)
    token = await service_account_token(kube.api, ns, "httpscale-operator")
    await create_app(kube, ns, "app", ("http", 8080))
    await create(kube, ns, httpso("app"))
    # Both metrics at once: InvalidSpec, written through the status subresource too.
    await create(kube, ns, httpso("twice", scalingMetric={
        "concurrency": {"targetValue": 1}, "requestRate": {"targetValue": 1}}))

    async with k8s_cluster.client(token=token) as api:
        as_operator = Kube(api)
        leader = LeaderElectionSettings(lease_namespace=ns, lease_duration=4,
                                        renew_deadline=3, retry_period=0.5)
        op = Operator(settings_for(ns, leader_election=True, leader=leader), as_operator)
        await op.start()
        try:
            objs = await until(kube, HTTPSCALEDOBJECTS, ns, lambda o: (
                ready(o.get(f"{ns}/app")).get("reason") == "Reconciled"
                and ready(o.get(f"{ns}/twice")).get("reason") == "InvalidSpec"))
            assert objs
            so = await kube.request("GET", SCALEDOBJECTS.path(ns, "app"))
            assert so["spec"]["triggers"][0]["metadata"]["httpScaledObject"] == "app"
            await until(kube, EVENTS, ns, lambda e: any(
                v["reason"] == "ScaledObjectCreated" for v in e.values()))
            lease = await kube.request("GET", LEASES.path(ns, leader.lease_name))
            assert lease["spec"]["holderIdentity"] == op.identity
            # Skip annotation: the operator deletes the ScaledObject it owns.
            skip = "httpscaledobject.keda.sh/skip-scaledobject-creation"
            await kube.request("PATCH", HTTPSCALEDOBJECTS.path(ns, "app"),
                                body={"metadata": {"annotations": {skip: "true"}}},
                                content_type="application/merge-patch+json")
            await until(kube, SCALEDOBJECTS, ns, lambda o: f"{ns}/app" not in o)
            assert op._health_problem() is None
            # Every watch works with these rights. (A first failure is possible: the RBAC
            # cache takes a moment to see a binding just applied, and the watch cache of a
            # CRD installed moments ago answers 429 while it initialises; both are retried.)
            async with asyncio.timeout(20):
                for informer in op._informers():
                    await informer.wait_connected(True)
            watches: dict[str, Any] = op.status()["watches"]
            assert all(w["synced"] and w["connected"] for w in watches.values()), watches
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
            await as_operator.request("GET", f"/api/v1/namespaces/{ns}/secrets")
        assert refused.value.status == 403
