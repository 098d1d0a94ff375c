"""Servers of `loadtests/scalebench.py` and what it reads about them from /proc.

A server is a process tree: nginx's master and workers, or `httpscale interceptor` and, with
`--workers N`, its worker subprocesses. CPU time, RSS and sockets are summed over the whole tree
(found through parent pids, not the process group, so it holds however the workers are
started), read just before and after a measured run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from benchkit import Processes, free_port, tool_path
from scaleplan import count_tcp, interceptor_config, nginx_server_names, queue_in_flight, render

__all__ = [
    "Server",
    "client_conns",
    "kill_leftovers",
    "server_in_flight",
    "start_interceptor",
    "start_nginx",
    "tree_cpu_seconds",
    "tree_pids",
    "tree_rss_kb",
    "upstream_conns",
    "workers_option",
]

HERE = Path(__file__).resolve().parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    port: int
    pid: int  # root of its process tree
    workers: int
    admin_port: int = 0  # the interceptor's admin (the parent's with --workers N >= 2)
    upstream_port: int = 0  # the backend it proxies to (0: it is the backend)


# --- /proc ---------------------------------------------------------------------------------


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None  # exited meanwhile
    return stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces


def tree_pids(root: int) -> list[int]:
    """`root` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def kill_leftovers(pids: list[int]) -> None:
    """SIGKILL those of `pids` (processes this benchmark started) still running httpscale or
    nginx after their parents were stopped; the command-line check guards against reuse of a
    pid by an unrelated process meanwhile."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # gone, as it should be
        if b"httpscale" in cmdline or b"nginx" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of the live processes of the tree (fields 14 and 15)."""
    ticks = 0
    for pid in tree_pids(root):
        fields = _stat_fields(str(pid))
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLK_TCK


def tree_rss_kb(root: int, *, without_root: bool = False) -> int:
    """VmRSS summed over the tree (`without_root`: over its descendants only). Pages nginx's
    workers share with their master count once per process; a difference of two readings (the
    growth) is what the report uses."""
    total = 0
    for pid in tree_pids(root):
        if without_root and pid == root:
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def _socket_inodes(root: int) -> set[int]:
    inodes: set[int] = set()
    for pid in tree_pids(root):
        try:
            entries = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _tcp_tables() -> list[str]:
    tables = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                tables.append(f.read())
        except OSError:
            continue
    return tables


def upstream_conns(server: Server) -> int:
    """Established connections from the server's processes to its backend."""
    return count_tcp(_tcp_tables(), _socket_inodes(server.pid), remote_port=server.upstream_port)


def client_conns(server: Server) -> int:
    """Established client connections the server's processes hold on its port."""
    return count_tcp(_tcp_tables(), _socket_inodes(server.pid), local_port=server.port)


# --- starting servers ----------------------------------------------------------------------


async def wait_port(port: int, wait_s: float) -> None:
    async with asyncio.timeout(wait_s):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


async def start_nginx(
    procs: Processes, tmp: Path, *, workers: int, cpus: str | None, routes: int = 0,
    upstream_port: int = 0,
) -> Server:
    """The backend (upstream_port 0) or the proxy, with `workers` worker processes."""
    kind = "proxy" if upstream_port else "backend"
    port = free_port()
    if kind == "proxy":
        (tmp / f"scale-names-{workers}.conf").write_text(nginx_server_names(routes))
    text = render((HERE / "nginx" / f"scale-{kind}.conf").read_text(), PREFIX=tmp, PORT=port,
                  WORKERS=workers, **({"UPSTREAM_PORT": upstream_port} if upstream_port else {}))
    conf = tmp / f"scale-{kind}-{workers}.conf"
    conf.write_text(text)
    name = f"nginx-{kind}-w{workers}"
    child = await procs.start(
        name,
        [tool_path("nginx"), "-p", str(tmp), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
        cpus,
    )
    await wait_port(port, 60)  # 10,000 server names take nginx a moment
    return Server(name, port, child.proc.pid, workers, upstream_port=upstream_port)


def workers_option() -> str | None:
    """None when `httpscale interceptor` takes `--workers`; otherwise why not."""
    done = subprocess.run(
        [sys.executable, "-m", "httpscale", "interceptor", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if done.returncode != 0:
        return f"`httpscale interceptor --help` failed: {done.stderr.strip()[-200:]}"
    if "--workers" not in done.stdout:
        return "`httpscale interceptor` has no --workers option in this build"
    return None


async def start_interceptor(
    procs: Processes, tmp: Path, *, workers: int, cpus: str | None, routes: int,
    upstream_port: int, pass_workers: bool,
) -> Server:
    """`python -m httpscale interceptor --config FILE` on fresh ports, through the real CLI
    (the parent and its workers with --workers 2), ready when its admin says /readyz 200."""
    config = tmp / f"interceptor-{routes}-{upstream_port}.yaml"
    if not config.exists():
        config.write_text(interceptor_config(routes, upstream_port))
    port, admin = free_port(), free_port()
    argv = [
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config),
        "--host", "127.0.0.1", "--port", str(port),
        "--admin-host", "127.0.0.1", "--admin-port", str(admin),
        # nginx's keepalive_timeout: the idle phase keeps 10,000 clients open longer than the
        # default 75 s would allow on a slow machine.
        "--timeouts-keepalive-idle", "300",
        # No load balancer to warn: stop promptly when the benchmark ends.
        "--readiness-delay", "0", "--drain-timeout", "1",
        "--log-level", "warning",
    ]
    if pass_workers:
        argv += ["--workers", str(workers)]
        if workers >= 2:
            # No scaler polls /queue here (nor the 1-worker process): without one, the parent
            # would poll its workers' /queue of 10,000 routes every second by itself.
            argv += ["--workers-queue-sample-interval", "0"]
    name = f"interceptor-w{workers}"
    child = await procs.start(name, argv, cpus)
    server = Server(name, port, child.proc.pid, workers, admin_port=admin,
                    upstream_port=upstream_port)
    await _wait_ready(server, child.proc, wait_s=180)  # 10,000 routes, a loaded machine
    return server


async def _wait_ready(server: Server, proc: asyncio.subprocess.Process, wait_s: float) -> None:
    url = f"http://127.0.0.1:{server.admin_port}/readyz"
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.timeout(wait_s):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"{server.name} exited with {proc.returncode} before ready")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)


async def server_in_flight(server: Server) -> dict[str, int]:
    """{"in_flight": requests in flight} from the interceptor's admin /queue (the lightest
    admin answer that has it): the parent's, summed over its workers; when the parent's admin
    has no /queue (a build whose parent serves /livez and /readyz only), each worker's own,
    over the Unix socket its command line names, read at once and summed here."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
        f"http://127.0.0.1:{server.admin_port}/queue"
    ) as resp:
        if resp.status == 200:
            return {"in_flight": queue_in_flight(await resp.json())}
        if server.workers < 2 or resp.status != 404:
            resp.raise_for_status()
    sockets = _worker_admin_sockets(server.pid)
    return {"in_flight": sum(await asyncio.gather(*map(_worker_in_flight, sockets)))}


async def _worker_in_flight(path: str) -> int:
    connector = aiohttp.UnixConnector(path=path)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, \
            session.get("http://worker/queue") as resp:
        resp.raise_for_status()
        return queue_in_flight(await resp.json())


def _worker_admin_sockets(root: int) -> list[str]:
    found = []
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode().split("\0")
        except OSError:
            continue
        if "--worker-admin-socket" in argv:
            found.append(argv[argv.index("--worker-admin-socket") + 1])
    return found
