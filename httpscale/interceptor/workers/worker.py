"""The worker side of `--workers N`: what its parent hands it, and the ties back to the parent.

A worker is `python -m httpscale interceptor <the parent's options>` plus hidden options
(`--worker-index`, `--worker-fds`, `--worker-admin-socket`, `--worker-lifeline`): its index,
the file descriptors of its listening sockets, the Unix socket path of its admin server and
the read end of a "lifeline" pipe. The parent holds the write end and never writes: when the
parent is gone (even by SIGKILL) the pipe reads end-of-file and the worker drains and exits,
so no worker outlives its parent holding the port.

Workers run in their own sessions: a terminal's Ctrl-C reaches the parent only, which
forwards it once (a worker that got it twice would stop without draining).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass

__all__ = ["BACKLOG", "PreboundSockets", "WorkerArgs", "tag_logs", "watch_lifeline"]

log = logging.getLogger(__name__)

BACKLOG = 2048  # listen() backlog, as the single process's listeners



@dataclass(frozen=True)
class PreboundSockets:
    """What a worker serves on instead of binding: its proxy socket, its TLS socket (with
    --tls-listen) and the Unix socket path of its admin server."""

    proxy: socket.socket
    tls: socket.socket | None
    admin_path: str


@dataclass(frozen=True)
class WorkerArgs:
    index: int
    sockets: PreboundSockets
    lifeline: int  # fd: the read end of the parent's lifeline pipe

    @classmethod
    def parse(cls, index: int, fds: str, admin_socket: str, lifeline: int) -> WorkerArgs:
        try:
            numbers = [int(fd) for fd in fds.split(",")]
        except ValueError:
            raise ValueError(f"--worker-fds: expected FD[,FD], got {fds!r}") from None
        if not 1 <= len(numbers) <= 2 or not admin_socket:
            raise ValueError("--worker-fds and --worker-admin-socket are set by the parent of "
                             "--workers N, not by hand")
        proxy = socket.socket(fileno=numbers[0])
        tls = socket.socket(fileno=numbers[1]) if len(numbers) == 2 else None
        return cls(index, PreboundSockets(proxy, tls, admin_socket), lifeline)


def tag_logs(index: int) -> None:
    """Prefix this process's log lines with its worker index (they share the parent's
    stderr)."""
    formatter = logging.Formatter(
        f"%(asctime)s %(levelname)-7s [worker {index}] %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


async def watch_lifeline(fd: int) -> None:
    """Until cancelled; when the parent is gone, SIGTERM to this process (the usual drain)."""
    loop = asyncio.get_running_loop()
    gone = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
    log.warning("the parent process is gone: draining")
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.Event().wait()  # the shutdown that follows cancels this task
