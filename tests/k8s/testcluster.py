"""The Kubernetes cluster tests marked `k8s` run against, and helpers to wait on it.

Either the local control plane of `scripts/testcluster` (real etcd, kube-apiserver,
kube-controller-manager; the local kubelet runs pods as processes on this host), started
for the pytest session in a directory of its own, or the cluster `KUBECONFIG` points at
(e.g. kind). See docs/testcluster.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "MERGE_PATCH",
    "REQUIRE_ENV",
    "Cluster",
    "allowed",
    "cluster_session",
    "service_account_token",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "testcluster"
REQUIRE_ENV = "HTTPSCALE_REQUIRE_K8S"
"""Set to 1 (CI does) and a missing cluster fails the tests instead of skipping them."""
MERGE_PATCH = "application/merge-patch+json"
UP_TIMEOUT_S = 90.0

Obj = dict[str, Any]


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    local: bool
    """True for scripts/testcluster: pods are local processes, pod IPs reachable from here."""
    pod_cidr: str | None = None
    state_dir: Path | None = None

    @contextlib.asynccontextmanager
    async def client(self, token: str | None = None) -> AsyncIterator[client.ApiClient]:
        """An API client for the running event loop (each test has its own loop).

        As the kubeconfig's user (admin), or as whoever `token` belongs to: pass a
        ServiceAccount's token (`service_account_token`) to act as that ServiceAccount.
        """
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig),
                                      client_configuration=cfg)
        if token is not None:
            cfg.api_key = {"BearerToken": f"Bearer {token}"}
            cfg.cert_file = cfg.key_file = None
        async with client.ApiClient(cfg) as api:
            yield api


async def service_account_token(api: client.ApiClient, namespace: str, name: str) -> str:
    """A fresh token for a ServiceAccount (TokenRequest, signed by the apiserver)."""
    req = await client.CoreV1Api(api).create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}})
    token: str = req.status.token
    return token


async def allowed(api: client.ApiClient, verb: str, resource: str, *, namespace: str = "",
                  group: str = "", subresource: str = "") -> bool:
    """Whether the client's own identity may do this (SelfSubjectAccessReview).

    The RBAC authorizer answers, so with a ServiceAccount's client this checks exactly what
    RBAC manifests grant it, both ways.
    """
    review = await client.AuthorizationV1Api(api).create_self_subject_access_review({
        "spec": {"resourceAttributes": {
            "verb": verb, "resource": resource, "namespace": namespace, "group": group,
            "subresource": subresource,
        }},
    })
    return bool(review.status.allowed)


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def _run(cmd: str, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), cmd], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def _leftovers(state: Path) -> list[int]:
    """Processes still running from the session's cluster: pid files and pod directories."""
    pods = str(state / "pods")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to inspect
            # Containers run in their pod's directory; the control plane's command lines
            # name the state directory.
            if (os.readlink(proc / "cwd").startswith(pods)
                    or str(state) in (proc / "cmdline").read_text()):
                found.append(int(proc.name))
    return found


def _read_env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def cluster_session(tmp: Path) -> Iterator[Cluster]:
    """Generator behind the session fixture: up, yield, down, prove nothing is left."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        # One that `scripts/testcluster up` started has its cluster.env beside it.
        state = Path(kubeconfig).parent
        if (state / "cluster.env").is_file():
            pod_cidr = _read_env(state / "cluster.env")["POD_CIDR"]
            yield Cluster(Path(kubeconfig), local=True, pod_cidr=pod_cidr, state_dir=state)
        else:
            yield Cluster(Path(kubeconfig), local=False)
        return
    env = {**os.environ, "HTTPSCALE_TESTCLUSTER_DIR": str(tmp)}
    check = _run("check", env, 30)
    if check.returncode == 4:
        _unavailable("no Go toolchain to build kube-apiserver: install Go, run "
                     "scripts/testcluster build, or point KUBECONFIG at a cluster")
    elif check.returncode != 0:
        _unavailable("Kubernetes binaries not built: run scripts/testcluster build "
                     "(scripts/test does when Go is present)")
    try:
        up = _run("up", env, UP_TIMEOUT_S)
        if up.returncode != 0:
            pytest.fail(f"scripts/testcluster up failed:\n{up.stderr[-4000:]}", pytrace=False)
        values = _read_env(tmp / "cluster.env")
        yield Cluster(Path(values["KUBECONFIG"]), local=True, pod_cidr=values["POD_CIDR"],
                      state_dir=tmp)
    finally:
        down = _run("down", env, 60)
        left = _leftovers(tmp)
        assert down.returncode == 0, down.stderr
        assert not left, f"processes left behind by the test cluster: {left}"


async def _list(list_fn: Callable[..., Awaitable[Any]], **kw: Any) -> Obj:
    resp = await list_fn(_preload_content=False, **kw)
    try:
        body: Obj = await resp.json()
    finally:
        resp.release()
    return body


async def wait_until(
    list_fn: Callable[..., Awaitable[Any]],
    done: Callable[[dict[str, Obj]], bool],
    *,
    timeout_s: float,
    **kw: Any,
) -> dict[str, Obj]:
    """List, then watch, until `done(objects by name)` holds; the objects then.

    Event-driven: every change the watch delivers is checked, nothing is polled. `kw` go to
    the list call (namespace, label_selector, field_selector, ...).
    """
    objs: dict[str, Obj] = {}
    async with asyncio.timeout(timeout_s):
        while True:
            listing = await _list(list_fn, **kw)
            objs = {o["metadata"]["name"]: o for o in listing["items"]}
            if done(objs):
                return objs
            rv = listing["metadata"]["resourceVersion"]
            try:
                async with watch.Watch() as w:
                    async for ev in w.stream(list_fn, resource_version=rv, **kw):
                        obj = ev["raw_object"]
                        if ev["type"] == "DELETED":
                            objs.pop(obj["metadata"]["name"], None)
                        elif ev["type"] in ("ADDED", "MODIFIED"):
                            objs[obj["metadata"]["name"]] = obj
                        else:
                            continue
                        if done(objs):
                            return objs
            except ApiException as e:
                if e.status != 410:
                    raise
