"""A local kubelet for the test control plane: runs pods as local processes.

Test support, not part of the httpscale package. `scripts/testcluster up` starts it as
`python tests/k8s/kubelet.py --kubeconfig ... --pod-cidr ...` next to the real apiserver and
controller-manager; see docs/testcluster.md.

Rules it keeps, in the real kubelet's terms:
- One Node, Ready while this runs (status heartbeat). No scheduler runs, so every pending pod
  without a nodeName is bound to this Node; pods bound to another node are left alone.
- A pod gets its own address from the node's pod CIDR. `scripts/testcluster up` makes that
  CIDR local on the loopback device, so an app binding POD_IP:PORT is reachable from this host
  only, and the real EndpointSlice controller lists a real address (it rejects 127.0.0.0/8).
  The last RESERVED_ADDRESSES of it are never handed out (for servers run outside pods).
- Each container is one process group: `command` + `args` (the image is ignored; there is no
  image to run), its `env` (values and fieldRefs, `$(VAR)` expanded), plus POD_IP, POD_NAME,
  POD_NAMESPACE and PORT (its first containerPort), and KUBECONFIG: a kubeconfig with a token
  of the pod's ServiceAccount, bound to the pod; and the real kubelet's service links
  ({SVC}_SERVICE_HOST, {SVC}_SERVICE_PORT, ...) of the Services in its namespace.
  containerID is `local://<pid>`. Fields with no meaning here (securityContext, resources,
  affinity, topologySpreadConstraints, image) are accepted and ignored.
- Ready comes from the readinessProbe (httpGet, tcpSocket, exec, grpc) on its period, or from
  the process having started when there is none. A failing livenessProbe stops the container
  (preStop, SIGTERM, grace, SIGKILL), which then restarts per restartPolicy.
- Deletion: the preStop hook (sleep, exec, httpGet), then SIGTERM to each container's group,
  SIGKILL once the grace period is over (a hook that used it up leaves 2 s after SIGTERM),
  then the final delete with grace 0 (the apiserver keeps a gracefully deleted pod until its
  kubelet says so).
- Services: with --service-cidr, a userspace service proxy answers on every ClusterIP:port
  and forwards to ready endpoints (_ServiceProxy); GET /services shows its table.
- Crashed containers restart per restartPolicy with doubling backoff.
- SIGTERM/SIGINT: stop every container (bounded grace), then exit. Containers also get
  PR_SET_PDEATHSIG, so a SIGKILLed kubelet leaves no process behind.

Everything is driven by watches (pods; Services and EndpointSlices for the proxy: list, then
watch from that resourceVersion; relist on 410 Gone). The only timers are the real
kubelet's: probe period, restart backoff, grace period and node heartbeat.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import datetime
import ipaddress
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = ["RESERVED_ADDRESSES", "KubeletSettings", "LocalKubelet", "ProxySettings", "main"]

log = logging.getLogger("kubelet")

Obj = dict[str, Any]
_MERGE = "application/merge-patch+json"
_PR_SET_PDEATHSIG = 1
# Looked up once here: the child calls it between fork and exec, where loading a library
# (dlopen takes locks another thread of this process may have held at fork) is not safe.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


RESERVED_ADDRESSES = 16
"""The last 16 host addresses of the pod CIDR (.239-.254 of a /24) are never given to pods:
servers that tests run outside any pod but that must appear as endpoints of a Service (an
EndpointSlice refuses loopback addresses) bind one of them, e.g. KEDA's metrics adapter."""


@dataclass(frozen=True)
class ProxySettings:
    """The service proxy (a userspace kube-proxy; see _ServiceProxy)."""

    connect_timeout_s: float = 3.0
    """Connecting to one endpoint, seconds; on failure or timeout the next one is tried."""
    max_connections: int = 1024
    """Proxied connections open at once, all Services; beyond, new ones are reset."""
    chunk_bytes: int = 65536
    """Read size per direction; with the writer's drain this bounds what a connection buffers."""


@dataclass(frozen=True)
class KubeletSettings:
    pod_cidr: str
    """The node's pod CIDR; pods get its host addresses, the first one excepted."""
    workdir: Path
    """Per-pod working directories and container logs."""
    node_name: str = "local-node"
    kubelet_version: str = "v0.0.0-local"
    heartbeat_s: float = 10.0
    """Node status heartbeat period, seconds."""
    backoff_initial_s: float = 1.0
    """First restart delay of a crashed container, seconds; doubles per crash."""
    backoff_max_s: float = 30.0
    """Restart delay cap, seconds (the real kubelet: 10 s doubling to 300 s)."""
    shutdown_grace_s: float = 5.0
    """Grace for containers when the kubelet itself stops, seconds."""
    extra_env: tuple[tuple[str, str], ...] = ()
    """Environment every container gets first (e.g. KUBERNETES_SERVICE_HOST/PORT)."""
    api_server: str = ""
    """The apiserver URL written into each pod's kubeconfig; empty: no pod kubeconfigs."""
    ca_pem: str = ""
    """The apiserver's CA certificate (PEM) for the pod kubeconfigs."""
    reserved_addresses: int = RESERVED_ADDRESSES
    """The last N host addresses of the pod CIDR are not given to pods (RESERVED_ADDRESSES)."""
    service_cidr: str = ""
    """The cluster's service CIDR, made local like the pod CIDR; empty: no service proxy."""
    proxy: ProxySettings = field(default_factory=ProxySettings)


async def _body(call: Coroutine[Any, Any, Any]) -> bytes:
    """Await an API call made with _preload_content=False; its body, connection released.

    Raw responses skip model deserialisation, which for some calls is wrong anyway (a Binding
    answers with a Status, which the generated client rejects as a V1Binding). The generated
    client raises ApiException for an error status only when it preloads the content, so
    here that is done by hand: a rejected status update must not pass for a written one.
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


async def _drain(call: Coroutine[Any, Any, Any]) -> None:
    await _body(call)


async def _json(call: Coroutine[Any, Any, Any]) -> Obj:
    body: Obj = json.loads(await _body(call))
    return body


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _set_pdeathsig() -> None:
    # Runs in the child between fork and exec: die with the kubelet, even if it is SIGKILLed.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: unknown references stay as written, `$$` is `$`."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


def _field_ref(pod: Obj, path: str, ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    values = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": ip,
        "status.hostIP": "127.0.0.1",
    }
    return str(values.get(path, ""))


class _Container:
    """Runs one container of a pod: start, probe, restart, stop."""

    def __init__(self, pod: _Pod, spec: Obj) -> None:
        self.pod = pod
        self.spec = spec
        self.name: str = spec["name"]
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = False
        self.restart_count = 0
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.done = False

    def env(self) -> dict[str, str]:
        pod, ip = self.pod.obj, self.pod.ip
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
        proxy = self.pod.kubelet.proxy
        if proxy is not None and pod["spec"].get("enableServiceLinks", True):
            # As the real kubelet: {SVC}_SERVICE_HOST/_PORT (and the docker-link variables) of
            # every Service in the pod's namespace, so that `$(SVC_SERVICE_HOST)` works in args.
            env.update(proxy.service_env(pod["metadata"]["namespace"]))
        # KUBERNETES_SERVICE_HOST/PORT: the apiserver itself (its Service has no endpoints).
        env.update(self.pod.kubelet.settings.extra_env)
        env.update(
            POD_IP=ip,
            POD_NAME=pod["metadata"]["name"],
            POD_NAMESPACE=pod["metadata"]["namespace"],
        )
        if self.pod.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.pod.kubeconfig)
        ports = self.spec.get("ports") or []
        if ports:
            env["PORT"] = str(ports[0]["containerPort"])
        for item in self.spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = _expand(str(item["value"]), env)
            elif "fieldRef" in (item.get("valueFrom") or {}):
                env[item["name"]] = _field_ref(pod, item["valueFrom"]["fieldRef"]["fieldPath"], ip)
            else:
                log.warning("%s: env %s: only value and fieldRef are supported",
                            self.pod.key, item["name"])
        return env

    def status(self) -> Obj:
        pid = self.proc.pid if self.proc is not None else None
        st: Obj = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": "running" in self.state,
            "restartCount": self.restart_count,
            "state": self.state,
        }
        if pid is not None:
            st["containerID"] = f"local://{pid}"
        if self.last_state:
            st["lastState"] = self.last_state
        return st

    async def supervise(self) -> None:
        policy = self.pod.obj["spec"].get("restartPolicy", "Always")
        backoff = self.pod.kubelet.settings.backoff_initial_s
        while True:
            rc, ran_s = await self._run_once()
            terminated = {
                "exitCode": rc,
                "reason": "Completed" if rc == 0 else "Error",
                "finishedAt": _now(),
            }
            if policy == "Never" or (policy == "OnFailure" and rc == 0):
                self.state = {"terminated": terminated}
                self.done = True
                await self.pod.report()
                return
            self.last_state = {"terminated": terminated}
            self.state = {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": f"exited with {rc}; restart in {backoff:g}s"}}
            await self.pod.report()
            log.info("%s/%s exited %s, restarting in %gs", self.pod.key, self.name, rc, backoff)
            await asyncio.sleep(backoff)  # the restart backoff timer itself
            self.restart_count += 1
            # As the real kubelet: a container that ran well for a while starts afresh.
            settings = self.pod.kubelet.settings
            if ran_s > 2 * settings.backoff_max_s:
                backoff = settings.backoff_initial_s
            else:
                backoff = min(backoff * 2, settings.backoff_max_s)

    async def _run_once(self) -> tuple[int, float]:
        env = self.env()
        argv = [_expand(a, env) for a in (self.spec.get("command") or [])]
        argv += [_expand(a, env) for a in (self.spec.get("args") or [])]
        if not argv:
            # There is no image to take an entrypoint from.
            self.state = {"waiting": {"reason": "CreateContainerConfigError",
                                      "message": "local kubelet needs command or args"}}
            await self.pod.report()
            await asyncio.Event().wait()  # until the pod is deleted
        cwd = self.spec.get("workingDir") or str(self.pod.dir)
        logfile = self.pod.dir / f"{self.name}.log"
        # A local file: opening it does not block the loop in any way that matters here.
        out = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=out,
                start_new_session=True,  # its own group: signals reach its children too
                preexec_fn=_set_pdeathsig,
            )
        except OSError as e:
            os.write(out, f"local kubelet: cannot start {argv!r}: {e}\n".encode())
            return 128, 0.0
        finally:
            os.close(out)
        started = time.monotonic()
        self.state = {"running": {"startedAt": _now()}}
        probers = []
        if readiness := self.spec.get("readinessProbe"):
            probers.append(asyncio.create_task(self._readiness_loop(readiness),
                                               name=f"readiness {self.name}"))
        else:
            self.ready = True
        if liveness := self.spec.get("livenessProbe"):
            probers.append(asyncio.create_task(self._liveness_loop(liveness),
                                               name=f"liveness {self.name}"))
        await self.pod.report()
        try:
            rc = await self.proc.wait()
        finally:
            for t in probers:
                t.cancel()
            await asyncio.gather(*probers, return_exceptions=True)
        self.ready = False
        # As a container runtime reports it: killed by signal N is exit code 128 + N.
        return (128 - rc if rc < 0 else rc), time.monotonic() - started

    async def _liveness_loop(self, probe: Obj) -> None:
        """Failing `failureThreshold` times in a row: stop the container; supervise restarts it."""
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        period = probe.get("periodSeconds", 10)
        need_fail = probe.get("failureThreshold", 3)
        fails = 0
        while True:
            ok = await self._probe_once(probe, probe.get("timeoutSeconds", 1))
            fails = 0 if ok else fails + 1
            if fails >= need_fail:
                grace = probe.get("terminationGracePeriodSeconds")
                if grace is None:
                    grace = self.pod.obj["spec"].get("terminationGracePeriodSeconds", 30)
                log.info("%s/%s: liveness probe failed %d times: restarting",
                         self.pod.key, self.name, fails)
                await self.terminate(float(grace))
                return
            await asyncio.sleep(period)  # the probe period

    async def _readiness_loop(self, probe: Obj) -> None:
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        period = probe.get("periodSeconds", 10)
        timeout = probe.get("timeoutSeconds", 1)
        need_ok = probe.get("successThreshold", 1)
        need_fail = probe.get("failureThreshold", 3)
        oks = fails = 0
        while True:
            ok = await self._probe_once(probe, timeout)
            oks, fails = (oks + 1, 0) if ok else (0, fails + 1)
            if not self.ready and oks >= need_ok:
                self.ready = True
                await self.pod.report()
            elif self.ready and fails >= need_fail:
                self.ready = False
                await self.pod.report()
            await asyncio.sleep(period)  # the probe period

    def _port(self, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"no container port named {port!r}")

    async def _probe_once(self, probe: Obj, limit_s: float) -> bool:
        try:
            async with asyncio.timeout(limit_s):
                if "httpGet" in probe:
                    return await self._probe_http(probe["httpGet"])
                if "tcpSocket" in probe:
                    t = probe["tcpSocket"]
                    _, writer = await asyncio.open_connection(
                        t.get("host") or self.pod.ip, self._port(t["port"]))
                    writer.close()
                    await writer.wait_closed()
                    return True
                if "exec" in probe:
                    return await self._exec(probe["exec"]["command"])
                if "grpc" in probe:
                    return await self._probe_grpc(probe["grpc"], limit_s)
        except (OSError, TimeoutError, aiohttp.ClientError, ValueError):
            return False
        log.warning("%s/%s: unsupported probe %s", self.pod.key, self.name, sorted(probe))
        return False

    async def _exec(self, command: list[str]) -> bool:
        """Run a command as the container would (its env, its directory); exit 0 is success.

        Its own process group, killed (as a group) when the caller's timeout cancels it.
        """
        p = await asyncio.create_subprocess_exec(
            *command, env=self.env(), cwd=self.spec.get("workingDir") or str(self.pod.dir),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_set_pdeathsig)
        try:
            return await p.wait() == 0
        finally:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await asyncio.shield(p.wait())

    async def _probe_grpc(self, g: Obj, limit_s: float) -> bool:
        """The gRPC health protocol (grpc.health.v1.Health/Check), as the real kubelet's probe:
        a new plaintext connection to POD_IP:port, SERVING is success."""
        # Imported here: most pods have no gRPC probe, and grpc takes a while to import.
        from grpc import aio
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async with aio.insecure_channel(f"{self.pod.ip}:{int(g['port'])}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                resp = await stub.Check(
                    health_pb2.HealthCheckRequest(service=g.get("service") or ""),
                    timeout=limit_s)
            except aio.AioRpcError:
                return False
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    async def _probe_http(self, g: Obj) -> bool:
        scheme = g.get("scheme", "HTTP").lower()
        host = g.get("host") or self.pod.ip
        path = g.get("path") or "/"
        url = f"{scheme}://{host}:{self._port(g['port'])}{path}"
        headers = {h["name"]: h["value"] for h in g.get("httpHeaders") or []}
        session = self.pod.kubelet.http
        async with session.get(url, headers=headers, allow_redirects=False, ssl=False) as r:
            await r.read()
            return 200 <= r.status < 400

    async def terminate(self, grace_s: float) -> None:
        """preStop hook, SIGTERM to the group, SIGKILL once grace_s has passed since the start;
        returns when the process is gone."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace_s
            hook = (self.spec.get("lifecycle") or {}).get("preStop")
            if hook:
                await self._pre_stop(hook, proc, grace_s)
            # As the real kubelet: the hook's time counts against the grace period, and a hook
            # that used it all up still leaves the process 2 s after SIGTERM.
            remaining = max(deadline - loop.time(), 2.0 if hook else 0.0)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(remaining):
                    await proc.wait()
            except TimeoutError:
                log.info("%s/%s: SIGKILL after %gs", self.pod.key, self.name, grace_s)
        # Also reaches children that outlived the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


    async def _pre_stop(self, hook: Obj, proc: asyncio.subprocess.Process,
                        grace_s: float) -> None:
        """Run the preStop hook (sleep, exec, httpGet) for at most grace_s, or until the
        process exits by itself."""
        if "sleep" in hook:
            action: Coroutine[Any, Any, Any] = asyncio.sleep(float(hook["sleep"]["seconds"]))
        elif "exec" in hook:
            action = self._exec(hook["exec"]["command"])
        elif "httpGet" in hook:
            action = self._probe_http(hook["httpGet"])
        else:
            log.warning("%s/%s: unsupported preStop hook %s", self.pod.key, self.name,
                        sorted(hook))
            return
        task = asyncio.create_task(action, name=f"preStop {self.pod.key}/{self.name}")
        exited = asyncio.create_task(proc.wait(), name=f"exit {self.pod.key}/{self.name}")
        try:
            await asyncio.wait({task, exited}, timeout=grace_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, exited):
                t.cancel()
            await asyncio.gather(task, exited, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.info("%s/%s: preStop hook failed: %r", self.pod.key, self.name,
                     task.exception())


class _Pod:
    """One pod bound to this node: its address, its containers, its status and deletion."""

    def __init__(self, kubelet: LocalKubelet, obj: Obj, ip: str) -> None:
        self.kubelet = kubelet
        self.obj = obj
        self.ip = ip
        meta = obj["metadata"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.uid: str = meta["uid"]
        self.dir = kubelet.settings.workdir / f"{meta['namespace']}_{meta['name']}_{self.uid[:8]}"
        self.containers = [_Container(self, c) for c in obj["spec"]["containers"]]
        self.deleting = asyncio.Event()
        self.gone = False  # deleted from the API already: no status, no final delete
        self.started_at = _now()
        self.kubeconfig: Path | None = None
        self._report_lock = asyncio.Lock()

    def update(self, obj: Obj) -> None:
        self.obj = obj
        if obj["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    async def run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        await self._write_kubeconfig()
        sup = [asyncio.create_task(c.supervise(), name=f"{self.key}/{c.name}")
               for c in self.containers]
        try:
            await self.report()
            await self.deleting.wait()
        finally:
            grace = self._grace_s()
            for t in sup:
                t.cancel()
            await asyncio.gather(*sup, return_exceptions=True)
            await asyncio.shield(asyncio.gather(*(c.terminate(grace) for c in self.containers)))
        if not self.gone:
            await self._final_delete()

    async def _write_kubeconfig(self) -> None:
        """The pod's ServiceAccount identity, as a kubeconfig named by $KUBECONFIG.

        A real kubelet mounts a token at /var/run/secrets/kubernetes.io/serviceaccount/, a
        path shared by every process here; a kubeconfig per pod does the same job for any
        client that honours KUBECONFIG, so a component run as a pod acts as its
        ServiceAccount and RBAC decides what it may do. The token is bound to the pod.
        """
        settings, spec, meta = self.kubelet.settings, self.obj["spec"], self.obj["metadata"]
        if not settings.api_server or spec.get("automountServiceAccountToken") is False:
            return
        sa = spec.get("serviceAccountName") or "default"
        body = {"spec": {"expirationSeconds": 24 * 3600, "boundObjectRef": {
            "apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": self.uid}}}
        try:
            token = (await _json(self.kubelet.core.create_namespaced_service_account_token(
                sa, meta["namespace"], body, _preload_content=False)))["status"]["token"]
        except (ApiException, aiohttp.ClientError, TimeoutError) as e:
            log.warning("%s: no token for ServiceAccount %s: %r", self.key, sa, e)
            return
        ca = base64.b64encode(settings.ca_pem.encode()).decode()
        ns = meta["namespace"]
        text = (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: c\n  cluster:\n    server: {settings.api_server}\n"
            f"    certificate-authority-data: {ca}\n"
            f"users:\n- name: {sa}\n  user:\n    token: {token}\n"
            f"contexts:\n- name: c\n  context:\n    cluster: c\n    user: {sa}\n"
            f"    namespace: {ns}\ncurrent-context: c\n"
        )
        path = self.dir / "kubeconfig"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        self.kubeconfig = path

    def _grace_s(self) -> float:
        if self.kubelet.stopping:
            return self.kubelet.settings.shutdown_grace_s
        meta, spec = self.obj["metadata"], self.obj["spec"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        return float(grace) if not self.gone else min(float(grace), 2.0)

    async def _final_delete(self) -> None:
        if self.kubelet.stopping:
            return  # the kubelet goes away, not the pod
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        meta = self.obj["metadata"]
        # Without this call the pod stays Terminating for ever: retry transient errors.
        for attempt in range(6):
            try:
                await _drain(self.kubelet.core.delete_namespaced_pod(
                    meta["name"], meta["namespace"], body=body, _preload_content=False))
                return
            except ApiException as e:
                if e.status in (404, 409):  # gone already, or a new pod of the same name
                    return
                err: Exception = e
            except (aiohttp.ClientError, TimeoutError) as e:
                err = e
            log.warning("%s: final delete failed (%r), attempt %d", self.key, err, attempt + 1)
            await asyncio.sleep(0.2 * 2**attempt)  # retry backoff

    def _status(self) -> Obj:
        cs = [c.status() for c in self.containers]
        all_ready = all(c.ready for c in self.containers)
        if all(c.done for c in self.containers):
            failed = any(c.state["terminated"]["exitCode"] != 0 for c in self.containers)
            phase = "Failed" if failed else "Succeeded"
        elif any("running" in c.state or c.restart_count or c.last_state
                 for c in self.containers):
            phase = "Running"
        else:
            phase = "Pending"
        now = _now()

        def cond(kind: str, ok: bool) -> Obj:
            return {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
                    "lastTransitionTime": now}

        return {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.started_at,
            # No qosClass: the apiserver sets it from the resources at creation, immutable.
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", True),
                cond("ContainersReady", all_ready),
                cond("Ready", all_ready),
                cond("PodScheduled", True),
            ],
            "containerStatuses": cs,
        }

    async def report(self) -> None:
        """Write the pod's status as it is now (serialised, so the last write wins)."""
        if self.gone or self.kubelet.stopping:
            return
        async with self._report_lock:
            meta = self.obj["metadata"]
            try:
                await _drain(self.kubelet.core.patch_namespaced_pod_status(
                    meta["name"], meta["namespace"], {"status": self._status()},
                    _content_type=_MERGE, _preload_content=False))
            except ApiException as e:
                if e.status == 404:
                    self.gone = True
                else:
                    # Transient (429 under load, 5xx): the next report carries it all again.
                    log.warning("%s: status update failed: %s", self.key, e.reason)
            except (aiohttp.ClientError, TimeoutError) as e:
                log.warning("%s: status update failed: %r", self.key, e)


# -- service proxy -----------------------------------------------------------------------------

_SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class _Forward:
    """One ClusterIP:port: its ready endpoints, a round-robin position, its listener."""

    def __init__(self) -> None:
        self.endpoints: list[tuple[str, int]] = []
        self.next = 0
        self.server: asyncio.Server | None = None

    def order(self) -> list[tuple[str, int]]:
        """The endpoints to try for a new connection: the next one first, then the rest."""
        eps = self.endpoints
        if not eps:
            return []
        start = self.next % len(eps)
        self.next = start + 1
        return eps[start:] + eps[:start]


class _ServiceProxy:
    """A userspace stand-in for kube-proxy (there is none, nor any iptables rule here).

    For every Service with a ClusterIP, each TCP port gets a listener on ClusterIP:port (the
    service CIDR is a local route on lo, as the pod CIDR is). Each accepted connection goes to
    one ready endpoint of that port (EndpointSlices labelled with the Service's name; `ready`
    unset counts as ready, as kube-proxy reads it), the next one per connection (round
    robin); a failed connect tries the next endpoint. No ready endpoint: the connection is
    reset (kube-proxy rejects it). Bytes flow both ways with backpressure (a direction
    reads only once the other side's writer has drained); an EOF is passed on as a
    half-close, an error on either side resets both. Connections in flight stay with their
    endpoint when it leaves, as conntrack keeps them; new ones do not go there.

    Driven by a Service watch and an EndpointSlice watch (list, then watch; relist on 410);
    every change is applied by one reconciler task. `generation` counts the applied changes:
    the kubelet's /services answers the table, and waits for the next change on request.
    """

    def __init__(self, kubelet: LocalKubelet) -> None:
        self.kubelet = kubelet
        self.settings = kubelet.settings.proxy
        self.services: dict[str, Obj] = {}  # "ns/name" -> Service
        self.slices: dict[str, Obj] = {}  # "ns/name" -> EndpointSlice
        self.forwards: dict[tuple[str, int], _Forward] = {}
        self.generation = 0
        self._changed = asyncio.Event()  # replaced on each change: waiters hold the old one
        self._dirty = asyncio.Event()
        self._bind_failed: set[tuple[str, int]] = set()
        self._conns: set[asyncio.Task[Any]] = set()
        self._listed: set[str] = set()

    async def run(self) -> None:
        discovery = client.DiscoveryV1Api(self.kubelet.api)
        core = self.kubelet.core
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch("services", core.list_service_for_all_namespaces,
                                           self.services), name="watch services")
                tg.create_task(self._watch(
                    "endpointslices", discovery.list_endpoint_slice_for_all_namespaces,
                    self.slices), name="watch endpointslices")
                tg.create_task(self._reconciler(), name="service proxy reconciler")
        finally:
            await asyncio.shield(self._close())

    async def _close(self) -> None:
        for fwd in self.forwards.values():
            if fwd.server is not None:
                fwd.server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    # -- watches ------------------------------------------------------------------------------

    async def _watch(self, kind: str, list_fn: Callable[..., Any], store: dict[str, Obj]) -> None:
        retry_s = 0.1
        while True:
            try:
                listing = await _json(list_fn(_preload_content=False))
                store.clear()
                for obj in listing["items"]:
                    store[_key(obj)] = obj
                self._listed.add(kind)
                self._dirty.set()
                retry_s = 0.1
                rv = listing["metadata"]["resourceVersion"]
                while True:
                    async with watch.Watch() as w:
                        async for ev in w.stream(list_fn, resource_version=rv,
                                                 timeout_seconds=300,
                                                 allow_watch_bookmarks=True):
                            obj = ev["raw_object"]
                            rv = obj["metadata"]["resourceVersion"]
                            if ev["type"] == "DELETED":
                                store.pop(_key(obj), None)
                            elif ev["type"] in ("ADDED", "MODIFIED"):
                                store[_key(obj)] = obj
                            else:
                                continue
                            self._dirty.set()
            except ApiException as e:
                if e.status != 410:
                    log.warning("%s watch failed (%s); again in %.1fs", kind, e.reason, retry_s)
                    await asyncio.sleep(retry_s)  # retry backoff
                    retry_s = min(retry_s * 2, 5.0)
            except (aiohttp.ClientError, TimeoutError) as e:
                log.warning("%s watch failed (%r); again in %.1fs", kind, e, retry_s)
                await asyncio.sleep(retry_s)  # retry backoff
                retry_s = min(retry_s * 2, 5.0)

    # -- the table ----------------------------------------------------------------------------

    def _wanted(self) -> dict[tuple[str, int], list[tuple[str, int]]]:
        """(ClusterIP, port) -> its ready endpoints (address, target port), sorted."""
        slices: dict[str, list[Obj]] = {}
        for sl in self.slices.values():
            svc = (sl["metadata"].get("labels") or {}).get(_SERVICE_NAME_LABEL)
            if svc and sl.get("addressType") == "IPv4":
                slices.setdefault(f"{sl['metadata']['namespace']}/{svc}", []).append(sl)
        out: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for key, svc in self.services.items():
            ip = svc["spec"].get("clusterIP")
            if not ip or ip == "None":
                continue
            for sp in svc["spec"].get("ports") or []:
                if sp.get("protocol", "TCP") != "TCP":
                    continue
                name = sp.get("name") or ""
                eps: set[tuple[str, int]] = set()
                for sl in slices.get(key, ()):
                    for p in sl.get("ports") or []:
                        if ((p.get("name") or "") != name or p.get("protocol", "TCP") != "TCP"
                                or not p.get("port")):
                            continue
                        for ep in sl.get("endpoints") or []:
                            if (ep.get("conditions") or {}).get("ready") is not False:
                                eps.add((ep["addresses"][0], int(p["port"])))
                out[(ip, int(sp["port"]))] = sorted(eps)
        return out

    async def _reconciler(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._listed != {"services", "endpointslices"}:
                continue  # one list without the other would drop endpoints for a moment
            wanted = self._wanted()
            changed = False
            for key in list(self.forwards):
                if key not in wanted:
                    fwd = self.forwards.pop(key)
                    if fwd.server is not None:
                        fwd.server.close()  # connections in flight go on
                    changed = True
            self._bind_failed &= set(wanted)
            for key, eps in wanted.items():
                if key not in self.forwards:
                    self.forwards[key] = _Forward()
                    changed = True
                fwd = self.forwards[key]
                if fwd.endpoints != eps:
                    fwd.endpoints = eps
                    changed = True
                if fwd.server is None and key not in self._bind_failed:
                    fwd.server = await self._listen(key)
            if changed:
                self.generation += 1
                done, self._changed = self._changed, asyncio.Event()
                done.set()

    async def _listen(self, key: tuple[str, int]) -> asyncio.Server | None:
        ip, port = key

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._connection(key, reader, writer)

        try:
            return await asyncio.start_server(accepted, ip, port, reuse_address=True,
                                              limit=self.settings.chunk_bytes)
        except OSError as e:
            # No local route for the service CIDR (no CAP_NET_ADMIN), or the port is taken.
            self._bind_failed.add(key)
            log.warning("service proxy: cannot listen on %s:%d: %s", ip, port, e)
            return None

    # -- connections --------------------------------------------------------------------------

    async def _connection(self, key: tuple[str, int], reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        fwd = self.forwards.get(key)
        if fwd is None or len(self._conns) >= self.settings.max_connections:
            writer.transport.abort()
            return
        self._conns.add(task)
        try:
            up = await self._connect(fwd.order())
            if up is None:
                writer.transport.abort()  # no ready endpoint answered: reset, as a reject
                return
            up_reader, up_writer = up
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._pipe(reader, up_writer, writer))
                    tg.create_task(self._pipe(up_reader, writer, up_writer))
            finally:
                writer.close()
                up_writer.close()
        finally:
            self._conns.discard(task)

    async def _connect(self, order: list[tuple[str, int]]
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for host, port in order:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    return await asyncio.open_connection(host, port,
                                                         limit=self.settings.chunk_bytes)
            except (OSError, TimeoutError) as e:
                log.info("service proxy: %s:%d: %r; trying the next endpoint", host, port, e)
        return None

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    src_writer: asyncio.StreamWriter) -> None:
        """src -> dst until EOF (passed on as a half-close); an error resets both sides."""
        try:
            while data := await src.read(self.settings.chunk_bytes):
                dst.write(data)
                await dst.drain()  # backpressure: read no more until dst took this
            if dst.can_write_eof() and not dst.transport.is_closing():
                dst.write_eof()
        except OSError:
            dst.transport.abort()
            src_writer.transport.abort()

    # -- what tests and pods see --------------------------------------------------------------

    def table(self) -> Obj:
        services: dict[str, Obj] = {}
        for key, svc in sorted(self.services.items()):
            ip = svc["spec"].get("clusterIP")
            if not ip or ip == "None":
                continue
            ports = {}
            for sp in svc["spec"].get("ports") or []:
                fwd = self.forwards.get((ip, int(sp["port"])))
                if fwd is not None:
                    ports[str(sp["port"])] = {
                        "listening": fwd.server is not None,
                        "endpoints": [f"{h}:{p}" for h, p in fwd.endpoints],
                    }
            services[key] = {"clusterIP": ip, "ports": ports}
        return {"generation": self.generation, "services": services}

    async def changed_after(self, generation: int, timeout_s: float) -> None:
        """Return once a change after `generation` is applied, or after timeout_s."""
        if self.generation > generation:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()

    def service_env(self, namespace: str) -> dict[str, str]:
        """The real kubelet's service environment variables, for Services in `namespace`."""
        env: dict[str, str] = {}
        for svc in self.services.values():
            meta, spec = svc["metadata"], svc["spec"]
            ip = spec.get("clusterIP")
            if (meta["namespace"] != namespace or not ip or ip == "None"
                    or (namespace == "default" and meta["name"] == "kubernetes")):
                continue
            ports = spec.get("ports") or []
            if not ports:
                continue
            name = meta["name"].upper().replace("-", "_")
            env[f"{name}_SERVICE_HOST"] = ip
            env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
            first = ports[0]
            env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
            for sp in ports:
                proto = sp.get("protocol", "TCP")
                if sp.get("name"):
                    pname = sp["name"].upper().replace("-", "_")
                    env[f"{name}_SERVICE_PORT_{pname}"] = str(sp["port"])
                prefix = f"{name}_PORT_{sp['port']}_{proto}"
                env[prefix] = f"{proto.lower()}://{ip}:{sp['port']}"
                env[f"{prefix}_PROTO"] = proto.lower()
                env[f"{prefix}_PORT"] = str(sp["port"])
                env[f"{prefix}_ADDR"] = ip
        return env


def _key(obj: Obj) -> str:
    return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


class LocalKubelet:
    """Registers the Node and runs the pods bound to it; see the module docstring."""

    def __init__(self, api: client.ApiClient, settings: KubeletSettings) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.settings = settings
        self.pods: dict[str, _Pod] = {}
        self.stopping = False
        self.synced = asyncio.Event()
        self._watch_retry_s = 0.1  # pod watch retry delay, doubled per failure up to 5 s
        self._tasks: set[asyncio.Task[None]] = set()
        net = ipaddress.ip_network(settings.pod_cidr)
        # The network's first host address is left out, as a node's bridge would take it; the
        # last ones are reserved (RESERVED_ADDRESSES).
        hosts = list(net.hosts())
        self._free = [str(ip) for ip in hosts[1:len(hosts) - settings.reserved_addresses]]
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        self.proxy = _ServiceProxy(self) if settings.service_cidr else None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str,
               done: Callable[[], None] | None = None) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if done is not None:
                done()
            if not t.cancelled() and t.exception() is not None:
                log.error("task %s failed", t.get_name(), exc_info=t.exception())

        task.add_done_callback(finished)

    async def run(self) -> None:
        await self._register_node()
        self._spawn(self._heartbeat(), "heartbeat")
        if self.proxy is not None:
            self._spawn(self.proxy.run(), "service proxy")
        try:
            await self._watch_pods()
        finally:
            await asyncio.shield(self._shutdown())

    async def _shutdown(self) -> None:
        self.stopping = True
        for pod in self.pods.values():
            pod.deleting.set()
        tasks = list(self._tasks)
        for t in tasks:
            if not t.get_name().startswith("pod "):
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.close()

    # -- node -----------------------------------------------------------------------------

    async def _register_node(self) -> None:
        s = self.settings
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": s.node_name, "labels": {
                "kubernetes.io/hostname": s.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            }},
            "spec": {"podCIDR": s.pod_cidr, "podCIDRs": [s.pod_cidr]},
        }
        try:
            await _drain(self.core.create_node(node, _preload_content=False))
        except ApiException as e:
            if e.status != 409:
                raise
            # A Node left by an earlier run: podCIDR is immutable, so start from a new one.
            await _drain(self.core.delete_node(s.node_name, _preload_content=False))
            await _drain(self.core.create_node(node, _preload_content=False))
        await self._node_status()

    async def _node_status(self) -> None:
        s, now = self.settings, _now()

        def cond(kind: str, status: str, reason: str) -> Obj:
            return {"type": kind, "status": status, "reason": reason, "message": reason,
                    "lastHeartbeatTime": now, "lastTransitionTime": now}

        resources = {"cpu": str(os.cpu_count() or 1), "memory": "8Gi", "pods": "250"}
        status = {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": s.node_name}],
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                cond("Ready", "True", "KubeletReady"),
            ],
            "nodeInfo": {"kubeletVersion": s.kubelet_version, "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "local://0",
                         "osImage": "local processes", "kernelVersion": os.uname().release,
                         "machineID": "", "systemUUID": "", "bootID": "",
                         "kubeProxyVersion": ""},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        }
        await _drain(self.core.patch_node_status(
            s.node_name, {"status": status}, _content_type=_MERGE, _preload_content=False))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)  # the node heartbeat period
            try:
                await self._node_status()
            except (ApiException, aiohttp.ClientError, TimeoutError) as e:
                log.warning("node heartbeat failed: %s", e)

    # -- pods -----------------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        """List and watch pods; on API errors retry with backoff rather than give up."""
        while True:
            try:
                await self._list_and_watch()
            except (ApiException, aiohttp.ClientError, TimeoutError) as e:
                delay = self._watch_retry_s
                log.warning("pod watch failed (%r); again in %.1fs", e, delay)
                await asyncio.sleep(delay)  # retry backoff
                self._watch_retry_s = min(delay * 2, 5.0)

    async def _list_and_watch(self) -> None:
        while True:
            listing = await _json(self.core.list_pod_for_all_namespaces(_preload_content=False))
            seen = set()
            for obj in listing["items"]:
                seen.add(obj["metadata"]["uid"])
                self._on_pod("ADDED", obj)
            for uid in list(self.pods):
                if uid not in seen:
                    self._on_deleted(uid)
            self.synced.set()
            self._watch_retry_s = 0.1  # listed: the next failure starts the backoff afresh
            rv = listing["metadata"]["resourceVersion"]
            try:
                while True:
                    # A server-side timeout ends each watch cleanly; resume from the last
                    # resourceVersion seen.
                    w = watch.Watch()
                    async with w:
                        async for ev in w.stream(self.core.list_pod_for_all_namespaces,
                                                 resource_version=rv, timeout_seconds=300,
                                                 allow_watch_bookmarks=True):
                            obj = ev["raw_object"]
                            rv = obj["metadata"]["resourceVersion"]
                            if ev["type"] == "DELETED":
                                self._on_deleted(obj["metadata"]["uid"])
                            elif ev["type"] in ("ADDED", "MODIFIED"):
                                self._on_pod(ev["type"], obj)
            except ApiException as e:
                if e.status != 410:
                    raise
                log.info("pod watch expired (410): relisting")

    def _on_deleted(self, uid: str) -> None:
        pod = self.pods.get(uid)
        if pod is not None:
            pod.gone = True  # force-deleted: stop it, nothing left to tell the API
            pod.deleting.set()

    def _on_pod(self, kind: str, obj: Obj) -> None:
        meta, spec = obj["metadata"], obj["spec"]
        uid, node = meta["uid"], spec.get("nodeName")
        if not node:
            if (spec.get("schedulerName", "default-scheduler") == "default-scheduler"
                    and not meta.get("deletionTimestamp")):
                self._spawn(self._bind(obj), f"bind {meta['namespace']}/{meta['name']}")
            return
        if node != self.settings.node_name:
            return
        pod = self.pods.get(uid)
        if pod is not None:
            pod.update(obj)
            return
        if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return  # finished under an earlier kubelet
        if meta.get("deletionTimestamp"):
            # Nothing runs for it here (an earlier kubelet ran it): just finish the deletion.
            pod = _Pod(self, obj, "")
            self._spawn(pod._final_delete(), f"delete {pod.key}")
            return
        if not self._free:
            log.error("no free pod address in %s for %s/%s", self.settings.pod_cidr,
                      meta["namespace"], meta["name"])
            return
        pod = _Pod(self, obj, self._free.pop(0))
        self.pods[uid] = pod

        def release(pod: _Pod = pod) -> None:
            self.pods.pop(pod.uid, None)
            # To the back: a new pod does not take the address of the one just gone.
            self._free.append(pod.ip)

        self._spawn(pod.run(), f"pod {pod.key}", release)
        pod.update(obj)

    async def _bind(self, obj: Obj) -> None:
        meta = obj["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.settings.node_name},
        }
        try:
            await _drain(self.core.create_namespaced_pod_binding(
                meta["name"], meta["namespace"], body, _preload_content=False))
        except ApiException as e:
            # 409: bound already (the watch sent an older version); 404: deleted meanwhile.
            if e.status not in (404, 409):
                raise


# -- process entry point -----------------------------------------------------------------------


async def _health(kubelet: LocalKubelet, port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok" if kubelet.synced.is_set() else "syncing",
                            status=200 if kubelet.synced.is_set() else 503)

    async def services(request: web.Request) -> web.Response:
        """The service proxy's table; `?after=N`: first wait (at most `timeout` s, default 30)
        until a change after generation N is applied. A test waits for a state with this,
        e.g. until a Service's two endpoints are in, with no polling."""
        proxy = kubelet.proxy
        if proxy is None:
            return web.json_response({"error": "no service proxy (no --service-cidr)"},
                                     status=404)
        if "after" in request.query:
            timeout_s = min(float(request.query.get("timeout", "30")), 60.0)
            await proxy.changed_after(int(request.query["after"]), timeout_s)
        return web.json_response(proxy.table())

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/services", services)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _amain(args: argparse.Namespace) -> None:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    extra: list[tuple[str, str]] = []
    host, _, port = (cfg.host or "").removeprefix("https://").partition(":")
    if port:
        extra = [("KUBERNETES_SERVICE_HOST", host), ("KUBERNETES_SERVICE_PORT", port)]
    ca_pem: str = args.ca_pem
    settings = KubeletSettings(
        pod_cidr=args.pod_cidr, workdir=Path(args.workdir), node_name=args.node_name,
        kubelet_version=args.kubelet_version, extra_env=tuple(extra),
        api_server=cfg.host if ca_pem else "", ca_pem=ca_pem, service_cidr=args.service_cidr)
    async with client.ApiClient(cfg) as api:
        kubelet = LocalKubelet(api, settings)
        runner = await _health(kubelet, args.healthz_port)
        main_task = asyncio.current_task()
        assert main_task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, main_task.cancel)
        try:
            await kubelet.run()
        except asyncio.CancelledError:
            log.info("stopping: every container stopped")
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--pod-cidr", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--node-name", default="local-node")
    p.add_argument("--kubelet-version", default="v0.0.0-local")
    p.add_argument("--healthz-port", type=int, required=True)
    p.add_argument("--ca-file", help="apiserver CA (PEM): give pods a ServiceAccount kubeconfig")
    p.add_argument("--service-cidr", default="",
                   help="the service CIDR, local on lo: run the service proxy for ClusterIPs")
    args = p.parse_args(argv)
    args.ca_pem = Path(args.ca_file).read_text() if args.ca_file else ""
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_amain(args))


if __name__ == "__main__":
    main()
