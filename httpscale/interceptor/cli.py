"""`httpscale interceptor`: the data plane on its own (routes from a file, until the
Kubernetes route source lands)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from httpscale.clikit import option
from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.settings import interceptor_options, settings_from_options
from httpscale.runtime import configure_logging, run, tune_gc_for_serving, wait_for_stop_signal

__all__ = ["interceptor_command"]

log = logging.getLogger(__name__)


@click.command("interceptor")
@option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
        help="Routes in the local-mode file format (its apps; listen/admin come from the "
        "options here).")
@option("--log-level", default="info", help="debug, info, warning or error.")
@interceptor_options
def interceptor_command(config_path: str, log_level: str, **options: Any) -> None:
    """Run the interceptor (proxy + admin server) until SIGTERM/SIGINT."""
    from httpscale.model.errors import ConfigError
    from httpscale.routing.sources import FileRouteSource

    configure_logging(log_level)
    source = FileRouteSource(config_path)
    try:
        source.load()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    settings = settings_from_options(options)

    async def main() -> None:
        interceptor = Interceptor(settings)
        await interceptor.start()
        tune_gc_for_serving()
        routes = asyncio.create_task(source.run(interceptor), name="route-source")
        try:
            stop = asyncio.create_task(wait_for_stop_signal(), name="stop-signal")
            done, _ = await asyncio.wait({routes, stop}, return_when=asyncio.FIRST_COMPLETED)
            if routes in done:  # a route source must not end: that is a failure
                stop.cancel()
                routes.result()
                raise RuntimeError("the route source stopped")
            log.info("received %s, draining", stop.result().name)
        finally:
            routes.cancel()
            await asyncio.gather(routes, return_exceptions=True)
            await interceptor.shutdown()

    run(main)
