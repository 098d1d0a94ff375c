"""Fixtures for local-mode tests (`mark` and `local` are tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from localkit import hello_command
from localrun import MARK_VAR

from httpscale.local.replica import ProcessSpec


@pytest.fixture
def hello_spec(mark: str) -> Callable[..., ProcessSpec]:
    def make(*args: str, **kw: object) -> ProcessSpec:
        kw.setdefault("readiness_path", "/healthz")
        kw.setdefault("startup_timeout", 10.0)
        kw.setdefault("stop_grace_period", 5.0)
        return ProcessSpec(command=hello_command(*args), env={MARK_VAR: mark}, **kw)  # type: ignore[arg-type]

    return make
