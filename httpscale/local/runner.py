"""`httpscale local`: the interceptor and the local autoscaler in one process, started and
stopped in order.

Start: the interceptor binds its ports, then, before the loop can serve a single request, the
routes are set and the autoscaler registers its wake listener (and starts apps with min > 0).

Stop, on SIGINT/SIGTERM/SIGHUP or when a part dies: the interceptor drains first while the
replicas still run, so requests in flight and held ones are answered; then every replica is
drained, SIGTERMed and, after its grace period, SIGKILLed. A second signal skips the waiting
and SIGKILLs the children at once. Whatever path leaves `run` (exception, cancellation), the
children's process groups are SIGKILLed on the way out; `PR_SET_PDEATHSIG` covers SIGKILL of
httpscale itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from httpscale.interceptor.admin import MountedHandler
from httpscale.interceptor.api import InterceptorControl
from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.settings import InterceptorSettings
from httpscale.local.admin import LocalAdmin
from httpscale.local.autoscaler import AutoscalerSettings, LocalAutoscaler
from httpscale.local.plan import AppPlan
from httpscale.runtime import StopSignals, cancel_and_wait, tune_gc_for_serving

__all__ = ["LocalInterceptor", "LocalRunner", "LocalSettings"]

log = logging.getLogger("httpscale.local")

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class LocalInterceptor(InterceptorControl, Protocol):
    """What the runner needs beyond the control surface: a lifecycle and bound addresses."""

    async def start(self) -> None: ...

    async def shutdown(self, *, force: bool = False) -> None: ...

    @property
    def proxy_address(self) -> tuple[str, int]: ...

    @property
    def admin_address(self) -> tuple[str, int]: ...

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """The TLS listener's, when there is one (the file's `tls` section)."""

    def mount_admin(self, prefix: str, handler: MountedHandler) -> None:
        """Serve `prefix` and below on the admin server (after `start`)."""


InterceptorFactory = Callable[[InterceptorSettings], LocalInterceptor]


@dataclass(frozen=True, slots=True)
class LocalSettings:
    interceptor: InterceptorSettings = field(default_factory=InterceptorSettings)
    autoscaler: AutoscalerSettings = field(default_factory=AutoscalerSettings)


class _Interceptor(Interceptor):
    """The interceptor plus local mode's admin routes (`/apps/{name}/pin`, `/history`).

    Mounting stays out of `InterceptorControl`, which the cluster sources share: on a
    cluster the admin server serves what every interceptor replica serves, nothing more."""

    def mount_admin(self, prefix: str, handler: MountedHandler) -> None:
        if self._admin is None:
            raise RuntimeError("Interceptor.start() has not been called")
        self._admin.mount(prefix, handler)


def default_interceptor(settings: InterceptorSettings) -> LocalInterceptor:
    return _Interceptor(settings)


class LocalRunner:
    def __init__(
        self,
        plans: tuple[AppPlan, ...],
        settings: LocalSettings,
        interceptor_factory: InterceptorFactory = default_interceptor,
    ) -> None:
        self.plans = plans
        self.settings = settings
        self.interceptor = interceptor_factory(settings.interceptor)
        self.autoscaler = LocalAutoscaler(self.interceptor, plans, settings.autoscaler)
        self._started = False
        self.forced = False  # a second signal skipped the graceful waits

    async def start(self) -> None:
        await self.interceptor.start()
        self._started = True
        # No await from here to the end of the autoscaler's start: no request is read before
        # the routes, endpoints and wake listener are all in place.
        self.interceptor.set_routes([p.route for p in self.plans])
        self.autoscaler.start()
        admin = LocalAdmin(self.autoscaler)
        self.interceptor.mount_admin("/apps", admin.apps)
        self.interceptor.mount_admin("/history", admin.history)
        host, port = self.interceptor.proxy_address
        admin_host, admin_port = self.interceptor.admin_address
        tls = self.interceptor.tls_address
        log.info(
            "httpscale local: proxy on http://%s:%d%s, status on http://%s:%d/status, apps: %s",
            host,
            port,
            "" if tls is None else f" and https://{tls[0]}:{tls[1]}",
            admin_host,
            admin_port,
            ", ".join(p.name for p in self.plans),
        )

    async def serve(self, stop: asyncio.Event) -> None:
        """Return when `stop` is set; raise if one of the autoscaler's tasks ends (a bug)."""
        stop_wait = asyncio.create_task(stop.wait(), name="local stop signal")
        watched: set[asyncio.Future[Any]] = {stop_wait, *self.autoscaler.tasks()}
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(stop_wait)
        for task in self.autoscaler.tasks():
            if task.done():
                # Surfaces the crash (or an unexpected return) so that `run` shuts down loudly.
                task.result()
                raise RuntimeError(f"task {task.get_name()!r} ended unexpectedly")

    async def close(self) -> None:
        """Ordered shutdown: drain the interceptor, then stop the replicas."""
        try:
            if self._started:
                self._started = False
                # Forced before the shutdown began (the second signal can come before this
                # task ran again after the first): no drain, whose wait would include a
                # request that the killed replica's retry put on hold.
                await self.interceptor.shutdown(force=self.forced)
        finally:
            try:
                await self.autoscaler.close()
            finally:
                self.autoscaler.kill_all()

    async def run(self) -> None:
        """Start, serve until a signal, stop in order. Children never outlive this call."""
        main = asyncio.current_task()

        def on_stop(sig: signal.Signals) -> None:
            log.info("httpscale local: %s, shutting down (again to force)", sig.name)

        def on_again(sig: signal.Signals) -> None:
            if self.forced:
                return
            log.warning("httpscale local: %s again, killing every app process now", sig.name)
            self.forced = True
            self.autoscaler.kill_all()
            if main is not None:
                main.cancel()

        with StopSignals(_SIGNALS, on_stop=on_stop, on_again=on_again) as signals:
            try:
                try:
                    await self.start()
                    tune_gc_for_serving()
                    await self.serve(signals.stopped)
                finally:
                    await self.close()
            except asyncio.CancelledError:
                if not self.forced or main is None:
                    raise
                main.uncancel()  # the cancellation was our own forced stop: end normally
            finally:
                self.autoscaler.kill_all()
        log.info("httpscale local: stopped%s", " (forced)" if self.forced else "")
