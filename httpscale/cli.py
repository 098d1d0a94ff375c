"""The `httpscale` command. Every option is also an environment variable HTTPSCALE_<OPTION>."""

from __future__ import annotations

import click

from httpscale import __version__
from httpscale.capacity.cli import capacity_command
from httpscale.doctor.cli import doctor_command
from httpscale.interceptor.cli import interceptor_command
from httpscale.local.cli import local_command, status_command
from httpscale.operator.cli import operator_command
from httpscale.report.cli import report_command
from httpscale.scaler.cli import scaler_command

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="httpscale")
def main() -> None:
    """HTTP scale-to-zero for Kubernetes: interceptor, scaler, operator and local mode; and
    the answers around them: capacity (load one replica takes), report cost, doctor.

    The interceptor proxies HTTP/1.1 in clear text, one process on one core. Not yet
    (planned): TLS, HTTP/2, gRPC proxying, tracing, several cores per interceptor."""


main.add_command(interceptor_command)
main.add_command(scaler_command)
main.add_command(operator_command)
main.add_command(local_command)
main.add_command(status_command)
main.add_command(capacity_command)
main.add_command(report_command)
main.add_command(doctor_command)
