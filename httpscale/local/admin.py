"""Local mode's own admin routes, mounted on the interceptor's admin server.

* `POST /apps/{name}/pin` with `{"replicas": N}` holds a command app at exactly N replicas
  (0 <= N <= its max): the autoscaler stops scaling it and starts or stops replicas to reach
  N, readiness as usual. `?wait=SECONDS` answers only once N replicas are ready (504 if not
  within SECONDS; the pin stays). `GET` reads the pin, `DELETE` releases it.
* `GET /history`: per command app, the replica processes it ran and its cold starts over
  time (`httpscale.local.history`); fixed upstreams are left out.

Errors are JSON `{"error": ...}`: 404 no such app, 409 a fixed upstream (never scaled, so
there is nothing to pin), 400 a bad body or query, 405 another method.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from httpscale.local.autoscaler import AppScaler, LocalAutoscaler

__all__ = ["MAX_PIN_WAIT", "LocalAdmin"]

MAX_PIN_WAIT = 600.0  # seconds: the longest `?wait=` honoured


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class LocalAdmin:
    def __init__(self, autoscaler: LocalAutoscaler) -> None:
        self._autoscaler = autoscaler

    async def apps(self, request: web.Request) -> web.StreamResponse:
        """Mounted at `/apps`: only `/apps/{name}/pin` exists below it."""
        parts = request.path.split("/")
        if len(parts) != 4 or parts[3] != "pin" or not parts[2]:
            return _error(404, f"no such admin path {request.path!r}")
        name = parts[2]
        scaler = self._autoscaler.scaler_named(name)
        if scaler is None:
            if any(p.name == name for p in self._autoscaler.plans):
                return _error(409, f"app {name!r} is a fixed upstream: never scaled, not pinned")
            known = ", ".join(p.name for p in self._autoscaler.plans)
            return _error(404, f"no app named {name!r} (apps: {known})")
        if request.method == "GET":
            return web.json_response(_pin_state(scaler))
        if request.method == "DELETE":
            scaler.unpin()
            return web.json_response(_pin_state(scaler))
        if request.method == "POST":
            return await self._pin(request, scaler)
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST", "DELETE"])

    async def history(self, request: web.Request) -> web.StreamResponse:
        """Mounted at `/history`."""
        if request.path != "/history":
            return _error(404, f"no such admin path {request.path!r}")
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        return web.json_response({"now": time.time(), "apps": self._autoscaler.history()})

    async def _pin(self, request: web.Request, scaler: AppScaler) -> web.StreamResponse:
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            return _error(400, 'the body must be JSON: {"replicas": N}')
        replicas = body.get("replicas") if isinstance(body, dict) else None
        high = scaler.plan.scaling.max_replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            return _error(400, 'the body must be {"replicas": N} with N a whole number')
        if not 0 <= replicas <= high:
            return _error(400, f"replicas must be within 0..{high} (the app's max), not {replicas}")
        wait: float | None = None
        if "wait" in request.query:
            try:
                wait = float(request.query["wait"])
            except ValueError:
                wait = -1.0
            if not 0 <= wait <= MAX_PIN_WAIT:
                return _error(400, f"wait must be seconds within 0..{MAX_PIN_WAIT:g}")
        scaler.pin(replicas)
        if wait is not None:
            try:
                async with asyncio.timeout(wait):
                    await scaler.wait_ready(replicas)
            except TimeoutError:
                state = _pin_state(scaler)
                state["error"] = f"{state['ready']} of {replicas} replicas ready after {wait:g}s"
                return web.json_response(state, status=504)
        return web.json_response(_pin_state(scaler))


def _pin_state(scaler: AppScaler) -> dict[str, object]:
    return {
        "app": scaler.plan.name,
        "pinned": scaler.pinned,
        "desired": scaler.supervisor.desired,
        "ready": scaler.supervisor.ready_count(),
    }
