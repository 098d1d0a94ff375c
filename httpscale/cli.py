"""The `httpscale` command. Every option is also an environment variable HTTPSCALE_<OPTION>."""

from __future__ import annotations

import importlib
from typing import Any

import click

from httpscale import __version__

__all__ = ["main"]

# Each command's module, imported when that command is looked up rather than all of them here:
# `httpscale scaler` then loads the scaler alone, not the proxy (whose import decides which
# build of its hot path runs, httpscale/dataplane.py), the Kubernetes client, nor locust's
# wrapper. `httpscale --help` still imports them all, for their one-line help. The edges are
# strings, so import-linter does not see them: the CLI is the top layer and may import anything.
_COMMANDS: dict[str, str] = {
    "interceptor": "httpscale.interceptor.cli:interceptor_command",
    "scaler": "httpscale.scaler.cli:scaler_command",
    "operator": "httpscale.operator.cli:operator_command",
    "local": "httpscale.local.cli:local_command",
    "status": "httpscale.local.status:status_command",
    "capacity": "httpscale.capacity.cli:capacity_command",
    "report": "httpscale.report.cli:report_command",
    "doctor": "httpscale.doctor.cli:doctor_command",
}


class _Commands(dict[str, click.Command]):
    """`Group.commands` whose entries are imported on first lookup (`main.commands["scaler"]`
    works as with an ordinary group)."""

    def __missing__(self, name: str) -> click.Command:
        module, _, attr = _COMMANDS[name].partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        self[name] = command
        return command


class _LazyGroup(click.Group):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Commands(self.commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name not in _COMMANDS:
            return None
        return self.commands[cmd_name]


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="httpscale")
def main() -> None:
    """HTTP scale-to-zero for Kubernetes: interceptor, scaler, operator and local mode; and
    the answers around them: capacity (load one replica takes), report cost, doctor.

    The interceptor proxies HTTP/1.1 and HTTP/2 (gRPC too), in clear text or TLS, one worker
    process per CPU it is given (--workers). Not yet (planned): InterceptorRoute
    sessionPersistence."""
