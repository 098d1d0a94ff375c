"""The listening sockets of `--workers N`: made by the parent, one per worker, SO_REUSEPORT.

Each worker gets its own socket (the kernel spreads new connections over the sockets of one
port by a hash of the connection), all made by the parent and inherited by the workers. The
parent keeps its copies for as long as it may restart a worker: a worker that dies leaves its
socket open in the parent, so connections already queued on it are accepted by the worker
that replaces it instead of being reset. When the parent drains it closes its copies; the
sockets close for good when the workers close theirs, and new connections are then refused.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = ["BACKLOG", "PreboundSockets", "bind_reuseport"]

BACKLOG = 2048  # as the single process's listeners


@dataclass(frozen=True)
class PreboundSockets:
    """What a worker serves on instead of binding: its proxy socket, its TLS socket (with
    --tls-listen) and the Unix socket path of its admin server."""

    proxy: socket.socket
    tls: socket.socket | None
    admin_path: str


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
