"""The interceptor's route source for a local-mode file: `httpscale interceptor --config FILE`.

It lives with the file format rather than in `routing/`, which stays a leaf: routing defines
what a route source is (`RouteSource`), the sources that read something live with what they
read (this file; the cluster's in `httpscale.kube.routes`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from httpscale.config.local_file import LocalConfig, load_local_config
from httpscale.routing.spec import RouteSink, RouteSpec

__all__ = ["FileRouteSource"]


class FileRouteSource:
    """Routes from a local-mode config file (`apps[]`), read once when started.

    Loading happens in `load()`, before serving, so a bad file fails the command with the
    file, the key and what is wrong instead of a half-started interceptor.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._routes: tuple[RouteSpec, ...] | None = None
        self.config: LocalConfig | None = None

    def load(self) -> LocalConfig:
        """Read and validate the file (raises httpscale.model.errors.ConfigError); the whole
        file, since the command also takes its `listen` and `admin` addresses from it."""
        self.config = load_local_config(self.path)
        self._routes = tuple(app.route for app in self.config.apps)
        return self.config

    async def run(self, sink: RouteSink) -> None:
        if self._routes is None:
            self.load()
        assert self._routes is not None
        sink.set_routes(self._routes)
        await asyncio.Event().wait()  # nothing changes; stays until cancelled
