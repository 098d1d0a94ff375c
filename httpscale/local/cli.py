"""`httpscale local -c FILE` (`httpscale status`, which reads what it serves, is in `status.py`)."""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path
from typing import Any

import click

from httpscale.clikit import option
from httpscale.config.local_file import load_local_config
from httpscale.interceptor.settings import (
    interceptor_options,
    listen_from_file,
    settings_from_options,
    tls_from_file,
)
from httpscale.interceptor.tls import TlsConfigError
from httpscale.local.autoscaler import AutoscalerSettings
from httpscale.local.plan import plan_apps
from httpscale.local.runner import LocalRunner, LocalSettings
from httpscale.local.supervisor import SupervisorSettings
from httpscale.model.errors import ConfigError
from httpscale.runtime import run
from httpscale.tracing import TracingConfigError

__all__ = ["local_command"]

log = logging.getLogger("httpscale.local")

_READINESS_DELAY = "interceptor__shutdown__readiness_delay"  # see interceptor_options


def _setup_logging() -> None:
    # Leave an existing configuration alone (the main CLI group may have set one up).
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
        )


@click.command("local")
@option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Local-mode YAML file (see examples/local.yaml).",
)
@option(
    "--sync-interval",
    type=float,
    default=AutoscalerSettings().sync_interval,
    help="Seconds between autoscaler metric samples.",
)
@option(
    "--drain-replica-timeout",
    type=float,
    default=SupervisorSettings().drain_timeout,
    help="Seconds a leaving replica may take to finish its in-flight requests.",
)
@interceptor_options
def local_command(
    config_path: Path, sync_interval: float, drain_replica_timeout: float, **options: Any
) -> None:
    """Run the interceptor and a local autoscaler that starts each app as OS processes,
    from zero replicas to its maximum and back. No Kubernetes needed."""
    try:
        config = load_local_config(config_path)
        plans = plan_apps(config.apps)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    # The file's `listen`/`admin` addresses (its defaults included: local mode binds loopback),
    # unless the command line or its environment twin names one.
    listen = listen_from_file(click.get_current_context(), config.listen, config.admin)
    # The file's `tls` section likewise, field by field (--tls-* options win).
    tls = tls_from_file(click.get_current_context(), config.tls)
    shutdown: dict[str, float] = {}
    source = click.get_current_context().get_parameter_source(_READINESS_DELAY)
    if source is click.core.ParameterSource.DEFAULT:
        # The delay lets a load balancer notice /readyz turning 503; on one machine there is
        # none, so Ctrl-C should not wait for it unless asked to.
        shutdown["readiness_delay"] = 0.0
    settings = LocalSettings(
        interceptor=settings_from_options(options, listen=listen, shutdown=shutdown, tls=tls),
        autoscaler=AutoscalerSettings(
            sync_interval=sync_interval,
            supervisor=SupervisorSettings(drain_timeout=drain_replica_timeout),
        ),
    )
    _setup_logging()
    try:
        runner = LocalRunner(plans, settings)
        run(runner.run)
    except KeyboardInterrupt:
        # A Ctrl-C that arrived before the signal handlers were installed.
        sys.exit(130)
    except (TlsConfigError, TracingConfigError) as exc:  # --tls-* options, OTEL_* variables
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            log.exception("httpscale local: stopped by an error (every app process was stopped)")
            sys.exit(1)
        raise click.ClickException(f"cannot listen on the configured addresses: {exc}") from None
    except Exception:
        log.exception("httpscale local: stopped by an error (every app process was stopped)")
        sys.exit(1)
    if runner.forced:
        sys.exit(130)
