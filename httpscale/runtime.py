"""Process-level plumbing shared by the commands: the event loop, signals, logging."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["configure_logging", "freeze_startup_heap", "run", "wait_for_stop_signal"]


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


def freeze_startup_heap() -> None:
    """Take what the process allocated to start (modules, settings, servers: ~60,000 objects)
    out of the cyclic GC's scans, once it is serving.

    The data plane makes no cyclic garbage (closed connections break their own cycles), yet
    CPython still runs full collections as long-lived objects accumulate, such as 10,000
    requests held through a cold start; each one scans every tracked object. Frozen objects
    are skipped: in the held-requests benchmark the full collections after a release went from
    ~25 ms to a few.
    """
    gc.collect()
    gc.freeze()


async def wait_for_stop_signal() -> signal.Signals:
    """Return the first SIGTERM or SIGINT received (handlers removed again afterwards)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[signal.Signals] = loop.create_future()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        if not got.done():
            got.set_result(sig)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await got
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
