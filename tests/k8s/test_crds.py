"""The CRDs in manifests/crd/ and the Python model (httpscale.model) must agree.

A real kube-apiserver and the model each judge the same documents: KEDA-style examples of both
kinds, the legacy HTTPScaledObject forms, httpscale's extensions, and systematic mutations of
full documents (every field removed, nulled, of the wrong type, out of range, blank, a bad
duration, host, path, header name or URL, both or neither of port/portName, an unknown key).
For every document both must accept or both refuse; when both refuse, they must name the same
field (one path a prefix of the other); when both accept, the model must read the object the
API server returns (with its defaults applied) exactly as it reads the document as written.

The rules a schema cannot state are in `MODEL_ONLY`, each with the document and the exact
key: the API server must accept those and the model refuse them, so the list cannot grow
without someone writing it down here.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from kubernetes_asyncio import client
from testcluster import Cluster

from httpscale.kube.api import ApiError, Kube
from httpscale.kube.resources import HTTPSCALEDOBJECTS, INTERCEPTORROUTES, Resource
from httpscale.model import (
    ConfigError,
    InterceptorRoute,
    ScalingMetric,
    parse_httpso,
    parse_interceptor_route,
)
from httpscale.model.objects import HTTPScaledObject

pytestmark = pytest.mark.k8s

Obj = dict[str, Any]
Kind = Literal["HTTPScaledObject", "InterceptorRoute"]

CRD_DIR = Path(__file__).resolve().parents[2] / "manifests" / "crd"
RESOURCES: dict[Kind, Resource] = {
    "HTTPScaledObject": HTTPSCALEDOBJECTS,
    "InterceptorRoute": INTERCEPTORROUTES,
}
PARSERS: dict[Kind, Callable[..., HTTPScaledObject | InterceptorRoute]] = {
    "HTTPScaledObject": parse_httpso,
    "InterceptorRoute": parse_interceptor_route,
}
# What `kubectl apply` does by default: refuse unknown fields instead of dropping them.
DRY_RUN = [("dryRun", "All"), ("fieldValidation", "Strict")]
PARALLEL = 24  # dry-run requests in flight at once


# -- documents ---------------------------------------------------------------------------------

def doc(kind: Kind, spec: object, name: str = "doc") -> Obj:
    return {
        "apiVersion": RESOURCES[kind].api_version,
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


HTTPSO: Kind = "HTTPScaledObject"
IR: Kind = "InterceptorRoute"

# Every field set, valid. Mutations start from these.
HTTPSO_FULL: Obj = {
    "hosts": ["app.example.com", "*.example.com"],
    "pathPrefixes": ["/api", "/v1"],
    "headers": [{"name": "X-Tenant", "value": "blue"}, {"name": "X-Canary"}],
    "scaleTargetRef": {
        "name": "app", "kind": "Deployment", "apiVersion": "apps/v1", "service": "app",
        "port": 8080,
    },
    "coldStartTimeoutFailoverRef": {"service": "fallback", "port": 8080, "timeoutSeconds": 10},
    "replicas": {"min": 1, "max": 10},
    "scaledownPeriod": 300,
    "initialCooldownPeriod": 60,
    "targetPendingRequests": 50,
    "scalingMetric": {"requestRate": {"targetValue": 100, "window": "1m", "granularity": "1s"}},
    "timeouts": {"conditionWait": "20s", "responseHeader": "500ms"},
    "coldStart": {
        "readinessTimeout": "1m",
        "maxPendingRequests": 50,
        "maxConcurrencyPerEndpoint": 4,
        "placeholder": {
            "status": 503, "headers": {"Retry-After": "5"}, "body": "warming up",
            "refreshSeconds": 2, "clients": "All",
        },
    },
}
# The older spellings, and the extension's fallbackUpstream (not with a failover ref).
HTTPSO_LEGACY: Obj = {
    "host": "app.example.com",
    "targetPendingRequests": 25,
    "scaleTargetRef": {
        "deployment": "app", "service": "app", "portName": "http", "targetPendingRequests": 9,
    },
    "scalingMetric": {"concurrency": {"targetValue": 7}},
    "coldStart": {"fallbackUpstream": "http://10.0.0.7:8080", "readinessTimeout": 30},
}
IR_FULL: Obj = {
    "target": {"service": "app", "port": 8080},
    "rules": [{
        "hosts": ["app.example.com", "*.example.com"],
        "paths": [{"value": "/api"}, {"value": "/v1"}],
        "headers": [{"name": "X-Tenant", "value": "blue"}, {"name": "X-Canary"}],
    }],
    "scalingMetric": {
        "concurrency": {"targetValue": 100},
        "requestRate": {"targetValue": 50, "window": "1m", "granularity": "1s"},
    },
    "coldStart": {
        "fallback": {"service": {"name": "fallback", "port": 80}},
        "placeholder": {"response": {
            "statusCode": 503, "body": "warming up", "headers": {"Retry-After": "5"},
        }},
        "maxPendingRequests": 100,
        "overflow": "Placeholder",
    },
    "timeouts": {"readiness": "30s", "request": "1m", "responseHeader": "10s"},
    "staticRoutes": [{
        "rules": [{"paths": [{"value": "/healthz"}]}, {"hosts": ["status.example.com"]}],
        "response": {"statusCode": 200, "body": "OK", "headers": {"Content-Type": "text/plain"}},
        "responseMode": "Always",
    }],
    "sessionPersistence": {"type": "Cookie", "absoluteTimeout": "1h", "cookie": {"name": "srv"}},
}
IR_ALT: Obj = {
    "target": {"service": "app", "portName": "http"},
    "rules": [{"hosts": ["*"]}, {}],
    "scalingMetric": {"requestRate": {"targetValue": 10}},
    "coldStart": {
        "fallback": {"service": {"name": "fallback", "portName": "http"}},
        "placeholder": {"response": {"bodyFromConfigMap": {"name": "page", "key": "index.html"}}},
    },
    "timeouts": {"readiness": 0, "request": "0s"},
    "staticRoutes": [{"rules": [{}], "response": {}}],
    "sessionPersistence": {},
}

# Written the way KEDA's documentation shows them (in our words), plus httpscale's additions.
EXAMPLES: list[tuple[Kind, Obj]] = [
    (HTTPSO, {"hosts": ["api.example.com"],
              "scaleTargetRef": {"name": "e", "service": "e", "port": 80},
              "coldStart": {"placeholder": {"clients": "All", "body": "warming up"}}}),
    (HTTPSO, {"hosts": ["myhost.com"], "pathPrefixes": ["/test"],
              "scaleTargetRef": {"name": "xkcd", "kind": "Deployment", "apiVersion": "apps/v1",
                                 "service": "xkcd", "port": 8080},
              "replicas": {"min": 5, "max": 10}, "scaledownPeriod": 300,
              "scalingMetric": {"requestRate": {"granularity": "1s", "targetValue": 100,
                                                "window": "1m"}}}),
    (HTTPSO, {"hosts": ["myhost.com"], "scaleTargetRef": {"name": "xkcd", "service": "xkcd",
                                                          "port": 8080},
              "scalingMetric": {"concurrency": {"targetValue": 100}}}),
    (HTTPSO, {"hosts": ["a.example.com"], "headers": [{"name": "X-Version", "value": "2"}],
              "scaleTargetRef": {"name": "a", "service": "a", "portName": "http"},
              "coldStartTimeoutFailoverRef": {"service": "a-fallback", "portName": "http"},
              "timeouts": {"conditionWait": "2m", "responseHeader": "30s"},
              "initialCooldownPeriod": 120}),
    (HTTPSO, {"host": "legacy.example.com", "targetPendingRequests": 100,
              "scaleTargetRef": {"deployment": "legacy", "service": "legacy", "port": 80}}),
    (HTTPSO, {"hosts": [""], "scaleTargetRef": {"name": "any", "service": "any", "port": 80},
              "scalingMetric": {}}),
    (HTTPSO, {"hosts": ["ext.example.com"], "scaleTargetRef": {"name": "e", "service": "e",
                                                               "port": 80},
              "scaledownPeriod": "5m", "initialCooldownPeriod": "0s",
              "timeouts": {"conditionWait": 90},
              "coldStart": {"placeholder": {}, "maxPendingRequests": 10}}),
    (IR, {"target": {"service": "my-app-svc", "port": 8080},
          "rules": [{"hosts": ["app.example.com"], "paths": [{"value": "/api"}]}],
          "scalingMetric": {"concurrency": {"targetValue": 100}},
          "staticRoutes": [{"rules": [{"paths": [{"value": "/healthz"}]}],
                            "response": {"statusCode": 200, "body": "OK"}}]}),
    (IR, {"target": {"service": "my-app-svc", "port": 8080},
          "scalingMetric": {"concurrency": {"targetValue": 100}},
          "coldStart": {"placeholder": {"response": {
              "body": "<h1>Loading...</h1>", "statusCode": 503,
              "headers": {"Content-Type": "text/html", "Refresh": "5"}}}}}),
    (IR, {"target": {"service": "my-app-svc", "port": 8080},
          "scalingMetric": {"concurrency": {"targetValue": 100}},
          "coldStart": {"placeholder": {"response": {
              "bodyFromConfigMap": {"name": "placeholder-page"}, "statusCode": 503}}}}),
    (IR, {"target": {"service": "my-app-svc", "port": 8080},
          "scalingMetric": {"concurrency": {"targetValue": 100}},
          "coldStart": {"fallback": {"service": {"name": "fallback-svc", "port": 8080}}},
          "timeouts": {"readiness": "5s"}}),
    (IR, {"target": {"service": "my-app-svc", "port": 8080},
          "scalingMetric": {"requestRate": {"targetValue": 100, "window": "1m",
                                            "granularity": "1s"}},
          "timeouts": {"request": "60s", "responseHeader": "30s", "readiness": "10s"}}),
    (IR, {"target": {"service": "my-app-svc", "port": 8080},
          "scalingMetric": {"concurrency": {"targetValue": 100}},
          "coldStart": {"maxPendingRequests": 100, "overflow": "Reject"}}),
    (IR, {"target": {"service": "my-app-svc", "port": 8080},
          "rules": [{"hosts": ["*.example.com"], "headers": [{"name": "X-Tenant"}]}],
          "scalingMetric": {"concurrency": {"targetValue": 10}},
          "sessionPersistence": {"type": "Cookie", "absoluteTimeout": "24h",
                                 "cookie": {"name": "backend"}}}),
]

# Keys whose values are durations, and values worth trying in them.
DURATION_KEYS = frozenset({
    "window", "granularity", "conditionWait", "responseHeader", "readinessTimeout",
    "scaledownPeriod", "initialCooldownPeriod", "readiness", "request", "absoluteTimeout",
})
DURATIONS: list[object] = [
    "forever", "30", "1.5", "-1s", "-0s", "0s", "0", "+0", 0, 1, 2.5, 30.0, "+5s", "1h2m3.5s",
    "10\u00b5s", "10us", "1.s", ".5s", ".", "1 s", " 30s", "1d", "2147483647s", "2147483648s",
    2147483647, 2147483648, "596524h", "3000000h", "1" + "0" * 70 + "ns", -5, True,
]
HOSTS: list[object] = [
    "", "*", "*.a.com", "a_b.example", "a..com", "a.com.", "http://a.com", "a.com:80",
    "a.*.com", "-a.com", "a.com/x", "\u00e9.com", "*.", 5,
]
PATHS: list[object] = [
    "/", "/a:b", "/a:/b", "a", ":/x", "/a?b", "/a#b", "/a b", "/a\tb", "http://x/a", "x://y",
    "/a::/b", "/a:://b", "",
]
HEADER_NAMES: list[object] = ["a b", "X:Y", "", " ", "X-Ok", "\u00e9", "x_y.z~", 5]
RESPONSE_HEADERS: list[object] = [
    {}, {"a b": "x"}, {"X:Y": "x"}, {"Content-Length": "1"}, {"connection": "close"},
    {"Transfer-Encoding": "chunked"}, {"X": "a\nb"}, {"X": "a\rb"}, {"X": 5}, {"X": ""},
    {"X": None}, ["X"], "X: y",
]
# Value mutations a static route's response headers may get: the name checks are MODEL_ONLY.
RESPONSE_HEADER_VALUES: list[object] = [
    {}, {"X": "a\nb"}, {"X": 5}, {"X": ""}, ["X"], "X: y",
]
URLS: list[object] = [
    "http://a:1", "http://a", "HTTP://a:1", "http://[::1]:80", "http://a:1/", "https://a:1",
    "http://a:1/base", "a:1", "http://", "http://a:99999", "http://user@a:1", "http://a:1?x",
    "http://a:1#x", "ftp://a", "", 5,
]
SPECIFIC: dict[str, list[object]] = {
    "port": [0, 1, 65535, 65536, "80"],
    "status": [99, 100, 199, 200, 599, 600],
    "statusCode": [99, 100, 199, 200, 599, 600],
    "overflow": ["Reject", "Placeholder", "reject", "Spill", ""],
    "clients": ["Browsers", "All", "browsers", "Everyone", ""],
    "responseMode": ["Always", "WhenUnavailable", "always", ""],
    "type": ["Cookie", "Header", ""],
    "targetValue": [0, 1, 2**31 - 1, 2**31, -3, 2.5, 3.0],
    "min": [0, 1000, 2**31],
    "max": [1, 0, 2**31 - 1, 2**31],
    "timeoutSeconds": [0, 1, 2**31],
    "fallbackUpstream": URLS,
    "body": ["x" * 32768, "x" * 32769, ""],
}


def _mutations_of(value: object, key: str | None, path: str) -> Iterator[object]:
    """Values to put where `value` is (the value at `path`, whose own key is `key`)."""
    if key in DURATION_KEYS:
        yield from DURATIONS
    if key in SPECIFIC:
        yield from SPECIFIC[key]
    if key in ("hosts", "host") or re.search(r"hosts\[\d+\]$", path):
        if not isinstance(value, list):
            yield from HOSTS
    if re.search(r"pathPrefixes\[\d+\]$", path) or (key == "value" and ".paths[" in path):
        yield from PATHS
    if key == "name" and re.search(r"headers\[\d+\]\.name$", path):
        yield from HEADER_NAMES
    if key == "headers" and isinstance(value, dict):
        yield from RESPONSE_HEADER_VALUES if "staticRoutes" in path else RESPONSE_HEADERS
    # Generic, by type.
    yield None
    if isinstance(value, bool):
        yield from ("true", 1)
    elif isinstance(value, int):
        yield from (0, -1, 2**31, 1.5, float(value), str(value), True, "x", [value])
    elif isinstance(value, str):
        yield from ("", " ", "\t", 7, True, [value], {"k": value})
    elif isinstance(value, list):
        yield from ("x", {}, [], [None])
    elif isinstance(value, dict):
        yield from ("x", [], {}, 3)


def _typo(key: str) -> str:
    """`hosts` -> `hotss`: a near miss, so the "did you mean" path runs."""
    return key[:2] + key[3:] + key[2] if len(key) > 3 else key + "x"


def _walk(
    node: object, path: str
) -> Iterator[tuple[str, Callable[[Any, object], None], object]]:
    """(path, setter-into-a-copy, current value) for every field and list item under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}"
            yield sub, _setter(sub), value
            yield from _walk(value, sub)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            sub = f"{path}[{index}]"
            yield sub, _setter(sub), value
            yield from _walk(value, sub)


_REMOVE = object()


def _setter(path: str) -> Callable[[Any, object], None]:
    """A function that sets (or with `_REMOVE` deletes) `path` in a document."""
    parts = re.findall(r"\[\d+\]|[^.\[\]]+", path)

    def set_in(document: Any, value: object) -> None:
        node = document
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        last = parts[-1]
        index: int | str = int(last[1:-1]) if last.startswith("[") else last
        if value is _REMOVE:
            del node[index]
        else:
            node[index] = value

    return set_in


@dataclass(frozen=True)
class Case:
    kind: Kind
    label: str
    document: Obj


def _mutations(kind: Kind, base_name: str, spec: Obj) -> Iterator[Case]:
    base = doc(kind, spec)
    yield Case(kind, f"{base_name} as is", base)
    for path, set_in, value in list(_walk(base["spec"], "spec")):
        key = None if path.endswith("]") else path.rsplit(".", 1)[-1]
        news: list[tuple[object, str]] = [(_REMOVE, "removed")]
        news += [(new, f"= {json.dumps(new)[:40]}") for new in _mutations_of(value, key, path)]
        if isinstance(value, dict):
            news += [({**value, extra: "x"}, f"+ unknown key {extra!r}")
                     for extra in ("bogus", _typo(next(iter(value), "key")))]
            if "port" in value or "portName" in value:
                news.append(({**value, "port": 80, "portName": "http"}, "both port, portName"))
        for new, what in news:
            changed = copy.deepcopy(base)
            set_in(changed, new)
            yield Case(kind, f"{base_name}: {path} {what}", changed)
    for extra in ("bogus", "sepc"):
        changed = copy.deepcopy(base)
        changed[extra] = {}
        yield Case(kind, f"{base_name}: top-level unknown key {extra!r}", changed)
    yield Case(kind, f"{base_name}: no metadata.name", {**base, "metadata": {}})
    yield Case(kind, f"{base_name}: no spec", {k: v for k, v in base.items() if k != "spec"})
    yield Case(kind, f"{base_name}: spec is a string", {**base, "spec": "x"})


def corpus() -> list[Case]:
    cases: list[Case] = []
    for index, (kind, spec) in enumerate(EXAMPLES):
        cases.append(Case(kind, f"example {index}", doc(kind, spec)))
    cases += _mutations(HTTPSO, "httpso-full", HTTPSO_FULL)
    cases += _mutations(HTTPSO, "httpso-legacy", HTTPSO_LEGACY)
    cases += _mutations(IR, "ir-full", IR_FULL)
    cases += _mutations(IR, "ir-alt", IR_ALT)
    # Cross-field rules the walk above does not reach.
    cases += [
        Case(HTTPSO, "host and hosts", doc(HTTPSO, {**HTTPSO_LEGACY, "hosts": ["b.example"]})),
        Case(HTTPSO, "deployment and the same name", doc(HTTPSO, {
            **HTTPSO_LEGACY, "scaleTargetRef": {
                "deployment": "app", "name": "app", "service": "app", "port": 80}})),
        Case(HTTPSO, "fallbackUpstream and a failover ref", doc(HTTPSO, {
            **HTTPSO_FULL, "coldStart": {"fallbackUpstream": "http://a:1"}})),
        Case(HTTPSO, "replicas.min above the default max", doc(HTTPSO, {
            **HTTPSO_FULL, "replicas": {"min": 101}})),
        Case(HTTPSO, "replicas.min at the default max", doc(HTTPSO, {
            **HTTPSO_FULL, "replicas": {"min": 100}})),
        Case(HTTPSO, "timeouts 0s, which KEDA reads as unset", doc(HTTPSO, {
            **HTTPSO_FULL, "timeouts": {"conditionWait": "0s"}})),
        Case(HTTPSO, "granularity longer than the default window", doc(HTTPSO, {
            **HTTPSO_FULL, "scalingMetric": {"requestRate": {"granularity": "2m"}}})),
        Case(HTTPSO, "granularity = window in other units", doc(HTTPSO, {
            **HTTPSO_FULL, "scalingMetric": {"requestRate": {"granularity": 60,
                                                             "window": "1m"}}})),
        Case(IR, "granularity longer than window", doc(IR, {
            **IR_FULL, "scalingMetric": {"requestRate": {
                "targetValue": 1, "window": "1s", "granularity": "1001ms"}}})),
        Case(IR, "overflow Placeholder without a placeholder", doc(IR, {
            **IR_FULL, "coldStart": {"maxPendingRequests": 1, "overflow": "Placeholder"}})),
        Case(IR, "only overflow", doc(IR, {**IR_FULL, "coldStart": {"overflow": "Reject"}})),
        Case(IR, "body and bodyFromConfigMap", doc(IR, {
            **IR_FULL, "coldStart": {"placeholder": {"response": {
                "body": "x", "bodyFromConfigMap": {"name": "c"}}}}})),
        Case(IR, "a host twice in a rule", doc(IR, {
            **IR_FULL, "rules": [{"hosts": ["a.example", "a.example"]}]})),
        Case(IR, "the same host in two rules", doc(IR, {
            **IR_FULL, "rules": [{"hosts": ["a.example"]}, {"hosts": ["a.example"]}]})),
        Case(IR, "a header twice in a rule", doc(IR, {
            **IR_FULL, "rules": [{"headers": [{"name": "X-A"}, {"name": "X-A"}]}]})),
        Case(HTTPSO, "a header twice", doc(HTTPSO, {
            **HTTPSO_FULL, "headers": [{"name": "X-A"}, {"name": "X-A", "value": "1"}]})),
    ]
    seen: set[str] = set()  # one request per distinct document
    unique = []
    for case in cases:
        text = json.dumps([case.kind, case.document], sort_keys=True)
        if text not in seen:
            seen.add(text)
            unique.append(case)
    return unique


# Rules the model enforces and no CRD schema can state; for each, a document only the model
# refuses and the exact key it names. Keep this list short and every entry explained.
@dataclass(frozen=True)
class ModelOnly:
    kind: Kind
    why: str
    spec: Obj
    key: str


_HEADER_CASE = ("header names are case-insensitive, so X-A beside x-a is listed twice; CEL "
                "could compare them only with maxItems/maxLength bounds KEDA's API does not have")
_STATIC_HEADER_NAMES = ("a static route's response header names: a CEL rule over map keys "
                        "inside the unbounded staticRoutes list is over the API server's cost "
                        "budget (the placeholder's, outside any list, are in the schema)")
MODEL_ONLY: list[ModelOnly] = [
    ModelOnly(HTTPSO, "KEDA's operator, not its schema, refuses both metrics; so does ours",
              {**HTTPSO_FULL, "scalingMetric": {"concurrency": {}, "requestRate": {}}},
              "spec.scalingMetric.requestRate"),
    ModelOnly(HTTPSO, _HEADER_CASE,
              {**HTTPSO_FULL, "headers": [{"name": "X-A"}, {"name": "x-a"}]},
              "spec.headers[1].name"),
    ModelOnly(IR, _HEADER_CASE,
              {**IR_FULL, "rules": [{"headers": [{"name": "X-A"}, {"name": "x-a"}]}]},
              "spec.rules[0].headers[1].name"),
    ModelOnly(IR, _HEADER_CASE,
              {**IR_FULL, "staticRoutes": [{"rules": [{"headers": [
                  {"name": "X-A"}, {"name": "x-a"}]}], "response": {}}]},
              "spec.staticRoutes[0].rules[0].headers[1].name"),
    ModelOnly(IR, _STATIC_HEADER_NAMES,
              {**IR_FULL, "staticRoutes": [{"rules": [{}], "response": {
                  "headers": {"a b": "x"}}}]},
              "spec.staticRoutes[0].response.headers"),
    ModelOnly(IR, _STATIC_HEADER_NAMES,
              {**IR_FULL, "staticRoutes": [{"rules": [{}], "response": {
                  "headers": {"Content-Length": "1"}}}]},
              "spec.staticRoutes[0].response.headers"),
]


# -- the two judges ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerVerdict:
    returned: Obj | None  # the object as the API server would store it, or None if refused
    fields: tuple[str, ...] = ()  # the fields its error names
    text: str = ""


_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')
_FORMAT_FIELD = re.compile(r"format \w+ in (\S+)")
# "spec.hosts[0]: Invalid value: ..." in the message, for when there are no causes to read.
_MESSAGE_FIELD = re.compile(r"\b((?:spec|metadata)(?:\.[\w-]+|\[\d+\])*): ")


def _error_fields(error: ApiError) -> tuple[str, ...]:
    fields = [str(c.get("field")) for c in error.details.get("causes") or []]
    fields += _UNKNOWN_FIELD.findall(error.message)
    fields += [m.rstrip(",]") for m in _FORMAT_FIELD.findall(error.message)]
    fields += _MESSAGE_FIELD.findall(error.message)
    return tuple(f for f in fields if f and f != "<nil>")


async def ask_server(kube: Kube, namespace: str, kind: Kind, document: Obj) -> ServerVerdict:
    try:
        returned = await kube.request(
            "POST", RESOURCES[kind].path(namespace), query=DRY_RUN, body=document
        )
    except ApiError as error:
        if error.status not in (400, 422):
            raise
        return ServerVerdict(None, _error_fields(error), str(error))
    return ServerVerdict(returned)


def ask_model(kind: Kind, document: Obj, namespace: str) -> HTTPScaledObject | InterceptorRoute:
    return PARSERS[kind](document, default_namespace=namespace)


def first_difference(a: object, b: object, where: str = "") -> tuple[str, object, object]:
    """Where two parsed objects first differ (dataclass attributes, tuple items)."""
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if x != y:
                return first_difference(x, y, f"{where}.{f.name}")
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
    return where, a, b


def _steps(path: str) -> list[str]:
    """`spec.rules[0].hosts[1]` -> ["spec", "rules", "[0]", "hosts", "[1]"]."""
    return re.findall(r"\[\d+\]|[^.\[\]]+", path)


def same_field(model_key: str, server_fields: tuple[str, ...]) -> bool:
    """Some field the server names and the model's key are one a prefix of the other."""
    mine = _steps(model_key)
    for field in server_fields:
        theirs = _steps(field)
        n = min(len(mine), len(theirs))
        if n and mine[:n] == theirs[:n]:
            return True
    return False


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture
async def api(k8s_cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    async with k8s_cluster.client() as api:
        yield api


@pytest.fixture
async def kube(api: client.ApiClient, httpscale_crds: list[str]) -> Kube:
    return Kube(api)


@pytest.fixture
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    core = client.CoreV1Api(api)
    name = f"crds-{secrets.token_hex(3)}"
    await core.create_namespace({"metadata": {"name": name}})
    yield name
    await core.delete_namespace(name)


async def judge_all(kube: Kube, namespace: str, cases: list[Case]) -> list[ServerVerdict]:
    gate = asyncio.Semaphore(PARALLEL)

    async def one(case: Case) -> ServerVerdict:
        async with gate:
            return await ask_server(kube, namespace, case.kind, case.document)

    return await asyncio.gather(*(one(c) for c in cases))


# -- tests -------------------------------------------------------------------------------------

async def test_model_and_api_server_agree_on_every_document(kube: Kube, namespace: str) -> None:
    cases = corpus()
    verdicts = await judge_all(kube, namespace, cases)
    problems: list[str] = []
    counts = {"both accept": 0, "both refuse": 0}
    for case, server in zip(cases, verdicts, strict=True):
        try:
            parsed = ask_model(case.kind, case.document, namespace)
        except ConfigError as error:
            if server.returned is not None:
                problems.append(f"{case.label}: only the model refuses: {error}")
            elif not same_field(error.key, server.fields):
                problems.append(f"{case.label}: model names {error.key!r} ({error.message}), "
                                f"the API server {list(server.fields)}: {server.text[:300]}")
            else:
                counts["both refuse"] += 1
            continue
        if server.returned is None:
            problems.append(f"{case.label}: only the API server refuses: {server.text[:300]}")
            continue
        # The server's defaults must be the model's: read back, the object is the same.
        again = ask_model(case.kind, server.returned, namespace)
        if again != parsed:
            where, mine, theirs = first_difference(parsed, again)
            problems.append(f"{case.label}: defaults differ at {where}: the model reads "
                            f"{mine!r} as written, {theirs!r} as the API server returns it")
        else:
            counts["both accept"] += 1
    print(f"{len(cases)} documents: {counts}")
    assert not problems, f"{len(problems)} disagreements:\n" + "\n".join(problems[:40])
    # The corpus really covers both outcomes, in numbers that cannot shrink unnoticed.
    assert counts["both accept"] > 150 and counts["both refuse"] > 600, counts


async def test_model_only_rules_are_exactly_these(kube: Kube, namespace: str) -> None:
    cases = [Case(m.kind, m.why, doc(m.kind, m.spec)) for m in MODEL_ONLY]
    verdicts = await judge_all(kube, namespace, cases)
    for rule, server in zip(MODEL_ONLY, verdicts, strict=True):
        assert server.returned is not None, f"the schema now states it, drop it: {rule.why}"
        with pytest.raises(ConfigError) as refused:
            ask_model(rule.kind, doc(rule.kind, rule.spec), namespace)
        assert refused.value.key == rule.key, rule.why


async def test_api_server_applies_the_model_defaults(kube: Kube, namespace: str) -> None:
    httpso = doc(HTTPSO, {
        "scaleTargetRef": {"name": "a", "service": "a", "port": 80},
        "coldStartTimeoutFailoverRef": {"service": "b", "port": 80},
        "scalingMetric": {"requestRate": {}},
    })
    concurrency = doc(HTTPSO, {
        "scaleTargetRef": {"name": "a", "service": "a", "port": 80},
        "scalingMetric": {"concurrency": {}},
    })
    route = doc(IR, {
        "target": {"service": "a", "port": 80},
        "scalingMetric": {"requestRate": {"targetValue": 5}},
        "staticRoutes": [{"rules": [{}], "response": {}}],
        "sessionPersistence": {},
    })
    got = [(await ask_server(kube, namespace, d["kind"], d)).returned
           for d in (httpso, concurrency, route)]
    assert all(g is not None for g in got)
    spec, conc_spec, route_spec = (g["spec"] for g in got if g is not None)
    assert spec["coldStartTimeoutFailoverRef"]["timeoutSeconds"] == 30
    assert spec["scalingMetric"]["requestRate"] == {
        "targetValue": 100, "window": "1m", "granularity": "1s"}
    assert conc_spec["scalingMetric"]["concurrency"] == {"targetValue": 100}
    assert route_spec["scalingMetric"]["requestRate"] == {
        "targetValue": 5, "window": "1m", "granularity": "1s"}
    assert route_spec["staticRoutes"][0]["responseMode"] == "WhenUnavailable"
    assert route_spec["sessionPersistence"] == {"type": "Cookie"}

    model = parse_httpso(httpso)
    ref = model.spec.cold_start_timeout_failover_ref
    assert ref is not None and ref.timeout_seconds == 30
    assert model.spec.effective_scaling_metric() == ScalingMetric("requestRate", 100.0, 60.0, 1.0)
    assert parse_httpso(concurrency).spec.effective_scaling_metric() == ScalingMetric(
        "concurrency", 100.0)
    ir = parse_interceptor_route(route)
    assert ir.spec.request_rate == ScalingMetric("requestRate", 5.0, 60.0, 1.0)
    assert ir.spec.static_routes[0].response_mode == "WhenUnavailable"
    assert ir.spec.session_persistence is not None
    assert ir.spec.session_persistence.type == "Cookie"


TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


async def test_kubectl_get_shows_why_an_object_is_not_ready(kube: Kube, namespace: str) -> None:
    """The printer columns: Ready and its Reason by default, the Message with -o wide."""
    condition = {
        "type": "Ready", "status": "False", "reason": "ServiceNotFound",
        "message": "Service app not found", "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    httpso = doc(HTTPSO, {"scaleTargetRef": {"name": "app", "service": "app", "port": 80},
                          "replicas": {"min": 0, "max": 5}}, name="shown")
    route = doc(IR, {"target": {"service": "app", "port": 80},
                     "scalingMetric": {"concurrency": {"targetValue": 1}}}, name="shown")
    statuses = {
        HTTPSO: {"targetWorkload": "apps/v1/Deployment/app", "targetService": "app:80",
                 "conditions": [condition]},
        IR: {"conditions": [condition]},
    }
    expected: dict[Kind, tuple[list[str], list[object]]] = {
        HTTPSO: (["Name", "TargetWorkload", "TargetService", "MinReplicas", "MaxReplicas",
                  "Ready", "Reason", "Age", "Message"],
                 ["shown", "apps/v1/Deployment/app", "app:80", 0, 5, "False",
                  "ServiceNotFound"]),
        IR: (["Name", "TargetService", "Ready", "Reason", "Age", "Message"],
             ["shown", "app", "False", "ServiceNotFound"]),
    }
    for kind, document in ((HTTPSO, httpso), (IR, route)):
        res = RESOURCES[kind]
        await kube.request("POST", res.path(namespace), body=document)
        await kube.request(
            "PATCH", res.path(namespace, "shown", "status"),
            body={"status": statuses[kind]}, content_type="application/merge-patch+json")
        table = await kube.request("GET", res.path(namespace, "shown"), accept=TABLE)
        columns = table["columnDefinitions"]
        names, first_cells = expected[kind]
        assert [c["name"] for c in columns] == names
        assert [c["priority"] for c in columns if c["name"] == "Message"] == [1]
        assert all(c["priority"] == 0 for c in columns if c["name"] != "Message")
        cells = table["rows"][0]["cells"]
        assert cells[: len(first_cells)] == first_cells
        assert cells[-1] == "Service app not found"
