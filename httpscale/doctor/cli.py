"""`httpscale doctor`: check a cluster (or a local-mode file) and explain each problem.

Exit status: 0 when nothing failed (warnings allowed), 1 when something did, 2 on a usage
error. Every option is also an environment variable `HTTPSCALE_<OPTION>`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import click

from httpscale.clikit import option
from httpscale.doctor.cluster import check_cluster
from httpscale.doctor.components import proxy_port
from httpscale.doctor.findings import Finding, Status, exit_code
from httpscale.doctor.gather import Unreachable, gather, send_probes
from httpscale.doctor.live import judge, plan_probes
from httpscale.doctor.local import run_local
from httpscale.doctor.output import format_json, format_text
from httpscale.doctor.snapshot import ClusterSnapshot
from httpscale.kube.config import KubeConfigError, KubeSettings, connect
from httpscale.runtime import run

__all__ = ["DoctorSettings", "doctor_command", "run_cluster"]


@dataclass(frozen=True, slots=True)
class DoctorSettings:
    kube: KubeSettings = field(default_factory=KubeSettings)
    namespace: str = "httpscale"  # where httpscale is installed
    app_namespace: str | None = None  # check only the objects of this namespace; None: all
    live: bool = True  # send a request through the interceptor to each route
    wake: bool = False  # ... also to routes at zero, waking their apps
    proxy: str | None = None  # send live requests to this URL, not through the API server
    request_timeout: float = 10.0  # seconds, each live request to a running app
    wake_timeout: float = 120.0  # seconds, each live request that wakes an app


def _read_problems(snap: ClusterSnapshot) -> list[Finding]:
    return [Finding("cluster.read", what, Status.WARN,
                    f"cannot read: {why}; the checks that need it are skipped",
                    "run the doctor with rights to get and list it (cluster-admin, or a "
                    "ClusterRole with get/list on everything docs/doctor.md lists)")
            for what, why in sorted(snap.unreadable.items())]


async def run_cluster(settings: DoctorSettings) -> tuple[list[Finding], str]:
    """Every cluster check, and the live requests; (findings, what was checked)."""
    where = f"httpscale in namespace {settings.namespace}"
    try:
        kube = await connect(settings.kube)
    except KubeConfigError as exc:
        return [Finding("cluster.api", "cluster configuration", Status.FAIL, str(exc),
                        "pass --kubeconfig (and --context), or set KUBECONFIG")], where
    host = str(kube.api.configuration.host)
    target = f"{host} ({kube.source}), {where}"
    try:
        try:
            snap = await gather(kube, settings.namespace, settings.app_namespace)
        except Unreachable as exc:
            return [Finding("cluster.api", host, Status.FAIL,
                            f"the API server does not answer: {exc}",
                            "is the cluster up, and this the right kubeconfig and context?")
                    ], target
        checked, index = check_cluster(snap)
        findings = [
            Finding("cluster.api", host, Status.OK,
                    f"answers ({kube.source})"),
            *_read_problems(snap), *checked,
        ]
        if settings.live:
            probes, skipped = plan_probes(snap, index, wake=settings.wake)
            results = await send_probes(
                kube, probes, namespace=settings.namespace, port=proxy_port(snap),
                proxy=settings.proxy, time_limit=settings.request_timeout,
                wake_time_limit=settings.wake_timeout)
            findings += [judge(p, r) for p, r in zip(probes, results, strict=True)]
            findings += skipped
        return findings, target
    finally:
        await kube.close()


def _emit(findings: list[Finding], target: str, output: str) -> NoReturn:
    if output == "json":
        click.echo(format_json(findings, target))
    else:
        encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
        click.echo(format_text(findings, target, unicode="utf" in encoding,
                               color=sys.stdout.isatty()))
    sys.exit(exit_code(findings))


@click.command("doctor")
@option("--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Kubeconfig file; default: $KUBECONFIG, then the pod's ServiceAccount, then "
        "~/.kube/config.")
@option("--context", default=None, help="Kubeconfig context (default: its current one).")
@option("--namespace", default=None,
        help="Where httpscale is installed. Default: $POD_NAMESPACE, else httpscale.")
@option("--app-namespace", default=None,
        help="Check the HTTPScaledObjects, InterceptorRoutes, Ingresses and HTTPRoutes of "
        "this namespace only (default: every namespace).")
@option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
        default=None, help="Check this local-mode file (and the httpscale running it) instead "
        "of a cluster.")
@option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
        help="text for people, json for scripts.")
@option("--live/--no-live", default=True,
        help="Send one request through the interceptor to each route whose app is up.")
@option("--wake", is_flag=True, default=False,
        help="Also send it to apps at zero, waking them (they then stay up for their "
        "scaledownPeriod).")
@option("--proxy", default=None,
        help="Send the live requests to this URL (e.g. http://127.0.0.1:8080 with `kubectl "
        "port-forward -n httpscale svc/httpscale-interceptor-proxy 8080`) instead of through "
        "the API server's service proxy.")
@option("--request-timeout", type=float, default=DoctorSettings().request_timeout,
        help="Seconds for each API request and each live request.")
@option("--wake-timeout", type=float, default=DoctorSettings().wake_timeout,
        help="Seconds for a live request that wakes an app (--wake).")
def doctor_command(
    kubeconfig: Path | None,
    context: str | None,
    namespace: str | None,
    app_namespace: str | None,
    config_path: Path | None,
    output: str,
    live: bool,
    wake: bool,
    proxy: str | None,
    request_timeout: float,
    wake_timeout: float,
) -> None:
    """Check that httpscale works, and say how to fix what does not: KEDA, httpscale's
    components, every HTTPScaledObject and InterceptorRoute, the Ingresses and HTTPRoutes in
    front, and a live request to each route. With --config: a local-mode file instead.
    Exit status 0 when nothing failed, 1 when something did."""
    if config_path is not None:
        cluster_only = {"--kubeconfig": kubeconfig, "--context": context,
                        "--app-namespace": app_namespace, "--proxy": proxy}
        given = [name for name, value in cluster_only.items() if value is not None]
        if given or wake:
            raise click.UsageError(f"{', '.join(given or ['--wake'])}: cluster options, not "
                                   "for --config (a local-mode file)")
        findings, target = run_local(config_path)
        _emit(findings, target, output)
    if wake and not live:
        raise click.UsageError("--wake sends live requests: it does not go with --no-live")
    if request_timeout <= 0 or wake_timeout <= 0:
        raise click.UsageError("timeouts must be positive")
    if proxy is not None and not proxy.startswith(("http://", "https://")):
        raise click.UsageError(f"--proxy: expected an http:// or https:// URL, got {proxy!r}")
    settings = DoctorSettings(
        kube=KubeSettings(kubeconfig=kubeconfig, context=context,
                          request_timeout=request_timeout),
        namespace=namespace or os.environ.get("POD_NAMESPACE") or "httpscale",
        app_namespace=app_namespace or None,
        live=live,
        wake=wake,
        proxy=proxy,
        request_timeout=request_timeout,
        wake_timeout=wake_timeout,
    )
    result: list[tuple[list[Finding], str]] = []

    async def main() -> None:
        result.append(await run_cluster(settings))

    try:
        run(main)
    except KeyboardInterrupt:
        sys.exit(130)
    _emit(*result[0], output)
