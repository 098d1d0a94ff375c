"""The parent process of `--workers N`: sockets, the public admin, the supervisor, signals.

The parent serves no request itself. In order: it makes the listening sockets (below) and
a private run directory for the workers' admin Unix sockets, starts its admin server (the one
on --admin-host/--admin-port, summing the workers), starts the workers (supervisor.py) and
logs the same "proxy on HOST:PORT, admin on HOST:PORT" line as a single interceptor once all
are ready. On SIGTERM/SIGINT the workers drain (bounded: readiness delay + drain timeout +
10 s), then the admin stops and the run directory goes.

Sockets: each worker gets its own listening socket on the proxy address (and one on the TLS
address), SO_REUSEPORT: the kernel spreads new connections over the sockets of one port by a
hash of the connection. The parent keeps its copies for as long as it may restart a worker: a
worker that dies leaves its socket open in the parent, so connections already queued on it are
accepted by the worker that replaces it instead of being reset. When the parent drains it
closes its copies; the sockets close for good when the workers close theirs, and new
connections are then refused.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import tempfile
from collections.abc import Sequence

from httpscale.interceptor.settings import InterceptorSettings
from httpscale.interceptor.tls import parse_listen
from httpscale.interceptor.workers.parent_admin import ParentAdmin, ParentAdminSettings
from httpscale.interceptor.workers.supervisor import Command, Supervisor
from httpscale.interceptor.workers.worker import BACKLOG
from httpscale.runtime import StopSignals, cancel_and_wait

__all__ = ["STOP_SLACK", "bind_reuseport", "run_parent"]

log = logging.getLogger(__name__)

STOP_SLACK = 10.0  # seconds the workers get beyond their readiness delay + drain timeout


async def run_parent(settings: InterceptorSettings, count: int, command: Command,
                     admin_settings: ParentAdminSettings | None = None) -> None:
    """Run `count` workers until a stop signal; raises WorkerStartError (a worker that could
    not start) or OSError (a socket that cannot be made)."""
    listen = settings.listen
    per_index: list[list[socket.socket]] = [[] for _ in range(count)]
    rundir = tempfile.mkdtemp(prefix="httpscale-workers-")
    try:
        for index, sock in enumerate(bind_reuseport(listen.host, listen.port, count)):
            per_index[index].append(sock)
        if settings.tls.listen:
            for index, sock in enumerate(bind_reuseport(*parse_listen(settings.tls.listen),
                                                        count)):
                per_index[index].append(sock)
        workers = Supervisor(command, per_index, rundir)
        admin = ParentAdmin(workers, admin_settings)
        workers.add_listener(admin)
        admin_address = await admin.start(listen.admin_host, listen.admin_port)
        try:
            await _supervise(settings, workers, per_index, admin_address)
        finally:
            await admin.stop()
    finally:
        for sockets in per_index:
            for sock in sockets:
                sock.close()
        shutil.rmtree(rundir, ignore_errors=True)
    log.info("interceptor stopped")


async def _supervise(settings: InterceptorSettings, workers: Supervisor,
                     per_index: Sequence[Sequence[socket.socket]],
                     admin_address: tuple[str, int]) -> None:
    proxy = per_index[0][0].getsockname()
    tls = per_index[0][1].getsockname() if len(per_index[0]) > 1 else None
    shutdown = settings.shutdown
    bound = shutdown.readiness_delay + shutdown.drain_timeout + STOP_SLACK

    def on_stop(sig: signal.Signals) -> None:
        log.info("received %s, draining %d workers", sig.name, workers.size)
        workers.begin_drain()

    def on_again(sig: signal.Signals) -> None:
        log.info("received %s again: forwarding it (the workers stop at once)", sig.name)
        workers.forward(sig)

    with StopSignals(on_stop=on_stop, on_again=on_again) as stop:
        try:
            await workers.start()
            if not workers.draining:
                log.info("proxy on %s:%d, admin on %s:%d, %d workers%s",
                         proxy[0], proxy[1], *admin_address, workers.size,
                         f", TLS on {tls[0]}:{tls[1]}" if tls else "")
                failed = asyncio.ensure_future(workers.tasks.wait())
                stopped = asyncio.create_task(stop.stopped.wait())
                try:
                    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await cancel_and_wait(failed, stopped)
                if not failed.cancelled():
                    failed.result()  # a supervisor task died: raise it
        finally:
            workers.begin_drain()
            await workers.wait_stopped(bound)


def bind_reuseport(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on `host:port` with SO_REUSEPORT. Not inheritable: each goes
    to its worker only, by `pass_fds` (a worker holding another's socket would keep the port
    open after that one closed it, and accept nothing from it). Port 0: the first socket picks
    the port, the others bind to it. A host name that resolves to several addresses is served
    on the first one."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host!r} to listen on: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            address = sock.getsockname()  # port 0: the others take the port the first got
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sockets
