"""The doctor's pure checks: a healthy snapshot, then one miswiring at a time.

The same kinds of miswiring are made for real on the test cluster in
tests/k8s/test_doctor.py; here are the cases a shared cluster cannot be put in (KEDA
stopped, its Lease stale, a component down) and the fine print of each rule.
"""

from __future__ import annotations

import json

import pytest
from doctorkit import (
    SCALER,
    cond,
    deployment,
    healthy,
    httpso,
    ingress,
    service,
    ts,
    written_for,
)

from httpscale.doctor.cluster import check_cluster
from httpscale.doctor.findings import Finding, Status, exit_code
from httpscale.doctor.live import Probe, ProbeResult, judge, plan_probes
from httpscale.doctor.output import format_json, format_text
from httpscale.doctor.snapshot import ClusterSnapshot


def _check(snap: ClusterSnapshot) -> list[Finding]:
    return check_cluster(snap)[0]


def _bad(findings: list[Finding]) -> list[tuple[str, str, Status]]:
    return [(f.check, f.subject, f.status) for f in findings
            if f.status in (Status.WARN, Status.FAIL)]


def _one(findings: list[Finding], check: str, subject: str) -> Finding:
    hits = [f for f in findings if f.check == check and f.subject == subject]
    assert len(hits) == 1, hits
    return hits[0]


def test_a_healthy_installation_passes_every_check() -> None:
    findings = _check(healthy())
    assert _bad(findings) == []
    assert exit_code(findings) == 0
    # Every section reported what it looked at, not only what broke.
    assert {f.check.partition(".")[0] for f in findings} == {"keda", "httpscale", "apps",
                                                            "traffic"}


# -- traffic in --------------------------------------------------------------------------------


def test_an_ingress_straight_to_the_apps_service_fails_with_the_proxy_as_fix() -> None:
    snap = healthy(ingresses={"shop/app": ingress("shop", "app", "app.example.com",
                                                  ("/", "app", 80))})
    findings = _check(snap)
    assert _bad(findings) == [
        ("traffic.ingress", "Ingress shop/app host app.example.com path /", Status.FAIL)]
    f = findings[[x.check for x in findings].index("traffic.ingress")]
    assert "straight to Service shop/app, the app's own Service" in f.message
    assert "Service httpscale/httpscale-interceptor-proxy port 8080" in f.fix
    assert exit_code(findings) == 1


def test_an_ingress_to_the_proxy_itself_on_the_wrong_port() -> None:
    snap = healthy(ingresses={"httpscale/app": ingress(
        "httpscale", "app", "app.example.com", ("/", "httpscale-interceptor-proxy", 9090))})
    f = _one(_check(snap), "traffic.ingress",
             "Ingress httpscale/app host app.example.com path /")
    assert f.status is Status.FAIL
    assert f.message.endswith("on port 9090, which its Service does not have")
    # By name: the Service's port called http is 8080.
    snap = healthy(ingresses={"httpscale/app": ingress(
        "httpscale", "app", "app.example.com", ("/", "httpscale-interceptor-proxy", "http"))})
    assert _one(_check(snap), "traffic.ingress",
                "Ingress httpscale/app host app.example.com path /").status is Status.OK


def test_a_path_the_httpso_serves_under_an_ingress_path_to_another_service() -> None:
    """`/` to the proxy and `/api` elsewhere: the HTTPSO on `/api` is cut off. `/` of an
    Ingress whose host an HTTPSO serves only under `/shop` is judged by that prefix."""
    api = httpso("shop", "api", ["app.example.com"], pathPrefixes=["/api"])
    base = healthy()
    snap = healthy(
        httpsos={"shop/app": base.httpsos["shop/app"], "shop/api": api},
        scaled_objects={**base.scaled_objects, "shop/api": written_for(api)},
        services={**base.services, "shop/api": service("shop", "api", ("http", 80))},
        workloads={"apps/v1/Deployment": {"shop/app": deployment("shop", "app"),
                                          "shop/api": deployment("shop", "api")}},
        ingresses={"shop/app": ingress("shop", "app", "app.example.com",
                                       ("/", "interceptor", 8080), ("/api", "legacy", 80))})
    findings = _check(snap)
    cut = _one(findings, "traffic.ingress", "Ingress shop/app host app.example.com path /api")
    assert cut.status is Status.FAIL
    assert cut.message.startswith("sends HTTPScaledObject shop/api's traffic to Service "
                                  "shop/legacy (which does not exist), not to the interceptor")
    assert _one(findings, "traffic.ingress",
                "Ingress shop/app host app.example.com path /").status is Status.OK


def test_wildcard_hosts_match_and_other_hosts_are_not_judged() -> None:
    app = httpso("shop", "app", ["*.example.com"])
    snap = healthy(httpsos={"shop/app": app},
                   scaled_objects={**healthy().scaled_objects, "shop/app": written_for(app)},
                   ingresses={"shop/a": ingress("shop", "a", "Deep.Example.com",
                                                ("/", "app", 80)),
                              "shop/b": ingress("shop", "b", "other.org", ("/", "app", 80))})
    findings = _check(snap)
    assert _bad(findings) == [
        ("traffic.ingress", "Ingress shop/a host Deep.Example.com path /", Status.FAIL)]
    assert not [f for f in findings if "other.org" in f.subject]


def test_an_httproute_across_namespaces_needs_a_reference_grant() -> None:
    route = {"metadata": {"namespace": "shop", "name": "web"},
             "spec": {"hostnames": ["app.example.com"], "rules": [{"backendRefs": [
                 {"name": "httpscale-interceptor-proxy", "namespace": "httpscale",
                  "port": 8080}]}]}}
    subject = "HTTPRoute shop/web host app.example.com rule 0 path /"
    findings = _check(healthy(http_routes={"shop/web": route}, reference_grants={}))
    refused = _one(findings, "traffic.httproute", subject)
    assert refused.status is Status.FAIL and "no ReferenceGrant in httpscale" in refused.message
    grant = {"metadata": {"namespace": "httpscale", "name": "g"},
             "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                "namespace": "shop"}],
                      "to": [{"group": "", "kind": "Service"}]}}
    findings = _check(healthy(http_routes={"shop/web": route},
                              reference_grants={"httpscale/g": grant}))
    assert _one(findings, "traffic.httproute", subject).status is Status.OK


def test_an_httproute_the_gateway_refused_says_so_in_its_words() -> None:
    route = {"metadata": {"namespace": "httpscale", "name": "web"},
             "spec": {"hostnames": ["app.example.com"], "rules": [{"backendRefs": [
                 {"name": "httpscale-interceptor-proxy", "port": 8080}]}]},
             "status": {"parents": [{"parentRef": {"name": "public"}, "conditions": [
                 cond("Accepted", "False", reason="NotAllowedByListeners",
                      message="no listener for this namespace")]}]}}
    findings = _check(healthy(http_routes={"httpscale/web": route}, reference_grants={}))
    status = _one(findings, "traffic.httproute", "HTTPRoute httpscale/web")
    assert status.status is Status.FAIL
    assert status.message == ("Accepted False on Gateway public: NotAllowedByListeners: "
                              "no listener for this namespace")


# -- KEDA --------------------------------------------------------------------------------------


def test_keda_missing_fails_keda_and_each_app_scaling() -> None:
    base = healthy()
    snap = healthy(crds={k: v for k, v in base.crds.items() if k.endswith(".http.keda.sh")},
                   api_services={}, keda_deployments={}, scaled_objects={})
    assert {(c, s) for c, s, st in _bad(_check(snap)) if st is Status.FAIL} == {
        ("keda.crds", "CustomResourceDefinition scaledobjects.keda.sh"),
        ("keda.metrics-api", "APIService v1beta1.external.metrics.k8s.io"),
        ("keda.operator", "KEDA operator"),
        ("apps.scaledobject", "HTTPScaledObject shop/app"),
    }


@pytest.mark.parametrize(("renewed", "status"), [(10, Status.OK), (600, Status.FAIL)])
def test_keda_operator_by_its_lease(renewed: float, status: Status) -> None:
    lease = {"metadata": {"namespace": "keda", "name": "operator.keda.sh"},
             "spec": {"renewTime": ts(renewed), "leaseDurationSeconds": 15,
                      "holderIdentity": "keda-1"}}
    snap = healthy(keda_deployments={}, keda_leases={"keda/operator.keda.sh": lease})
    f = _one(_check(snap), "keda.operator", "Lease keda/operator.keda.sh")
    assert f.status is status


def test_keda_operator_with_no_ready_replica() -> None:
    snap = healthy(keda_deployments={"keda/keda-operator": deployment("keda", "keda-operator",
                                                                      available=0)})
    f = _one(_check(snap), "keda.operator", "Deployment keda/keda-operator")
    assert f.status is Status.FAIL and "kubectl -n keda logs deployment/keda-operator" in f.fix


def test_keda_operator_from_scaled_objects_young_ones_wait_old_ones_fail() -> None:
    """No Deployment and no Lease: KEDA's marks on ScaledObjects decide; one made seconds ago
    is not handled yet (a warning), one unmarked for minutes means no operator (a failure)."""
    app = healthy().httpsos["shop/app"]
    unmarked = written_for(app)
    del unmarked["metadata"]["finalizers"]
    unmarked["status"] = {}
    for age, status in ((5, Status.WARN), (600, Status.FAIL)):
        so = {**unmarked, "metadata": {**unmarked["metadata"], "creationTimestamp": ts(age)}}
        snap = healthy(keda_deployments={}, scaled_objects={"shop/app": so})
        findings = _check(snap)
        assert _one(findings, "keda.operator", "KEDA operator").status is status
        scaling = [f for f in findings if f.check == "apps.scaledobject"]
        assert [f.status for f in scaling] == [status]


# -- httpscale's components and the apps -------------------------------------------------------


def test_a_component_at_zero_and_a_proxy_service_without_endpoints() -> None:
    base = healthy()
    snap = healthy(
        deployments={**base.deployments,
                     "httpscale-interceptor": deployment("httpscale", "httpscale-interceptor",
                                                         2, available=0)},
        endpoint_slices={k: v for k, v in base.endpoint_slices.items()
                         if not k.startswith("httpscale/httpscale-interceptor")})
    findings = _check(snap)
    assert {(c, s) for c, s, _ in _bad(findings)} == {
        ("httpscale.deployment", "Deployment httpscale/httpscale-interceptor"),
        ("httpscale.service", "Service httpscale/httpscale-interceptor-proxy"),
        ("httpscale.service", "Service httpscale/httpscale-interceptor-admin"),
    }
    proxy = _one(findings, "httpscale.service", "Service httpscale/httpscale-interceptor-proxy")
    assert "no request reaches any app" in proxy.message


def test_httpscale_not_installed_in_that_namespace() -> None:
    findings = _check(healthy(deployments={}))
    f = _one(findings, "httpscale.deployment", "Deployment httpscale/httpscale-operator")
    assert f.status is Status.FAIL and "--namespace" in f.fix


def test_a_scaled_object_pointing_at_another_scaler() -> None:
    app = healthy().httpsos["shop/app"]
    so = written_for(app)
    add_on = "keda-add-ons-http-external-scaler.keda:9090"
    so["spec"]["triggers"][0]["metadata"]["scalerAddress"] = add_on
    findings = _check(healthy(scaled_objects={"shop/app": so}))
    warns = [f for f in findings if f.check == "apps.scaledobject" and f.status is Status.WARN]
    assert [f.message for f in warns] == [
        f"ScaledObject shop/app: KEDA asks {add_on}, not httpscale's scaler "
        "(httpscale-scaler.httpscale:9091)"]
    # The operator's own address passes.
    assert SCALER == "httpscale-scaler.httpscale:9091"


def test_an_invalid_httpso_is_named_by_field() -> None:
    bad = httpso("shop", "app", ["app.example.com"], replicas={"min": 3, "max": 1})
    f = _one(_check(healthy(httpsos={"shop/app": bad})), "apps.spec",
             "HTTPScaledObject shop/app")
    assert f.status is Status.FAIL and "replicas" in f.message


def test_the_operator_behind_on_a_new_generation() -> None:
    app = healthy().httpsos["shop/app"]
    app["metadata"]["generation"] = 2
    f = _one(_check(healthy(httpsos={"shop/app": app})), "apps.operator",
             "HTTPScaledObject shop/app")
    assert f.status is Status.WARN and "generation 1, the object is at 2" in f.message


# -- live requests -----------------------------------------------------------------------------


def test_probes_go_to_running_apps_and_skip_apps_at_zero_unless_waking() -> None:
    base = healthy()
    sleepy = httpso("shop", "sleepy", ["sleepy.example.com"], pathPrefixes=["/v1"])
    snap = healthy(httpsos={**base.httpsos, "shop/sleepy": sleepy},
                   services={**base.services,
                             "shop/sleepy": service("shop", "sleepy", ("http", 80))})
    index = check_cluster(snap)[1]
    probes, skipped = plan_probes(snap, index, wake=False)
    assert [(p.host, p.path, p.at_zero) for p in probes] == [("app.example.com", "/", False)]
    assert [f.message for f in skipped] == [
        "GET http://sleepy.example.com/v1: at zero, not tried (--wake sends it and wakes the app)"]
    probes, skipped = plan_probes(snap, index, wake=True)
    assert [(p.host, p.path, p.at_zero) for p in probes] == [
        ("app.example.com", "/", False), ("sleepy.example.com", "/v1", True)]
    assert skipped == []


PROBE = Probe("HTTPScaledObject shop/app", "shop/app", "app.example.com", "/", (), False)


def _answer(status: int, body: bytes, **headers: str) -> Finding:
    return judge(PROBE, ProbeResult(status, headers, body, 0.5, via="test"))


def test_judging_answers_from_the_app_the_interceptor_and_the_api_server() -> None:
    own = {"Content-Type": "text/plain; charset=utf-8", "X-HTTPScale-Cold-Start": "false"}
    ok = _answer(200, b"hello", **{"X-HTTPScale-Cold-Start": "true"})
    assert ok.status is Status.OK and "200 from the app after waking it" in ok.message
    app_error = _answer(500, b"<html>\n<p>boom</p>\n</html>",
                        **{"X-HTTPScale-Cold-Start": "false", "Content-Type": "text/html"})
    assert app_error.status is Status.WARN and "the app answered 500" in app_error.message
    refused = _answer(502, b"connect to 10.0.1.1:9: Connection refused\n", **own)
    assert refused.status is Status.FAIL
    assert "502 from the interceptor: connect to 10.0.1.1:9" in refused.message
    assert "targetPort" in refused.fix
    no_route = _answer(404, b"no route for host 'app.example.com' and path '/'\n", **own)
    assert no_route.status is Status.FAIL and "/status" in no_route.fix
    forbidden = _answer(403, json.dumps({"kind": "Status", "code": 403,
                                         "message": "services/proxy is forbidden"}).encode())
    assert forbidden.status is Status.WARN and "--proxy" in forbidden.fix
    elsewhere = _answer(200, b"nginx")
    assert elsewhere.status is Status.WARN and "without X-HTTPScale-Cold-Start" in elsewhere.message
    silent = judge(PROBE, ProbeResult(error="no answer within 10s", via="test"))
    assert silent.status is Status.FAIL


# -- output ------------------------------------------------------------------------------------


def test_text_groups_by_section_and_subject_and_json_is_for_scripts() -> None:
    findings = [
        Finding("keda.crds", "CRD a", Status.OK, "installed"),
        Finding("apps.service", "HTTPScaledObject shop/app", Status.OK, "Service ok"),
        Finding("apps.workload", "HTTPScaledObject shop/app", Status.FAIL, "gone", "create it"),
        Finding("apps.operator", "HTTPScaledObject shop/app", Status.WARN, "late", "wait"),
    ]
    text = format_text(findings, "cluster x", unicode=False)
    assert text.splitlines() == [
        "httpscale doctor: cluster x", "",
        "KEDA",
        "  ok CRD a: installed", "",
        "HTTPScaledObjects and InterceptorRoutes",
        "  XX HTTPScaledObject shop/app",
        "      ok Service ok",
        "      XX gone",
        "        fix: create it",
        "      !! late",
        "        fix: wait", "",
        "2 ok, 1 warning(s), 1 failure(s), 0 note(s)",
    ]
    report = json.loads(format_json(findings, "cluster x"))
    assert report["ok"] is False and report["summary"] == {"ok": 2, "info": 0, "warn": 1,
                                                           "fail": 1}
    assert report["findings"][2] == {"check": "apps.workload",
                                     "subject": "HTTPScaledObject shop/app",
                                     "status": "fail", "message": "gone", "fix": "create it"}
    assert exit_code(findings[:2] + findings[3:]) == 0  # a warning does not fail the run
