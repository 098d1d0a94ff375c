"""Helpers for tests that drive httpscale against the test cluster with httpscale's own
client (`httpscale.kube`): namespaces, plain objects, and waiting on watches (no polling)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from httpscale.kube.api import APPLY_PATCH, MERGE_PATCH, ApiError, Kube, Obj
from httpscale.kube.cache import Informer
from httpscale.kube.resources import DEPLOYMENTS, SCALEDOBJECTS, SERVICES, Resource

__all__ = [
    "MANIFESTS",
    "NAMESPACES",
    "apply_manifests",
    "cached",
    "deployment",
    "merge_patch",
    "service",
    "temporary_namespace",
    "uninstall",
    "until",
]

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
_RBAC = "rbac.authorization.k8s.io"
_KINDS: dict[str, Resource] = {
    "ServiceAccount": Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    "ClusterRole": Resource(_RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
    "ClusterRoleBinding": Resource(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding",
                                   namespaced=False),
    "Role": Resource(_RBAC, "v1", "roles", "Role"),
    "RoleBinding": Resource(_RBAC, "v1", "rolebindings", "RoleBinding"),
}


def component_manifests(component: str, namespace: str) -> list[Obj]:
    """The ServiceAccount and RBAC of manifests/<component>/, as kustomize would render them
    into `namespace`."""
    directory = MANIFESTS / component
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[Obj] = []
    for name in kustomization["resources"]:
        # Identity and rights only: the component's Deployment and Services are not run here.
        docs += [d for d in yaml.safe_load_all((directory / name).read_text())
                 if d and d.get("kind") in _KINDS]
    for doc in docs:
        if _KINDS[doc["kind"]].namespaced:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects") or ():
            subject["namespace"] = namespace
    return docs


async def apply_manifests(kube: Kube, component: str, namespace: str) -> None:
    """Server-side apply manifests/<component>/ (its ServiceAccount and RBAC) into
    `namespace`; cluster-scoped objects are shared, so the last test to apply them owns them."""
    for doc in component_manifests(component, namespace):
        meta = doc["metadata"]
        await kube.request(
            "PATCH",
            _KINDS[doc["kind"]].path(meta.get("namespace"), meta["name"]),
            query=[("fieldManager", "httpscale-tests"), ("force", "true")],
            body=doc,
            content_type=APPLY_PATCH,
        )


@contextlib.asynccontextmanager
async def temporary_namespace(kube: Kube, name: str) -> AsyncIterator[str]:
    await kube.request("POST", NAMESPACES.path(), body={"metadata": {"name": name}})
    try:
        yield name
    finally:
        with contextlib.suppress(ApiError):
            await kube.request("DELETE", NAMESPACES.path(name=name))


async def until(
    kube: Kube,
    resource: Resource,
    namespace: str | None,
    done: Callable[[Mapping[str, Obj]], bool],
    *,
    timeout_s: float = 20.0,
    field_selector: str | None = None,
) -> Mapping[str, Obj]:
    """Watch `resource` until `done(objects by "<ns>/<name>")` holds; those objects then.

    Checked at the first list and after every batch of watch events: no polling. Objects keep
    their managedFields (tests look at who wrote what).
    """
    informer: Informer[Obj] = Informer(
        kube, resource, namespace=namespace, field_selector=field_selector,
        transform=lambda obj: obj,
    )
    met = asyncio.Event()

    def check(snapshot: Any, changed: frozenset[str]) -> None:
        if done(snapshot.raw):
            met.set()

    informer.subscribe(check)
    task = asyncio.create_task(informer.run(), name=f"until {resource.plural}")
    try:
        async with asyncio.timeout(timeout_s):
            await met.wait()
        return informer.snapshot().raw
    except TimeoutError:
        last = {k: v.get("status") for k, v in informer.snapshot().raw.items()}
        raise AssertionError(f"{resource.plural} in {namespace}: condition not met within "
                             f"{timeout_s}s; last seen statuses: {last}") from None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def cached(
    informer: Informer[Any], done: Callable[[Mapping[str, Obj]], bool], *, timeout_s: float = 20
) -> None:
    """Until `done(raw objects)` holds in `informer`'s own cache (e.g. an operator's, once it
    has seen its own writes come back)."""
    met = asyncio.Event()

    def check(snapshot: Any, changed: frozenset[str]) -> None:
        if done(snapshot.raw):
            met.set()

    unsubscribe = informer.subscribe(check)
    try:
        check(informer.snapshot(), frozenset())
        async with asyncio.timeout(timeout_s):
            await met.wait()
    finally:
        unsubscribe()


async def merge_patch(kube: Kube, resource: Resource, namespace: str, name: str,
                      body: Obj, *, subresource: str = "", field_manager: str = "") -> Obj:
    query = [("fieldManager", field_manager)] if field_manager else []
    return await kube.request("PATCH", resource.path(namespace, name, subresource), query=query,
                              body=body, content_type=MERGE_PATCH)


def deployment(name: str, *, replicas: int = 0) -> Obj:
    """A Deployment that never needs to run (replicas 0 unless asked): something to target."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "app", "image": "none",
                                                  "command": ["true"]}]}},
        },
    }


def service(name: str, *ports: tuple[str, int]) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": n, "port": p, "targetPort": p} for n, p in ports]},
    }


async def uninstall(kube: Kube, namespace: str) -> None:
    """Take an httpscale install out of `namespace` as docs/kubernetes.md's Uninstall does:
    its ScaledObjects first, while the scaler still answers (deleting the namespace at once
    takes the scaler and the HPA down under live ScaledObjects, which the session's KEDA then
    retries against a scaler that is gone), then the namespace, until it is gone (its pods
    are local processes: the kubelet has stopped them all by then)."""
    with contextlib.suppress(ApiError):
        await kube.request("DELETE", SCALEDOBJECTS.path(namespace))
    await until(kube, SCALEDOBJECTS, namespace, lambda so: not so, timeout_s=60)
    with contextlib.suppress(ApiError):
        await kube.request("DELETE", NAMESPACES.path(name=namespace))
    await until(kube, NAMESPACES, None, lambda n: namespace not in n, timeout_s=120)


async def create_app(kube: Kube, namespace: str, name: str, *ports: tuple[str, int]) -> None:
    """The Deployment and the Service an HTTPScaledObject points at."""
    await kube.request("POST", DEPLOYMENTS.path(namespace), body=deployment(name))
    await kube.request("POST", SERVICES.path(namespace), body=service(name, *ports))
