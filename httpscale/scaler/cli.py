"""`httpscale scaler`: the KEDA external scaler, standalone (config file + static interceptors).

Every option is also an environment variable `HTTPSCALE_<OPTION>`; `--interceptor` from the
environment takes a whitespace-separated list.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from httpscale.clikit import option
from httpscale.runtime import run
from httpscale.scaler.app import Scaler
from httpscale.scaler.discovery import InterceptorDiscovery, StaticDiscovery
from httpscale.scaler.routes import (
    ScalerRoute,
    ScalerRouteSource,
    StaticRouteSource,
    routes_from_local_config,
)
from httpscale.scaler.settings import (
    CollectorSettings,
    ListenSettings,
    ScalerSettings,
    ShutdownSettings,
    WakeSettings,
)

__all__ = ["scaler_command", "serve"]

log = logging.getLogger("httpscale.scaler")

_D_LISTEN = ListenSettings()
_D_COLLECTOR = CollectorSettings()
_D_WAKE = WakeSettings()
_D_SHUTDOWN = ShutdownSettings()


async def serve(
    settings: ScalerSettings, routes: ScalerRouteSource, discovery: InterceptorDiscovery
) -> None:
    """Run a scaler until SIGTERM/SIGINT (clean exit) or until one of its tasks dies (raise)."""
    loop = asyncio.get_running_loop()
    scaler = Scaler(settings, routes, discovery)
    await scaler.start()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    failed = asyncio.create_task(scaler.wait(), name="scaler failure watch")
    stopped = asyncio.create_task(stop.wait(), name="signal watch")
    try:
        await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for task in (failed, stopped):
            task.cancel()
        await asyncio.gather(failed, stopped, return_exceptions=True)
        await scaler.stop()
    if failed.done() and not failed.cancelled() and failed.exception() is not None:
        raise click.ClickException(f"scaler failed: {failed.exception()!r}")


@click.command("scaler")
@option(
    "--config",
    "-c",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Local-mode config file whose apps are the routes (keys local/<name>).",
)
@option(
    "--interceptor",
    "interceptors",
    multiple=True,
    metavar="URL",
    help="Admin base URL of one interceptor replica (repeat for each), e.g. http://10.0.0.5:9090.",
)
@option("--host", default=_D_LISTEN.host, help="Bind address of the gRPC and admin servers.")
@option("--grpc-port", type=int, default=_D_LISTEN.grpc_port, help="KEDA external scaler port.")
@option("--admin-port", type=int, default=_D_LISTEN.admin_port, help="/metrics, /livez, /readyz.")
@option(
    "--poll-interval",
    type=float,
    default=_D_COLLECTOR.poll_interval,
    help="Seconds between /queue poll rounds.",
)
@option(
    "--poll-timeout",
    type=float,
    default=_D_COLLECTOR.poll_timeout,
    help="Seconds one /queue poll may take.",
)
@option(
    "--stale-grace",
    type=float,
    default=_D_COLLECTOR.stale_grace,
    help="Seconds a failing replica keeps its last concurrency.",
)
@option(
    "--wake-hold",
    type=float,
    default=_D_WAKE.hold,
    help="Seconds a /wake event holds a route active until a poll confirms it.",
)
@option(
    "--wake/--no-wake",
    envvar="HTTPSCALE_WAKE",
    default=_D_WAKE.enabled,
    help="Keep a /wake stream open to every interceptor for instant activation.",
)
@option(
    "--grpc-grace",
    type=float,
    default=_D_SHUTDOWN.grpc_grace,
    help="Seconds in-flight RPCs get at shutdown.",
)
@option("--log-level", default="INFO", help="Python logging level.")
def scaler_command(
    config: Path | None,
    interceptors: Sequence[str],
    host: str,
    grpc_port: int,
    admin_port: int,
    poll_interval: float,
    poll_timeout: float,
    stale_grace: float,
    wake_hold: float,
    wake: bool,
    grpc_grace: float,
    log_level: str,
) -> None:
    """KEDA external scaler: route load from every interceptor, activation pushed instantly."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
        )
    try:
        settings = ScalerSettings(
            listen=ListenSettings(host=host, grpc_port=grpc_port, admin_port=admin_port),
            collector=CollectorSettings(
                poll_interval=poll_interval, poll_timeout=poll_timeout, stale_grace=stale_grace
            ),
            wake=WakeSettings(enabled=wake, hold=wake_hold),
            shutdown=ShutdownSettings(grpc_grace=grpc_grace),
        )
        discovery = StaticDiscovery(interceptors)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    routes: tuple[ScalerRoute, ...] = ()
    if config is not None:
        try:
            routes = routes_from_local_config(config)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"{config}: {exc}") from exc
    if not interceptors:
        log.warning("no --interceptor given: every route reads as idle, health NOT_SERVING")
    run(lambda: serve(settings, StaticRouteSource(routes), discovery))
