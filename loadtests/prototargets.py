"""What the protocol benchmark (`loadtests/protobench.py`) runs against: the backends, nginx and
the interceptor set up for every protocol, and one check per (proxy, protocol) before anything
is measured, which says precisely what is missing when a proxy cannot serve a protocol.

Paths choose the upstream on both proxies (routes on the interceptor, locations on nginx,
`nginx/proto-proxy.conf`):

    /h1/            HTTP/1.1 to the nginx backend (keep-alive)
    /h2c/           HTTP/2 with prior knowledge to the nginx backend's h2c port
    /bench.Bench/   gRPC to the grpcio server (`grpcbackend.py`)
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchkit import Processes, free_port, tool_path
from grpcbackend import METHOD, REQUEST, grpc_frame
from protoload import http1_get_status, run_h2load
from throughput import CORE_LOAD, CORE_PROXY, _start_nginx, _wait_port

from httpscale.config.route_source import FileRouteSource
from httpscale.model.errors import ConfigError

__all__ = ["PROTOCOLS", "Protocol", "Setup", "Target", "preflight", "start_all"]

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str
    title: str
    listener: str  # "tls", "h2c" or "http1": nginx has one port each, the interceptor two
    path: str
    tool: str  # "wrk" (HTTP/1.1) or "h2load" (HTTP/2)
    needs: tuple[str, ...]  # modules of the interceptor that serve it, named in a failure


PROTOCOLS = (
    # The clear-text HTTP/1.1 path through the same processes and routes: the baseline the
    # others read against, and the check that the setup itself works on today's interceptor.
    Protocol("http1", "HTTP/1.1 GET, keep-alive (wrk)", "http1", "/h1/", "wrk", ()),
    Protocol("https1", "HTTPS/1.1 GET, keep-alive (wrk)", "tls", "/h1/", "wrk",
             ("httpscale.interceptor.tls",)),
    Protocol("h2-tls", "h2 GET over TLS, ALPN (h2load)", "tls", "/h1/", "h2load",
             ("httpscale.interceptor.tls", "httpscale.interceptor.h2.server")),
    Protocol("h2c", "h2c GET, prior knowledge (h2load)", "h2c", "/h1/", "h2load",
             ("httpscale.interceptor.h2.server",)),
    Protocol("h2c-up", "h2c GET, h2c upstream (h2load)", "h2c", "/h2c/", "h2load",
             ("httpscale.interceptor.h2.server", "httpscale.interceptor.h2.upstream")),
    Protocol("grpc", "gRPC unary calls (h2load, h2c)", "h2c", METHOD, "h2load",
             ("httpscale.interceptor.h2.server", "httpscale.interceptor.h2.upstream")),
)


@dataclass(slots=True)
class Target:
    proxy: str  # "nginx" | "interceptor"
    protocol: Protocol
    url: str
    pgid: int  # process group whose CPU is charged to it
    error: str = ""  # set when it cannot be measured, saying why

    @property
    def name(self) -> str:
        return f"{self.proxy} {self.protocol.name}"


@dataclass(slots=True)
class Setup:
    tmp: Path
    body: Path  # one gRPC request message, framed, for h2load -d
    grpc_port: int = 0
    targets: list[Target] = field(default_factory=list)


def _status(module: str) -> str:
    try:
        present = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        present = False
    return f"{module} {'present' if present else 'not merged yet'}"


def _files(tmp: Path) -> None:
    """The gRPC request h2load sends, and a throwaway certificate for both proxies (nothing
    checks it: loopback, no verification)."""
    (tmp / "grpc-request.bin").write_bytes(grpc_frame(REQUEST))
    subprocess.run(
        [tool_path("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp / "key.pem"), "-out",
         str(tmp / "cert.pem"), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )


def _interceptor_config(tmp: Path, backend: int, backend_h2c: int, grpc: int) -> tuple[Path, str]:
    """The routes file; (path, why the h2c-upstream route was left out, or "")."""
    apps = {
        "h1": ("/h1/", f"http://127.0.0.1:{backend}"),
        "h2cup": ("/h2c/", f"h2c://127.0.0.1:{backend_h2c}"),
        # gRPC goes over HTTP/2 whatever the scheme says.
        "grpc": ("/bench.Bench/", f"http://127.0.0.1:{grpc}"),
    }
    conf = tmp / "interceptor.yaml"

    def write() -> None:
        conf.write_text("apps:\n" + "".join(
            f"  - name: {name}\n    hosts: ['127.0.0.1']\n    pathPrefixes: ['{prefix}']\n"
            f"    run: {{upstream: '{url}'}}\n"
            for name, (prefix, url) in apps.items()
        ))

    write()
    try:
        FileRouteSource(str(conf)).load()  # what `httpscale interceptor --config` does first
    except ConfigError as exc:
        if "h2cup" not in str(exc) and "apps[1]" not in str(exc):
            raise
        del apps["h2cup"]
        write()
        return conf, f"the routes file does not take `upstream: h2c://` yet ({exc})"
    return conf, ""


async def _start_interceptor(
    procs: Processes, conf: Path, tmp: Path, port: int, tls_port: int
) -> tuple[int, str]:
    """`httpscale interceptor` as deployed (uvloop, compiled hot path when built); (pgid, error)."""
    argv = [
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(conf),
        "--host", "127.0.0.1", "--port", str(port), "--admin-host", "127.0.0.1",
        "--admin-port", str(free_port()), "--readiness-delay", "0", "--drain-timeout", "1",
        "--tls-listen", f"127.0.0.1:{tls_port}", "--tls-cert", str(tmp / "cert.pem"),
        "--tls-key", str(tmp / "key.pem"), "--log-level", "warning",
    ]
    child = await procs.start("interceptor", argv, CORE_PROXY)
    waiting = asyncio.ensure_future(_wait_port(port, 60.0))
    exited = asyncio.ensure_future(child.proc.wait())
    try:
        await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, exited):
            task.cancel()
        await asyncio.gather(waiting, exited, return_exceptions=True)
    if child.proc.returncode is not None:
        return child.proc.pid, (
            f"`httpscale interceptor` exited (code {child.proc.returncode}) before listening "
            "on --port: its error is printed above"
        )
    if not waiting.done() or waiting.exception() is not None:
        return child.proc.pid, "`httpscale interceptor` did not listen on --port within 60 s"
    return child.proc.pid, ""


async def start_all(procs: Processes, tmp: Path, protocols: list[Protocol], only: str) -> Setup:
    """Backends, nginx and the interceptor, each listening, and the targets to measure."""
    _files(tmp)
    setup = Setup(tmp=tmp, body=tmp / "grpc-request.bin")
    h2c_backend = free_port()
    backend, _ = await _start_nginx(procs, "proto-backend", tmp, CORE_LOAD, H2C_PORT=h2c_backend)
    grpc_child = await procs.start(
        "grpc-backend", [sys.executable, str(HERE / "grpcbackend.py"), "serve"], CORE_LOAD
    )
    setup.grpc_port = int((await grpc_child.read_json(wait_s=60))["port"])
    ports: dict[str, dict[str, int]] = {}
    pgids, errors = {"nginx": 0, "interceptor": 0}, {"nginx": "", "interceptor": ""}
    if only in ("both", "nginx"):
        h2c, http1 = free_port(), free_port()
        tls, pgids["nginx"] = await _start_nginx(
            procs, "proto-proxy", tmp, CORE_PROXY, H2C_PORT=h2c, HTTP1_PORT=http1,
            UPSTREAM_PORT=backend, UPSTREAM_H2C_PORT=h2c_backend, GRPC_PORT=setup.grpc_port,
        )
        ports["nginx"] = {"tls": tls, "h2c": h2c, "http1": http1}
    h2c_up_error = ""
    if only in ("both", "interceptor"):
        conf, h2c_up_error = _interceptor_config(tmp, backend, h2c_backend, setup.grpc_port)
        tls, plain = free_port(), free_port()
        ports["interceptor"] = {"tls": tls, "h2c": plain, "http1": plain}
        pgids["interceptor"], errors["interceptor"] = await _start_interceptor(
            procs, conf, tmp, plain, tls
        )
    for proxy in ("nginx", "interceptor"):
        if only not in ("both", proxy):
            continue
        for proto in protocols:
            scheme = "https" if proto.listener == "tls" else "http"
            port = ports[proxy][proto.listener]
            target = Target(proxy, proto, f"{scheme}://127.0.0.1:{port}{proto.path}",
                            pgids[proxy], errors[proxy])
            if not target.error and proxy == "interceptor" and proto.name == "h2c-up":
                target.error = h2c_up_error
            setup.targets.append(target)
    return setup


async def preflight(procs: Processes, setup: Setup, target: Target) -> None:
    """One request (two for h2load) through the target; on failure `target.error` says what is
    missing, naming the interceptor's option and modules."""
    if target.error:
        return
    proto, port = target.protocol, int(target.url.split(":")[2].split("/")[0])
    tls = proto.listener == "tls"
    where = f"--tls-listen 127.0.0.1:{port}" if tls else f"--port {port}"
    missing = "; ".join(_status(m) for m in proto.needs) if target.proxy == "interceptor" else ""
    try:
        if tls:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
            except OSError as exc:
                raise RuntimeError(f"nothing listens on {where}: {exc}") from None
        if proto.tool == "wrk":
            status = await http1_get_status(port, proto.path, tls=tls)
            if status != 200:
                raise RuntimeError(f"GET {proto.path} on {where} answered {status}, not 200")
            return
        grpc = proto.name == "grpc"
        result, out = await run_h2load(
            procs, f"h2load-check-{target.proxy}", target.url, secs=None, requests=2,
            connections=1, streams=1, cpus=CORE_LOAD, log=setup.tmp / "check.log",
            data=setup.body if grpc else None,
            headers=("content-type: application/grpc", "te: trailers") if grpc else (),
        )
        if not result.valid or result.requests != 2:
            summary = [ln for ln in out.splitlines() if ln.startswith(("requests:", "status"))]
            raise RuntimeError(
                f"no HTTP/2 {'by ALPN h2' if tls else 'with prior knowledge (h2c)'} "
                f"answer on {where}: h2load {'; '.join(summary) or out.strip()[-300:]}"
            )
        if grpc:
            call = await asyncio.create_subprocess_exec(
                sys.executable, str(HERE / "grpcbackend.py"), "call", f"127.0.0.1:{port}",
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(call.communicate(), 30)
            if call.returncode != 0:
                raise RuntimeError(f"grpcio client through {where}: {err.decode().strip()}")
    except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
        target.error = f"{proto.title}: {exc}" + (f" [{missing}]" if missing else "")
