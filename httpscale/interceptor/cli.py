"""`httpscale interceptor`: the data plane on its own (routes from a file, until the
Kubernetes route source lands)."""

from __future__ import annotations

import logging
from typing import Any

import click

from httpscale.clikit import option
from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.settings import interceptor_options, settings_from_options
from httpscale.runtime import configure_logging, run, wait_for_stop_signal

__all__ = ["interceptor_command"]

log = logging.getLogger(__name__)


@click.command("interceptor")
@option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
        help="Route specs in the local-mode file format (apps with hosts, pathPrefixes, run).")
@option("--log-level", default="info", help="debug, info, warning or error.")
@interceptor_options
def interceptor_command(config_path: str, log_level: str, **options: Any) -> None:
    """Run the interceptor (proxy + admin server) until SIGTERM/SIGINT."""
    from httpscale.config import load_local_config
    from httpscale.model.errors import ConfigError

    configure_logging(log_level)
    try:
        config = load_local_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    settings = settings_from_options(options)

    async def main() -> None:
        interceptor = Interceptor(settings)
        await interceptor.start()
        interceptor.set_routes([app.route for app in config.apps])
        sig = await wait_for_stop_signal()
        log.info("received %s, draining", sig.name)
        await interceptor.shutdown()

    run(main)
