"""`httpscale capacity URL`: find the knee of one app and recommend its scalingMetric targets.

The command line around `httpscale.capacity.finder`: options to settings (bad input exits 2
naming the option), SIGINT/SIGTERM to the finder's `stop`, the outcome to stdout (text, or one
JSON object with `--output json`; progress goes to stderr).

Exit status: 0 with a recommendation, 1 without one or on a failure, 2 for a bad option, URL or
target, 130 when interrupted (after printing what was measured).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import click

from httpscale.capacity.core import KneeRules, StepPlan
from httpscale.capacity.display import Progress
from httpscale.capacity.finder import (
    CapacitySettings,
    ClusterTarget,
    LoadError,
    find_capacity,
)
from httpscale.capacity.hold import HoldError
from httpscale.capacity.outcome import Outcome, format_text, to_json
from httpscale.capacity.recommend import DEFAULT_HEADROOM
from httpscale.capacity.target import TargetError
from httpscale.capacity.wire import LoadSpec
from httpscale.clikit import option
from httpscale.kube.config import KubeSettings
from httpscale.model.durations import parse_duration
from httpscale.model.errors import ConfigError
from httpscale.runtime import StopSignals

__all__ = ["capacity_command"]

_MIN_STEP = 0.1  # seconds: the shortest measurement window accepted


class _TargetProblem(click.ClickException):
    exit_code = 2


def _seconds(value: str, name: str) -> float:
    try:
        return parse_duration(value, key=name)
    except ConfigError as exc:
        raise click.BadParameter(exc.message, param_hint=name) from None


def _fraction(value: str, name: str) -> float:
    """`25%` or `0.25`."""
    text = value.strip()
    try:
        x = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a fraction (0.25) or a percentage (25%)",
                                 param_hint=name) from None
    if not 0 <= x < 1:
        raise click.BadParameter(f"{value!r} must be at least 0 and below 100%",
                                 param_hint=name)
    return x


@click.command("capacity")
@click.argument("url")
@option("--replicas", type=click.IntRange(min=1), default=1,
        help="Replicas held while measuring; results are per replica.")
@option("--slo-p99", default="1s", help="Knee rule: p99 latency above this (e.g. 250ms; 0: none).")
@option("--error-budget", default="1%", help="Knee rule: failed requests above this share.")
@option("--headroom", default=f"{DEFAULT_HEADROOM:.0%}",
        help="Share of the knee kept free in the recommended targets.")
@option("--max-duration", default="5m", help="Bound on the whole load run.")
@option("--max-requests", type=click.IntRange(min=1), default=LoadSpec("", "", "").max_requests,
        help="Bound on requests sent in the whole run.")
@option("--max-users", type=click.IntRange(min=1), default=StepPlan().max_users,
        help="Bound on concurrent users (requests in flight).")
@option("--step-duration", default="10s", help="Measured time per step.")
@option("--warmup", default="3s", help="Unmeasured time per step after its users start.")
@option("--report", type=click.Path(dir_okay=False, writable=True, path_type=Path),
        default=None, help="Write locust's HTML report of the whole run there.")
@option("--output", type=click.Choice(["text", "json"]), default="text",
        help="json: one object on stdout (progress stays on stderr).")
@option("--host-header", default=None, help="Host header to send (default: the URL's).")
@option("--hold-timeout", default="3m", help="Bound on waiting for the held replicas.")
@option("--admin", default="http://127.0.0.1:9090",
        help="Local mode: the admin address of `httpscale local`.")
@option("--app", default=None, help="Local mode: the app (default: the one serving the URL).")
@option("--cluster", is_flag=True, default=False,
        help="On a cluster (implied by --kubeconfig, --context, --namespace, --scaledobject).")
@option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Cluster: kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config).")
@option("--context", default=None, help="Cluster: kubeconfig context.")
@option("--namespace", default=None,
        help="Cluster: where the app is (default: search every namespace).")
@option("--scaledobject", default=None,
        help="Cluster: the ScaledObject to pause (default: the HTTPScaledObject's serving URL).")
def capacity_command(
    url: str,
    replicas: int,
    slo_p99: str,
    error_budget: str,
    headroom: str,
    max_duration: str,
    max_requests: int,
    max_users: int,
    step_duration: str,
    warmup: str,
    report: Path | None,
    output: str,
    host_header: str | None,
    hold_timeout: str,
    admin: str,
    app: str | None,
    cluster: bool,
    kubeconfig: Path | None,
    context: str | None,
    namespace: str | None,
    scaledobject: str | None,
) -> None:
    """Find how much one replica of the app at URL serves: raise load in steps through the
    interceptor while the app is held at --replicas, stop at the knee (p99 above the SLO, errors
    above the budget, or throughput no longer rising), and recommend scalingMetric targets.

    URL is the route as users reach it, e.g. http://hello.localhost:8080/. Only that URL is
    requested (GET). Ctrl-C stops it with what was measured so far."""
    slo = _seconds(slo_p99, "--slo-p99")
    step = _seconds(step_duration, "--step-duration")
    if step < _MIN_STEP:
        raise click.BadParameter(
            f"{step_duration!r} is too short to measure anything (at least {_MIN_STEP:g}s)",
            param_hint="--step-duration",
        )
    warm = _seconds(warmup, "--warmup")
    bound = _seconds(max_duration, "--max-duration")
    if bound < warm + step:
        raise click.BadParameter(
            f"{max_duration!r} leaves no time for one step (--warmup {warmup} + "
            f"--step-duration {step_duration})",
            param_hint="--max-duration",
        )
    load = LoadSpec(
        "",
        "",
        "",
        plan=StepPlan(max_users=max_users),
        rules=KneeRules(
            slo_p99=slo or None, error_budget=_fraction(error_budget, "--error-budget")
        ),
        warmup=warm,
        step_duration=step,
        max_duration=bound,
        max_requests=max_requests,
        report=str(report.resolve()) if report is not None else None,
    )
    kube_options = (kubeconfig, context, namespace, scaledobject)
    on_cluster = cluster or any(v is not None for v in kube_options)
    settings = CapacitySettings(
        url=url,
        replicas=replicas,
        headroom=_fraction(headroom, "--headroom"),
        host_header=host_header,
        load=load,
        hold_timeout=_seconds(hold_timeout, "--hold-timeout"),
        admin=admin,
        app=app,
        cluster=ClusterTarget(KubeSettings(kubeconfig=kubeconfig, context=context), namespace,
                              scaledobject) if on_cluster else None,
    )
    progress = Progress(sys.stderr, live=sys.stderr.isatty())
    try:
        outcome, interrupted = asyncio.run(_main(settings, progress))
    except TargetError as exc:
        raise _TargetProblem(str(exc)) from None
    except (HoldError, LoadError) as exc:
        raise click.ClickException(str(exc)) from None
    if output == "json":
        click.echo(json.dumps(to_json(outcome), indent=2))
    else:
        # On one terminal the progress display has just shown every step: not twice.
        shown = sys.stdout.isatty() and sys.stderr.isatty()
        click.echo(format_text(outcome, steps=not shown))
    if interrupted:
        sys.exit(130)
    if outcome.recommendation is None:
        sys.exit(1)


async def _main(settings: CapacitySettings, progress: Progress) -> tuple[Outcome, bool]:
    def on_signal(sig: signal.Signals) -> None:
        progress.note(f"{sig.name}: stopping after the current measurement window...")

    with StopSignals((signal.SIGINT, signal.SIGTERM), on_stop=on_signal,
                     on_again=on_signal) as signals:
        outcome = await find_capacity(settings, progress, signals.stopped)
    return outcome, signals.stopped.is_set()
