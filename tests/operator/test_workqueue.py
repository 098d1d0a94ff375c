"""The reconcile queue: one entry per key, never two workers on a key, retries with backoff."""

from __future__ import annotations

import asyncio

import pytest

from httpscale.kube.backoff import Backoff, BackoffSettings
from httpscale.operator.workqueue import QueueClosed, WorkQueue

FAST = BackoffSettings(initial=0.01, maximum=0.05, jitter=0.0)


async def test_a_key_waits_once_however_often_it_is_added() -> None:
    q: WorkQueue[str] = WorkQueue(FAST)
    for key in ("a", "b", "a", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_added_while_processed_comes_back_after_done() -> None:
    q: WorkQueue[str] = WorkQueue(FAST)
    q.add("a")
    assert await q.get() == "a"
    q.add("a")  # changed again while a worker handles it
    assert len(q) == 0  # not handed to a second worker meanwhile
    q.done("a")
    assert len(q) == 1 and await q.get() == "a"


async def test_retry_delays_grow_and_forget_resets_them() -> None:
    q: WorkQueue[str] = WorkQueue(FAST)
    q.add("a")
    await q.get()
    first = q.retry("a")
    q.done("a")
    assert len(q) == 0  # waiting out its delay, not queued
    async with asyncio.timeout(2):
        assert await q.get() == "a"
    second = q.retry("a")
    q.done("a")
    assert second > first and q.failures("a") == 2
    q.forget("a")
    assert q.failures("a") == 0


async def test_an_add_beats_a_pending_retry() -> None:
    q: WorkQueue[str] = WorkQueue(BackoffSettings(initial=60, maximum=60))
    q.add("a")
    await q.get()
    q.retry("a")
    q.done("a")
    q.add("a")  # a watch event: look now, not in a minute
    async with asyncio.timeout(1):
        assert await q.get() == "a"


async def test_join_waits_for_queued_and_processing_keys() -> None:
    q: WorkQueue[str] = WorkQueue(FAST)
    await q.join()  # empty: at once
    q.add("a")
    joined = asyncio.create_task(q.join())
    key = await q.get()
    await asyncio.sleep(0)
    assert not joined.done()  # "a" is still being processed
    q.done(key)
    async with asyncio.timeout(1):
        await joined


async def test_close_wakes_waiting_workers() -> None:
    q: WorkQueue[str] = WorkQueue(FAST)
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.close()
    with pytest.raises(QueueClosed):
        await waiter
    q.add("late")
    assert len(q) == 0


def test_backoff_is_exponential_jittered_and_capped() -> None:
    values = iter([0.0, 0.5, 0.999] + [0.999] * 10)
    b = Backoff(BackoffSettings(initial=1, maximum=10, factor=2, jitter=0.5),
                rand=lambda: next(values))
    assert b.next_delay() == 1.0  # 1 * (1 + 0.5 * 0)
    assert b.next_delay() == 2.5  # 2 * (1 + 0.5 * 0.5)
    assert b.next_delay() == pytest.approx(4 * 1.4995)
    assert all(b.next_delay() <= 10 for _ in range(10))
    b.reset()
    assert b.attempts == 0
    with pytest.raises(ValueError):
        BackoffSettings(initial=0)
