"""`httpscale interceptor`: the data plane on its own.

Routes come from the cluster (HTTPScaledObjects, InterceptorRoutes, EndpointSlices: see
httpscale/kube/routes.py) or, with `--config`, from a local-mode file whose apps have static
upstreams; the file's `listen` and `admin` addresses and its `tls` section, where it writes
them, are the defaults.
Every option is also an environment variable `HTTPSCALE_<OPTION>`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from httpscale.clikit import option
from httpscale.config.route_source import FileRouteSource
from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.settings import (
    interceptor_options,
    listen_from_file,
    settings_from_options,
    tls_from_file,
)
from httpscale.interceptor.tls import TlsConfigError
from httpscale.model.errors import ConfigError
from httpscale.runtime import configure_logging, run, serve_until_signal, tune_gc_for_serving
from httpscale.tracing import TracingConfigError

__all__ = ["interceptor_command"]

log = logging.getLogger(__name__)


@click.command("interceptor")
@option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
        help="Routes from a local-mode file (its apps), and its listen/admin addresses unless "
        "--host, --port, --admin-host or --admin-port (or their variables) are given, and its "
        "tls section (each --tls-* option given wins). "
        "Without it: routes and endpoints from the cluster.")
@option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Cluster mode: kubeconfig file; default: $KUBECONFIG, then the pod's "
        "ServiceAccount, then ~/.kube/config.")
@option("--context", default=None, help="Cluster mode: kubeconfig context.")
@option("--watch-namespace", default=None,
        help="Cluster mode: serve routes of this namespace only (default: all namespaces).")
@option("--log-level", default="info", help="debug, info, warning or error.")
@interceptor_options
def interceptor_command(
    config_path: str | None,
    kubeconfig: Path | None,
    context: str | None,
    watch_namespace: str | None,
    log_level: str,
    **options: Any,
) -> None:
    """Run the interceptor (proxy + admin server) until SIGTERM/SIGINT."""
    configure_logging(log_level)
    if config_path is not None:
        source = FileRouteSource(config_path)
        try:
            config = source.load()
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        # Only the addresses the file writes: one that leaves them out keeps the interceptor's
        # defaults (all interfaces, as in a pod), not local mode's loopback.
        listen = listen_from_file(
            click.get_current_context(),
            config.listen if "listen" in config.given else None,
            config.admin if "admin" in config.given else None,
        )
        tls = tls_from_file(click.get_current_context(), config.tls)
        settings = settings_from_options(options, listen=listen, tls=tls)
        _run_reporting_tls_errors(lambda: _serve(Interceptor(settings), source.run))
        return

    settings = settings_from_options(options)
    # Imported here, not above: the Kubernetes client takes about half a second to import,
    # which file mode never needs.
    from httpscale.interceptor.cluster import attach
    from httpscale.kube.config import KubeConfigError, KubeSettings, connect
    from httpscale.kube.routes import ClusterRouteSource

    async def cluster_main() -> None:
        try:
            kube = await connect(KubeSettings(kubeconfig=kubeconfig, context=context))
        except KubeConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        try:
            interceptor = Interceptor(settings)
            cluster = ClusterRouteSource(kube, namespace=watch_namespace or None)

            async def feed(target: Interceptor) -> None:
                attach(target, cluster)
                log.info("routes from the cluster via %s (%s)", kube.source,
                         watch_namespace or "all namespaces")
                await cluster.run(target)
                raise RuntimeError("the cluster route source stopped")

            await _serve(interceptor, feed)
        finally:
            await kube.close()

    _run_reporting_tls_errors(cluster_main)


def _run_reporting_tls_errors(main: Any) -> None:
    try:
        run(main)
    except (TlsConfigError, TracingConfigError) as exc:  # from Interceptor.start, before it listens
        raise click.ClickException(str(exc)) from None


async def _serve(interceptor: Interceptor, feed: Any) -> None:
    """Start the interceptor, run `feed(interceptor)` (a route source) beside it until a stop
    signal, then drain. The source keeps running through the drain: endpoints can still move
    while in-flight requests finish."""
    await interceptor.start()
    tune_gc_for_serving()
    try:
        # A route source must not end: its returning is a failure too.
        interceptor.tasks.spawn(feed(interceptor), "route source")
        received = await serve_until_signal(interceptor.wait())
        log.info("received %s, draining", received.name)
    finally:
        await interceptor.shutdown()
