"""Runs one interceptor in its own process, driven line by line over stdin, for the benchmark.

Why a harness rather than `httpscale local`: the held-request benchmark must release a route at
an instant it chooses and know exactly when that happened, and must read the interceptor's own
RSS; both need a hook inside the interceptor's process. The harness builds the real
`Interceptor` (the same class every mode runs) and adds nothing to its request path.

Protocol: after start it prints one JSON line `{"proxy": [host, port], "admin": [host, port],
"routes": N}`. Then each command line gets exactly one JSON reply line:

    routes N HOST:PORT        N routes app0.bench..app{N-1}.bench, all with endpoint HOST:PORT
    held KEY HOST [MAX [CAP]] add route KEY for HOST with no endpoints (requests held), at most
                              MAX held; CAP > 0 sets max_concurrency_per_endpoint
    ready KEY HOST:PORT       set_endpoints(KEY, [HOST:PORT]); replies {"t_ns": monotonic ns
                              taken just before the call, "call_ns": how long the call took}
    zero KEY                  set_endpoints(KEY, [])
    stats KEY                 {"held": ..., "concurrency": ..., "request_count": ...}
    rss                       {"rss_kb": VmRSS, "hwm_kb": VmHWM} of this process
    reset_hwm                 reset VmHWM to the current RSS (/proc/self/clear_refs)
    quit                      shut the interceptor down and exit

Timestamps use CLOCK_MONOTONIC (`time.monotonic_ns`), which is one system-wide clock on Linux,
so they compare directly with the backend's in `loadtests/held.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import uvloop
from held import raise_nofile

from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.settings import InterceptorSettings, InterceptorShutdown, Listen
from httpscale.routing.spec import Endpoint, RouteMatch, RouteSpec
from httpscale.runtime import tune_gc_for_serving

__all__ = ["main"]

#: Held requests per route allowed on the held route unless `held` gives a cap: the benchmark
#: holds 10,000 at once, and the default (1000) would answer the rest 503.
_HELD_CAP = 20_000


def _proc_status_kb(*names: str) -> dict[str, int]:
    found: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in names:
                found[key] = int(rest.split()[0])
    return found


def _endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition(":")
    return Endpoint(host, int(port))


class Harness:
    def __init__(self, interceptor: Interceptor) -> None:
        self._ic = interceptor
        # The bulk routes (`routes`) and the held ones (`held`) are kept apart so either
        # command can replace its part without dropping the other.
        self._bulk: list[RouteSpec] = []
        self._held: dict[str, RouteSpec] = {}

    def _push(self) -> None:
        self._ic.set_routes([*self._bulk, *self._held.values()])

    def handle(self, words: list[str]) -> dict[str, Any]:
        cmd, args = words[0], words[1:]
        if cmd == "routes":
            count, upstream = int(args[0]), _endpoint(args[1])
            self._bulk = [
                RouteSpec(
                    key=f"bench/app{i}",
                    match=RouteMatch(hosts=(f"app{i}.bench",)),
                    static_endpoints=(upstream,),
                )
                for i in range(count)
            ]
            started = time.perf_counter()
            self._push()
            return {"routes": count, "set_routes_s": time.perf_counter() - started}
        if cmd == "held":
            key, host = args[0], args[1]
            most = int(args[2]) if len(args) > 2 else _HELD_CAP
            per_endpoint = int(args[3]) if len(args) > 3 else 0
            self._held[key] = RouteSpec(
                key=key,
                match=RouteMatch(hosts=(host,)),
                max_pending_requests=most,
                max_concurrency_per_endpoint=per_endpoint or None,
                readiness_timeout=300.0,
            )
            self._push()
            return {"held_route": key}
        if cmd == "ready":
            endpoint = _endpoint(args[1])
            t_ns = time.monotonic_ns()
            self._ic.set_endpoints(args[0], [endpoint])
            return {"t_ns": t_ns, "call_ns": time.monotonic_ns() - t_ns}
        if cmd == "zero":
            self._ic.set_endpoints(args[0], [])
            return {"zero": args[0]}
        if cmd == "stats":
            stats = self._ic.route_stats(args[0])
            return dict(stats) if stats is not None else {"error": f"no route {args[0]}"}
        if cmd == "rss":
            kb = _proc_status_kb("VmRSS", "VmHWM")
            return {"rss_kb": kb["VmRSS"], "hwm_kb": kb["VmHWM"]}
        if cmd == "reset_hwm":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
            return {"reset_hwm": True}
        return {"error": f"unknown command {cmd!r}"}


async def _run(args: argparse.Namespace) -> None:
    nofile = raise_nofile()  # 10,000 held client connections plus the upstream pool
    settings = InterceptorSettings(
        listen=Listen(host="127.0.0.1", port=args.port, admin_host="127.0.0.1", admin_port=0),
        # No load balancer to warn on exit; the benchmark wants the process gone promptly.
        shutdown=InterceptorShutdown(readiness_delay=0.0, drain_timeout=1.0),
    )
    ic = Interceptor(settings)
    await ic.start()
    tune_gc_for_serving()  # as `httpscale interceptor` does once serving
    harness = Harness(ic)
    try:
        if args.routes:
            harness.handle(["routes", str(args.routes), args.upstream])
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        _reply(
            {
                "proxy": list(ic.proxy_address),
                "admin": list(ic.admin_address),
                "routes": args.routes,
                "nofile": nofile,
            }
        )
        while line := await reader.readline():
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "quit":
                break
            try:
                _reply(harness.handle(words))
            except Exception as exc:  # a bad command must not kill the process under test
                _reply({"error": repr(exc)})
    finally:
        await ic.shutdown()


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="proxy port (0: any free port)")
    parser.add_argument("--routes", type=int, default=0, help="bulk routes to load at start")
    parser.add_argument("--upstream", default="", help="HOST:PORT for the bulk routes")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run(args))


if __name__ == "__main__":
    main()
