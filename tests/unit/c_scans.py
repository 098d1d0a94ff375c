"""The C head scans (`httpscale.interceptor._scan`), for the tests that compare them with their
Python twins and with llhttp."""

from __future__ import annotations

import os
from types import ModuleType

import pytest


def c_module() -> ModuleType:
    """The built module; skips the test without the compiled build, fails it when the run
    expects that build (HTTPSCALE_EXPECT_DATAPLANE=compiled) and the module is missing."""
    try:
        from httpscale.interceptor import _scan
    except ImportError:
        if os.environ.get("HTTPSCALE_EXPECT_DATAPLANE") == "compiled":
            pytest.fail("the compiled build is expected, and its C scans are missing")
        pytest.skip("the C scans run only with the compiled build")
    return _scan
