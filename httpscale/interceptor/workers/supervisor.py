"""The parent's supervisor of `--workers N`: spawn, ready detection, restarts, ordered drain.

One task per worker index runs that index's processes one after the other: spawn with the
index's sockets, wait until its admin Unix socket answers /readyz 200 (or the process exits),
wait for the exit, then, unless draining, restart it after a backoff (0.5 s doubling to 10 s,
back to 0.5 s once a worker stayed up 60 s). Every transition is told to the listeners
(`WorkerListener`, the parent's admin) from the event loop.

Start: worker 0 first, the others once it is ready. A worker that exits before it was ever
ready while starting fails the start (a setting the worker refuses, such as a TLS certificate,
is reported once, by that worker, and not retried forever).

Drain (`begin_drain`, the parent's first SIGTERM/SIGINT): `draining` turns true (the parent's
/readyz 503), the parent closes its copies of the listening sockets (see parent.py), every
worker gets SIGTERM and drains as a single interceptor does. `wait_stopped` bounds the wait
and SIGKILLs what remains. A second signal is forwarded as it came (`forward`): a worker's
second signal stops it at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import aiohttp

from httpscale.interceptor.workers.api import WorkerInfo, WorkerListener
from httpscale.runtime import TaskSupervisor, cancel_and_wait

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "BACKOFF_RESET_AFTER", "Supervisor",
           "WorkerStartError"]

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5  # seconds before the first restart of an index
BACKOFF_MAX = 10.0
BACKOFF_RESET_AFTER = 60.0  # seconds up after which a crash restarts after BACKOFF_FIRST again
_READY_POLL = 0.05  # seconds between /readyz probes of a starting worker
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)

#: (index, socket fds to pass, admin socket path, lifeline fd) -> the worker's argv
Command = Callable[[int, Sequence[int], str, int], list[str]]


class WorkerStartError(Exception):
    """A worker exited before it was first ready."""


class Supervisor:
    """Implements `httpscale.interceptor.workers.api.WorkerSet`."""

    def __init__(self, command: Command, sockets: Sequence[Sequence[socket.socket]],
                 rundir: str) -> None:
        self._command = command
        self._sockets = [list(s) for s in sockets]  # per index: proxy socket[, TLS socket]
        self._rundir = rundir
        self._listeners: list[WorkerListener] = []
        self._live: dict[int, WorkerInfo] = {}
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._restarts = 0
        self._draining = False
        self._drain = asyncio.Event()
        self._ready: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(self.size)}
        self._start_failure: WorkerStartError | None = None
        self._failed = asyncio.Event()
        self.tasks = TaskSupervisor(log, owner="workers")

    # -- WorkerSet ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._sockets)

    @property
    def draining(self) -> bool:
        return self._draining

    def live(self) -> list[WorkerInfo]:
        return [self._live[i] for i in sorted(self._live)]

    def restarts(self) -> int:
        return self._restarts

    def add_listener(self, listener: WorkerListener) -> None:
        self._listeners.append(listener)

    # -- lifecycle ---------------------------------------------------------------------------

    def admin_socket(self, index: int) -> str:
        return os.path.join(self._rundir, f"worker-{index}.sock")

    async def start(self) -> None:
        """Start every worker (0 first) and return once all are ready, or once a drain began.
        Raises WorkerStartError if one exits before it was first ready."""
        self.tasks.spawn(self._run(0), "worker 0")
        if await self._until(self._ready[0]):
            for index in range(1, self.size):
                self.tasks.spawn(self._run(index), f"worker {index}")
            for index in range(1, self.size):
                if not await self._until(self._ready[index]):
                    break
        if self._start_failure is not None:
            raise self._start_failure

    async def _until(self, event: asyncio.Event) -> bool:
        """Wait for `event`, a start failure or a drain; True if `event` came."""
        waits = [asyncio.create_task(e.wait()) for e in (event, self._failed, self._drain)]
        died = asyncio.ensure_future(self.tasks.wait())  # a bug in a supervising task
        try:
            await asyncio.wait([*waits, died], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(*waits, died)
        if not died.cancelled():
            died.result()
        return event.is_set() and not self._failed.is_set()

    def begin_drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        self._drain.set()
        self.tasks.begin_shutdown()  # the index tasks end now: no death
        for sockets in self._sockets:  # see parent.py: new connections are refused once the
            for sock in sockets:       # workers close theirs too
                sock.close()
        self._signal_all(signal.SIGTERM)

    def forward(self, sig: signal.Signals) -> None:
        self._signal_all(sig)

    async def wait_stopped(self, bound: float) -> None:
        """After `begin_drain`: wait (at most `bound` s) for every worker to exit, SIGKILL
        those still running, then end the supervisor's tasks."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        running = [t for t in self.tasks.tasks if not t.done()]
        if running:
            await asyncio.wait(running, timeout=max(0.0, deadline - loop.time()))
        if any(not t.done() for t in running):
            log.error("workers still running %gs after SIGTERM: killing them", bound)
            self._signal_all(signal.SIGKILL)
        await self.tasks.close()

    def _signal_all(self, sig: signal.Signals) -> None:
        for index, proc in list(self._procs.items()):
            if proc.returncode is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
                else:
                    log.debug("sent %s to worker %d (pid %d)", sig.name, index, proc.pid)

    # -- one index ---------------------------------------------------------------------------

    async def _run(self, index: int) -> None:
        """The processes of one index, one after the other, until the drain."""
        generation = 0
        backoff = BACKOFF_FIRST
        while not self._draining:
            info, up, returncode = await self._one(index, generation)
            if self._draining:
                return
            if not info.started and not self._ready[index].is_set():
                self._start_failure = WorkerStartError(
                    f"worker {index} exited with {_describe(returncode)} before it was ready"
                    " (its error is above)")
                self._failed.set()
                self.tasks.begin_shutdown()  # this task ending is the start failing, no death
                return
            if up >= BACKOFF_RESET_AFTER:
                backoff = BACKOFF_FIRST
            self._restarts += 1
            log.warning("worker %d (pid %d) exited with %s after %.1fs up: restarting in %gs",
                        index, info.pid, _describe(returncode), up, backoff)
            try:
                # A deliberate delay (a crash loop must not spin), cut short by a drain.
                await asyncio.wait_for(self._drain.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, BACKOFF_MAX)
            generation += 1

    async def _one(self, index: int, generation: int) -> tuple[WorkerInfo, float, int | None]:
        """Run one process of `index` until it exits: (its info, seconds up, exit status)."""
        path = self.admin_socket(index)
        try:
            os.unlink(path)  # a killed worker leaves its socket file behind
        except FileNotFoundError:
            pass
        fds = [s.fileno() for s in self._sockets[index]]
        lifeline_read, lifeline_write = os.pipe()  # see worker.py; both ends non-inheritable
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(index, fds, path, lifeline_read),
                pass_fds=(*fds, lifeline_read), stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: see worker.py
            )
        except BaseException:
            os.close(lifeline_write)
            raise
        finally:
            os.close(lifeline_read)
        self._procs[index] = proc
        if self._draining:  # the drain began while this one was being spawned: it missed it
            proc.send_signal(signal.SIGTERM)
        info = WorkerInfo(index, generation, proc.pid, path, 0.0)
        log.info("worker %d started (pid %d, generation %d)", index, proc.pid, generation)
        exited = asyncio.create_task(proc.wait(), name=f"worker {index} exit")
        ready = asyncio.create_task(_until_ready(path), name=f"worker {index} ready")
        try:
            await asyncio.wait({exited, ready}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and not ready.cancelled() and ready.exception() is None:
                info = replace(info, started=time.time())
                self._live[index] = info
                self._ready[index].set()
                log.info("worker %d ready (pid %d)", index, proc.pid)
                for listener in list(self._listeners):
                    listener.worker_ready(info)
            returncode = await asyncio.shield(exited)
        finally:
            await cancel_and_wait(ready)
            if not exited.done():  # cancelled (the supervisor closing): do not leave it running
                proc.kill()
                await asyncio.wait([exited], timeout=5)
            os.close(lifeline_write)
            self._live.pop(index, None)
        up = time.time() - info.started if info.started else 0.0
        for listener in list(self._listeners):
            listener.worker_exited(info, returncode)
        return info, up, returncode


async def _until_ready(path: str) -> None:
    """Poll the worker's /readyz on its admin Unix socket until it answers 200 (the process
    exiting is watched beside this, and ends it)."""
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path),
                                     timeout=_PROBE_TIMEOUT) as http:
        while True:
            try:
                async with http.get("http://worker/readyz") as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass  # not listening yet
            # Polling with a bounded per-probe timeout: the worker has no other way to say
            # "routes loaded" (its /readyz is the contract), and it may never be ready.
            await asyncio.sleep(_READY_POLL)


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "no status"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"
