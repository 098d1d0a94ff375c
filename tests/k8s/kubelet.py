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
- Each container is one process group: `command` + `args` (the image is ignored; there is no
  image to run), its `env` (values and fieldRefs, `$(VAR)` expanded), plus POD_IP, POD_NAME,
  POD_NAMESPACE and PORT (its first containerPort), and KUBECONFIG: a kubeconfig with a token
  of the pod's ServiceAccount, bound to the pod. containerID is `local://<pid>`.
- Ready comes from the readinessProbe (httpGet, tcpSocket, exec) on its period, or from the
  process having started when there is none. A failing livenessProbe stops the container
  (SIGTERM, grace, SIGKILL), which then restarts per restartPolicy.
- Deletion: SIGTERM to each container's group, SIGKILL after the grace period, then the final
  delete with grace 0 (the apiserver keeps a gracefully deleted pod until its kubelet says so).
- Crashed containers restart per restartPolicy with doubling backoff.
- SIGTERM/SIGINT: stop every container (bounded grace), then exit. Containers also get
  PR_SET_PDEATHSIG, so a SIGKILLed kubelet leaves no process behind.

Everything is driven by one pod watch (list, then watch from that resourceVersion; relist on
410 Gone). The only timers are the real kubelet's: probe period, restart backoff, grace period
and node heartbeat.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import datetime
import ipaddress
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = ["KubeletSettings", "LocalKubelet", "main"]

log = logging.getLogger("kubelet")

Obj = dict[str, Any]
_MERGE = "application/merge-patch+json"
_PR_SET_PDEATHSIG = 1
# Looked up once here: the child calls it between fork and exec, where loading a library
# (dlopen takes locks another thread of this process may have held at fork) is not safe.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


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


async def _drain(call: Coroutine[Any, Any, Any]) -> None:
    """Await an API call made with _preload_content=False and release its connection.

    Raw responses skip model deserialisation, which for some calls is wrong anyway (a Binding
    answers with a Status, which the generated client rejects as a V1Binding).
    """
    resp = await call
    await resp.read()
    resp.release()


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
                    p = await asyncio.create_subprocess_exec(
                        *probe["exec"]["command"], env=self.env(),
                        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
                    try:
                        return await p.wait() == 0
                    finally:
                        if p.returncode is None:
                            p.kill()
                            await p.wait()
        except (OSError, TimeoutError, aiohttp.ClientError, ValueError):
            return False
        log.warning("%s/%s: unsupported probe %s", self.pod.key, self.name, sorted(probe))
        return False

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
        """SIGTERM the group, SIGKILL after grace_s; returns when the process is gone."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace_s):
                    await proc.wait()
            except TimeoutError:
                log.info("%s/%s: SIGKILL after %gs", self.pod.key, self.name, grace_s)
        # Also reaches children that outlived the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


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
            resp = await self.kubelet.core.create_namespaced_service_account_token(
                sa, meta["namespace"], body, _preload_content=False)
            token = (await resp.json())["status"]["token"]
            resp.release()
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
            "qosClass": "BestEffort",
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
        # The network's first host address is left out, as a node's bridge would take it.
        self._free = [str(ip) for ip in list(net.hosts())[1:]]
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

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
            resp = await self.core.list_pod_for_all_namespaces(_preload_content=False)
            listing = await resp.json()
            resp.release()
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

    app = web.Application()
    app.router.add_get("/healthz", healthz)
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
        api_server=cfg.host if ca_pem else "", ca_pem=ca_pem)
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
    args = p.parse_args(argv)
    args.ca_pem = Path(args.ca_file).read_text() if args.ca_file else ""
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_amain(args))


if __name__ == "__main__":
    main()
