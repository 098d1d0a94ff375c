"""Route sources that need no cluster: a fixed list, or the local-mode config file.

Both follow `RouteSource`: push the whole route list into the sink, then stay until cancelled
(the Kubernetes source, later, keeps pushing on every HTTPScaledObject change).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from httpscale.config import load_local_config
from httpscale.routing.spec import RouteSink, RouteSpec

__all__ = ["FileRouteSource", "StaticRouteSource"]


class StaticRouteSource:
    def __init__(self, routes: Sequence[RouteSpec]) -> None:
        self._routes = tuple(routes)

    async def run(self, sink: RouteSink) -> None:
        sink.set_routes(self._routes)
        await asyncio.Event().wait()  # nothing changes; stays until cancelled


class FileRouteSource:
    """Routes from a local-mode config file (`apps[]`), read once when started.

    Loading happens in `load()`, before serving, so a bad file fails the command with the
    file, the key and what is wrong instead of a half-started interceptor.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._routes: tuple[RouteSpec, ...] | None = None

    def load(self) -> tuple[RouteSpec, ...]:
        """Read and validate the file; raises httpscale.model.errors.ConfigError."""
        self._routes = tuple(app.route for app in load_local_config(self.path).apps)
        return self._routes

    async def run(self, sink: RouteSink) -> None:
        routes = self._routes if self._routes is not None else self.load()
        sink.set_routes(routes)
        await asyncio.Event().wait()
