"""One replica of a local app: an OS process on a free loopback port, probed until ready.

Orphan safety, because a scale-to-zero demo that leaves servers behind is worse than none:

* every replica leads its own process group (`start_new_session`), so stopping it reaches the
  workers it forked, and a terminal's Ctrl-C reaches httpscale alone, which then drains in order;
* on Linux the child asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), which
  covers the one case no `finally` can: httpscale itself being SIGKILLed. The death signal is tied
  to the forking *thread*, so replicas are spawned from the event loop's thread, never a pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from httpscale.config.local_file import (
    DEFAULT_PROBE_PERIOD,
    DEFAULT_PROBE_TIMEOUT,
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_STOP_GRACE_PERIOD,
    expand_placeholders,
)
from httpscale.routing.spec import Endpoint

__all__ = [
    "LOOPBACK",
    "ProcessSpec",
    "Replica",
    "ReplicaState",
    "free_port",
    "orphan_guard",
]

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """How to run and probe one replica. Durations in seconds."""

    # `{port}` (the replica's port) and `{python}` (the interpreter running httpscale, so that
    # a venv's apps run without PATH set up) are replaced in each argument and env value.
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # added to httpscale's environment
    readiness_path: str | None = None  # HTTP GET path; None probes by TCP connect
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT  # not ready by then: killed and retried
    stop_grace_period: float = DEFAULT_STOP_GRACE_PERIOD  # SIGTERM -> SIGKILL
    probe_period: float = DEFAULT_PROBE_PERIOD  # longest pause between probe attempts
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT  # one probe attempt


class ReplicaState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"  # out of the endpoint set, finishing its in-flight requests
    STOPPING = "stopping"  # SIGTERM sent
    EXITED = "exited"


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel just considered free. Another process may take it before the replica
    binds it; the replica then fails its probes or exits and is retried on a new port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def orphan_guard() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child die with its parent, or None where unsupported."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent:
            os._exit(1)

    return _preexec


class Replica:
    """A process and its bookkeeping. The supervisor drives it; this class only does I/O."""

    def __init__(self, app: str, index: int, spec: ProcessSpec) -> None:
        self.app = app
        self.index = index
        self.spec = spec
        self.port = free_port()
        self.endpoint = Endpoint(LOOPBACK, self.port)
        self.state = ReplicaState.STARTING
        self.created = time.monotonic()
        self.ready_at: float | None = None
        self.returncode: int | None = None
        # Set by the supervisor when this replica is no longer wanted.
        self.stop_requested = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def name(self) -> str:
        return f"{self.app}-{self.index}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _expand(self, text: str) -> str:
        return expand_placeholders(text, self.port)

    def argv(self) -> list[str]:
        return [self._expand(arg) for arg in self.spec.command]

    async def spawn(self) -> None:
        env = dict(os.environ)
        env["PORT"] = str(self.port)  # over any PORT httpscale itself was started with
        env.update({k: self._expand(v) for k, v in self.spec.env.items()})  # the app's own win
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv(),
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=orphan_guard(),
        )

    async def wait_exit(self) -> int:
        """Await the process's exit (an event from the child watcher, not a poll)."""
        assert self._proc is not None
        code = await self._proc.wait()
        self.returncode = code
        self.state = ReplicaState.EXITED
        # Workers the app forked may outlive it; they are in its group and go with it.
        self.signal_group(signal.SIGKILL)
        return code

    async def probe_until_ready(self) -> None:
        """Probe until one attempt succeeds (bounded by the caller). The pauses start short, as a
        fast app is often ready within milliseconds, and grow to the configured period."""
        interval = min(0.02, self.spec.probe_period)
        while not await self.probe_once():
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, self.spec.probe_period)

    async def probe_once(self) -> bool:
        try:
            async with asyncio.timeout(self.spec.probe_timeout):
                reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
                try:
                    if self.spec.readiness_path is None:
                        return True
                    writer.write(
                        f"GET {self.spec.readiness_path} HTTP/1.1\r\n"
                        f"Host: {LOOPBACK}:{self.port}\r\nUser-Agent: httpscale-probe\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    line = await reader.readline()
                    parts = line.split(None, 2)
                    # Kubernetes' httpGet rule: 200 <= status < 400 is success.
                    return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError, ValueError):
            return False

    def signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def terminate(self) -> int:
        """SIGTERM the group, SIGKILL after the grace period; return the exit status."""
        assert self._proc is not None
        if self._proc.returncode is None:
            self.state = ReplicaState.STOPPING
            self.signal_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.spec.stop_grace_period):
                    await self._proc.wait()
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
        return await self.wait_exit()

    def kill_now(self) -> None:
        """Last resort from synchronous cleanup paths: SIGKILL the whole group."""
        self.signal_group(signal.SIGKILL)

    def age(self, now: float) -> float:
        return now - self.created
