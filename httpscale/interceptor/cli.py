"""`httpscale interceptor`: the data plane on its own.

Routes come from the cluster (HTTPScaledObjects, InterceptorRoutes, EndpointSlices: see
httpscale/kube/routes.py) or, with `--config`, from a local-mode file whose apps have static
upstreams; the file's `listen` and `admin` addresses and its `tls` section, where it writes
them, are the defaults.
Every option is also an environment variable `HTTPSCALE_<OPTION>`.

`--workers N` (N >= 2; the default is the CPUs the process may use) runs a parent that starts N
copies of this command as workers on one port (httpscale/interceptor/workers/, docs/workers.md);
the hidden `--worker-*` options are how the parent tells a worker what it is.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from httpscale.clikit import option
from httpscale.config.route_source import FileRouteSource
from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.settings import (
    InterceptorSettings,
    interceptor_options,
    listen_from_file,
    settings_from_options,
    tls_from_file,
)
from httpscale.interceptor.tls import TlsConfigError
from httpscale.interceptor.workers.cpus import available_cpus
from httpscale.interceptor.workers.worker import WorkerArgs, tag_logs, watch_lifeline
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
@option("--workers", type=int, default=None, show_default="the CPUs this process may use",
        help="Worker processes serving the proxy (and TLS) port, each on its own SO_REUSEPORT "
        "socket, under a parent whose admin server sums theirs (docs/workers.md). 1: a single "
        "process, no parent.")
@option("--workers-queue-sample-interval", type=float, default=1.0, show_default=True,
        help="With --workers N >= 2: seconds without a /queue request (a scaler's poll) after "
        "which the parent samples its workers' /queue itself, bounding what a crashed worker's "
        "count can lose; 0: never.")
@option("--workers-scrape-sample-interval", type=float, default=0.0, show_default=True,
        help="The same for /metrics and /status; 0: never (each sample takes a worker ~1 s of "
        "its event loop at 10,000 routes; Prometheus' scrapes are the samples).")
@click.option("--worker-index", type=int, default=0, hidden=True)
@click.option("--worker-fds", default="", hidden=True)
@click.option("--worker-admin-socket", default="", hidden=True)
@click.option("--worker-lifeline", type=int, default=-1, hidden=True)
@interceptor_options
def interceptor_command(
    config_path: str | None,
    kubeconfig: Path | None,
    context: str | None,
    watch_namespace: str | None,
    log_level: str,
    workers: int | None,
    workers_queue_sample_interval: float,
    workers_scrape_sample_interval: float,
    worker_index: int,
    worker_fds: str,
    worker_admin_socket: str,
    worker_lifeline: int,
    **options: Any,
) -> None:
    """Run the interceptor (proxy + admin server) until SIGTERM/SIGINT."""
    configure_logging(log_level)
    worker: WorkerArgs | None = None
    count = 1
    if worker_fds:
        try:
            worker = WorkerArgs.parse(worker_index, worker_fds, worker_admin_socket,
                                      worker_lifeline)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        tag_logs(worker.index)
    else:
        count = available_cpus() if workers is None else workers
        if count < 1:
            raise click.BadParameter(f"must be at least 1, got {count}", param_hint="--workers")
        for hint, value in (("--workers-queue-sample-interval", workers_queue_sample_interval),
                            ("--workers-scrape-sample-interval", workers_scrape_sample_interval)):
            if not value >= 0:
                raise click.BadParameter(f"must be >= 0 (0: never), got {value}",
                                         param_hint=hint)
    sampling = (workers_queue_sample_interval, workers_scrape_sample_interval)
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
        if count > 1:
            _run_parent(settings, count, sampling)
            return
        _run_reporting_tls_errors(
            lambda: _serve(_interceptor(settings, worker), source.run, worker))
        return

    settings = settings_from_options(options)
    if count > 1:  # each worker watches the cluster itself; the parent does not connect
        _run_parent(settings, count, sampling)
        return
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
            interceptor = _interceptor(settings, worker)
            cluster = ClusterRouteSource(kube, namespace=watch_namespace or None)

            async def feed(target: Interceptor) -> None:
                attach(target, cluster)
                log.info("routes from the cluster via %s (%s)", kube.source,
                         watch_namespace or "all namespaces")
                await cluster.run(target)
                raise RuntimeError("the cluster route source stopped")

            await _serve(interceptor, feed, worker)
        finally:
            await kube.close()

    _run_reporting_tls_errors(cluster_main)


def _interceptor(settings: InterceptorSettings, worker: WorkerArgs | None) -> Interceptor:
    return Interceptor(settings, sockets=None if worker is None else worker.sockets)


def _run_parent(settings: InterceptorSettings, count: int, sampling: tuple[float, float]) -> None:
    # Imported here, not above: a single process or a worker never runs the parent's modules
    # (its supervisor and summing admin), so it does not load them.
    from httpscale.interceptor.workers.parent import run_parent
    from httpscale.interceptor.workers.parent_admin import ParentAdminSettings
    from httpscale.interceptor.workers.supervisor import WorkerStartError

    base = _worker_base_argv(click.get_current_context())

    def command(index: int, fds: Sequence[int], admin_socket: str, lifeline: int) -> list[str]:
        return [*base, "--worker-index", str(index), "--worker-fds", ",".join(map(str, fds)),
                "--worker-admin-socket", admin_socket, "--worker-lifeline", str(lifeline)]

    try:
        admin = ParentAdminSettings(queue_sample_interval=sampling[0],
                                    scrape_sample_interval=sampling[1])
        run(lambda: run_parent(settings, count, command, admin))
    except (WorkerStartError, OSError, TlsConfigError) as exc:
        raise click.ClickException(str(exc)) from None


#: Options for the parent alone: a worker gets neither (it is one of the N and samples nothing).
_PARENT_ONLY = (None, "workers", "workers_queue_sample_interval", "workers_scrape_sample_interval")


def _worker_base_argv(ctx: click.Context) -> list[str]:
    """`python -m httpscale interceptor` with the options given on this command line (those
    from the environment reach the workers by inheritance), without --workers."""
    argv = [sys.executable, "-m", "httpscale", "interceptor"]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.hidden or param.name in _PARENT_ONLY:
            continue
        assert param.name is not None
        if ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            if value:
                argv.append(param.opts[0])
            elif param.secondary_opts:
                argv.append(param.secondary_opts[0])
            continue
        for item in value if param.multiple else (value,):
            argv += [param.opts[0], _option_text(item)]
    return argv


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _run_reporting_tls_errors(main: Any) -> None:
    try:
        run(main)
    except (TlsConfigError, TracingConfigError) as exc:  # from Interceptor.start, before it listens
        raise click.ClickException(str(exc)) from None


async def _serve(interceptor: Interceptor, feed: Any, worker: WorkerArgs | None) -> None:
    """Start the interceptor, run `feed(interceptor)` (a route source) beside it until a stop
    signal, then drain. The source keeps running through the drain: endpoints can still move
    while in-flight requests finish."""
    await interceptor.start()
    if worker is not None:
        interceptor.tasks.spawn(watch_lifeline(worker.lifeline), "parent lifeline")
    tune_gc_for_serving()
    try:
        # A route source must not end: its returning is a failure too.
        interceptor.tasks.spawn(feed(interceptor), "route source")
        received = await serve_until_signal(interceptor.wait())
        log.info("received %s, draining", received.name)
    finally:
        await interceptor.shutdown()
