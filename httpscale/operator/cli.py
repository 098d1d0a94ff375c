"""`httpscale operator`: HTTPScaledObjects -> KEDA ScaledObjects, status and events.

Every option is also an environment variable `HTTPSCALE_<OPTION>`; `--watch-namespace` also
reads KEDA's `KEDA_HTTP_OPERATOR_WATCH_NAMESPACE`, so a Deployment written for KEDA's
add-on keeps its meaning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from httpscale.clikit import option
from httpscale.kube.config import KubeConfigError, KubeSettings, connect
from httpscale.kube.leader import LeaderElectionSettings
from httpscale.operator.app import Operator
from httpscale.operator.settings import AdminSettings, OperatorSettings, ScalerRef
from httpscale.runtime import configure_logging, run, serve_until_signal

__all__ = ["operator_command", "serve"]

log = logging.getLogger("httpscale.operator")

_D = OperatorSettings()
_D_LEADER = LeaderElectionSettings()
_D_SCALER = ScalerRef()


async def serve(settings: OperatorSettings) -> None:
    """Run an operator until SIGTERM/SIGINT (clean exit) or until a task of it dies (raise)."""
    try:
        kube = await connect(settings.kube)
    except KubeConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    operator = Operator(settings, kube)
    try:
        await operator.start()
        try:
            await serve_until_signal(operator.wait())
        except Exception as exc:
            raise click.ClickException(f"operator failed: {exc!r}") from exc
        finally:
            await operator.stop()
    finally:
        await kube.close()


@click.command("operator")
@option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Kubeconfig file; default: $KUBECONFIG, then the pod's ServiceAccount, then "
        "~/.kube/config.")
@option("--context", default=None, help="Kubeconfig context (default: its current one).")
@option("--watch-namespace", default=None,
        envvar=["HTTPSCALE_WATCH_NAMESPACE", "KEDA_HTTP_OPERATOR_WATCH_NAMESPACE"],
        help="Reconcile objects in this namespace only (default: all namespaces).")
@option("--namespace", default=None,
        help="The operator's own namespace: its Lease, and the scaler's default address. "
        "Default: $POD_NAMESPACE, else httpscale.")
@option("--scaler-service", default=_D_SCALER.service,
        help="The scaler's gRPC Service, in --namespace.")
@option("--scaler-port", type=int, default=_D_SCALER.port, help="The scaler's gRPC port.")
@option("--scaler-address", default=None,
        help="The whole scalerAddress KEDA dials (host:port), instead of the three above.")
@option("--leader-elect/--no-leader-elect", default=True,
        help="Elect one writer among replicas through a Lease.")
@option("--lease-name", default=_D_LEADER.lease_name, help="Name of the Lease.")
@option("--lease-duration", type=float, default=_D_LEADER.lease_duration,
        help="Seconds a standby waits, after the last renewal it saw, before taking over.")
@option("--renew-deadline", type=float, default=_D_LEADER.renew_deadline,
        help="Seconds the leader keeps leading without a successful renewal.")
@option("--retry-period", type=float, default=_D_LEADER.retry_period,
        help="Seconds between renewals and between a standby's attempts.")
@option("--workers", type=int, default=_D.workers, help="Objects reconciled at once.")
@option("--admin-host", default=AdminSettings().host,
        help="Bind address of /healthz, /readyz, /metrics, /status.")
@option("--admin-port", type=int, default=AdminSettings().port, help="Admin port.")
@option("--log-level", default="info", help="debug, info, warning or error.")
def operator_command(
    kubeconfig: Path | None,
    context: str | None,
    watch_namespace: str | None,
    namespace: str | None,
    scaler_service: str,
    scaler_port: int,
    scaler_address: str | None,
    leader_elect: bool,
    lease_name: str,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    workers: int,
    admin_host: str,
    admin_port: int,
    log_level: str,
) -> None:
    """Reconcile HTTPScaledObjects into KEDA ScaledObjects; validate InterceptorRoutes."""
    configure_logging(log_level)
    own_namespace = namespace or os.environ.get("POD_NAMESPACE") or "httpscale"
    try:
        settings = OperatorSettings(
            kube=KubeSettings(kubeconfig=kubeconfig, context=context),
            watch_namespace=watch_namespace or None,
            scaler=ScalerRef(
                service=scaler_service,
                namespace=own_namespace,
                port=scaler_port,
                address=scaler_address or None,
            ),
            leader=LeaderElectionSettings(
                lease_name=lease_name,
                lease_namespace=own_namespace,
                lease_duration=lease_duration,
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            ),
            leader_election=leader_elect,
            workers=workers,
            admin=AdminSettings(host=admin_host, port=admin_port),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    run(lambda: serve(settings))
