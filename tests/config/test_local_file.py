"""The local-mode YAML file: defaults, both run kinds, and errors that name file and key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from httpscale.config import (
    DEFAULT_ADMIN,
    DEFAULT_LISTEN,
    CommandRun,
    ConfigError,
    HttpGetProbe,
    TcpSocketProbe,
    UpstreamRun,
    load_local_config,
    parse_local_config,
)
from httpscale.model import ScalingMetric
from httpscale.routing import Endpoint
from httpscale.routing.table import RouteTable

EXAMPLE = """\
listen: 127.0.0.1:8080          # proxy
admin: 127.0.0.1:9090           # /queue /livez /readyz /metrics /status
apps:
  - name: hello
    hosts: [hello.localhost]
    pathPrefixes: [/]
    replicas: {min: 0, max: 4}
    scaledownPeriod: 30
    scalingMetric: {concurrency: {targetValue: 10}}
    coldStart: {readinessTimeout: 45s, maxPendingRequests: 20}
    run:
      command: [python, -m, httpscale.examples.hello, --port, "{port}"]
      readiness: {httpGet: {path: /healthz}}
      startupTimeout: 60
      stopGracePeriod: 10
      env: {GREETING: hi, WORKERS: 2, URL: "http://127.0.0.1:{port}/"}
  - name: api
    hosts: [api.localhost]
    run:
      upstream: http://127.0.0.1:9001
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "local.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_local_config(data, source="local.yaml")
    return str(info.value)


def app(**fields: Any) -> dict[str, Any]:
    return {"name": "a", "run": {"command": ["srv"]}, **fields}


def test_example_file(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    config = load_local_config(path)
    assert config.path == path
    assert config.listen == ("127.0.0.1", 8080)
    assert config.admin == ("127.0.0.1", 9090)
    hello, api = config.apps

    assert hello.name == "hello"
    assert hello.spec.replicas_max == 4
    assert hello.spec.scaledown_period == 30.0
    assert hello.spec.effective_scaling_metric() == ScalingMetric("concurrency", 10.0)
    assert hello.route.key == "local/hello"
    assert hello.route.readiness_timeout == 45.0
    assert hello.route.max_pending_requests == 20
    assert hello.route.static_endpoints is None
    run = hello.run
    assert isinstance(run, CommandRun)
    assert run.readiness == HttpGetProbe(path="/healthz")
    assert (run.startup_timeout, run.stop_grace_period) == (60.0, 10.0)
    assert run.argv(41234) == ["python", "-m", "httpscale.examples.hello", "--port", "41234"]
    assert run.environ(41234) == {
        "GREETING": "hi",
        "WORKERS": "2",
        "URL": "http://127.0.0.1:41234/",
        "PORT": "41234",
    }

    assert api.route.key == "local/api"
    assert api.run == UpstreamRun(Endpoint("127.0.0.1", 9001))
    assert api.route.static_endpoints == (Endpoint("127.0.0.1", 9001),)

    table = RouteTable.build((a.route.match, a.name) for a in config.apps)
    assert table.lookup("hello.localhost:8080", "/x", {}) == "hello"
    assert table.lookup("api.localhost", "/", {}) == "api"


def test_defaults() -> None:
    config = parse_local_config({"apps": [app()]}, source="x.yaml")
    assert config.path is None
    assert (config.listen, config.admin) == (DEFAULT_LISTEN, DEFAULT_ADMIN)
    (only,) = config.apps
    run = only.run
    assert isinstance(run, CommandRun)
    assert run.readiness == TcpSocketProbe()  # robust default: any server accepts a connect
    assert (run.startup_timeout, run.stop_grace_period) == (60.0, 10.0)
    assert run.environ(5) == {"PORT": "5"}  # PORT even when the command has no {port}
    assert only.spec.replicas_max == 100
    assert only.route.match.hosts == ()  # no hosts: the catch-all route


def test_the_file_says_which_addresses_it_writes() -> None:
    """The interceptor takes only these from the file; the rest keep its own defaults."""
    assert parse_local_config({"apps": [app()]}, source="x").given == frozenset()
    config = parse_local_config({"admin": ":9191", "apps": [app()]}, source="x")
    assert (config.given, config.admin) == (frozenset({"admin"}), ("0.0.0.0", 9191))
    both = parse_local_config({"listen": 1, "admin": 2, "apps": [app()]}, source="x")
    assert both.given == frozenset({"listen", "admin"})


def test_a_fixed_upstream_keeps_its_scaling_fields() -> None:
    """How a standalone scaler learns the target of an app that runs elsewhere: accepted, kept
    in the spec, and listed so that local mode can say it scales none of it."""
    config = parse_local_config(
        {
            "apps": [
                {
                    "name": "api",
                    "replicas": {"min": 1, "max": 7},
                    "scalingMetric": {"requestRate": {"targetValue": 20, "window": "30s"}},
                    "run": {"upstream": "http://127.0.0.1:9001"},
                },
                {"name": "plain", "hosts": ["p.test"], "run": {"upstream": "http://h:2"}},
            ]
        },
        source="x",
    )
    api, plain = config.apps
    assert isinstance(api.run, UpstreamRun)
    assert api.scaling_keys == ("replicas", "scalingMetric")
    assert api.spec.effective_scaling_metric() == ScalingMetric(
        kind="requestRate", target_value=20.0, window=30.0, granularity=1.0
    )
    assert (api.spec.replicas_min, api.spec.replicas_max) == (1, 7)
    assert api.route.static_endpoints == (Endpoint("127.0.0.1", 9001),)
    assert plain.scaling_keys == ()


def test_python_placeholder() -> None:
    config = parse_local_config({"apps": [app(run={"command": ["{python}", "-V"]})]}, source="x")
    run = config.apps[0].run
    assert isinstance(run, CommandRun)
    assert run.argv(1) == [sys.executable, "-V"]


def test_command_as_string_and_tcp_probe() -> None:
    config = parse_local_config(
        {
            "apps": [
                app(
                    run={
                        "command": "python -m http.server '{port}'",
                        "readiness": {"tcpSocket": {}, "periodSeconds": "100ms"},
                        "startupTimeout": "2m",
                    }
                )
            ]
        },
        source="x.yaml",
    )
    run = config.apps[0].run
    assert isinstance(run, CommandRun)
    assert run.argv(80) == ["python", "-m", "http.server", "80"]
    assert run.readiness == TcpSocketProbe(period=0.1)
    assert run.startup_timeout == 120.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        (":8081", ("0.0.0.0", 8081)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:0", ("localhost", 0)),
        (8088, ("127.0.0.1", 8088)),
        ("8088", ("127.0.0.1", 8088)),
    ],
)
def test_listen_forms(value: object, expected: tuple[str, int]) -> None:
    assert parse_local_config({"listen": value, "apps": [app()]}, source="x").listen == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "local.yaml: apps: list at least one app"),
        ([], "local.yaml: expected a mapping, got a list"),
        ({"apps": []}, "local.yaml: apps: list at least one app"),
        ({"aps": []}, "local.yaml: aps: unknown key (did you mean 'apps'?)"),
        ({"listen": "nope", "apps": [app()]}, "local.yaml: listen: expected host:port"),
        ({"listen": "h:99999", "apps": [app()]}, "local.yaml: listen: expected host:port"),
        ({"listen": "::1:80", "apps": [app()]}, "local.yaml: listen: write IPv6 addresses"),
        ({"listen": 9090, "apps": [app()]}, "local.yaml: admin: same address as listen"),
        ({"apps": ["hello"]}, "local.yaml: apps[0]: expected a mapping, got a string"),
        ({"apps": [{"run": {"command": ["x"]}}]}, "local.yaml: apps[0].name: required"),
        ({"apps": [app(name="Hello_World")]}, "local.yaml: apps[0].name: 'Hello_World' must be"),
        ({"apps": [app(), app()]}, "local.yaml: apps[1].name: 'a' is already used by apps[0]"),
        ({"apps": [{"name": "a"}]}, "local.yaml: apps[0].run: required"),
        ({"apps": [app(run={})]}, "local.yaml: apps[0].run: set exactly one of command or"),
        (
            {"apps": [app(run={"upstrem": "http://127.0.0.1:1"})]},
            "local.yaml: apps[0].run.upstrem: unknown key (did you mean 'upstream'?)",
        ),
        (
            {"apps": [app(run={"command": ["x"], "upstream": "http://h:1"})]},
            "local.yaml: apps[0].run: set exactly one of command or upstream",
        ),
        ({"apps": [app(run={"command": []})]}, "apps[0].run.command: must name a program"),
        ({"apps": [app(run={"command": ["x", 1]})]}, "apps[0].run.command[1]: expected a string"),
        (
            {"apps": [app(run={"upstream": "http://h:1", "env": {"A": "b"}})]},
            "apps[0].run.env: only applies to run.command",
        ),
        (
            {"apps": [app(run={"upstream": "ftp://h:1"})]},
            "apps[0].run.upstream: the scheme must be http, https, h2c or h2, got ftp://",
        ),
        (
            {"apps": [app(run={"upstream": "http://h:x"})]},
            "apps[0].run.upstream: invalid URL",
        ),
        (
            # A fixed upstream's scaling fields are read (for a standalone scaler), so checked.
            {
                "apps": [
                    app(run={"upstream": "http://h:1"},
                        scalingMetric={"concurrency": {"targetValue": 0}})
                ]
            },
            "apps[0].scalingMetric.concurrency.targetValue: must be greater than 0",
        ),
        (
            {"apps": [app(run={"command": ["x"], "readiness": {}})]},
            "apps[0].run.readiness: set exactly one of httpGet or tcpSocket",
        ),
        (
            {"apps": [app(run={"command": ["x"], "readiness": {"httpGet": {"path": "ok"}}})]},
            "apps[0].run.readiness.httpGet.path: must start with '/'",
        ),
        (
            {"apps": [app(run={"command": ["x"], "readiness": {"tcpSocket": {"port": 1}}})]},
            "apps[0].run.readiness.tcpSocket.port: unknown key",
        ),
        (
            {"apps": [app(run={"command": ["x"], "startupTimeout": 0})]},
            "apps[0].run.startupTimeout: must be longer than 0",
        ),
        (
            {"apps": [app(run={"command": ["x"], "env": {"DEBUG": True}})]},
            "apps[0].run.env.DEBUG: expected a string (quote it)",
        ),
        ({"apps": [app(replicas={"min": 2, "max": 1})]}, "apps[0].replicas.max: must be at least"),
        ({"apps": [app(replicas={"max": 0})]}, "apps[0].replicas.max: must be at least 1"),
        ({"apps": [app(scaleTargetRef={})]}, "apps[0].scaleTargetRef: unknown key"),
        (
            {"apps": [app(hosts=["a.localhost"]), app(name="b", hosts=["A.localhost"])]},
            "local.yaml: apps[1]: host a.localhost and path / are already routed to apps[0] (a)",
        ),
    ],
)
def test_errors_name_file_and_key(data: Any, expected: str) -> None:
    assert expected in error_of(data)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found$"):
        load_local_config(path)
    with pytest.raises(ConfigError, match="is a directory"):
        load_local_config(tmp_path)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = write(tmp_path, "apps:\n  - name: a\n    hosts: [a\n    run: {}\n")
    with pytest.raises(ConfigError) as info:
        load_local_config(path)
    assert info.value.line is not None and info.value.line >= 3
    assert str(info.value).startswith(f"{path}:{info.value.line}: YAML syntax error")


def test_duplicate_yaml_keys_are_refused_with_line(tmp_path: Path) -> None:
    text = "apps:\n  - name: a\n    hosts: [x]\n    hosts: [y]\n    run: {command: [s]}\n"
    with pytest.raises(ConfigError) as info:
        load_local_config(write(tmp_path, text))
    assert info.value.line == 4
    assert "duplicate key 'hosts'" in str(info.value)


def test_semantic_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("upstream:", "upstrem:"))
    with pytest.raises(ConfigError) as info:
        load_local_config(path)
    assert str(info.value) == f"{path}: apps[1].run.upstrem: unknown key (did you mean 'upstream'?)"


# -- TLS: the `tls` section and upstream URL schemes ------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with site.crt/key, api.crt/key and ca.crt (made with openssl)."""
    from tlskit import TestCA

    d = tmp_path_factory.mktemp("certs")
    ca = TestCA(d)
    for name in ("site", "api"):
        leaf = ca.issue(name, dns=[f"{name}.test"])
        (d / f"{name}.crt").write_bytes(leaf.cert.read_bytes())
        (d / f"{name}.key").write_bytes(leaf.key.read_bytes())
    (d / "ca.crt").write_bytes(ca.cert.read_bytes())
    return d


TLS_APPS = "apps:\n  - name: api\n    hosts: [api.test]\n    run: {upstream: 'http://h:1'}\n"


def test_tls_section_paths_are_relative_to_the_file(certs: Path) -> None:
    path = certs / "local.yaml"
    path.write_text(
        TLS_APPS + "tls:\n  listen: 127.0.0.1:9443\n  certificates:\n"
        "    - {cert: site.crt, key: site.key}\n    - {cert: api.crt, key: api.key}\n"
        '  minVersion: "1.3"\n  upstreamCA: ca.crt\n  upstreamVerify: false\n'
        "  reloadInterval: 5s\n"
    )
    tls = load_local_config(path).tls
    assert tls is not None
    assert tls.listen == ("127.0.0.1", 9443)
    assert tls.certificates == (
        (certs / "site.crt", certs / "site.key"), (certs / "api.crt", certs / "api.key")
    )
    assert (tls.min_version, tls.upstream_ca_file, tls.upstream_verify, tls.reload_interval) == (
        "1.3", certs / "ca.crt", False, 5.0
    )
    assert load_local_config(write(certs / "..", TLS_APPS)).tls is None  # no section, no TLS


def test_tls_section_defaults(certs: Path) -> None:
    path = certs / "min.yaml"
    path.write_text(TLS_APPS + "tls: {certificates: [{cert: site.crt, key: site.key}]}\n")
    tls = load_local_config(path).tls
    assert tls is not None
    assert tls.listen == ("127.0.0.1", 8443)
    assert (tls.min_version, tls.ciphers, tls.upstream_ca_file, tls.upstream_verify) == (
        None, None, None, None
    )


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        ("{}", "tls.certificates: list at least one {cert: FILE, key: FILE}"),
        ("{certificates: [{cert: site.crt}]}", "tls.certificates[0].key: required"),
        ("{certificates: [{cert: site.crt, key: site.key}, {cert: api.crt, key: nope.key}]}",
         "tls.certificates[1].key: file not found: {certs}/nope.key"),
        ("{certificates: [{cert: site.crt, key: api.key}]}",
         "tls.certificates[0].key: {certs}/api.key: not the PEM private key of {certs}/site.crt"),
        ("{certificates: [{cert: site.key, key: site.key}]}",
         "tls.certificates[0].cert: {certs}/site.key: not a PEM certificate"),
        ("{certificates: [{cert: site.crt, key: site.key, chain: x}]}",
         "tls.certificates[0].chain: unknown key"),
        ("{certs: []}", "tls.certs: unknown key"),
        ("{minVersion: 1.1, certificates: [{cert: site.crt, key: site.key}]}",
         'tls.minVersion: expected "1.2" or "1.3", got 1.1'),
        ("{ciphers: NOPE, certificates: [{cert: site.crt, key: site.key}]}",
         "tls.ciphers: OpenSSL accepts no cipher of 'NOPE'"),
        ("{upstreamCA: site.key, certificates: [{cert: site.crt, key: site.key}]}",
         "tls.upstreamCA: {certs}/site.key: not a PEM CA bundle"),
        ("{upstreamVerify: maybe, certificates: [{cert: site.crt, key: site.key}]}",
         "tls.upstreamVerify: expected true or false, got 'maybe'"),
        ("{listen: '127.0.0.1:8080', certificates: [{cert: site.crt, key: site.key}]}",
         "tls.listen: same address as listen"),
    ],
)
def test_tls_errors_name_the_file_and_the_key(certs: Path, tls: str, expected: str) -> None:
    path = certs / "bad.yaml"
    path.write_text(TLS_APPS + f"tls: {tls}\n")
    with pytest.raises(ConfigError) as info:
        load_local_config(path)
    assert str(info.value).startswith(f"{path}: " + expected.replace("{certs}", str(certs)))


@pytest.mark.parametrize(
    ("url", "endpoint", "scheme", "server_name"),
    [
        ("http://127.0.0.1:9001", Endpoint("127.0.0.1", 9001), "http", ""),
        ("https://api.example:8443", Endpoint("api.example", 8443), "https", "api.example"),
        ("https://10.0.0.1", Endpoint("10.0.0.1", 443), "https", "10.0.0.1"),
        ("h2c://127.0.0.1:50051", Endpoint("127.0.0.1", 50051), "h2c", ""),
        ("h2://grpc.example", Endpoint("grpc.example", 443), "h2", "grpc.example"),
    ],
)
def test_upstream_scheme_chooses_the_backend_protocol(
    url: str, endpoint: Endpoint, scheme: str, server_name: str
) -> None:
    config = parse_local_config({"apps": [app(run={"upstream": url})]}, source="local.yaml")
    route = config.apps[0].route
    assert route.static_endpoints == (endpoint,)
    assert (route.upstream_scheme, route.upstream_server_name) == (scheme, server_name)


def test_an_upstream_path_is_refused_in_the_url_scheme() -> None:
    assert error_of({"apps": [app(run={"upstream": "https://h:1/base"})]}) == (
        "local.yaml: apps[0].run.upstream: URL 'https://h:1/base' must be just https://host:port "
        "(no path, query or user)"
    )
