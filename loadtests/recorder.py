"""Record httpscale's own view of a load test, one JSON line per observation.

While locust runs (loadtests/scenarios.py starts this for you), every `interval` seconds:

* the interceptor admin's `/status`: per route, requests in flight and held, ready
  endpoints; under local mode also per app, replicas (ready, desired, running), held requests
  and the last cold start's duration;
* optionally the scaler admin's `/status`: per route, the concurrency and rate it computed,
  and whether it reports the route active to KEDA.

Each sample is a line `{"t": <unix>, "kind": "sample", ...}`. Beside them: `activation` lines
(an app's ready replicas went from 0 to more; `seconds` is local mode's measured cold start),
`visitor_cold_start` lines written by the locust scenario for each response marked
`X-HTTPScale-Cold-Start: true`, a `meta` line first, and at the end a `history` line with local
mode's `/history` when the admin server has one. loadtests/report.py reads the file.

Standalone, for a load generator other than locust:

    .venv/bin/python loadtests/recorder.py --admin http://127.0.0.1:9090 --out run.jsonl -t 60
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["Recorder", "summarize"]

_TIMEOUT = 2.0  # seconds per admin request: a sample late by more is a gap, not a stall


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
        return json.load(response)


def summarize(status: Mapping[str, Any], scaler: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of the admin documents a report plots (they hold far more)."""
    apps: dict[str, Any] = {}
    for name, app in (status.get("apps") or {}).items():
        if not isinstance(app, Mapping) or app.get("kind") == "upstream":
            continue
        apps[name] = {
            "route": app.get("route"),
            "ready": app.get("ready"),
            "desired": app.get("desired"),
            "running": len(app.get("replicas") or ()),
            "held": app.get("held"),
            "concurrency": app.get("concurrency"),
            "rate": app.get("rate"),
            "last_cold_start": app.get("last_cold_start"),
        }
    routes: dict[str, Any] = {}
    for key, route in (status.get("routes") or {}).items():
        if not isinstance(route, Mapping):
            continue
        endpoints = route.get("endpoints") or {}
        routes[key] = {
            "concurrency": route.get("concurrency"),
            "held": route.get("held"),
            "requestCount": route.get("requestCount"),
            "endpoints": sum(1 for e in endpoints.values() if not e.get("draining")),
        }
    out: dict[str, Any] = {"apps": apps, "routes": routes}
    if scaler is not None:
        out["scaler"] = {
            str(r.get("key")): {k: r.get(k) for k in ("concurrency", "rate", "active")}
            for r in scaler.get("routes") or () if isinstance(r, Mapping)
        }
    return out


class Recorder:
    """Writes the JSON lines; `poll` takes one sample. Thread- and greenlet-safe writes."""

    def __init__(self, path: Path, admin_url: str, scaler_url: str = "",
                 interval: float = 1.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.scaler_url = scaler_url.rstrip("/")
        self.interval = interval
        self._out: IO[str] = path.open("w", encoding="utf-8")
        self._lock = threading.Lock()
        self._ready: dict[str, int] = {}  # app -> ready replicas at the previous sample

    def write(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.time(), 3), "kind": kind, **fields})
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()  # a run killed midway still leaves a readable file

    def poll(self) -> None:
        try:
            status = _get_json(self.admin_url + "/status")
            scaler = _get_json(self.scaler_url + "/status") if self.scaler_url else None
        except (OSError, ValueError) as exc:
            self.write("error", error=repr(exc))
            return
        sample = summarize(status, scaler)
        self.write("sample", **sample)
        for name, app in sample["apps"].items():
            ready = int(app.get("ready") or 0)
            if self._ready.get(name) == 0 and ready > 0:
                self.write("activation", app=name, seconds=app.get("last_cold_start"))
            self._ready[name] = ready

    def finish(self) -> None:
        """Local mode's exact history, if the admin server keeps one; then close."""
        try:
            self.write("history", doc=_get_json(self.admin_url + "/history"))
        except (OSError, ValueError):
            pass  # not local mode, or a version without /history: the samples stand alone
        with self._lock:
            self._out.close()

    def run(self, stopped: Callable[[], bool], sleep: Callable[[float], None]) -> None:
        """Sample until `stopped()`; `sleep` is the caller's (gevent's inside locust)."""
        next_at = time.monotonic()
        while not stopped():
            self.poll()
            next_at += self.interval
            sleep(max(next_at - time.monotonic(), 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin", default="http://127.0.0.1:9090")
    parser.add_argument("--scaler", default="", help="the scaler's admin URL (optional)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("-t", "--seconds", type=float, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    recorder = Recorder(args.out, args.admin, args.scaler, args.interval)
    recorder.write("meta", scenario="external", admin=args.admin)
    end = time.monotonic() + args.seconds
    try:
        recorder.run(lambda: time.monotonic() >= end, time.sleep)
    except KeyboardInterrupt:
        pass
    recorder.finish()


if __name__ == "__main__":
    main()
