"""Fixtures for local-mode tests: no process may outlive its test."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator

import pytest
from localkit import MARK_VAR, hello_command, wait_gone

from httpscale.local.replica import ProcessSpec


@pytest.fixture
def mark() -> Iterator[str]:
    """A unique value for HTTPSCALE_TEST_MARK; the test fails if a process carrying it is
    still alive after the test (after a grace period for orderly exits)."""
    value = uuid.uuid4().hex
    yield value
    alive = wait_gone(value)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not alive, f"processes outlived the test: {alive}"


@pytest.fixture
def hello_spec(mark: str) -> Callable[..., ProcessSpec]:
    def make(*args: str, **kw: object) -> ProcessSpec:
        kw.setdefault("readiness_path", "/healthz")
        kw.setdefault("startup_timeout", 10.0)
        kw.setdefault("stop_grace_period", 5.0)
        return ProcessSpec(command=hello_command(*args), env={MARK_VAR: mark}, **kw)  # type: ignore[arg-type]

    return make
