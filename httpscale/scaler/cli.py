"""`httpscale scaler`: the KEDA external scaler.

Two modes:
- standalone, with `--config` and/or `--interceptor`: routes from a local-mode config file,
  interceptor admin URLs from the command line;
- on a cluster, with neither: routes from the HTTPScaledObject and InterceptorRoute watches,
  interceptor replicas from the EndpointSlices of the interceptor admin Service.

Every option is also an environment variable `HTTPSCALE_<OPTION>`; `--interceptor` from the
environment takes a whitespace-separated list. The interceptor Service options also read KEDA's
add-on's variables (`KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE`, `_NAMESPACE`, `_PORT`), so a
Deployment written for it keeps its meaning.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from httpscale.clikit import option
from httpscale.model.errors import ConfigError
from httpscale.model.httpso import DEFAULT_RATE_WINDOW
from httpscale.runtime import run, serve_until_signal
from httpscale.scaler.app import Scaler
from httpscale.scaler.discovery import InterceptorDiscovery, StaticDiscovery, parse_admin_port
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
    ScalerShutdown,
    WakeSettings,
)

if TYPE_CHECKING:
    from httpscale.scaler.cluster import ClusterSettings

__all__ = ["scaler_command", "serve", "serve_cluster"]

log = logging.getLogger("httpscale.scaler")

_D_LISTEN = ListenSettings()
_D_COLLECTOR = CollectorSettings()
_D_WAKE = WakeSettings()
_D_SHUTDOWN = ScalerShutdown()


async def serve(
    settings: ScalerSettings, routes: ScalerRouteSource, discovery: InterceptorDiscovery
) -> None:
    """Run a scaler until SIGTERM/SIGINT (clean exit) or until one of its tasks dies (raise)."""
    scaler = Scaler(settings, routes, discovery)
    await scaler.start()
    try:
        await serve_until_signal(scaler.wait())
    except Exception as exc:
        raise click.ClickException(f"scaler failed: {exc!r}") from exc
    finally:
        await scaler.stop()


async def serve_cluster(settings: ScalerSettings, cluster: ClusterSettings) -> None:
    """Run a scaler fed by the cluster (routes and interceptors from watches) until a signal."""
    # Imported here, not above: only cluster mode needs the Kubernetes client, which takes about
    # half a second to import; a standalone scaler (--config, --interceptor) never does.
    from httpscale.kube.config import KubeConfigError, connect
    from httpscale.scaler.cluster import EndpointSliceDiscovery, ScalerRouteWatch

    try:
        kube = await connect(cluster.kube)
    except KubeConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        routes = ScalerRouteWatch(
            kube,
            namespace=cluster.watch_namespace,
            ir_activity_window=cluster.ir_activity_window,
            settings=cluster.watch,
        )
        discovery = EndpointSliceDiscovery(
            kube,
            service=cluster.interceptor_service,
            namespace=cluster.interceptor_namespace,
            port=cluster.interceptor_admin_port,
            settings=cluster.watch,
        )
        log.info(
            "on a cluster via %s: routes from %s, interceptors from Service %s/%s port %s",
            kube.source,
            cluster.watch_namespace or "all namespaces",
            cluster.interceptor_namespace,
            cluster.interceptor_service,
            cluster.interceptor_admin_port,
        )
        await serve(settings, routes, discovery)
    finally:
        await kube.close()


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
@option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Cluster mode: kubeconfig file; default: $KUBECONFIG, then the pod's "
        "ServiceAccount, then ~/.kube/config.")
@option("--context", default=None, help="Cluster mode: kubeconfig context.")
@option("--watch-namespace", default=None,
        help="Cluster mode: routes of this namespace only (default: all namespaces).")
@option("--interceptor-service", default=None,
        envvar=["HTTPSCALE_INTERCEPTOR_SERVICE", "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE"],
        help="Cluster mode: the interceptor admin Service, whose EndpointSlices list the "
        "replicas [default: httpscale-interceptor-admin].")
@option("--interceptor-namespace", default=None,
        envvar=["HTTPSCALE_INTERCEPTOR_NAMESPACE", "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE"],
        help="Cluster mode: that Service's namespace [default: $POD_NAMESPACE, else "
        "httpscale].")
@option("--interceptor-admin-port", default="9090",
        envvar=["HTTPSCALE_INTERCEPTOR_ADMIN_PORT", "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT"],
        help="Cluster mode: the interceptor pods' admin port, a number or a port name of "
        "the Service's slices.")
@option("--activity-window", type=float, default=None,
        help="Cluster mode: seconds one request keeps an InterceptorRoute active "
        f"[default: its requestRate window, else {DEFAULT_RATE_WINDOW:g}].")
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
    kubeconfig: Path | None,
    context: str | None,
    watch_namespace: str | None,
    interceptor_service: str | None,
    interceptor_namespace: str | None,
    interceptor_admin_port: str,
    activity_window: float | None,
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
            shutdown=ScalerShutdown(grpc_grace=grpc_grace),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if config is None and not interceptors:
        cluster = _cluster_settings(
            kubeconfig, context, watch_namespace, interceptor_service, interceptor_namespace,
            interceptor_admin_port, activity_window,
        )
        run(lambda: serve_cluster(settings, cluster))
        return
    try:
        discovery = StaticDiscovery(interceptors)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    routes: tuple[ScalerRoute, ...] = ()
    if config is not None:
        try:
            routes = routes_from_local_config(config)
        except ConfigError as exc:  # names the file and the key already
            raise click.ClickException(str(exc)) from exc
        except ValueError as exc:  # a route the scaler cannot take, which does not
            raise click.ClickException(f"{config}: {exc}") from exc
    if not interceptors:
        log.warning("no --interceptor given: every route reads as idle, health NOT_SERVING")
    run(lambda: serve(settings, StaticRouteSource(routes), discovery))


def _cluster_settings(
    kubeconfig: Path | None,
    context: str | None,
    watch_namespace: str | None,
    interceptor_service: str | None,
    interceptor_namespace: str | None,
    interceptor_admin_port: str,
    activity_window: float | None,
) -> ClusterSettings:
    # Here, not above: as in serve_cluster (the Kubernetes client, for cluster mode only).
    from httpscale.kube.config import KubeSettings
    from httpscale.scaler.cluster import DEFAULT_INTERCEPTOR_SERVICE, ClusterSettings

    if activity_window is not None and not 0 <= activity_window < math.inf:
        raise click.UsageError(f"--activity-window must be >= 0 seconds, got {activity_window}")
    try:
        port = parse_admin_port(interceptor_admin_port)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    return ClusterSettings(
        kube=KubeSettings(kubeconfig=kubeconfig, context=context),
        watch_namespace=watch_namespace or None,
        interceptor_service=interceptor_service or DEFAULT_INTERCEPTOR_SERVICE,
        interceptor_namespace=(
            interceptor_namespace or os.environ.get("POD_NAMESPACE") or "httpscale"
        ),
        interceptor_admin_port=port,
        ir_activity_window=activity_window,
    )
