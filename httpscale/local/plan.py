"""What local mode runs for one app, in the autoscaler's own terms.

The config file is parsed and validated by `httpscale.config.local_file` into `AppConfig`s
(HTTPScaledObject fields + `run`); `plan_app` turns one into an `AppPlan`: the route, the scaling
parameters of the pure policy and, for command apps, how to start and probe a replica. Keeping
this boundary means the policy and the supervisor are tested without any config file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from httpscale.config.local_file import AppConfig, HttpGetProbe, UpstreamRun
from httpscale.local.policy import ScalingParams
from httpscale.local.replica import ProcessSpec
from httpscale.model.httpso import DEFAULT_RATE_GRANULARITY, DEFAULT_RATE_WINDOW, MetricKind
from httpscale.routing.spec import Endpoint, RouteSpec

__all__ = ["AppPlan", "plan_app", "plan_apps"]

log = logging.getLogger("httpscale.local")


@dataclass(frozen=True, slots=True)
class AppPlan:
    name: str
    route: RouteSpec  # key "local/<name>"
    scaling: ScalingParams
    metric: MetricKind = "concurrency"
    rate_window: float = DEFAULT_RATE_WINDOW  # seconds (requestRate.window), also the status rate
    rate_granularity: float = DEFAULT_RATE_GRANULARITY  # seconds (requestRate.granularity)
    process: ProcessSpec | None = None  # a command app; None for a fixed upstream
    upstream: Endpoint | None = None  # `run.upstream`: always there, never scaled

    @property
    def key(self) -> str:
        return self.route.key


def plan_app(app: AppConfig) -> AppPlan:
    spec = app.spec
    metric = spec.effective_scaling_metric()
    scaling = ScalingParams(
        min_replicas=spec.replicas_min,
        max_replicas=max(spec.replicas_max, 1),
        target=metric.target_value,
        scaledown_period=spec.scaledown_period,
        # The HPA's scale-down stabilization has no field in an HTTPScaledObject; reusing
        # scaledownPeriod gives one knob for "how long before giving capacity back".
        stabilization_window=spec.scaledown_period,
        metric_name="concurrency" if metric.kind == "concurrency" else "rate",
    )
    if isinstance(app.run, UpstreamRun):
        if app.scaling_keys:
            # Accepted, not refused: the same file feeds a standalone scaler, which serves
            # these targets to KEDA for an upstream scaled elsewhere.
            log.info("app %s: a fixed upstream, which local mode does not scale; its %s only "
                     "matter to a scaler (httpscale scaler --config)",
                     app.name, ", ".join(app.scaling_keys))
        return AppPlan(app.name, app.route, scaling, upstream=app.run.upstream)
    run = app.run
    probe = run.readiness
    process = ProcessSpec(
        command=run.command,
        env=dict(run.env),
        readiness_path=probe.path if isinstance(probe, HttpGetProbe) else None,
        startup_timeout=run.startup_timeout,
        stop_grace_period=run.stop_grace_period,
        probe_period=probe.period,
        probe_timeout=probe.timeout,
    )
    return AppPlan(
        app.name,
        app.route,
        scaling,
        metric=metric.kind,
        rate_window=metric.window,
        rate_granularity=min(metric.granularity, metric.window),
        process=process,
    )


def plan_apps(apps: tuple[AppConfig, ...]) -> tuple[AppPlan, ...]:
    return tuple(plan_app(app) for app in apps)
