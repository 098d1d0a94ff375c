"""The interceptor works with exactly the read-only rights of manifests/interceptor/, and is
refused anything more: it runs as a process whose kubeconfig holds its ServiceAccount's token."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from components import kubeconfig_for_token
from kubetools import apply_manifests
from test_interceptor_cluster import READY, deploy, httpso, interceptor_with, ready_pods
from testcluster import Cluster, allowed, service_account_token

from httpscale.kube.api import Kube
from httpscale.kube.resources import HTTPSCALEDOBJECTS

pytestmark = pytest.mark.k8s


async def test_the_interceptor_runs_on_exactly_its_manifests_rights(
    k8s_cluster: Cluster, kube: Kube, ns: str, tmp_path: Path
) -> None:
    await kube.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                        body={"metadata": {"name": "httpscale-interceptor"}})
    token = await service_account_token(kube.api, ns, "httpscale-interceptor")
    kubeconfig = kubeconfig_for_token(k8s_cluster.kubeconfig, token, tmp_path / "kubeconfig")
    await deploy(kube, ns, "app")
    await ready_pods(kube, ns, "app", 1)
    await kube.request("POST", HTTPSCALEDOBJECTS.path(ns), body=httpso("app", ["app.test"]))
    # Started before its RBAC exists: it may not list, so it knows no route and says so.
    async with interceptor_with(kubeconfig, ns, ready=r"proxy on ") as proxy:
        await proxy.c.wait_for(r"403 Forbidden")
        async with aiohttp.ClientSession() as http, http.get(proxy.admin + "/readyz") as resp:
            assert resp.status == 503  # no traffic before it knows the routes
        # Its rights arrive: it lists, becomes ready and serves, with no restart.
        await apply_manifests(kube, "interceptor", ns)
        await proxy.c.wait_for(READY, timeout_s=40)  # every worker, with --workers N
        async with aiohttp.ClientSession() as http, http.get(proxy.admin + "/readyz") as resp:
            assert resp.status == 200
        status, body, _ = await proxy.get("app.test")
        assert status == 200, body
    async with k8s_cluster.client(token=token) as api:
        for verb, resource, group in (
            ("get", "secrets", ""), ("list", "secrets", ""), ("list", "pods", ""),
            ("update", "httpscaledobjects", "http.keda.sh"),
            ("patch", "httpscaledobjects", "http.keda.sh"),
            ("create", "scaledobjects", "keda.sh"), ("update", "configmaps", ""),
            ("create", "events", ""), ("patch", "deployments", "apps"),
        ):
            assert not await allowed(api, verb, resource, namespace=ns, group=group), (
                f"the interceptor may {verb} {resource}")
        assert await allowed(api, "watch", "endpointslices", namespace=ns,
                             group="discovery.k8s.io")
