"""Holding the app at a fixed replica count while it is measured, and letting it go after.

A `Hold` is found from the URL (`find_local` here, `clusterhold.find_cluster` on a cluster),
then `hold(n)` returns once n replicas are ready, and `release()` gives scaling back. The CLI
calls `release()` in a `finally`, so the autoscaler gets the app back whatever happened.

Local mode: the admin server's pin (`POST /apps/{name}/pin?wait=...`, see
`httpscale.local.admin`) does it all, readiness included; `DELETE` releases it.
"""

from __future__ import annotations

from typing import Any, Protocol

import aiohttp

from httpscale.capacity.target import TargetError, TargetURL, route_for
from httpscale.routing.spec import HeaderMatch, RouteMatch

__all__ = ["Hold", "HoldError", "LocalHold", "find_local"]

_ADMIN_TIMEOUT = 10.0  # seconds, one admin request (beyond the pin's own wait)


class HoldError(Exception):
    """The replicas could not be held (or released): the message says what to check."""


class Hold(Protocol):
    def describe(self) -> str:
        """What is measured, for people: "local app hello"."""

    def target_json(self) -> dict[str, Any]:
        """The same for `--output json`."""

    async def hold(self, replicas: int, ready_within: float) -> None:
        """Return once exactly `replicas` replicas are ready; `HoldError` if they are not
        within `ready_within` seconds."""

    async def release(self) -> None:
        """Give the app back to its autoscaler (idempotent); `HoldError` if that failed."""

    async def close(self) -> None: ...


class LocalHold:
    def __init__(self, admin_url: str, app: str, upstream: bool) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.app = app
        self.upstream = upstream  # a fixed upstream is never scaled: nothing to hold
        self._session = aiohttp.ClientSession()
        self._pinned = False

    def describe(self) -> str:
        if self.upstream:
            return f"local app {self.app} (a fixed upstream: never scaled, measured as it is)"
        return f"local app {self.app}"

    def target_json(self) -> dict[str, Any]:
        return {"mode": "local", "admin": self.admin_url, "app": self.app}

    async def hold(self, replicas: int, ready_within: float) -> None:
        if self.upstream:
            return
        url = f"{self.admin_url}/apps/{self.app}/pin"
        self._pinned = True  # even if the answer is lost, release must try
        # The admin server waits for readiness itself (`?wait=`): no polling from here.
        status, body = await self._call(
            "POST", url, {"replicas": replicas}, {"wait": f"{ready_within:g}"}, ready_within
        )
        if status != 200:
            raise HoldError(f"cannot pin {self.app} at {replicas}: {_why(status, body)}")

    async def release(self) -> None:
        if not self._pinned:
            return
        status, body = await self._call("DELETE", f"{self.admin_url}/apps/{self.app}/pin")
        if status != 200:
            raise HoldError(f"cannot release the pin of {self.app}: {_why(status, body)}")
        self._pinned = False

    async def close(self) -> None:
        await self._session.close()

    async def _call(
        self,
        method: str,
        url: str,
        body: object = None,
        query: dict[str, str] | None = None,
        wait: float = 0.0,
    ) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=wait + _ADMIN_TIMEOUT)
        try:
            async with self._session.request(
                method, url, json=body, params=query, timeout=timeout
            ) as resp:
                try:
                    return resp.status, await resp.json(content_type=None)
                except ValueError:
                    return resp.status, None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise HoldError(f"{method} {url}: {exc or type(exc).__name__}") from exc


def _why(status: int, body: Any) -> str:
    if isinstance(body, dict) and "error" in body:
        return f"{body['error']} (HTTP {status})"
    return f"HTTP {status}"


async def find_local(admin_url: str, target: TargetURL, app: str | None) -> LocalHold:
    """The local app serving `target` (or named `app`), from the admin server's `/status`."""
    url = admin_url.rstrip("/") + "/status"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=_ADMIN_TIMEOUT)) as resp,
        ):
            doc = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise TargetError(
            f"cannot read {url} ({exc or type(exc).__name__}): is `httpscale local` running "
            "there? Pass its admin address with --admin, or --kubeconfig for a cluster"
        ) from None
    apps = doc.get("apps") if isinstance(doc, dict) else None
    routes = doc.get("routes") if isinstance(doc, dict) else None
    if not isinstance(apps, dict) or not isinstance(routes, dict):
        raise TargetError(f"{url} is not the admin server of `httpscale local` (no apps)")
    if app is None:
        found = route_for(_local_routes(apps, routes), target)
        if found is None:
            raise TargetError(
                f"no app serves {target.host_header}{target.route_path} "
                f"(apps: {', '.join(apps) or 'none'}); check the URL or pass --app"
            )
        app = found
    elif app not in apps:
        raise TargetError(f"no app named {app!r} (apps: {', '.join(apps) or 'none'})")
    return LocalHold(admin_url, app, upstream=apps[app].get("kind") == "upstream")


def _local_routes(apps: dict[str, Any], routes: dict[str, Any]) -> list[tuple[RouteMatch, str]]:
    out: list[tuple[RouteMatch, str]] = []
    for name, app in apps.items():
        route = routes.get(str(app.get("route"))) if isinstance(app, dict) else None
        if not isinstance(route, dict):
            continue
        for m in route.get("matches") or ():
            headers = m.get("headers") or ()
            match = RouteMatch(
                hosts=tuple(m.get("hosts") or ()),
                path_prefixes=tuple(m.get("pathPrefixes") or ()),
                headers=tuple(HeaderMatch(h["name"], h.get("value")) for h in headers),
            )
            out.append((match, name))
    return out
