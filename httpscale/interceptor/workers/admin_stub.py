"""A stand-in for the parent's admin (parent_admin.ParentAdmin) until it lands: /livez and
/readyz only (200 when every worker is ready and none is draining). Same shape as ParentAdmin,
so swapping it is one import in parent.py."""

from __future__ import annotations

from aiohttp import web

from httpscale.interceptor.workers.api import WorkerInfo, WorkerSet

__all__ = ["PlaceholderAdmin"]


class PlaceholderAdmin:
    """Implements `WorkerListener` (it keeps nothing: readiness is read from the set)."""

    def __init__(self, workers: WorkerSet) -> None:
        self._workers = workers
        app = web.Application()
        app.add_routes([web.get("/livez", self._livez), web.get("/readyz", self._readyz)])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        sockname = self._runner.addresses[0]
        return str(sockname[0]), int(sockname[1])

    async def stop(self) -> None:
        await self._runner.cleanup()

    def worker_ready(self, info: WorkerInfo) -> None:
        pass

    def worker_exited(self, info: WorkerInfo, returncode: int | None) -> None:
        pass

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        workers = self._workers
        if workers.draining:
            return web.Response(status=503, text="draining\n")
        if len(workers.live()) < workers.size:
            return web.Response(status=503, text=f"{len(workers.live())} of {workers.size} "
                                "workers ready\n")
        return web.Response(text="ok\n")
