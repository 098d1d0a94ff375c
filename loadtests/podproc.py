"""A httpscale component run as its pod runs it, as a process on this host (loadtests/resources.py).

What the pod would get, and what stands in for it here:

- **in-cluster configuration**: a token of its ServiceAccount (TokenRequest) and the cluster's
  CA, as `token`, `ca.crt` and `namespace` in a directory bind-mounted on
  `/var/run/secrets/kubernetes.io/serviceaccount`, and `KUBERNETES_SERVICE_HOST`/`_PORT`. The
  host and port are the apiserver's own (from the kubeconfig), not the `kubernetes` Service's
  ClusterIP: the local kubelet's service proxy would otherwise carry every API byte and its
  CPU would sit beside the component's;
- **the environment of its rendered Deployment** (manifests/<component>/deployment.yaml, the
  namespace filled in), plus the bind address: every pod has its own network namespace, here
  they share one, so each binds its own reserved pod-CIDR address;
- **a read-only root filesystem**: a private mount namespace (`unshare --mount`, root only) in
  which a tmpfs covers /run, the token directory is bound into it, and `/` is remounted
  read-only before the component is exec'd (same pid throughout, so /proc figures are its own);
- **its hostname**, the pod's name (a private UTS namespace): the operator's leader identity.

Each process runs in its own session, gets SIGKILL if this harness dies (PR_SET_PDEATHSIG),
and is stopped with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import os
import shlex
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from benchkit import stop_group

__all__ = ["PodProcess", "pod_environment", "write_identity"]

REPO = Path(__file__).resolve().parent.parent
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def write_identity(directory: Path, kubeconfig: Path, token: str, namespace: str) -> dict[str, str]:
    """The ServiceAccount directory a pod would have mounted, and the environment variables
    that point the in-cluster configuration at the apiserver."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    directory.mkdir(parents=True, exist_ok=True)
    if "certificate-authority-data" in cluster:
        ca = base64.b64decode(cluster["certificate-authority-data"])
    else:
        ca = (kubeconfig.parent / cluster["certificate-authority"]).read_bytes()
    (directory / "ca.crt").write_bytes(ca)
    (directory / "token").write_text(token)
    (directory / "namespace").write_text(namespace)
    server = urlsplit(cluster["server"])
    assert server.hostname is not None
    return {"KUBERNETES_SERVICE_HOST": server.hostname,
            "KUBERNETES_SERVICE_PORT": str(server.port or 443)}


def pod_environment(component: str, namespace: str, pod_name: str) -> dict[str, str]:
    """The container environment of manifests/<component>/deployment.yaml: plain values and
    the downward-API fields its manifests use (the namespace, the pod's name)."""
    deployment = yaml.safe_load((REPO / "manifests" / component / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    fields = {"metadata.namespace": namespace, "metadata.name": pod_name}
    env: dict[str, str] = {}
    for var in container.get("env") or ():
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            if path not in fields:
                raise ValueError(f"{component}: no stand-in for the downward field {path}")
            env[var["name"]] = fields[path]
    return env


def _die_with_parent() -> None:
    # In the child between fork and exec (kept across the execs of unshare and sh).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class PodProcess:
    """One component: `httpscale <component>` in a private, read-only mount namespace."""

    def __init__(self, name: str, command: str, env: dict[str, str], sa_dir: Path,
                 *, read_only: bool = True) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.sa_dir = sa_dir
        self.read_only = read_only
        self.proc: asyncio.subprocess.Process | None = None
        self.tail: deque[str] = deque(maxlen=40)
        self.warnings = 0
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        python = shlex.quote(sys.executable)
        steps = [
            f"hostname {shlex.quote(self.name)}",  # a pod's hostname is its name
            "mount -t tmpfs -o size=1m,mode=755 tmpfs /run",
            f"mkdir -p {SA_DIR}",
            f"mount --bind -o ro {shlex.quote(str(self.sa_dir))} {SA_DIR}",
        ]
        if self.read_only:
            steps.append("mount -o remount,bind,ro /")
        steps.append(f"exec {python} -m httpscale {self.command}")
        # A pod's environment is its own: nothing of this shell's but PATH and the locale.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}
        env.update(self.env, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        self.proc = await asyncio.create_subprocess_exec(
            "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-ec", " && ".join(steps),
            env=env, cwd="/", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        self._reader = asyncio.create_task(self._read(), name=f"{self.name} log")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            self.tail.append(text)
            if " WARNING " in text or " ERROR " in text or "Traceback" in text:
                self.warnings += 1

    def exited(self) -> bool:
        return self.proc is None or self.proc.returncode is not None

    def cpu_seconds(self) -> float:
        """utime + stime of the process itself (not of children: it has none)."""
        with open(f"/proc/{self.pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rfind(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"{self.name}: no VmRSS")

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, up to `grace` seconds, then SIGKILL; the exit code (negative: a signal)."""
        proc = self.proc
        if proc is None:
            return None
        await stop_group(proc, grace)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)
        return proc.returncode

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "exit": None if self.proc is None else self.proc.returncode,
                "warnings": self.warnings, "log_tail": list(self.tail)[-10:]}
