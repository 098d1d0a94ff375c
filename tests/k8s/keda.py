"""KEDA itself (KEDA_VERSION, scripts/k8s-versions.env) run against the test cluster.

KEDA's operator and its metrics adapter (the binaries `scripts/testcluster build` makes from
`cmd/operator` and `cmd/adapter` of the KEDA module) run as local processes, with KEDA's own
ServiceAccount and RBAC (its `config/` tree rendered by kustomize), so that what KEDA does
to the cluster, RBAC allows for real:

    HPA controller ──GET external.metrics.k8s.io──▶ kube-apiserver (aggregator)
        ──TLS, front-proxy client cert──▶ adapter on <reserved pod-CIDR address>:6443
        ──gRPC, mutual TLS──▶ operator on 127.0.0.1:<port> ──▶ scalers (e.g. an external
        one at a Service ClusterIP, through the local kubelet's service proxy)

The aggregator dials an endpoint of the APIService's Service (`--enable-aggregator-routing`):
the Service `keda/keda-metrics-apiserver` has no selector here, and an EndpointSlice written
by `start_keda` names the adapter's address, the top address of the pod CIDR, which the
local kubelet never hands to a pod (an EndpointSlice refuses loopback addresses). The
certificates are made here (one CA, one serving/client certificate for both, as KEDA's own
cert rotation would make them), so `--enable-cert-rotation` stays off.

Processes live in sessions of their own (killed as a group) and die with the thread that
started them (PR_SET_PDEATHSIG). Their output goes to `<workdir>/<name>.log` through a
thread per process, which also wakes whoever awaits a line (`KedaProcess.wait_for_line`):
readiness is the operator logging its ScaledObject workers and the APIService turning
`Available`, both awaited, not polled.

`start_keda` / `Keda.stop` are what the session fixture `keda` (conftest.py) runs;
`running_keda` is the same as an async context manager for a test that wants its own.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ctypes
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from testcluster import Cluster, keda_bins, kustomize_build, service_account_token, wait_until

__all__ = [
    "ADAPTER_PORT",
    "KEDA_NAMESPACE",
    "Keda",
    "KedaProcess",
    "KedaSettings",
    "apply",
    "running_keda",
    "start_keda",
]

KEDA_NAMESPACE = "keda"
SERVICE_ACCOUNT = "keda-operator"
METRICS_SERVICE = "keda-metrics-apiserver"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
ADAPTER_PORT = 6443
"""The adapter's HTTPS port on its reserved address (KEDA's manifests use 6443 too)."""
_FIELD_MANAGER = "httpscale-tests"
_APPLY = "application/apply-patch+yaml"
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl

Obj = dict[str, Any]


@dataclass(frozen=True)
class KedaSettings:
    ready_timeout_s: float = 90.0
    """From start to both ready (operator workers running, APIService Available), seconds."""
    stop_grace_s: float = 10.0
    """SIGTERM to SIGKILL when stopping, seconds (KEDA's manifests: 10 s)."""
    log_level: str = "info"
    """KEDA's --zap-log-level for both (debug, info, error)."""
    extra_env: tuple[tuple[str, str], ...] = ()
    """More environment for the operator, e.g. (("KEDA_HTTP_DEFAULT_TIMEOUT", "1000"),)."""
    adapter_address_index: int = 0
    """Which reserved pod-CIDR address the adapter binds (Cluster.reserved_address)."""


def _set_pdeathsig() -> None:
    # In the child between fork and exec: die with the thread that started it.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessExited(RuntimeError):
    """The process ended while a line was awaited."""


class KedaProcess:
    """One of KEDA's processes: its group, its log file, and lines awaited from its output."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._lock = threading.Lock()
        self._recent: collections.deque[str] = collections.deque(maxlen=20000)
        self._waiters: list[tuple[re.Pattern[str], asyncio.AbstractEventLoop,
                                  asyncio.Future[str]]] = []
        self._eof = False
        self.started = time.monotonic()
        # Popen, not an asyncio subprocess: the session fixture's processes outlive the event
        # loop of any one test. PDEATHSIG follows the thread that forks: call from the main one.
        self.proc = subprocess.Popen(
            argv, env=env, cwd=log.parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_set_pdeathsig)
        assert self.proc.stdout is not None
        self._tee = threading.Thread(target=self._read, args=(self.proc.stdout,),
                                     name=f"{name} log", daemon=True)
        self._tee.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, stream: IO[bytes]) -> None:
        with stream, self.log.open("ab") as out:
            for raw in stream:
                out.write(raw)
                out.flush()
                line = raw.decode(errors="replace")
                with self._lock:
                    self._recent.append(line)
                    fire = [w for w in self._waiters if w[0].search(line)]
                    for w in fire:
                        self._waiters.remove(w)
                for _, loop, fut in fire:
                    _wake(loop, fut, line)
            with self._lock:
                self._eof = True
                waiters, self._waiters = self._waiters, []
            for _, loop, fut in waiters:
                _wake(loop, fut, None)

    async def wait_for_line(self, pattern: str, *, timeout_s: float) -> str:
        """The first output line matching `pattern` (a regex), seen already or awaited."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        entry = (regex, loop, fut)
        with self._lock:
            for line in self._recent:
                if regex.search(line):
                    return line
            if self._eof:
                raise ProcessExited(f"{self.name} exited ({self.proc.poll()}) before logging "
                                    f"{pattern!r}:\n{self.tail()}")
            self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)

    def tail(self, lines: int = 80) -> str:
        with self._lock:
            return "".join(list(self._recent)[-lines:])

    def stop(self, grace_s: float) -> int:
        """SIGTERM to the group, SIGKILL after grace_s; the exit status, once reaped.

        Blocking (a pidfd wait: woken by the exit itself); for a sync teardown, or
        asyncio.to_thread.
        """
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            if not _wait_exit(self.proc.pid, grace_s):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        # Also whatever it started in its group, if the leader is gone already.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        rc = self.proc.wait(timeout=10)
        self._tee.join(timeout=10)
        return rc

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True


def _wake(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[str], line: str | None) -> None:
    def done() -> None:
        if fut.done():
            return
        if line is None:
            fut.set_exception(ProcessExited("the process exited"))
        else:
            fut.set_result(line)

    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(done)


def _wait_exit(pid: int, timeout_s: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)


@dataclass
class Keda:
    """KEDA running against the cluster: its two processes and where things are."""

    operator: KedaProcess
    adapter: KedaProcess
    workdir: Path
    adapter_address: str
    """ip:port the adapter serves the external metrics API on (the APIService's endpoint)."""
    operator_grpc: str
    """127.0.0.1:port of the operator's metrics service (gRPC, mutual TLS)."""
    kubeconfig: Path
    """KEDA's own identity (ServiceAccount keda/keda-operator): tests may act as KEDA too."""
    startup_s: float = 0.0
    """From the first process start to both ready, seconds."""
    settings: KedaSettings = field(default_factory=KedaSettings)

    def processes(self) -> list[KedaProcess]:
        return [self.operator, self.adapter]

    def logs(self, lines: int = 80) -> str:
        """The last lines of both logs, for a failing test's report."""
        return "\n".join(f"--- {p.name} ({p.log}):\n{p.tail(lines)}" for p in self.processes())

    async def stop(self, api: client.ApiClient | None) -> None:
        """Remove the APIService (with its server gone, API discovery would report the group
        unavailable, and namespace deletion stalls on that), then stop both processes."""
        if api is not None:
            with contextlib.suppress(ApiException):
                await client.ApiregistrationV1Api(api).delete_api_service(API_SERVICE)
        for p in self.processes():
            await asyncio.to_thread(p.stop, self.settings.stop_grace_s)
        left = [p.name for p in self.processes() if p.group_alive()]
        assert not left, f"KEDA processes left running: {left}"

    def stop_sync(self) -> None:
        """Stop both processes without the API (e.g. after the loop of a failed start)."""
        for p in self.processes():
            p.stop(self.settings.stop_grace_s)


# -- objects --------------------------------------------------------------------------------

_PLURALS = {
    "Namespace": ("namespaces", False), "ServiceAccount": ("serviceaccounts", True),
    "Service": ("services", True), "Endpoints": ("endpoints", True),
    "ConfigMap": ("configmaps", True), "Secret": ("secrets", True),
    "ClusterRole": ("clusterroles", False), "ClusterRoleBinding": ("clusterrolebindings", False),
    "Role": ("roles", True), "RoleBinding": ("rolebindings", True),
    "APIService": ("apiservices", False), "EndpointSlice": ("endpointslices", True),
    "Deployment": ("deployments", True),
}


def _path(obj: Obj) -> str:
    plural, namespaced = _PLURALS[obj["kind"]]
    api_version = obj["apiVersion"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    meta = obj["metadata"]
    ns = f"/namespaces/{meta['namespace']}" if namespaced else ""
    return f"{base}{ns}/{plural}/{meta['name']}"


async def apply(api: client.ApiClient, obj: Obj) -> None:
    """Server-side apply one object (field manager httpscale-tests, forced)."""
    resp = await api.call_api(
        _path(obj), "PATCH", query_params=[("fieldManager", _FIELD_MANAGER), ("force", "true")],
        header_params={"Content-Type": _APPLY, "Accept": "application/json"},
        body=obj, auth_settings=["BearerToken"], _preload_content=False)
    try:
        body = await resp.read()
    finally:
        resp.release()
    if resp.status >= 300:
        raise RuntimeError(f"applying {obj['kind']} {obj['metadata']['name']}: {resp.status} "
                           f"{body[:2000]!r}")


def _make_certs(directory: Path, adapter_ip: str) -> None:
    """A CA and one certificate for the operator's gRPC server, the adapter's HTTPS server and
    the adapter's gRPC client (mutual TLS), as ca.crt/tls.crt/tls.key: KEDA's layout."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    names = [f"DNS:{svc}.{KEDA_NAMESPACE}.svc{suffix}"
             for svc in ("keda-operator", METRICS_SERVICE, "keda-admission-webhooks")
             for suffix in ("", ".cluster.local")]
    san = ",".join([*names, "DNS:localhost", "IP:127.0.0.1", f"IP:{adapter_ip}"])
    (directory / "tls.ext").write_text(
        f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=30)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7",
            "-subj", "/O=KEDAORG/CN=KEDA")
    openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=keda-operator")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "7", "-extfile", "tls.ext")


def _prepare(workdir: Path, certs: Path, adapter_ip: str) -> bytes:
    """The work directory, the certificates, an empty --ca-dir; the CA certificate (PEM)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ca").mkdir(exist_ok=True)  # --ca-dir: no extra CAs for scalers
    _make_certs(certs, adapter_ip)
    return (certs / "ca.crt").read_bytes()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _kubeconfig(cluster: Cluster, token: str) -> str:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    c = admin["clusters"][0]["cluster"]
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": c}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": SERVICE_ACCOUNT,
                                                "namespace": KEDA_NAMESPACE}}],
        "current-context": "c",
    })


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _keda_objects(config: Path, adapter_ip: str, ca_pem: bytes) -> list[Obj]:
    """KEDA's namespace, ServiceAccount, RBAC, metrics Service and APIService, from its own
    kustomize tree; the Service without selector (its endpoint is the adapter process) and
    the APIService with our CA."""
    objs: list[Obj] = []
    for part in ("general", "service_account", "rbac", "metrics-server"):
        objs += await kustomize_build(config / part)
    out = []
    for obj in objs:
        if obj["kind"] == "Deployment":
            continue  # the adapter runs as a process, not as a pod
        if obj["kind"] == "Service" and obj["metadata"]["name"] == METRICS_SERVICE:
            obj["spec"].pop("selector", None)
            obj["spec"]["ports"] = [p for p in obj["spec"]["ports"] if p["name"] == "https"]
        if obj["kind"] == "APIService":
            obj["spec"]["caBundle"] = base64.b64encode(ca_pem).decode()
            obj["spec"].pop("insecureSkipTLSVerify", None)
        out.append(obj)
    out.append({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{METRICS_SERVICE}-process", "namespace": KEDA_NAMESPACE,
                     "labels": {"kubernetes.io/service-name": METRICS_SERVICE,
                                "endpointslice.kubernetes.io/managed-by": "httpscale-tests"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [adapter_ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": ADAPTER_PORT, "protocol": "TCP"}],
    })
    # Kinds the API knows before anything that lives in them (namespace first).
    order = ["Namespace", "ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding",
             "RoleBinding", "Service", "EndpointSlice", "APIService"]
    return sorted(out, key=lambda o: order.index(o["kind"]))


def _available(apiservices: dict[str, Obj]) -> bool:
    conds = (apiservices.get(API_SERVICE, {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conds)


async def start_keda(api: client.ApiClient, cluster: Cluster, workdir: Path,
                     settings: KedaSettings = KedaSettings()) -> Keda:
    """Install KEDA's objects (idempotent; its CRDs must be installed: `install_keda_crds`),
    start the operator and the metrics adapter, and return once both are ready.

    `api` acts as the cluster admin. On failure nothing is left running.
    """
    bins = await keda_bins()
    adapter_ip = cluster.reserved_address(settings.adapter_address_index)
    if cluster.state_dir is not None and not await asyncio.to_thread(
            (cluster.state_dir / "pki" / "front-proxy-ca.crt").exists):
        raise RuntimeError(f"the cluster in {cluster.state_dir} runs without API aggregation "
                           "(HTTPSCALE_TESTCLUSTER_AGGREGATION=0, or an older `up`): KEDA's "
                           "APIService could never become Available")
    certs, kubeconfig = workdir / "certs", workdir / "kubeconfig"
    ca_pem = await asyncio.to_thread(_prepare, workdir, certs, adapter_ip)
    for obj in await _keda_objects(bins / "config", adapter_ip, ca_pem):
        await apply(api, obj)
    token = await service_account_token(api, KEDA_NAMESPACE, SERVICE_ACCOUNT)
    await asyncio.to_thread(_write_private, kubeconfig, _kubeconfig(cluster, token))

    grpc_port, health_port, adapter_metrics_port = _free_port(), _free_port(), _free_port()
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    env.update(KUBECONFIG=str(kubeconfig), POD_NAMESPACE=KEDA_NAMESPACE, WATCH_NAMESPACE="",
               KEDA_CLUSTER_OBJECT_NAMESPACE=KEDA_NAMESPACE)
    log_flags = [f"--zap-log-level={settings.log_level}", "--zap-encoder=console",
                 "--zap-time-encoding=rfc3339nano"]
    started = time.monotonic()
    operator = KedaProcess("keda-operator", [
        str(bins / "keda-operator"), f"--kubeconfig={kubeconfig}",
        "--leader-elect=false", "--enable-cert-rotation=false", f"--cert-dir={certs}",
        f"--ca-dir={workdir / 'ca'}",
        f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
        f"--health-probe-bind-address=127.0.0.1:{health_port}",
        "--metrics-bind-address=0", *log_flags,
    ], {**env, **dict(settings.extra_env)}, workdir / "keda-operator.log")
    try:
        adapter = KedaProcess("keda-metrics-apiserver", [
            str(bins / "keda-adapter"), f"--kubeconfig={kubeconfig}",
            f"--lister-kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={adapter_ip}", f"--secure-port={ADAPTER_PORT}",
            f"--cert-dir={certs}", f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}", f"--client-ca-file={certs / 'ca.crt'}",
            f"--metrics-service-address=127.0.0.1:{grpc_port}",
            f"--port={adapter_metrics_port}", *log_flags,
        ], env, workdir / "keda-metrics-apiserver.log")
    except BaseException:
        operator.stop(settings.stop_grace_s)
        raise
    keda = Keda(operator=operator, adapter=adapter, workdir=workdir,
                adapter_address=f"{adapter_ip}:{ADAPTER_PORT}",
                operator_grpc=f"127.0.0.1:{grpc_port}", kubeconfig=kubeconfig,
                settings=settings)
    try:
        async with asyncio.timeout(settings.ready_timeout_s):
            await asyncio.gather(
                # controller-runtime logs this once the ScaledObject controller's cache has
                # synced and its workers run: from then on, a ScaledObject is reconciled.
                operator.wait_for_line(r'Starting workers.*"?scaledobject"?',
                                       timeout_s=settings.ready_timeout_s),
                operator.wait_for_line(r"Starting Metrics Service gRPC Server",
                                       timeout_s=settings.ready_timeout_s),
                wait_until(client.ApiregistrationV1Api(api).list_api_service, _available,
                           field_selector=f"metadata.name={API_SERVICE}",
                           timeout_s=settings.ready_timeout_s),
            )
    except BaseException as e:
        logs = keda.logs()
        with contextlib.suppress(Exception):
            await asyncio.shield(keda.stop(api))
        if isinstance(e, Exception):
            raise RuntimeError(f"KEDA did not get ready: {e!r}\n{logs}") from e
        raise
    keda.startup_s = time.monotonic() - started
    return keda


@contextlib.asynccontextmanager
async def running_keda(cluster: Cluster, workdir: Path,
                       settings: KedaSettings = KedaSettings()) -> AsyncIterator[Keda]:
    """KEDA for the body of an `async with` (in a test's own event loop); stopped after."""
    async with cluster.client() as api:
        keda = await start_keda(api, cluster, workdir, settings)
        try:
            yield keda
        finally:
            await asyncio.shield(keda.stop(api))
