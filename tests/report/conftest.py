"""Fixtures for report tests: local mode in-process on ephemeral ports, for a real
`/history`; no process may outlive its test."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from reportkit import MARK_VAR, wait_gone

from httpscale.config.local_file import parse_local_config
from httpscale.interceptor.settings import InterceptorSettings, Listen, ShutdownSettings
from httpscale.local.autoscaler import AutoscalerSettings
from httpscale.local.plan import plan_apps
from httpscale.local.runner import LocalRunner, LocalSettings
from httpscale.local.supervisor import SupervisorSettings

Local = Callable[..., Any]


@pytest.fixture
def mark(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A unique HTTPSCALE_TEST_MARK for every process the test starts (replicas, locust);
    the test fails if one is still alive after it (after a grace period for orderly exits)."""
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
    """Start `httpscale local` in-process on ephemeral ports; stop it in order afterwards."""
    runners: list[LocalRunner] = []

    async def start(*apps: dict[str, Any]) -> LocalRunner:
        config = parse_local_config({"apps": list(apps)}, source="test.yaml")
        settings = LocalSettings(
            interceptor=InterceptorSettings(
                listen=Listen(host="127.0.0.1", port=0, admin_host="127.0.0.1", admin_port=0),
                shutdown=ShutdownSettings(readiness_delay=0, drain_timeout=5),
            ),
            autoscaler=AutoscalerSettings(
                sync_interval=0.1, supervisor=SupervisorSettings(drain_timeout=5)
            ),
        )
        runner = LocalRunner(plan_apps(config.apps), settings)
        runners.append(runner)
        await runner.start()
        return runner

    yield start
    for runner in runners:
        await runner.close()
