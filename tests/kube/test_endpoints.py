"""A Service port's endpoints from EndpointSlices (pure): port names, conditions, families."""

from __future__ import annotations

from typing import Any

import pytest

from httpscale.kube.endpoints import (
    ServicePort,
    compact_slice,
    ready_endpoints,
    service_port,
    upstream_scheme,
)
from httpscale.routing.spec import Endpoint


def _service(*ports: dict[str, Any], type_: str = "ClusterIP") -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": type_, "ports": list(ports)}}


def _slice(ports: list[tuple[str, int]], *endpoints: tuple[str, dict[str, Any]],
           family: str = "IPv4") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "shop", "resourceVersion": "5",
                     "labels": {"kubernetes.io/service-name": "web", "other": "x"},
                     "managedFields": [{"manager": "kcm"}]},
        "addressType": family,
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
        "endpoints": [{"addresses": [ip], "conditions": c, "targetRef": {"name": ip}}
                      for ip, c in endpoints],
    }


def test_a_port_is_named_by_number_or_name() -> None:
    svc = _service({"name": "http", "port": 80, "targetPort": 8080},
                   {"name": "admin", "port": 9090, "targetPort": "admin"})
    assert service_port(svc, 80, None) == ServicePort("http", 80)
    assert service_port(svc, None, "admin") == ServicePort("admin", 9090)
    assert service_port(svc, 81, None) == "the Service has no port 81"
    assert service_port(svc, None, "web") == "the Service has no port name 'web'"
    assert service_port(None, 80, None) == "no such Service"
    assert "ExternalName" in str(service_port(_service(type_="ExternalName"), 80, None))
    # A single unnamed port: its slices name it "" too.
    assert service_port(_service({"port": 80}), 80, None) == ServicePort("", 80)


@pytest.mark.parametrize(
    ("app_protocol", "scheme"),
    [
        ("", "http"), ("http", "http"), ("tcp", "http"), ("kubernetes.io/ws", "http"),
        ("https", "https"), ("kubernetes.io/wss", "https"),
        ("kubernetes.io/h2c", "h2c"), ("H2C", "h2c"), ("grpc", "h2c"), ("http2", "h2c"),
        ("kubernetes.io/h2", "h2"), ("grpcs", "h2"),
    ],
)
def test_the_app_protocol_of_the_port_says_how_to_talk_to_its_pods(
    app_protocol: str, scheme: str
) -> None:
    svc = _service({"name": "web", "port": 80, "appProtocol": app_protocol} if app_protocol
                   else {"name": "web", "port": 80})
    port = service_port(svc, 80, None)
    assert port == ServicePort("web", 80, app_protocol)
    assert upstream_scheme(port.app_protocol) == scheme


def test_ready_unset_means_ready_and_the_slice_gives_the_pod_port() -> None:
    s = _slice([("http", 8080), ("admin", 9000)],
               ("10.0.0.2", {"ready": True}), ("10.0.0.1", {}), ("10.0.0.3", {"ready": False}))
    assert ready_endpoints([s], ServicePort("http", 80)) == (
        Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080))
    assert ready_endpoints([s], ServicePort("admin", 9090)) == (
        Endpoint("10.0.0.1", 9000), Endpoint("10.0.0.2", 9000))
    assert ready_endpoints([s], ServicePort("other", 1)) == ()


def test_serving_terminating_endpoints_only_when_none_is_ready() -> None:
    draining = {"ready": False, "serving": True, "terminating": True}
    gone = {"ready": False, "serving": False, "terminating": True}
    s = _slice([("", 8080)], ("10.0.0.1", draining), ("10.0.0.2", gone))
    assert ready_endpoints([s], ServicePort("", 80)) == (Endpoint("10.0.0.1", 8080),)
    s2 = _slice([("", 8080)], ("10.0.0.3", {"ready": True}))
    assert ready_endpoints([s, s2], ServicePort("", 80)) == (Endpoint("10.0.0.3", 8080),)


def test_ipv6_slices_are_skipped_and_compacting_keeps_what_is_read() -> None:
    v6 = _slice([("", 8080)], ("fd00::1", {"ready": True}), family="IPv6")
    assert ready_endpoints([v6], ServicePort("", 80)) == ()
    s = _slice([("http", 8080)], ("10.0.0.1", {"ready": True}))
    small = compact_slice(s)
    assert "managedFields" not in small["metadata"]
    assert small["metadata"]["labels"] == {"kubernetes.io/service-name": "web"}
    assert ready_endpoints([small], ServicePort("http", 80)) == ready_endpoints(
        [s], ServicePort("http", 80))
