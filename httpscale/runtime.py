"""Process-level plumbing shared by the commands: the event loop, signals, logging."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["configure_logging", "run", "tune_gc_for_serving", "wait_for_stop_signal"]


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
      collected, later.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


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
