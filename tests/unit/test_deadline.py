"""Deadline: one timer per connection, re-armed only when a deadline moves earlier."""

from __future__ import annotations

import asyncio

from httpscale.interceptor.deadline import NEVER, Deadline


async def test_expiry_follows_the_latest_deadline() -> None:
    loop = asyncio.get_running_loop()
    fired = asyncio.Event()
    times: list[float] = []

    def expired() -> None:
        times.append(loop.time())
        fired.set()

    d = Deadline(loop, expired)
    start = loop.time()
    d.set(start + 0.05)
    d.set(start + 0.15)  # later: no re-arm; the early timer re-evaluates and waits on
    await asyncio.wait_for(fired.wait(), 2)
    assert times[0] - start >= 0.15
    assert d.when == NEVER


async def test_an_earlier_deadline_fires_earlier() -> None:
    loop = asyncio.get_running_loop()
    fired = asyncio.Event()
    d = Deadline(loop, fired.set)
    start = loop.time()
    d.set(start + 10)
    d.set(start + 0.05)
    await asyncio.wait_for(fired.wait(), 2)
    assert loop.time() - start < 5


async def test_a_cleared_deadline_does_not_fire_and_stop_cancels() -> None:
    loop = asyncio.get_running_loop()
    calls: list[str] = []
    d = Deadline(loop, lambda: calls.append("x"))
    d.set(loop.time() + 0.01)
    d.clear()
    other = asyncio.Event()
    e = Deadline(loop, other.set)
    e.set(loop.time() + 0.05)  # fires after d's timer has lapsed
    await asyncio.wait_for(other.wait(), 2)
    assert calls == []
    d.set(loop.time() + 0.01)
    d.stop()
    assert d._timer is None
