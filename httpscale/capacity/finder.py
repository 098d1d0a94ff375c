"""Finding the capacity of one app: steps 1 to 5 of the `httpscale capacity` run, without the
command line (`httpscale.capacity.cli`) or the printing.

The order, and what each step guarantees:

1. Parse the URL and find what serves it (a local app from `httpscale local`'s `/status`, or
   the ScaledObject on a cluster). Problems here raise `TargetError` and touch nothing; so
   does a missing locust (`LoadError`).
2. Hold the app at `replicas` and wait until they are ready. From here on the hold is
   released in a `finally`, whatever happens: an error, `stop`, a cancellation.
3. One request to the URL: an unreachable proxy or an error status stops here (`TargetError`).
4. The load generator (`python -m httpscale.capacity.run`, a child process: locust runs on
   gevent, which must not share a process with asyncio) climbs the steps; its JSON lines feed
   the progress display. `stop` stops it within one progress interval (a child that has not
   reported within 15 s more is killed); the outcome then holds what was measured.
5. Release the hold and return the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import signal
import sys
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import aiohttp

from httpscale.capacity.clusterhold import find_cluster
from httpscale.capacity.core import Judged
from httpscale.capacity.display import Progress
from httpscale.capacity.hold import Hold, HoldError, find_local
from httpscale.capacity.outcome import Outcome
from httpscale.capacity.recommend import DEFAULT_HEADROOM
from httpscale.capacity.target import TargetError, TargetURL, parse_url
from httpscale.capacity.wire import EndEvent, LoadSpec, ProgressEvent, StepJSON, judged_from_json
from httpscale.kube.config import KubeConfigError, KubeSettings, connect

__all__ = ["CapacitySettings", "ClusterTarget", "LoadError", "find_capacity", "require_locust"]

T = TypeVar("T")

_CHILD_GRACE = 60.0  # seconds beyond max_duration for spawning, the last step and the report
_STOP_GRACE = 15.0  # seconds a stopped child may take to report before it is killed
_RELEASE_GRACE = 30.0  # seconds a release may still take after a cancellation


class LoadError(Exception):
    """The load generator failed (not the app under load: its errors are measurements)."""


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    kube: KubeSettings = field(default_factory=KubeSettings)
    namespace: str | None = None  # where to look; None: every namespace (or "default" by name)
    scaledobject: str | None = None  # None: the HTTPScaledObject serving the URL's


@dataclass(frozen=True, slots=True)
class CapacitySettings:
    url: str
    replicas: int = 1  # held while measuring
    headroom: float = DEFAULT_HEADROOM
    host_header: str | None = None
    load: LoadSpec = field(default_factory=lambda: LoadSpec("", "", ""))  # target filled in
    hold_timeout: float = 180.0  # seconds until the held replicas must be ready
    admin: str = "http://127.0.0.1:9090"  # local mode's admin server
    app: str | None = None  # local mode: the app, else the one serving the URL
    cluster: ClusterTarget | None = None  # set: on a cluster instead of local mode


async def find_capacity(
    settings: CapacitySettings, progress: Progress, stop: asyncio.Event | None = None
) -> Outcome:
    """Steps 1 to 5 of the module docstring, minus printing; `stop` set = Ctrl-C."""
    stop = stop or asyncio.Event()
    target = parse_url(settings.url, settings.host_header)
    require_locust()
    hold = await _find_hold(settings, target)
    load = replace(
        settings.load, base_url=target.base_url, path=target.path, host_header=target.host_header
    )
    outcome = Outcome(
        url=settings.url,
        held=hold.describe(),
        target=hold.target_json(),
        replicas=settings.replicas,
        rules=load.rules,
        headroom=settings.headroom,
        steps=(),
        stopped="interrupted",
    )
    try:
        n = settings.replicas
        progress.note(f"holding {hold.describe()} at {n} replica{'s' if n != 1 else ''}...")
        if not await _unless(stop, hold.hold(n, settings.hold_timeout)):
            return outcome
        await _preflight(target, load.request_timeout)
        progress.header()
        steps, end = await _run_load(load, progress, stop)
        return replace(
            outcome,
            steps=tuple(steps),
            stopped=end["stopped"],
            report=end["report"],
            report_error=end["report_error"],
        )
    finally:
        await _release(hold, progress)


def require_locust() -> None:
    """Fail before anything is held when the load generator cannot run: locust is an extra."""
    # The child runs under this same interpreter, so what this one finds, the child imports.
    if importlib.util.find_spec("locust") is None:
        raise LoadError(
            "`httpscale capacity` drives its load with locust, which is not installed: "
            "pip install 'httpscale[capacity]' (or pip install 'locust>=2.20')"
        )


async def _find_hold(settings: CapacitySettings, target: TargetURL) -> Hold:
    if settings.cluster is None:
        return await find_local(settings.admin, target, settings.app)
    try:
        kube = await connect(settings.cluster.kube)
    except KubeConfigError as exc:
        raise TargetError(str(exc)) from None
    try:
        return await find_cluster(
            kube, target, settings.cluster.namespace, settings.cluster.scaledobject
        )
    except BaseException:
        await kube.close()
        raise


async def _release(hold: Hold, progress: Progress) -> None:
    """Give the app back, even when the caller is being cancelled (then re-raise)."""
    release = asyncio.ensure_future(hold.release())
    try:
        await asyncio.shield(release)
    except asyncio.CancelledError:
        await asyncio.wait([release], timeout=_RELEASE_GRACE)
        raise
    except HoldError as exc:
        progress.note(f"warning: {exc}")
    finally:
        await hold.close()


async def _unless(stop: asyncio.Event, work: Awaitable[T]) -> bool:
    """Run `work` unless `stop` is set first (then cancel it): whether it completed."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stopped):
            t.cancel()
        await asyncio.wait([task, stopped])
    if task.cancelled():
        return False
    task.result()  # raises what it raised
    return True


async def _preflight(target: TargetURL, seconds: float) -> None:
    """One request before the load: a dead proxy or a 404 is a wrong URL, not a knee."""
    url = target.base_url + target.path
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.get(url, headers={"Host": target.host_header}, ssl=False) as resp,
        ):
            body = await resp.content.read(300)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise TargetError(
            f"cannot reach {target.url} at {target.base_url} ({exc or type(exc).__name__}): "
            "is the proxy running there?"
        ) from None
    if resp.status >= 400:
        text = body.decode("utf-8", "replace").strip()
        raise TargetError(
            f"GET {target.url} answered {resp.status} ({text[:200]}): the capacity of a URL "
            "that fails is not measurable; check the URL"
        )


async def _run_load(
    spec: LoadSpec, progress: Progress, stop: asyncio.Event
) -> tuple[list[Judged], EndEvent]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "httpscale.capacity.run",
        json.dumps(spec.to_json()),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # signals reach it from here only, once, in order
    )
    assert proc.stdout is not None and proc.stderr is not None
    tail: deque[str] = deque(maxlen=20)
    stderr = asyncio.create_task(_tail(proc.stderr, tail), name="capacity load stderr")
    stopper = asyncio.create_task(_stop_child(proc, stop), name="capacity load stop")
    steps: list[Judged] = []
    end: EndEvent | None = None
    try:
        async with asyncio.timeout(spec.max_duration + _CHILD_GRACE):
            async for line in proc.stdout:
                event: dict[str, Any] = json.loads(line)
                kind = event.get("event")
                if kind == "progress":
                    progress.progress(ProgressEvent(**event))  # type: ignore[typeddict-item]
                elif kind == "step":
                    del event["event"]
                    step = judged_from_json(StepJSON(**event))  # type: ignore[typeddict-item]
                    steps.append(step)
                    progress.step(step)
                elif kind == "end":
                    end = EndEvent(**event)  # type: ignore[typeddict-item]
            await proc.wait()
    except TimeoutError:
        raise LoadError(
            f"the load generator did not finish within {spec.max_duration + _CHILD_GRACE:g}s"
        ) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stopper.cancel()
        await asyncio.wait([stopper, stderr], timeout=5.0)
    if end is None:
        why = "\n".join(tail) or "no output"
        raise LoadError(f"the load generator exited with status {proc.returncode}:\n{why}")
    return steps, end


async def _tail(stream: asyncio.StreamReader, tail: deque[str]) -> None:
    async for line in stream:
        tail.append(line.decode("utf-8", "replace").rstrip())


async def _stop_child(proc: asyncio.subprocess.Process, stop: asyncio.Event) -> None:
    """On `stop`: SIGINT (report and exit); if that takes too long, SIGKILL."""
    await stop.wait()
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(_STOP_GRACE):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
