"""The Kubernetes cluster tests marked `k8s` run against, and helpers to wait on it.

Either the local control plane of `scripts/testcluster` (real etcd, kube-apiserver,
kube-controller-manager; the local kubelet runs pods as processes on this host), started
for the pytest session in a directory of its own, or the cluster `KUBECONFIG` points at
(e.g. kind). See docs/testcluster.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "MERGE_PATCH",
    "REQUIRE_ENV",
    "Cluster",
    "allowed",
    "cluster_ip",
    "cluster_session",
    "httpscale_crd_manifests",
    "install_httpscale_crds",
    "install_keda_crds",
    "keda_bins",
    "kustomize_build",
    "service_account_token",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "testcluster"
REQUIRE_ENV = "HTTPSCALE_REQUIRE_K8S"
"""Set to 1 (CI does) and a missing cluster fails the tests instead of skipping them."""
MERGE_PATCH = "application/merge-patch+json"
UP_TIMEOUT_S = 90.0
COMPONENT_TIMEOUT_S = 90.0
"""stop (SIGTERM, at most 15 s, then SIGKILL) plus start and readiness (at most 60 s)."""
KEDA_FETCH_TIMEOUT_S = 60.0
"""`scripts/testcluster keda-crds`: instant once cached; a 3 MB module download otherwise."""
KEDA_BINS_TIMEOUT_S = 60.0
"""`scripts/testcluster keda-bins`: instant once built; tests never build (minutes)."""
RESERVED_ADDRESSES = 16
"""As tests/k8s/kubelet.py: the last 16 host addresses of the pod CIDR are not given to pods."""

Obj = dict[str, Any]


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    local: bool
    """True for scripts/testcluster: pods are local processes, pod IPs reachable from here."""
    pod_cidr: str | None = None
    state_dir: Path | None = None
    service_cidr: str | None = None
    """The cluster's service CIDR (its own /24 of 10.96.0.0/16), local on lo like pod_cidr."""
    kubelet_port: int | None = None
    """The local kubelet's HTTP port on 127.0.0.1 (/healthz, /services)."""

    def reserved_address(self, index: int = 0) -> str:
        """An address of the pod CIDR that no pod gets, `index` from the top (0: .254 of the
        /24): for a server a test runs outside any pod that must still be the endpoint of a
        Service (EndpointSlices refuse loopback addresses). Bindable: the CIDR is local."""
        if not self.local or self.pod_cidr is None:
            pytest.skip("needs the local pod CIDR of scripts/testcluster")
        if not 0 <= index < RESERVED_ADDRESSES:
            raise ValueError(f"index {index}: only {RESERVED_ADDRESSES} addresses are reserved")
        hosts = list(ipaddress.ip_network(self.pod_cidr).hosts())
        return str(hosts[-1 - index])

    async def proxied_endpoints(
        self,
        namespace: str,
        name: str,
        port: int,
        done: Callable[[list[str]], bool],
        *,
        timeout_s: float = 30.0,
    ) -> list[str]:
        """Wait until the local kubelet's service proxy forwards the Service's ClusterIP:port
        to endpoints for which `done(["ip:port", ...])` holds; those endpoints.

        The proxy follows EndpointSlices a moment after the API has them; a test that
        connects to a ClusterIP right after a change waits here first. Event-driven: the
        kubelet's /services answers once its table changed (long poll), nothing is polled.
        """
        if not self.local or self.kubelet_port is None:
            pytest.skip("needs the service proxy of the local kubelet (scripts/testcluster)")
        key = f"{namespace}/{name}"
        url = f"http://127.0.0.1:{self.kubelet_port}/services"
        generation = -1
        async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as http:
            while True:
                query = {"after": str(generation), "timeout": str(timeout_s)}
                async with http.get(url, params=query) as resp:
                    resp.raise_for_status()
                    table = await resp.json()
                generation = table["generation"]
                entry = (table["services"].get(key) or {}).get("ports", {}).get(str(port))
                if entry is not None and entry["listening"] and done(entry["endpoints"]):
                    endpoints: list[str] = entry["endpoints"]
                    return endpoints

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

    async def stop_apiserver(self, timeout_s: float = COMPONENT_TIMEOUT_S) -> None:
        """Stop the kube-apiserver (etcd and everything else keep running) until started."""
        await self._component("stop", "kube-apiserver", timeout_s)

    async def start_apiserver(self, timeout_s: float = COMPONENT_TIMEOUT_S) -> None:
        """Start the kube-apiserver again, as before (port, certificates); returns when ready."""
        await self._component("start", "kube-apiserver", timeout_s)

    async def restart_apiserver(self, timeout_s: float = COMPONENT_TIMEOUT_S) -> None:
        """Stop and start the kube-apiserver; returns once `/readyz` answers ok.

        Its data is in etcd, which keeps running. Clients see their connections (and
        watches) closed, then refused until the new process listens.
        """
        await self._component("restart", "kube-apiserver", timeout_s)

    async def _component(self, action: str, name: str, timeout_s: float) -> None:
        if not self.local or self.state_dir is None:
            pytest.skip(f"{action} {name}: needs the control plane of scripts/testcluster, "
                        "whose processes run here (not a cluster KUBECONFIG points at)")
        env = {**os.environ, "HTTPSCALE_TESTCLUSTER_DIR": str(self.state_dir)}
        rc, _, err = await _script([action, name], env, timeout_s)
        if rc != 0:
            pytest.fail(f"scripts/testcluster {action} {name} exited {rc}:\n{err[-4000:]}",
                        pytrace=False)


async def service_account_token(api: client.ApiClient, namespace: str, name: str) -> str:
    """A fresh token for a ServiceAccount (TokenRequest, signed by the apiserver)."""
    req = await client.CoreV1Api(api).create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}})
    token: str = req.status.token
    return token


async def cluster_ip(api: client.ApiClient, namespace: str, name: str) -> str:
    """A Service's ClusterIP. On the local cluster the kubelet's service proxy answers on it
    (for every TCP port of the Service), from this host and from pods; pods also get the
    Service's address as {NAME}_SERVICE_HOST / {NAME}_SERVICE_PORT (no cluster DNS here)."""
    svc = await _list(client.CoreV1Api(api).read_namespaced_service, name=name,
                      namespace=namespace)
    ip: str = svc["spec"]["clusterIP"]
    return ip


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


async def _script(args: list[str], env: dict[str, str],
                  timeout_s: float) -> tuple[int, str, str]:
    """Run scripts/testcluster from async code, bounded: exit status, stdout, stderr.

    In a session of its own, so that on a timeout (or cancellation) the script and its
    helpers (curl, waits) are killed as one group. The daemons it starts are in sessions
    of their own again, so a killed script never takes the cluster down with it.
    """
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(errors="replace")


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


def _local_cluster(values: dict[str, str], state: Path) -> Cluster:
    port = values.get("KUBELET_PORT")
    return Cluster(Path(values["KUBECONFIG"]), local=True, pod_cidr=values["POD_CIDR"],
                   state_dir=state, service_cidr=values.get("SERVICE_CIDR"),
                   kubelet_port=int(port) if port else None)


def cluster_session(tmp: Path) -> Iterator[Cluster]:
    """Generator behind the session fixture: up, yield, down, prove nothing is left."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        # One that `scripts/testcluster up` started has its cluster.env beside it.
        state = Path(kubeconfig).parent
        if (state / "cluster.env").is_file():
            yield _local_cluster(_read_env(state / "cluster.env"), state)
        else:
            yield Cluster(Path(kubeconfig), local=False)
        return
    env = {**os.environ, "HTTPSCALE_TESTCLUSTER_DIR": str(tmp)}
    check = _run("check", env, 30)
    if check.returncode == 4:
        _unavailable("no Go toolchain to build kube-apiserver: install Go, run "
                     "scripts/testcluster build, or point KUBECONFIG at a cluster")
    elif check.returncode != 0:
        _unavailable("Kubernetes binaries, KEDA's CRDs or KEDA's binaries not there: run "
                     "scripts/testcluster build (scripts/test does when Go is present)")
    try:
        up = _run("up", env, UP_TIMEOUT_S)
        if up.returncode != 0:
            pytest.fail(f"scripts/testcluster up failed:\n{up.stderr[-4000:]}", pytrace=False)
        yield _local_cluster(_read_env(tmp / "cluster.env"), tmp)
    finally:
        down = _run("down", env, 60)
        left = _leftovers(tmp)
        assert down.returncode == 0, down.stderr
        assert not left, f"processes left behind by the test cluster: {left}"


async def _raw(call: Awaitable[Any]) -> bytes:
    """Await a call made with _preload_content=False: its body, the connection released.

    The generated client raises ApiException for an error status only when it preloads the
    content; here that is done by hand (a 409 must not pass for a create that worked).
    """
    resp = await call
    try:
        body: bytes = await resp.read()
    finally:
        resp.release()
    if not 200 <= resp.status <= 299:
        err = ApiException(status=resp.status, reason=resp.reason)
        err.body = body
        raise err
    return body


async def _list(list_fn: Callable[..., Awaitable[Any]], **kw: Any) -> Obj:
    body: Obj = json.loads(await _raw(list_fn(_preload_content=False, **kw)))
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
                async with _closing(watch.Watch()) as w:
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


@contextlib.asynccontextmanager
async def _closing(w: watch.Watch) -> AsyncIterator[watch.Watch]:
    """A kubernetes_asyncio Watch that, on the way out, waits (bounded) until its connection
    is really closed: one released mid-stream closes outside aiohttp's pool, so closing the
    client does not wait for it, and a short-lived event loop (a test's, a session fixture's)
    could end first and leave the socket open (a ResourceWarning in some later test)."""
    protocol = None
    try:
        async with w:
            try:
                yield w
            finally:
                resp = w.resp
                connection = getattr(resp, "connection", None)
                protocol = getattr(connection, "protocol", None)
    finally:
        closed = getattr(protocol, "closed", None)
        if isinstance(closed, asyncio.Future) and not closed.done():
            # However it ends (a TLS close often ends in an error), its outcome is retrieved,
            # so asyncio never logs it as an exception nobody retrieved.
            closed.add_done_callback(_retrieve)
            await asyncio.wait({closed}, timeout=1.0)


async def _discard(call: Awaitable[Any]) -> None:
    """Await a call made with _preload_content=False; read and release its response."""
    await _raw(call)


def _established(crd: Obj | None) -> bool:
    # A new CRD's status may hold `conditions: null` at first.
    conds = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conds)


async def _apply_crd(ext: client.ApiextensionsV1Api, crd: Obj) -> None:
    """Create, or replace what is there (e.g. from an earlier session on the same cluster)."""
    name = crd["metadata"]["name"]
    # Raw responses: KEDA's schemas are large (ScaledJob's ~650 kB), nothing needs them
    # turned into model objects.
    try:
        await _discard(ext.create_custom_resource_definition(crd, _preload_content=False))
        return
    except ApiException as e:
        if e.status != 409:
            raise
    for _ in range(5):  # a conflict means someone else changed it meanwhile: read again
        current = await _list(ext.read_custom_resource_definition, name=name)
        body = {**crd, "metadata": {**crd["metadata"],
                                    "resourceVersion": current["metadata"]["resourceVersion"]}}
        try:
            await _discard(ext.replace_custom_resource_definition(
                name, body, _preload_content=False))
            return
        except ApiException as e:
            if e.status != 409:
                raise
    raise RuntimeError(f"CRD {name}: replace kept conflicting")


def _read_crds(crd_dir: Path) -> list[Obj]:
    # libyaml's loader where built (ten times faster on these ~750 kB), else PyYAML's own.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crds = [doc for path in sorted(crd_dir.glob("*.yaml"))
            for doc in yaml.load_all(path.read_text(), Loader=loader)
            if doc and doc.get("kind") == "CustomResourceDefinition"]
    if not crds:
        raise RuntimeError(f"no CustomResourceDefinition in {crd_dir}")
    return crds


async def install_keda_crds(api: client.ApiClient, *, timeout_s: float = 60.0) -> list[str]:
    """Install KEDA's own CRDs (KEDA_VERSION in scripts/k8s-versions.env); their names.

    The manifests come from `scripts/testcluster keda-crds` (KEDA's Go module, cached).
    Idempotent: each is created, or replaced where present; returns once the apiserver
    reports every one `Established` (watched, not polled), so its kinds are served.
    """
    rc, out, err = await _script(["keda-crds"], dict(os.environ), KEDA_FETCH_TIMEOUT_S)
    if rc != 0:  # e.g. not fetched yet (a cluster from KUBECONFIG) and no Go to fetch them
        _unavailable(f"KEDA's CRDs: scripts/testcluster keda-crds exited {rc}: "
                     f"{err.strip()[-1000:]}")
    crds = await asyncio.to_thread(_read_crds, Path(out.strip().splitlines()[-1]))
    ext = client.ApiextensionsV1Api(api)
    async with asyncio.timeout(timeout_s):
        for crd in crds:
            await _apply_crd(ext, crd)
        names = [crd["metadata"]["name"] for crd in crds]
        await wait_until(ext.list_custom_resource_definition,
                         lambda got: all(_established(got.get(n)) for n in names),
                         timeout_s=timeout_s)
    return names


def httpscale_crd_manifests() -> list[Obj]:
    """httpscale's CRDs as kustomize would build them: every resource manifests/crd lists."""
    crd_dir = ROOT / "manifests" / "crd"
    kustomization = yaml.safe_load((crd_dir / "kustomization.yaml").read_text())
    out: list[Obj] = []
    for name in kustomization["resources"]:
        out += [d for d in yaml.safe_load_all((crd_dir / name).read_text()) if d]
    return out


async def install_httpscale_crds(api: client.ApiClient, *, timeout_s: float = 30.0) -> list[str]:
    """Server-side apply httpscale's CRDs (manifests/crd) and wait until they are served.

    Idempotent: the session's tests share them. A fresh session cluster serves a new CRD once
    it is Established. On a cluster reused through KUBECONFIG, a changed schema takes effect
    moments after the apply, when the API server's own informer sees it.
    """
    crds = httpscale_crd_manifests()
    for crd in crds:
        resp = await api.call_api(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}",
            "PATCH",
            query_params=[("fieldManager", "httpscale-tests"), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml",
                           "Accept": "application/json"},
            body=crd, auth_settings=["BearerToken"], _preload_content=False)
        try:
            if resp.status >= 300:
                raise RuntimeError(f"applying CRD {crd['metadata']['name']}: {resp.status} "
                                   f"{(await resp.read())[:2000]!r}")
        finally:
            resp.release()
    names = [c["metadata"]["name"] for c in crds]
    ext = client.ApiextensionsV1Api(api)
    await wait_until(ext.list_custom_resource_definition,
                     lambda got: all(_established(got.get(n)) for n in names),
                     timeout_s=timeout_s)
    return names


async def keda_bins() -> Path:
    """The directory of KEDA_VERSION's binaries (`scripts/testcluster keda-bins`):
    keda-operator, keda-adapter, kustomize, and KEDA's config/ tree.

    Built by `scripts/testcluster build` (minutes), never by a test: when missing, the test
    skips (fails under HTTPSCALE_REQUIRE_K8S=1).
    """
    rc, out, err = await _script(["keda-bins", "--if-built"], dict(os.environ),
                                 KEDA_BINS_TIMEOUT_S)
    if rc == 3:
        _unavailable("KEDA's binaries are not built: run scripts/testcluster build "
                     "(scripts/test does when Go is present)")
    elif rc != 0:
        _unavailable(f"scripts/testcluster keda-bins exited {rc}: {err.strip()[-1000:]}")
    return Path(out.strip().splitlines()[-1])


async def kustomize_build(directory: Path, *, timeout_s: float = 60.0) -> list[Obj]:
    """`kustomize build <directory>` (kustomize as KEDA_VERSION pins it, built with KEDA):
    the objects `kubectl apply -k <directory>` would apply, in order."""
    kustomize = await keda_bins() / "kustomize"
    proc = await asyncio.create_subprocess_exec(
        str(kustomize), "build", str(directory), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"kustomize build {directory} exited {proc.returncode}: "
                           f"{err.decode(errors='replace')[-2000:]}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(out.decode(), Loader=loader) if d]


def _retrieve(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
