"""The contract between the worker supervisor and the parent's admin.

The supervisor implements :class:`WorkerSet`; the parent admin implements
:class:`WorkerListener` and learns of workers coming and going through it, so
neither depends on the other's module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class WorkerInfo:
    index: int  # 0..N-1, stable across restarts
    generation: int  # 0 for the first process at this index, +1 per restart
    pid: int
    admin_socket: str  # path of this worker's admin Unix socket
    started: float  # time.time() when it became ready


class WorkerListener(Protocol):
    def worker_ready(self, info: WorkerInfo) -> None: ...  # its admin socket answers /readyz 200

    def worker_exited(self, info: WorkerInfo, returncode: int | None) -> None: ...  # process gone


class WorkerSet(Protocol):
    @property
    def size(self) -> int: ...  # N

    @property
    def draining(self) -> bool: ...

    def live(self) -> list[WorkerInfo]: ...  # ready and not exited, by index

    def restarts(self) -> int: ...  # total since start

    def add_listener(self, listener: WorkerListener) -> None: ...
