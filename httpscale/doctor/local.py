"""`httpscale doctor --config FILE`: local mode's checks.

The file is read by local mode's own loader (`load_local_config`), so its errors are the ones
`httpscale local` would stop with, naming the file and the key. Then, per app, what would make
its first request fail: a command that does not resolve to an executable (or, for
`{python} -m module`, a module this Python cannot import), a fixed upstream that refuses
connections. Then the two addresses: free, or held by a running httpscale (whose admin
server answers `/status`); and when it runs, what it says: apps it runs that the file does
not have (started from another file), replicas that keep restarting.

`gather_local` does the I/O (binds, connects, one HTTP GET, all bounded); `local_checks` judges
what it found, so the judging is tested on plain data.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from httpscale.config.local_file import (
    CommandRun,
    LocalConfig,
    UpstreamRun,
    expand_placeholders,
    load_local_config,
)
from httpscale.doctor.findings import Finding, Status
from httpscale.local.status import StatusError, fetch_status
from httpscale.model.errors import ConfigError

__all__ = ["LocalFacts", "gather_local", "local_checks", "run_local"]

_FIX_CONFIG = "fix the key it names (examples/local.yaml and docs/local-mode.md show every field)"


@dataclass(frozen=True, slots=True)
class LocalFacts:
    """What was found on this machine for a config."""

    commands: Mapping[str, str | None] = field(default_factory=dict)  # app -> resolved path
    modules: Mapping[str, bool] = field(default_factory=dict)  # app -> `-m` module importable
    upstreams: Mapping[str, str] = field(default_factory=dict)  # app -> "" or connect error
    ports: Mapping[str, str] = field(default_factory=dict)  # "listen"/"admin" -> "" or error
    status: Mapping[str, Any] | None = None  # the admin server's /status, if it answered
    status_error: str = ""


def resolve_command(run: CommandRun) -> tuple[str | None, str | None]:
    """(the executable the first word resolves to, or None; the `-m` module it runs, if any),
    resolved as the replica would be started: on the PATH of its environment."""
    argv = [expand_placeholders(a, 0) for a in run.command]
    env_path = run.env.get("PATH")
    path = expand_placeholders(env_path, 0) if env_path else os.environ.get("PATH", "")
    program = argv[0]
    if "/" in program:
        found = program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    else:
        found = shutil.which(program, path=path)
    module = argv[2] if len(argv) > 2 and argv[1] == "-m" else None
    return found, module


def gather_local(config: LocalConfig, *, timeout: float = 2.0) -> LocalFacts:
    commands: dict[str, str | None] = {}
    modules: dict[str, bool] = {}
    upstreams: dict[str, str] = {}
    for app in config.apps:
        if isinstance(app.run, CommandRun):
            found, module = resolve_command(app.run)
            commands[app.name] = found
            same_python = found is not None and os.path.realpath(found) == os.path.realpath(
                sys.executable)
            if module is not None and same_python:
                # Only this interpreter can be asked (another one's modules are its own), and
                # only for the top-level package: finding `a.b` would run `a`'s __init__.
                modules[app.name] = _find(module.split(".")[0])
        elif isinstance(app.run, UpstreamRun):
            upstreams[app.name] = _connect(app.run.upstream.host, app.run.upstream.port, timeout)
    ports = {"listen": _bindable(*config.listen), "admin": _bindable(*config.admin)}
    status, status_error = None, ""
    if ports["admin"]:  # something holds the admin address: is it httpscale?
        host, port = config.admin
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        try:
            status = fetch_status(f"http://{_url_host(host)}:{port}", timeout=timeout)
        except StatusError as exc:
            status_error = str(exc)
    return LocalFacts(commands, modules, upstreams, ports, status, status_error)


def _find(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _connect(host: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as exc:
        return exc.strerror or str(exc)


def _bindable(host: str, port: int) -> str:
    """"" when `host:port` could be listened on now; else why not."""
    if port == 0:
        return ""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As asyncio's servers bind: a port in TIME_WAIT is free to them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use"
            return exc.strerror or str(exc)
    return ""


def local_checks(config: LocalConfig, facts: LocalFacts) -> list[Finding]:
    source = str(config.path) if config.path is not None else "config"
    out = [Finding("local.config", source, Status.OK,
                   f"valid: {len(config.apps)} app(s)")]
    for app in config.apps:
        subject = f"app {app.name}"
        if isinstance(app.run, CommandRun):
            program = expand_placeholders(app.run.command[0], 0)
            found = facts.commands.get(app.name)
            if found is None:
                out.append(Finding(
                    "local.command", subject, Status.FAIL,
                    f"run.command: {program!r} is not an executable on the PATH its replicas "
                    "get: the first request waits until the start fails",
                    "install it, give its full path, or use {python} for this Python"))
            elif facts.modules.get(app.name) is False:
                module = expand_placeholders(app.run.command[2], 0)
                out.append(Finding("local.command", subject, Status.FAIL,
                                   f"run.command: {found} cannot import module {module!r}",
                                   "install it into this Python's environment, or fix the name"))
            else:
                out.append(Finding("local.command", subject, Status.OK, f"runs {found}"))
        else:
            assert isinstance(app.run, UpstreamRun)
            error = facts.upstreams.get(app.name, "")
            where = str(app.run.upstream)
            own = {config.listen, config.admin}
            if (app.run.upstream.host, app.run.upstream.port) in own and facts.status is None:
                # httpscale local's own proxy or admin server (the example routes its status
                # page so): it listens once local mode runs, not before.
                out.append(Finding("local.upstream", subject, Status.OK,
                                   f"run.upstream {where}: httpscale local's own server"))
                continue
            out.append(
                Finding("local.upstream", subject, Status.WARN,
                        f"run.upstream {where}: {error}: its requests get 502 until it listens",
                        "start it, or fix run.upstream") if error
                else Finding("local.upstream", subject, Status.OK, f"run.upstream {where} answers"))
    running = facts.status is not None
    for name, (host, port) in (("listen", config.listen), ("admin", config.admin)):
        subject = f"{name} {_url_host(host)}:{port}"
        problem = facts.ports.get(name, "")
        if not problem:
            out.append(Finding("local.port", subject, Status.OK, "free"))
        elif problem == "in use" and running:
            out.append(Finding("local.port", subject, Status.OK,
                               "in use by the running httpscale (its admin server answers)"))
        elif problem == "in use":
            out.append(Finding(
                "local.port", subject, Status.FAIL,
                "in use by another program: `httpscale local` cannot start",
                f"stop it (`ss -ltnp 'sport = :{port}'` names it), or change {name} in the file"))
        else:
            out.append(Finding("local.port", subject, Status.FAIL,
                               f"cannot listen there: {problem}",
                               f"use an address of this machine for {name}"))
    if facts.status is not None:
        out += _running(config, facts.status)
    elif facts.status_error and facts.ports.get("admin") == "in use":
        out.append(Finding("local.admin", "admin server", Status.WARN,
                           f"the admin address is taken but is not httpscale's: "
                           f"{facts.status_error}", ""))
    else:
        out.append(Finding("local.admin", "admin server", Status.INFO,
                           "httpscale local is not running (nothing to ask)"))
    return out


def _running(config: LocalConfig, status: Mapping[str, Any]) -> list[Finding]:
    apps = status.get("apps")
    if not isinstance(apps, Mapping):
        return [Finding("local.admin", "admin server", Status.WARN,
                        "answers /status, but without apps: not `httpscale local`?", "")]
    out = []
    configured = {a.name for a in config.apps}
    extra, absent = sorted(set(apps) - configured), sorted(configured - set(apps))
    if extra or absent:
        out.append(Finding(
            "local.admin", "admin server", Status.WARN,
            "the running httpscale was started from another file or an older version of it "
            f"(it runs {', '.join(sorted(apps)) or 'nothing'}; this file has "
            f"{', '.join(sorted(configured))})", "restart `httpscale local -c` with this file"))
    for name, app in sorted(apps.items()):
        if not isinstance(app, Mapping) or name not in configured:
            continue
        restarts = int(app.get("restarts") or 0)
        if restarts:
            out.append(Finding("local.admin", f"app {name}", Status.WARN,
                               f"running, but its replicas exited {restarts} time(s)",
                               "run its command by hand to see why it exits"))
        elif app.get("kind") == "upstream":
            out.append(Finding("local.admin", f"app {name}", Status.OK, "routed (upstream)"))
        else:
            out.append(Finding("local.admin", f"app {name}", Status.OK,
                               f"running: {app.get('ready', 0)}/{app.get('desired', 0)} "
                               "replicas ready"))
    return out


def run_local(path: Path) -> tuple[list[Finding], str]:
    """Load the file and check it; (findings, what was checked)."""
    try:
        config = load_local_config(path)
    except ConfigError as exc:
        fix = _FIX_CONFIG if path.is_file() else (
            "give the path of a local-mode file (examples/local.yaml is one)")
        return [Finding("local.config", str(path), Status.FAIL, str(exc), fix)], str(path)
    return local_checks(config, gather_local(config)), f"local config {path}"
