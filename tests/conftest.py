"""What every test gets: no task may outlive it and nothing may log an error (autouse); and
for tests that start processes, no process may outlive its test; local mode in-process
(helpers in tests/localrun.py).

A test that provokes an error log on purpose says which with
`@pytest.mark.expected_errors("regex", ...)` (matched against each ERROR record's message and
its exception's repr);
any other error record still fails it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from localrun import MARK_VAR, local_runner, wait_gone

from httpscale.local.runner import LocalRunner

Local = Callable[..., Any]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "expected_errors(*patterns): ERROR records whose message matches one of these regexes "
        "are part of the test's scenario, not a failure",
    )


def _error_logs(
    caplog: pytest.LogCaptureFixture, expected: tuple[str, ...]
) -> list[logging.LogRecord]:
    """ERROR records from httpscale or asyncio (a task that died, an unhandled callback
    exception) in any phase of the test so far, but those the test expects."""
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    return [
        r
        for r in records
        if r.levelno >= logging.ERROR
        and r.name.split(".")[0] in ("httpscale", "asyncio")
        and not any(re.search(p, _described(r)) for p in expected)
    ]


def _described(record: logging.LogRecord) -> str:
    """A record's message and, if it carries one, its exception: what `expected_errors`
    patterns are matched against."""
    exc = record.exc_info[1] if record.exc_info else None
    return record.getMessage() if exc is None else f"{record.getMessage()}\n{exc!r}"


@pytest.fixture(autouse=True)
async def no_leaked_tasks(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[None]:
    """After every other fixture is torn down, no task of the test may still be pending, and
    nothing may have logged an error (a proxy task that died is logged, not raised)."""
    expected = tuple(p for m in request.node.iter_markers("expected_errors") for p in m.args)
    before = asyncio.all_tasks()
    yield
    errors = _error_logs(caplog, expected)
    if errors:
        first = errors[0]
        detail = first.getMessage()
        if first.exc_info and first.exc_info[1] is not None:
            detail += f": {type(first.exc_info[1]).__name__}: {first.exc_info[1]}"
        pytest.fail(f"{len(errors)} error log record(s); first from {first.name}: {detail}")
    me = asyncio.current_task()
    for _ in range(10):  # let done-callbacks of just-finished tasks run
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
    if leaked:
        # Say which ones still end by themselves (shutdown did not await them) and which never do.
        _, still = await asyncio.wait(leaked, timeout=1.0)
        for t in still:
            t.cancel()
        await asyncio.gather(*still, return_exceptions=True)
        names = sorted(f"{t.get_name()}: {t.get_coro()!r}" for t in leaked)
        pytest.fail(
            f"{len(leaked)} task(s) pending after teardown ({len(still)} never finished): {names}"
        )


@pytest.fixture
def mark(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A unique HTTPSCALE_TEST_MARK, also in this process's environment so that every process
    the test starts inherits it; the test fails if one is still alive after it (after a
    grace period for orderly exits)."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(MARK_VAR, value)
    yield value
    alive = wait_gone(value)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not alive, f"processes outlived the test: {alive}"


@pytest.fixture
async def local(mark: str) -> AsyncIterator[Local]:
    """`await local(*apps, sync_interval=0.1)`: `httpscale local` started in-process on
    ephemeral ports; stopped in order afterwards."""
    runners: list[LocalRunner] = []

    async def start(*apps: dict[str, Any], sync_interval: float = 0.1) -> LocalRunner:
        runner = local_runner(*apps, sync_interval=sync_interval)
        runners.append(runner)
        await runner.start()
        return runner

    yield start
    for runner in runners:
        await runner.close()
