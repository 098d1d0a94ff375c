"""Fixtures for every test that starts processes: no process may outlive its test; local
mode in-process (helpers in tests/localrun.py)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from localrun import MARK_VAR, local_runner, wait_gone

from httpscale.local.runner import LocalRunner

Local = Callable[..., Any]


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
