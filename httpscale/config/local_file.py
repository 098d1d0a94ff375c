"""The local-mode configuration file (`httpscale local -c FILE`).

    listen: 127.0.0.1:8080        # the proxy (default)
    admin: 127.0.0.1:9090         # /queue /livez /readyz /metrics /status (default)
    apps:
      - name: hello               # DNS label; the route key is "local/hello"
        hosts: [hello.localhost]  # ...and every other HTTPScaledObject.spec field, same meaning
        replicas: {min: 0, max: 4}
        run:
          command: [python, -m, httpscale.examples.hello, --port, "{port}"]
          readiness: {httpGet: {path: /healthz}}   # or {tcpSocket: {}} (the default)
          startupTimeout: 60      # seconds (or "1m") until the process must be ready
          stopGracePeriod: 10     # seconds between SIGTERM and SIGKILL
          env: {KEY: value}
      - name: api
        hosts: [api.localhost]
        run: {upstream: "http://127.0.0.1:9001"}   # a fixed upstream, never started
    tls:                          # optional: a TLS listener too (see local_tls.py)
      listen: 127.0.0.1:8443
      certificates: [{cert: site.crt, key: site.key}]

Each replica gets a free port: the literal text `{port}` in `command` and in `env` values is
replaced by it, and `PORT` is set in the environment either way (the Heroku/Cloud Run
convention), so `{port}` is optional. `{python}` is replaced by the interpreter running
httpscale, so Python apps run in the same virtualenv without an absolute path.
Readiness defaults to a TCP connect to that port: it works for every server, while an HTTP
GET of `/` fails on apps that have no root page.
A fixed upstream's scheme (http, https, h2c, h2) says how the interceptor talks to it.
A fixed upstream is routed to, never started or scaled by local mode; its scaling fields
(`scalingMetric`, `replicas`, ...) are still read, because a standalone scaler
(`httpscale scaler --config FILE`) learns each route's target for KEDA from them.
Errors name the file and the key (`local.yaml: apps[1].run.upstrem: unknown key`).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from httpscale.config.local_tls import (
    DEFAULT_TLS_LISTEN,
    TlsFileConfig,
    parse_address,
    parse_tls,
    parse_upstream,
)
from httpscale.model.errors import ConfigError
from httpscale.model.fields import Fields
from httpscale.model.httpso import (
    LOCAL_SPEC_KEYS,
    HTTPScaledObjectSpec,
    parse_httpso_spec,
    to_route_spec,
)
from httpscale.routing.spec import Endpoint, RouteSpec
from httpscale.routing.table import RouteTable

__all__ = [
    "DEFAULT_ADMIN",
    "DEFAULT_LISTEN",
    "DEFAULT_PROBE_PERIOD",
    "DEFAULT_PROBE_TIMEOUT",
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_STOP_GRACE_PERIOD",
    "SCALING_KEYS",
    "AppConfig",
    "CommandRun",
    "HttpGetProbe",
    "LocalConfig",
    "ReadinessProbe",
    "TcpSocketProbe",
    "UpstreamRun",
    "expand_placeholders",
    "load_local_config",
    "parse_local_config",
]

DEFAULT_LISTEN = ("127.0.0.1", 8080)
DEFAULT_ADMIN = ("127.0.0.1", 9090)
DEFAULT_STARTUP_TIMEOUT = 60.0
DEFAULT_STOP_GRACE_PERIOD = 10.0
DEFAULT_PROBE_PERIOD = 0.25  # seconds between readiness attempts (`periodSeconds`)
DEFAULT_PROBE_TIMEOUT = 1.0  # seconds per attempt (`timeoutSeconds`)
PORT_PLACEHOLDER = "{port}"
PYTHON_PLACEHOLDER = "{python}"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Spec fields that only steer scaling: local mode does nothing with them on a fixed upstream
# (it says so once, httpscale/local/plan.py), a standalone scaler serves them to KEDA.
SCALING_KEYS = (
    "replicas",
    "scaledownPeriod",
    "initialCooldownPeriod",
    "scalingMetric",
    "targetPendingRequests",
)


@dataclass(frozen=True, slots=True)
class HttpGetProbe:
    """Ready when `GET path` on the replica's port answers 200-399."""

    path: str = "/"
    period: float = DEFAULT_PROBE_PERIOD
    timeout: float = DEFAULT_PROBE_TIMEOUT


@dataclass(frozen=True, slots=True)
class TcpSocketProbe:
    """Ready when a TCP connect to the replica's port succeeds."""

    period: float = DEFAULT_PROBE_PERIOD
    timeout: float = DEFAULT_PROBE_TIMEOUT


ReadinessProbe = HttpGetProbe | TcpSocketProbe


@dataclass(frozen=True, slots=True)
class CommandRun:
    """Run each replica as this process; `{port}` in args and env values is its port,
    `{python}` the interpreter running httpscale."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    readiness: ReadinessProbe = field(default_factory=TcpSocketProbe)
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    stop_grace_period: float = DEFAULT_STOP_GRACE_PERIOD

    def argv(self, port: int) -> list[str]:
        """The command line for a replica listening on `port`."""
        return [expand_placeholders(arg, port) for arg in self.command]

    def environ(self, port: int) -> dict[str, str]:
        """Extra environment for that replica (merged over the parent's by the runner)."""
        env = {k: expand_placeholders(v, port) for k, v in self.env.items()}
        env.setdefault("PORT", str(port))
        return env


def expand_placeholders(text: str, port: int) -> str:
    """`{port}` and `{python}` replaced (plain replacement: commands may hold other braces)."""
    return text.replace(PORT_PLACEHOLDER, str(port)).replace(PYTHON_PLACEHOLDER, sys.executable)


@dataclass(frozen=True, slots=True)
class UpstreamRun:
    """A fixed upstream that is always there: routed to, never started or scaled."""

    upstream: Endpoint
    scheme: str = "http"  # RouteSpec.upstream_scheme, from the URL
    server_name: str = ""  # the URL's host, verified over TLS (https, h2)


@dataclass(frozen=True, slots=True)
class AppConfig:
    name: str
    spec: HTTPScaledObjectSpec
    route: RouteSpec  # key "local/<name>"
    run: CommandRun | UpstreamRun
    scaling_keys: tuple[str, ...] = ()  # the SCALING_KEYS the app writes, in that order


@dataclass(frozen=True, slots=True)
class LocalConfig:
    path: Path | None  # the file it came from; None when parsed from data
    listen: tuple[str, int] = DEFAULT_LISTEN
    admin: tuple[str, int] = DEFAULT_ADMIN
    apps: tuple[AppConfig, ...] = ()
    # Which of "listen" and "admin" the file writes (the others hold the defaults above): the
    # interceptor keeps its own defaults for an address the file leaves out.
    given: frozenset[str] = frozenset()
    tls: TlsFileConfig | None = None  # the `tls` section, if any


def load_local_config(path: str | Path) -> LocalConfig:
    """Read and validate a local-mode file; every problem is a ConfigError naming the file."""
    path = Path(path)
    data = _read_yaml(path)
    return parse_local_config(data, source=str(path), path=path)


def parse_local_config(data: object, *, source: str, path: Path | None = None) -> LocalConfig:
    top = Fields({} if data is None else data, source=source, key="")
    top.allow("listen", "admin", "apps", "tls")
    listen = parse_address(top, "listen", DEFAULT_LISTEN)
    admin = parse_address(top, "admin", DEFAULT_ADMIN)
    items = top.get_list("apps")
    tls_fields = top.sub("tls")
    top.finish()
    if not items:
        raise top.error("apps", "list at least one app")
    if listen == admin and listen[1] != 0:
        raise top.error("admin", f"same address as listen ({listen[0]}:{listen[1]})")
    tls = None
    if tls_fields is not None:
        tls_listen = parse_address(tls_fields, "listen", DEFAULT_TLS_LISTEN)
        if tls_listen in (listen, admin) and tls_listen[1] != 0:
            other = "listen" if tls_listen == listen else "admin"
            raise tls_fields.error("listen", f"same address as {other}")
        base = path.parent if path is not None else Path()
        tls = parse_tls(tls_fields, listen=tls_listen, base=base)

    apps: list[AppConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        app = _app(item, source=source, key=f"apps[{index}]")
        if app.name in seen:
            raise ConfigError(
                source,
                f"apps[{index}].name",
                f"{app.name!r} is already used by apps[{seen[app.name]}]",
            )
        seen[app.name] = index
        apps.append(app)
    _check_overlaps(apps, source)
    given = frozenset(name for name in ("listen", "admin") if top.raw(name) is not None)
    return LocalConfig(
        path=path, listen=listen, admin=admin, apps=tuple(apps), given=given, tls=tls
    )


def _app(item: object, *, source: str, key: str) -> AppConfig:
    f = Fields(item, source=source, key=key)
    f.allow("name", "run", *LOCAL_SPEC_KEYS)
    name = f.get_str("name", required=True)
    assert name is not None
    if not _DNS_LABEL.fullmatch(name):
        raise f.error(
            "name", f"{name!r} must be a DNS label: a-z, 0-9 and '-', at most 63, like my-app"
        )
    run_fields = f.sub("run")
    if run_fields is None:
        raise f.error("run", "required: a command to start, or an upstream to route to")
    run = _run(run_fields)
    assert isinstance(item, Mapping)  # Fields() checked
    scaling_keys = tuple(k for k in SCALING_KEYS if item.get(k) is not None)
    spec_part = {k: v for k, v in item.items() if k not in ("name", "run")}
    spec = parse_httpso_spec(spec_part, source=source, key_prefix=key, local=True)
    static = (run.upstream,) if isinstance(run, UpstreamRun) else None
    route = to_route_spec(f"local/{name}", spec, static_endpoints=static)
    if isinstance(run, UpstreamRun) and run.scheme != "http":
        route = replace(route, upstream_scheme=run.scheme, upstream_server_name=run.server_name)
    return AppConfig(name=name, spec=spec, route=route, run=run, scaling_keys=scaling_keys)


_COMMAND_KEYS = ("command", "readiness", "startupTimeout", "stopGracePeriod", "env")


def _run(f: Fields) -> CommandRun | UpstreamRun:
    f.allow("upstream", *_COMMAND_KEYS)
    if f.has("command") == f.has("upstream"):
        raise f.error(None, "set exactly one of command or upstream")
    if f.has("upstream"):
        for key in _COMMAND_KEYS:
            if f.has(key):
                raise f.error(key, "only applies to run.command, not run.upstream")
        url = parse_upstream(f.raw("upstream"), key=f.where("upstream"), source=f.source)
        f.finish()
        return UpstreamRun(upstream=url.endpoint, scheme=url.scheme, server_name=url.server_name)

    raw = f.raw("command")
    if isinstance(raw, str):
        command = tuple(shlex.split(raw))  # a string is split like a POSIX shell would
    else:
        command = f.get_str_list("command") or ()
    if not command or not command[0].strip():
        raise f.error("command", "must name a program to run")
    readiness_fields = f.sub("readiness")
    readiness = _probe(readiness_fields) if readiness_fields is not None else TcpSocketProbe()
    startup = f.get_duration("startupTimeout", positive=True)
    grace = f.get_duration("stopGracePeriod")
    env = _env(f)
    f.finish()
    return CommandRun(
        command=command,
        env=env,
        readiness=readiness,
        startup_timeout=startup if startup is not None else DEFAULT_STARTUP_TIMEOUT,
        stop_grace_period=grace if grace is not None else DEFAULT_STOP_GRACE_PERIOD,
    )


def _probe(f: Fields) -> ReadinessProbe:
    f.allow("httpGet", "tcpSocket", "periodSeconds", "timeoutSeconds")
    http = f.sub("httpGet")
    tcp = f.sub("tcpSocket")
    period = f.get_duration("periodSeconds", positive=True) or DEFAULT_PROBE_PERIOD
    timeout = f.get_duration("timeoutSeconds", positive=True) or DEFAULT_PROBE_TIMEOUT
    f.finish()
    if (http is None) == (tcp is None):
        raise f.error(None, "set exactly one of httpGet or tcpSocket")
    if tcp is not None:
        tcp.finish()  # nothing to set: the port is the replica's own
        return TcpSocketProbe(period=period, timeout=timeout)
    assert http is not None
    path = http.get_str("path", nonempty=True) or "/"
    if not path.startswith("/"):
        raise http.error("path", f"must start with '/', got {path!r}")
    http.finish()
    return HttpGetProbe(path=path, period=period, timeout=timeout)


def _env(f: Fields) -> dict[str, str]:
    """Environment values: numbers are taken as written (`DEBUG: 1`); null or bools are not,
    because YAML turns `yes`/`off` into bools and the program would see "True"."""
    raw = f.sub("env")
    if raw is None:
        return {}
    out: dict[str, str] = {}
    for name in raw.keys():
        value = raw.raw(name)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise raw.error(name, f"expected a string (quote it), got {value!r}")
        if not name or "=" in name or "\0" in name:
            raise raw.error(name, "not a valid environment variable name")
        out[name] = str(value)
    return out


def _check_overlaps(apps: list[AppConfig], source: str) -> None:
    """Two apps claiming the same host, prefix and headers: the second would never be reached."""
    table = RouteTable.build((app.route.match, index) for index, app in enumerate(apps))
    for conflict in table.conflicts:
        host = "any host" if conflict.host == "*" else f"host {conflict.host}"
        raise ConfigError(
            source,
            f"apps[{conflict.loser}]",
            f"{host} and path {conflict.path_prefix} are already routed to "
            f"apps[{conflict.winner}] ({apps[conflict.winner].name})",
        )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML keeps the last one silently, so a second
    `hosts:` in an app would quietly replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "", "is a directory, expected a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        if exc.context and exc.problem_mark is not None:
            problem = f"{problem} ({exc.context})"
        raise ConfigError(str(path), "", f"YAML syntax error: {problem}", line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"YAML error: {exc}") from None
