"""Process-level plumbing shared by the commands: the event loop, logging, signals, tasks.

One lifecycle for every component (interceptor, scaler, operator, local mode):

- `TaskSupervisor` owns a component's long-lived tasks: each is named and tracked until done.
  A *critical* task runs until shutdown; its exception, or its returning at all, is the
  component's failure: logged, raised by `wait()` (the command then stops and exits non-zero).
  Other tasks (a poll, one replica's lifecycle) may return, and an exception of theirs is
  logged only. At shutdown `close()` cancels the tasks, the last spawned first, each awaited
  before the next (a later task may use an earlier one), all within a timeout.
- `StopSignals` turns SIGTERM/SIGINT (or the signals a command names) into an event, with an
  optional reaction to a second signal (local mode's forced stop); `serve_until_signal` is the
  servers' main wait: a stop signal, or the component's failure, whichever comes first.

Cancellation is never swallowed: awaiting a cancelled task goes through `asyncio.wait`, which
does not raise the task's outcome, so a cancellation of the awaiting task itself propagates
(`suppress(CancelledError)` around `await task` would eat it).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, NoReturn, TypeVar

__all__ = [
    "STOP_SIGNALS",
    "STOP_TIMEOUT",
    "StopSignals",
    "TaskSupervisor",
    "cancel_and_wait",
    "configure_logging",
    "run",
    "serve_until_signal",
    "tune_gc_for_serving",
]

T = TypeVar("T")

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
# Seconds cancelled tasks get, together, to finish their cleanup in `TaskSupervisor.close`.
STOP_TIMEOUT = 10.0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main` on uvloop when it is installed (it is in every supported install)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


_YOUNG_THRESHOLD = 7000  # new tracked objects between young collections (CPython: 700)


def tune_gc_for_serving() -> None:
    """Keep CPython's cyclic GC out of the way of a serving process, once it serves.

    The data plane makes no cyclic garbage (closed connections break their own cycles), yet
    CPython runs full collections as long-lived objects accumulate, such as 10,000 requests
    held through a cold start, and each one scans every tracked object: 12-47 ms pauses while
    the requests were held, 21-29 ms after each release (held-requests benchmark). So:

    - what the process allocated to start (modules, settings, servers: ~60,000 objects) is
      frozen, out of every scan: collections after a release fell to 1.6-12 ms;
    - a full collection waits for 100 young-generation collections instead of 10 (CPython
      still also waits until the long-lived objects grew by a quarter): none ran while
      10,000 requests were held. Cyclic garbage from elsewhere (the admin server) is still
      collected, later;
    - a young collection waits for 7,000 new objects instead of 700: with 1,024 clients the
      requests in flight kept surviving into the middle generation, which was then scanned
      every 7,000 allocations; callgrind (loadtests/instructions.sh) counted 22,362
      instructions per request at 1,024 connections before, 21,196 after, and no change at 16.
    """
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, middle, 100)


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and wait until they are done, without swallowing a cancellation of the
    caller itself (which `suppress(CancelledError)` around `await task` would do)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


class TaskSupervisor:
    """The owned tasks of one component (see the module's docstring for the rules).

    `owner` prefixes the log records ("app web: replica web-1 died"); `stop_timeout` bounds
    `close()`. Nothing is reported as a death once `begin_shutdown()` (or `close()`) was
    called: a task ending then is the shutdown at work, and an exception it raises is logged
    as a failure during shutdown.
    """

    def __init__(
        self, log: logging.Logger, *, owner: str = "", stop_timeout: float = STOP_TIMEOUT
    ) -> None:
        self._log = log
        self.stop_timeout = stop_timeout
        self._prefix = f"{owner}: " if owner else ""
        # Live tasks in spawn order (a dict keeps it) -> critical.
        self._tasks: dict[asyncio.Task[Any], bool] = {}
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._stopping = False

    def spawn(
        self, coro: Coroutine[Any, Any, T], name: str, *, critical: bool = True
    ) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks[task] = critical
        task.add_done_callback(self._settle)
        if self._stopping:
            # Spawned by a callback during shutdown: it must not outlive the component.
            task.cancel()
        return task

    @property
    def tasks(self) -> tuple[asyncio.Task[Any], ...]:
        """The tasks not done yet, in spawn order."""
        return tuple(self._tasks)

    @property
    def failure(self) -> BaseException | None:
        """What the first critical task to die raised (a RuntimeError if it returned)."""
        return self._failure

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def wait(self) -> NoReturn:
        """Return never; raise the first failure of a critical task."""
        await self._failed.wait()
        assert self._failure is not None
        raise self._failure

    def begin_shutdown(self) -> None:
        """From now on tasks ending are expected (components whose shutdown has steps before
        `close()` call this first)."""
        self._stopping = True

    async def close(self) -> None:
        """Cancel every task, the last spawned first, awaiting each before cancelling the next.

        Tasks still running after `stop_timeout` seconds in all (a task that ignores cancellation
        is a bug) are logged by name and left cancelled. If the caller is cancelled meanwhile,
        every remaining task is cancelled and the cancellation propagates.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        timeout = self.stop_timeout
        deadline = loop.time() + timeout
        try:
            while pending := [t for t in self._tasks if not t.done()]:
                for task in reversed(pending):
                    task.cancel()
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    await asyncio.wait([task], timeout=left)
                    self._settle(task)
                if loop.time() >= deadline:
                    break
        finally:
            for task in self._tasks:
                task.cancel()
        stuck = [t.get_name() for t in self._tasks if not t.done()]
        if stuck:
            self._log.error(
                "%s%s still running %gs after being cancelled", self._prefix, ", ".join(stuck),
                timeout,
            )
        for task in [t for t in self._tasks if t.done()]:
            self._settle(task)

    def _settle(self, task: asyncio.Task[Any]) -> None:
        """Report how `task` ended, once (from its done callback or from `close`)."""
        if not task.done() or task not in self._tasks:
            return
        critical = self._tasks.pop(task)
        if task.cancelled():
            return
        error = task.exception()
        if self._stopping:
            if error is not None:
                self._log.error("%s%s failed during shutdown", self._prefix, task.get_name(),
                                exc_info=error)
            return
        if error is None:
            # A task asked to stop may end by returning; one that was not, and must run, died.
            if not critical or task.cancelling():
                return
            error = RuntimeError(f"{task.get_name()} returned unexpectedly")
        self._log.error("%s%s died", self._prefix, task.get_name(), exc_info=error)
        if critical and self._failure is None:
            self._failure = error
            self._failed.set()


class StopSignals:
    """Stop signals for the running loop while inside `with` (the handlers go on exit).

    The first signal sets `received` and the `stopped` event and calls `on_stop`; each later
    one calls `on_again` (a forced stop), or is ignored without it. Only the main thread gets
    signals: elsewhere (a caller's worker thread) nothing is installed.
    """

    def __init__(
        self,
        signals: Sequence[signal.Signals] = STOP_SIGNALS,
        *,
        on_stop: Callable[[signal.Signals], None] | None = None,
        on_again: Callable[[signal.Signals], None] | None = None,
    ) -> None:
        self.signals = tuple(signals)
        self.received: signal.Signals | None = None
        self.stopped = asyncio.Event()
        self._on_stop = on_stop
        self._on_again = on_again
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            installed: list[signal.Signals] = []
            try:
                for sig in self.signals:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
            except BaseException:
                for sig in installed:
                    loop.remove_signal_handler(sig)
                raise
            self._loop = loop
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            for sig in self.signals:
                loop.remove_signal_handler(sig)

    async def wait(self) -> signal.Signals:
        """Return the first stop signal, once it arrives."""
        await self.stopped.wait()
        assert self.received is not None
        return self.received

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received is None:
            self.received = sig
            self.stopped.set()
            if self._on_stop is not None:
                self._on_stop(sig)
        elif self._on_again is not None:
            self._on_again(sig)


async def serve_until_signal(
    failure: Awaitable[Any], signals: Sequence[signal.Signals] = STOP_SIGNALS
) -> signal.Signals:
    """Wait for a stop signal or for `failure` (a component's `wait()`) to end, which first.

    Returns the signal, or raises what `failure` raised (a RuntimeError if it returned). The
    handlers are removed before this returns: a second signal during the shutdown that follows
    has its default effect (it ends the process), as an impatient operator expects.
    """
    with StopSignals(signals) as stop:
        watch = asyncio.ensure_future(failure)
        stopped = asyncio.create_task(stop.wait(), name="stop signal")
        try:
            await asyncio.wait({watch, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(watch, stopped)
    if not watch.cancelled():
        watch.result()  # raises the failure
        raise RuntimeError("the component's wait() returned")
    return stopped.result()
