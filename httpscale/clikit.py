"""Click helpers shared by every subcommand: each option is also `HTTPSCALE_<OPTION>`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["envvar_for", "option"]

F = TypeVar("F", bound=Callable[..., Any])


def envvar_for(long_name: str) -> str:
    """`--drain-timeout` -> `HTTPSCALE_DRAIN_TIMEOUT` (the contract in ARCHITECTURE.md)."""
    return "HTTPSCALE_" + long_name.lstrip("-").replace("-", "_").upper()


def option(*param_decls: str, **attrs: Any) -> Callable[[F], F]:
    """`click.option` whose environment variable is derived from its long name."""
    long_names = [d for d in param_decls if d.startswith("--")]
    if long_names and "envvar" not in attrs:
        attrs["envvar"] = envvar_for(long_names[0])
    attrs.setdefault("show_envvar", True)
    if "default" in attrs:
        attrs.setdefault("show_default", True)
    return click.option(*param_decls, **attrs)
