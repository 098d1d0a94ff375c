"""`runtime.TaskSupervisor` and `cancel_and_wait` with real tasks on a real loop: a death is
reported, shutdown cancels in order within its budget, cancellation is never swallowed, and
no task outlives `close()`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from httpscale.runtime import TaskSupervisor, cancel_and_wait

log = logging.getLogger("test.supervisor")


class Boom(Exception):
    pass


async def forever() -> None:
    await asyncio.Event().wait()


async def fail_when(gate: asyncio.Event) -> None:
    await gate.wait()
    raise Boom("it broke")


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == log.name and r.levelno >= logging.ERROR]


@pytest.fixture
async def sup() -> AsyncIterator[TaskSupervisor]:
    """A supervisor; after the test, close() must leave no task of the test running."""
    before = asyncio.all_tasks()
    supervisor = TaskSupervisor(log)
    yield supervisor
    await supervisor.close()
    assert supervisor.tasks == ()
    me = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
    assert leaked == []


async def test_a_critical_task_that_raises_is_logged_and_raised_by_wait(
    sup: TaskSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()
    bystander = sup.spawn(forever(), "bystander")
    sup.spawn(fail_when(gate), "worker")
    waiter = asyncio.create_task(sup.wait())
    gate.set()
    with pytest.raises(Boom, match="it broke"):
        await waiter
    assert isinstance(sup.failure, Boom)
    assert errors(caplog) == ["worker died"]
    assert caplog.records[-1].exc_info is not None
    assert not bystander.done(), "the owner decides what to stop, not the supervisor"
    assert sup.tasks == (bystander,)


@pytest.mark.parametrize("critical", [True, False])
async def test_returning_is_a_failure_only_for_a_critical_task(
    sup: TaskSupervisor, caplog: pytest.LogCaptureFixture, critical: bool
) -> None:
    async def once() -> None:
        return None

    task = sup.spawn(once(), "once", critical=critical)
    # The supervisor's done callback was added first: it has run when wait() returns.
    await asyncio.wait([task])
    if critical:
        assert isinstance(sup.failure, RuntimeError)
        assert str(sup.failure) == "once returned unexpectedly"
        assert errors(caplog) == ["once died"]
    else:
        assert sup.failure is None
        assert errors(caplog) == []


async def test_a_non_critical_exception_is_logged_but_no_failure(
    sup: TaskSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()
    gate.set()
    task = sup.spawn(fail_when(gate), "poll", critical=False)
    await asyncio.wait([task])
    assert errors(caplog) == ["poll died"]
    assert sup.failure is None


async def test_owner_prefix_names_the_owner(caplog: pytest.LogCaptureFixture) -> None:
    sup = TaskSupervisor(log, owner="app web")
    gate = asyncio.Event()
    gate.set()
    task = sup.spawn(fail_when(gate), "replica web-1", critical=False)
    await asyncio.wait([task])
    await sup.close()
    assert errors(caplog) == ["app web: replica web-1 died"]


async def test_a_task_cancelled_by_its_owner_is_no_failure(
    sup: TaskSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    async def swallows_cancel() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # asked to stop, and it did: by returning

    plain = sup.spawn(forever(), "plain")
    polite = sup.spawn(swallows_cancel(), "polite")
    await started.wait()
    plain.cancel()
    polite.cancel()
    await asyncio.wait([plain, polite])
    assert plain.cancelled() and not polite.cancelled()
    assert sup.failure is None
    assert errors(caplog) == []
    assert sup.tasks == ()


async def test_close_cancels_the_last_spawned_first_each_awaited_before_the_next(
    sup: TaskSupervisor,
) -> None:
    events: list[str] = []
    running: set[str] = set()

    async def part(name: str) -> None:
        running.add(name)
        try:
            await asyncio.Event().wait()
        finally:
            # A later part may use the earlier ones: they must still run during its cleanup.
            events.append(f"{name} stops, running: {','.join(sorted(running))}")
            await asyncio.sleep(0)  # a cleanup that awaits, so the order is not by luck
            running.discard(name)

    for name in ("a", "b", "c"):
        sup.spawn(part(name), name)
    await asyncio.sleep(0)
    assert running == {"a", "b", "c"}
    await sup.close()
    assert events == ["c stops, running: a,b,c", "b stops, running: a,b", "a stops, running: a"]
    assert sup.tasks == ()


async def test_a_failure_during_shutdown_is_logged_not_reported(
    sup: TaskSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise Boom("cleanup broke")

    sup.spawn(fails_on_cancel(), "fragile")
    await asyncio.sleep(0)
    await sup.close()
    assert sup.failure is None
    assert errors(caplog) == ["fragile failed during shutdown"]


async def test_a_task_spawned_during_shutdown_does_not_outlive_it(sup: TaskSupervisor) -> None:
    late: list[asyncio.Task[None]] = []

    async def spawns_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            late.append(sup.spawn(forever(), "late"))

    sup.spawn(spawns_on_cancel(), "spawner")
    await asyncio.sleep(0)
    await sup.close()
    assert len(late) == 1 and late[0].cancelled()


async def test_close_gives_up_on_a_task_ignoring_cancellation_after_its_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = TaskSupervisor(log, stop_timeout=0.2)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a bug: cancellation ignored

    task = sup.spawn(stubborn(), "stubborn")
    await asyncio.sleep(0)
    await sup.close()
    assert not task.done()
    assert errors(caplog) == ["stubborn still running 0.2s after being cancelled"]
    release.set()
    await asyncio.wait([task])
    assert sup.tasks == ()


async def test_cancelling_the_caller_of_close_propagates_and_cancels_the_rest() -> None:
    sup = TaskSupervisor(log)
    in_cleanup = asyncio.Event()
    gate = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            in_cleanup.set()
            await gate.wait()

    first = sup.spawn(forever(), "first")
    slow = sup.spawn(slow_cleanup(), "slow")
    await asyncio.sleep(0)
    closer = asyncio.create_task(sup.close())
    await in_cleanup.wait()
    closer.cancel()
    await asyncio.wait([closer])
    assert closer.cancelled(), "close() must not swallow its caller's cancellation"
    assert first.cancelled(), "what was not reached yet is cancelled on the way out"
    gate.set()
    await asyncio.wait([slow])
    assert slow.cancelled()


async def test_cancel_and_wait_does_not_swallow_the_callers_cancellation() -> None:
    gate = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await gate.wait()

    child = asyncio.create_task(slow_cleanup())
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_and_wait(child))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.wait([caller])
    assert caller.cancelled()
    gate.set()
    await asyncio.wait([child])
    assert child.cancelled()
