"""Running httpscale's components as real processes against the test cluster, and a small
app for pods (run by the local kubelet as a process bound to its pod address)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from httpscale.kube.api import MERGE_PATCH, Kube, Obj
from httpscale.kube.resources import DEPLOYMENTS

__all__ = [
    "APP",
    "Component",
    "app_deployment",
    "app_service",
    "component",
    "free_port",
    "kubeconfig_for_token",
    "scale",
]

# GET: answers "<pod> <path> <x-tenant>" (/slow?ms=N first sleeps N ms); POST: echoes the
# body; X-Pod names the pod. On SIGTERM it keeps serving for DRAIN_S seconds before it exits,
# as a pod with a preStop delay does, so that in-flight and just-routed requests finish while
# the endpoint leaves the EndpointSlice.
APP = r"""
import http.server, os, signal, socketserver, sys, threading, time, urllib.parse
name = os.environ["POD_NAME"]
drain = float(os.environ.get("DRAIN_S", "1"))
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stall
    def _send(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Pod", name)
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/slow":
            time.sleep(int(urllib.parse.parse_qs(url.query).get("ms", ["0"])[0]) / 1000)
        self._send(f"{name} {self.path} {self.headers.get('X-Tenant', '-')}".encode())
    def do_POST(self):
        self._send(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
server = S((os.environ["POD_IP"], int(os.environ["PORT"])), H)
def stop(*_):
    threading.Thread(target=lambda: (time.sleep(drain), server.shutdown()), daemon=True).start()
signal.signal(signal.SIGTERM, stop)
server.serve_forever()
"""


def app_deployment(name: str, *, replicas: int = 1, drain_s: float = 1.0) -> Obj:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "app",
                        "image": "local",
                        "command": [sys.executable, "-c", APP],
                        "env": [
                            {"name": "POD_NAME",
                             "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_IP",
                             "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "DRAIN_S", "value": str(drain_s)},
                        ],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                           "periodSeconds": 1},
                    }],
                },
            },
        },
    }


def app_service(name: str, *, port: int = 80, port_name: str = "http") -> Obj:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": port_name, "port": port, "targetPort": "http"}]},
    }


async def scale(kube: Kube, namespace: str, name: str, replicas: int) -> None:
    """Through the /scale subresource, as KEDA and the HPA do."""
    await kube.request("PATCH", DEPLOYMENTS.path(namespace, name, "scale"),
                       body={"spec": {"replicas": replicas}}, content_type=MERGE_PATCH)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def kubeconfig_for_token(kubeconfig: Path, token: str, out: Path) -> Path:
    """A copy of `kubeconfig` whose user is whoever `token` belongs to (a ServiceAccount)."""
    import yaml

    config = yaml.safe_load(kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


@dataclass
class Component:
    proc: asyncio.subprocess.Process
    log: list[str] = field(default_factory=list)
    match: re.Match[str] | None = None
    _more: asyncio.Event = field(default_factory=asyncio.Event)  # a new log line arrived

    async def wait_for(self, pattern: str, timeout_s: float = 30) -> re.Match[str]:
        """Until a log line (so far or to come) matches `pattern`."""
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout_s):
            seen = 0
            while True:
                for line in self.log[seen:]:
                    if found := regex.search(line):
                        return found
                seen = len(self.log)
                await self._more.wait()
                self._more.clear()

    def errors(self) -> list[str]:
        return [line for line in self.log if "Traceback" in line or " ERROR " in line]


async def _pump(stream: asyncio.StreamReader, c: Component) -> None:
    while line := await stream.readline():
        c.log.append(line.decode(errors="replace").rstrip())
        c._more.set()


@contextlib.asynccontextmanager
async def component(
    args: Sequence[str], ready: str, *, timeout_s: float = 30, env: dict[str, str] | None = None
) -> AsyncIterator[Component]:
    """`python -m httpscale <args>` until a log line matches `ready`; SIGTERM at the end,
    which must end it within 20 s."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    c = Component(proc)
    pump = asyncio.create_task(_pump(proc.stderr, c))
    try:
        try:
            c.match = await c.wait_for(ready, timeout_s)
        except TimeoutError:
            raise AssertionError(f"{args[0]} not ready within {timeout_s}s:\n"
                                 + "\n".join(c.log[-40:])) from None
        yield c
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await pump

