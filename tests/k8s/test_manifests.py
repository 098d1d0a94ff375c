"""manifests/ and examples/kubernetes/ as kustomize renders them and the apiserver takes them.

Rendered by the real kustomize (`kustomize_binary`), then checked two ways:
- the rendered objects themselves: namespaces and RBAC subjects under a namespace override,
  the one image, the restricted security context of every pod, probes on ports the
  containers declare and the processes listen on, Services and budgets that select the
  Deployments' pods, the interceptor's grace period against its own shutdown, the fleet
  ScaledObject and the ServiceMonitor components, and every `HTTPSCALE_*` variable being an
  option of the command it is given to;
- the apiserver: every object applies with server-side dry-run, then for real, into a
  namespace of the test's own (cluster-scoped RBAC objects get a prefix of that name and are
  deleted after); the pods of every Deployment are admitted under the namespace's
  "restricted" Pod Security enforcement (and a pod that breaks it is refused, so the check
  means something); the RBAC bindings grant the ServiceAccounts in that namespace what they
  need. Every example is accepted (dry-run), and bad variants of them are refused with the
  CRD schema's own message.

Nothing is run: the Deployments are applied with 0 replicas (the end-to-end run of the pods is
elsewhere).
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from testcluster import REQUIRE_ENV
from tlskit import TestCA

from httpscale.cli import main as cli
from httpscale.interceptor.settings import Tls
from httpscale.interceptor.tls_certs import CertStore
from httpscale.kube.api import APPLY_PATCH, ApiError, Kube, Obj
from httpscale.kube.resources import Resource

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
EXAMPLES = ROOT / "examples" / "kubernetes"
IMAGE = "ghcr.io/httpscale/httpscale"
FIELD_MANAGER = "httpscale-test-manifests"
COMPONENTS = ("operator", "interceptor", "scaler")
_RBAC = "rbac.authorization.k8s.io"
KINDS: dict[str, Resource] = {r.kind: r for r in (
    Resource("", "v1", "namespaces", "Namespace", namespaced=False),
    Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
             "CustomResourceDefinition", namespaced=False),
    Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    Resource(_RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
    Resource(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    Resource(_RBAC, "v1", "roles", "Role"),
    Resource(_RBAC, "v1", "rolebindings", "RoleBinding"),
    Resource("", "v1", "services", "Service"),
    Resource("", "v1", "pods", "Pod"),
    Resource("apps", "v1", "deployments", "Deployment"),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    Resource("networking.k8s.io", "v1", "ingresses", "Ingress"),
    Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    Resource("http.keda.sh", "v1alpha1", "httpscaledobjects", "HTTPScaledObject"),
    Resource("http.keda.sh", "v1beta1", "interceptorroutes", "InterceptorRoute"),
)}
SUBJECT_ACCESS_REVIEWS = Resource("authorization.k8s.io", "v1", "subjectaccessreviews",
                                  "SubjectAccessReview", namespaced=False)


# --- rendering --------------------------------------------------------------------------------

def kustomize_binary() -> Path | None:
    """The kustomize binary the tests render with; None when there is none.

    `$HTTPSCALE_KUSTOMIZE` if set, else the one `scripts/testcluster build` makes next to
    KEDA's binaries (`scripts/testcluster keda-bins` prints that directory).
    """
    if override := os.environ.get("HTTPSCALE_KUSTOMIZE"):
        return Path(override)
    versions = dict(line.split("=", 1) for line in
                    (ROOT / "scripts" / "k8s-versions.env").read_text().splitlines()
                    if "=" in line and not line.startswith("#"))
    cache = Path(os.environ.get("HTTPSCALE_CACHE") or Path.home() / ".cache" / "httpscale")
    built = cache / f"keda-{versions['KEDA_VERSION']}-bin" / "kustomize"
    return built if built.is_file() else None


@pytest.fixture(scope="module")
def kustomize() -> Path:
    binary = kustomize_binary()
    if binary is None:
        reason = ("no kustomize binary: run scripts/testcluster build, or set "
                  "HTTPSCALE_KUSTOMIZE to one")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1 makes this a failure)", pytrace=False)
        pytest.skip(reason)
    return binary


def build(kustomize: Path, directory: Path) -> list[Obj]:
    """`kustomize build directory`, parsed."""
    done = subprocess.run([str(kustomize), "build", str(directory)], capture_output=True,
                          text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"kustomize build {directory} failed:\n{done.stderr}", pytrace=False)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(done.stdout, Loader=loader) if doc]


def overlay(tmp: Path, **fields: Any) -> Path:
    """A kustomization in `tmp` on top of manifests/, with `fields`."""
    tmp.mkdir(parents=True, exist_ok=True)
    body = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(MANIFESTS, tmp)], **fields}
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return tmp


@pytest.fixture(scope="module")
def default(kustomize: Path) -> list[Obj]:
    """`kubectl apply -k manifests/`, as it would be applied."""
    return build(kustomize, MANIFESTS)


def one(docs: list[Obj], kind: str, name: str) -> Obj:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in the render"
    return found[0]


def of_kind(docs: list[Obj], kind: str) -> list[Obj]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(deployment: Obj) -> Obj:
    spec: Obj = deployment["spec"]["template"]["spec"]
    return spec


# --- what the commands take -------------------------------------------------------------------

def command_options(component: str) -> dict[str, click.Parameter]:
    """Every environment variable `httpscale <component>` reads, to its option."""
    command = cli.commands[component]
    options: dict[str, click.Parameter] = {}
    for param in command.params:
        envvar = param.envvar
        envvars = [envvar] if isinstance(envvar, str) else list(envvar or ())
        options.update({name: param for name in envvars})
    return options


def setting(container: Obj, component: str, envvar: str) -> str:
    """What the container's process gets for an option: its env value, else the default."""
    for env in container.get("env") or ():
        if env["name"] == envvar:
            return str(env["value"])
    default = command_options(component)[envvar].default
    assert default is not None, f"{envvar} has no default and the manifest sets none"
    return str(default)


# --- the rendered objects ---------------------------------------------------------------------

def test_installs_everything_into_one_namespace_with_one_image(default: list[Obj]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in default)
    assert kinds == sorted([
        ("Namespace", "httpscale"),
        ("CustomResourceDefinition", "httpscaledobjects.http.keda.sh"),
        ("CustomResourceDefinition", "interceptorroutes.http.keda.sh"),
        *[(kind, f"httpscale-{c}") for c in COMPONENTS
          for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment")],
        ("Role", "httpscale-operator"), ("RoleBinding", "httpscale-operator"),
        ("Role", "httpscale-scaler"), ("RoleBinding", "httpscale-scaler"),
        ("Service", "httpscale-interceptor-proxy"), ("Service", "httpscale-interceptor-admin"),
        ("Service", "httpscale-scaler"), ("Service", "httpscale-operator-admin"),
        ("PodDisruptionBudget", "httpscale-interceptor"),
        ("PodDisruptionBudget", "httpscale-scaler"),
        ("ScaledObject", "httpscale-interceptor"),
    ])
    for doc in default:
        namespaced = KINDS[doc["kind"]].namespaced
        assert doc["metadata"].get("namespace") == ("httpscale" if namespaced else None), doc
    labels = one(default, "Namespace", "httpscale")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    images = {c["image"] for d in of_kind(default, "Deployment") for c in pod_spec(d)["containers"]}
    assert images == {f"{IMAGE}:0.1.0"}


def test_a_namespace_override_moves_everything_rbac_subjects_included(kustomize: Path) -> None:
    """examples/kubernetes/install-overlay: another namespace and registry, from an overlay."""
    docs = build(kustomize, EXAMPLES / "install-overlay")
    ns = "platform-http"
    assert [d["metadata"]["name"] for d in of_kind(docs, "Namespace")] == [ns]
    service_accounts = {(d["metadata"]["namespace"], d["metadata"]["name"])
                        for d in of_kind(docs, "ServiceAccount")}
    assert len(service_accounts) == 3
    subjects = 0
    for doc in docs:
        if KINDS[doc["kind"]].namespaced:
            assert doc["metadata"]["namespace"] == ns, doc["metadata"]
        for subject in doc.get("subjects") or ():
            subjects += 1
            assert subject["kind"] == "ServiceAccount"
            assert (subject.get("namespace"), subject["name"]) in service_accounts, \
                f"{doc['kind']}/{doc['metadata']['name']} binds {subject}"
    assert subjects == 5  # 3 ClusterRoleBindings, 2 RoleBindings
    trigger = one(docs, "ScaledObject", "httpscale-interceptor")["spec"]["triggers"][0]
    assert trigger["metadata"]["scalerAddress"] == f"httpscale-scaler.{ns}.svc:9091"
    images = {c["image"] for d in of_kind(docs, "Deployment") for c in pod_spec(d)["containers"]}
    assert images == {"registry.example.com/mirror/httpscale:0.1.0"}


def test_every_pod_meets_the_restricted_pod_security_standard(default: list[Obj]) -> None:
    for deployment in of_kind(default, "Deployment"):
        spec = pod_spec(deployment)
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True
        assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0
        assert isinstance(context["runAsGroup"], int) and context["runAsGroup"] > 0
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not spec.get("hostNetwork") and not spec.get("hostPID")
        assert not spec.get("volumes"), "read-only root: nothing to write to, no volume needed"
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, deployment["metadata"]["name"]


def test_containers_run_their_command_with_real_options_on_the_ports_they_declare(
    default: list[Obj],
) -> None:
    # containerPort name -> the option that sets what the process listens on
    listens = {
        "interceptor": {"http": "HTTPSCALE_PORT", "admin": "HTTPSCALE_ADMIN_PORT"},
        "scaler": {"grpc": "HTTPSCALE_GRPC_PORT", "admin": "HTTPSCALE_ADMIN_PORT"},
        "operator": {"admin": "HTTPSCALE_ADMIN_PORT"},
    }
    for component in COMPONENTS:
        spec = pod_spec(one(default, "Deployment", f"httpscale-{component}"))
        assert spec["serviceAccountName"] == f"httpscale-{component}"
        # Link variables like HTTPSCALE_SCALER_PORT=tcp://... would be read as options.
        assert spec["enableServiceLinks"] is False
        (container,) = spec["containers"]
        assert container["command"] == ["httpscale", component]
        assert not container.get("args")
        options = command_options(component)
        for env in container["env"]:
            assert env["name"] in options or env["name"] == "POD_NAMESPACE", \
                f"{component}: {env['name']} is no option of httpscale {component}"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert {name: int(setting(container, component, option))
                for name, option in listens[component].items()} == ports
        for probe in ("readinessProbe", "livenessProbe"):
            action = container[probe]
            if "grpc" in action:
                assert action["grpc"]["port"] in ports.values(), (component, probe)
            else:
                assert action["httpGet"]["port"] in ports, (component, probe)
        resources = container["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"}, component
        assert "memory" in resources["limits"], component
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
                for c in COMPONENTS if c != "interceptor"
                for e in pod_spec(one(default, "Deployment", f"httpscale-{c}"))["containers"][0]
                ["env"] if "valueFrom" in e}
    assert downward == {"POD_NAMESPACE": "metadata.namespace"}


def test_probes_ask_what_each_component_answers(default: list[Obj]) -> None:
    def probes(component: str) -> dict[str, Obj]:
        (container,) = pod_spec(one(default, "Deployment", f"httpscale-{component}"))["containers"]
        return {p: container[p] for p in ("readinessProbe", "livenessProbe")}

    interceptor, scaler, operator = (probes(c) for c in ("interceptor", "scaler", "operator"))
    assert interceptor["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert interceptor["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert scaler["readinessProbe"]["grpc"] == {"port": 9091, "service": "readiness"}
    assert scaler["livenessProbe"]["grpc"] == {"port": 9091, "service": "liveness"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_services_and_budgets_select_the_deployments_pods(default: list[Obj]) -> None:
    deployments = of_kind(default, "Deployment")
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    def selected(selector: dict[str, str]) -> list[Obj]:
        return [d for d in deployments
                if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]

    for service in of_kind(default, "Service"):
        (deployment,) = selected(service["spec"]["selector"])
        (container,) = pod_spec(deployment)["containers"]
        declared = {p["name"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in declared, (service["metadata"]["name"], port)
    for budget in of_kind(default, "PodDisruptionBudget"):
        (deployment,) = selected(budget["spec"]["selector"]["matchLabels"])
        assert budget["metadata"]["name"] == deployment["metadata"]["name"]
        assert budget["spec"]["maxUnavailable"] == 1
    # What the components find each other by: the defaults of their commands.
    scaler = command_options("scaler")
    operator = command_options("operator")
    admin = one(default, "Service", "httpscale-interceptor-admin")
    assert scaler["HTTPSCALE_INTERCEPTOR_SERVICE"].name == "interceptor_service"
    scaler_container = pod_spec(one(default, "Deployment", "httpscale-scaler"))["containers"][0]
    assert setting(scaler_container, "scaler", "HTTPSCALE_INTERCEPTOR_SERVICE") == \
        admin["metadata"]["name"]
    assert [p["port"] for p in admin["spec"]["ports"]] == \
        [int(setting(scaler_container, "scaler", "HTTPSCALE_INTERCEPTOR_ADMIN_PORT"))]
    scaler_service = one(default, "Service", "httpscale-scaler")
    assert scaler_service["metadata"]["name"] == operator["HTTPSCALE_SCALER_SERVICE"].default
    assert operator["HTTPSCALE_SCALER_PORT"].default in \
        [p["port"] for p in scaler_service["spec"]["ports"]]


def test_spread_over_nodes_and_zones_without_requiring_it(default: list[Obj]) -> None:
    for component in COMPONENTS:
        deployment = one(default, "Deployment", f"httpscale-{component}")
        constraints = pod_spec(deployment)["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == \
            {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for constraint in constraints:
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
            assert constraint["labelSelector"]["matchLabels"] == labels
    assert one(default, "Deployment", "httpscale-scaler")["spec"]["replicas"] >= 2
    assert one(default, "Deployment", "httpscale-operator")["spec"]["replicas"] == 2


@pytest.mark.parametrize(("component", "after_sigterm"), [
    # readiness delay, then the drain; a second for the rest of the shutdown
    ("interceptor", lambda c: float(setting(c, "interceptor", "HTTPSCALE_READINESS_DELAY"))
     + float(setting(c, "interceptor", "HTTPSCALE_DRAIN_TIMEOUT")) + 1),
    # unary calls get the grace, their tasks as long again; a second for the rest
    ("scaler", lambda c: 2 * float(setting(c, "scaler", "HTTPSCALE_GRPC_GRACE")) + 1),
])
def test_the_grace_period_covers_the_shutdown(
    default: list[Obj], component: str, after_sigterm: Callable[[Obj], float]
) -> None:
    spec = pod_spec(one(default, "Deployment", f"httpscale-{component}"))
    (container,) = spec["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 3  # long enough for kube-proxy and ingress controllers to notice
    assert pre_stop + after_sigterm(container) <= spec["terminationGracePeriodSeconds"]


def test_the_fleet_scaledobject_owns_the_interceptor_replicas(
    default: list[Obj], kustomize: Path
) -> None:
    scaled = one(default, "ScaledObject", "httpscale-interceptor")
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "httpscale-interceptor"}
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 50)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger == {"type": "external-push", "metadata": {
        "scalerAddress": "httpscale-scaler.httpscale.svc:9091",
        "interceptorTargetPendingRequests": "200"}}
    # KEDA's HPA sets the count; a re-apply must not reset it.
    assert "replicas" not in one(default, "Deployment", "httpscale-interceptor")["spec"]
    # Without KEDA's ScaledObject (examples/kubernetes/install-without-fleet-scaledobject):
    without = build(kustomize, EXAMPLES / "install-without-fleet-scaledobject")
    assert of_kind(without, "ScaledObject") == []
    assert one(without, "Deployment", "httpscale-interceptor")["spec"]["replicas"] == 2
    assert len(without) == len(default) - 1


def test_the_servicemonitor_component_scrapes_every_components_metrics(
    kustomize: Path, tmp_path: Path
) -> None:
    docs = build(kustomize, overlay(tmp_path, components=[
        os.path.relpath(MANIFESTS / "components" / "servicemonitor", tmp_path)]))
    monitor = one(docs, "ServiceMonitor", "httpscale")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "httpscale"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    selector = monitor["spec"]["selector"]
    (expression,) = selector["matchExpressions"]
    assert expression["operator"] == "In"

    def matches(service: Obj) -> bool:
        labels = service["metadata"]["labels"]
        return (selector["matchLabels"].items() <= labels.items()
                and labels.get(expression["key"]) in expression["values"])

    scraped = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s
               for s in of_kind(docs, "Service") if matches(s)
               and endpoint["port"] in [p["name"] for p in s["spec"]["ports"]]}
    assert sorted(scraped) == sorted(COMPONENTS)
    for component, service in scraped.items():
        (container,) = pod_spec(one(docs, "Deployment", f"httpscale-{component}"))["containers"]
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        declared = {p["name"]: p["containerPort"] for p in container["ports"]}
        # /metrics is on each component's admin server
        assert declared[port["targetPort"]] == \
            int(setting(container, component, "HTTPSCALE_ADMIN_PORT"))


def test_the_tls_component_serves_the_secrets_certificate_on_the_https_port(
    kustomize: Path, tmp_path: Path
) -> None:
    docs = build(kustomize, overlay(tmp_path / "overlay", components=[
        os.path.relpath(MANIFESTS / "components" / "tls", tmp_path / "overlay")]))
    spec = pod_spec(one(docs, "Deployment", "httpscale-interceptor"))
    (container,) = spec["containers"]
    options = command_options("interceptor")
    for env in container["env"]:
        assert env["name"] in options, f"{env['name']} is no option of httpscale interceptor"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen = setting(container, "interceptor", "HTTPSCALE_TLS_LISTEN")
    assert ports["https"] == int(listen.rsplit(":", 1)[1])
    assert ports["http"] == int(setting(container, "interceptor", "HTTPSCALE_PORT"))
    service = one(docs, "Service", "httpscale-interceptor-proxy")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http", "https": "https"}
    # The Secret lands where the certificate directory is read, as NAME/tls.crt + tls.key.
    cert_dir = setting(container, "interceptor", "HTTPSCALE_TLS_CERT_DIR")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == cert_dir]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    (source,) = volume["projected"]["sources"]
    assert source["secret"]["name"] == "httpscale-interceptor-tls"
    paths = {i["key"]: i["path"] for i in source["secret"]["items"]}
    assert paths == {"tls.crt": "default/tls.crt", "tls.key": "default/tls.key"}
    # ... and the interceptor takes that layout: a projected volume's files through `..data`,
    # as the kubelet writes them, load as the listener's default certificate.
    leaf = TestCA(tmp_path / "pki").issue("site", dns=["site.test"], serial=0x5E)
    root = tmp_path / "mount"
    data = root / "..2026_12_03_00_00_00.1" / "default"
    data.mkdir(parents=True)
    (data / "tls.crt").write_bytes(leaf.cert.read_bytes())
    (data / "tls.key").write_bytes(leaf.key.read_bytes())
    (root / "..data").symlink_to("..2026_12_03_00_00_00.1")
    (root / "default").symlink_to("..data/default")
    store = CertStore(Tls(listen=listen, cert_dir=str(root)), ["http/1.1"])
    store.load()
    assert store.default is not None
    assert (store.default.hosts, store.default.serial) == (("site.test",), leaf.serial_hex)


# --- on the apiserver -------------------------------------------------------------------------

async def apply(kube: Kube, doc: Obj, *, dry_run: bool) -> Obj:
    """Server-side apply, strict about unknown fields."""
    meta = doc["metadata"]
    query = [("fieldManager", FIELD_MANAGER), ("force", "true"), ("fieldValidation", "Strict")]
    if dry_run:
        query.append(("dryRun", "All"))
    return await kube.request(
        "PATCH", KINDS[doc["kind"]].path(meta.get("namespace"), meta["name"]), query=query,
        body=doc, content_type=APPLY_PATCH)


async def can(kube: Kube, namespace: str, account: str, verb: str, resource: str, *,
              group: str = "", where: str = "") -> bool:
    """Whether RBAC lets the ServiceAccount `namespace/account` do this."""
    review = await kube.request("POST", SUBJECT_ACCESS_REVIEWS.path(), body={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:{account}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                       "system:authenticated"],
            "resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                   "namespace": where},
        }})
    return bool(review["status"].get("allowed"))


async def test_everything_applies_and_the_pods_are_admitted_as_restricted(
    kube: Kube, ns: str, kustomize: Path, tmp_path: Path
) -> None:
    install = yaml.safe_load((EXAMPLES / "install-overlay" / "kustomization.yaml").read_text())
    docs = build(kustomize, overlay(
        tmp_path, namespace=ns,
        # the install overlay's scalerAddress replacement, as docs/kubernetes.md says to
        replacements=install["replacements"],
        # nothing runs here: no pods
        replicas=[{"name": f"httpscale-{c}", "count": 0} for c in COMPONENTS],
        # ClusterRoles and their bindings are cluster-wide: names of this test's own
        transformers=[yaml.safe_dump({
            "apiVersion": "builtin", "kind": "PrefixSuffixTransformer",
            "metadata": {"name": "test-names"}, "prefix": f"{ns}-",
            "fieldSpecs": [{"kind": "ClusterRole", "path": "metadata/name"},
                           {"kind": "ClusterRoleBinding", "path": "metadata/name"}]})],
    ))
    cluster_scoped = [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert cluster_scoped and all(d["metadata"]["name"].startswith(f"{ns}-")
                                  for d in cluster_scoped)
    (namespace,) = of_kind(docs, "Namespace")
    assert namespace["metadata"]["name"] == ns
    rest = [d for d in docs if d is not namespace]
    try:
        # The namespace (the fixture made it; this adds the Pod Security labels), then
        # every other object: dry-run first, then for real.
        await apply(kube, namespace, dry_run=True)
        await apply(kube, namespace, dry_run=False)
        for dry_run in (True, False):
            for doc in rest:
                applied = await apply(kube, doc, dry_run=dry_run)
                assert (applied["kind"], applied["metadata"]["name"]) == \
                    (doc["kind"], doc["metadata"]["name"])
                if doc["kind"] == "Deployment":
                    # the apiserver kept what the manifests say, defaults aside
                    assert applied["spec"]["template"]["spec"]["containers"][0][
                        "securityContext"] == pod_spec(doc)["containers"][0]["securityContext"]

        live = await kube.request("GET", KINDS["Namespace"].path(name=ns))
        assert live["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        # Pod Security admission decides on pods, not Deployments: each Deployment's pod,
        # created with dry-run, is admitted ...
        for deployment in of_kind(docs, "Deployment"):
            pod: Obj = {"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": f"{deployment['metadata']['name']}-admission",
                                     "namespace": ns,
                                     "labels": deployment["spec"]["template"]["metadata"][
                                         "labels"]},
                        "spec": pod_spec(deployment)}
            admitted = await kube.request("POST", KINDS["Pod"].path(ns), body=pod,
                                          query=[("dryRun", "All")])
            assert admitted["metadata"]["name"] == pod["metadata"]["name"]
        # ... and one that is not restricted is refused: the enforcement is on.
        bad = copy.deepcopy(pod)
        del bad["spec"]["securityContext"]["seccompProfile"]
        bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
        with pytest.raises(ApiError) as refused:
            await kube.request("POST", KINDS["Pod"].path(ns), body=bad, query=[("dryRun", "All")])
        assert refused.value.status == 403
        assert 'violates PodSecurity "restricted:latest"' in str(refused.value)
        assert "allowPrivilegeEscalation != false" in str(refused.value)

        # The bindings' subjects are this namespace's ServiceAccounts: they have their rights.
        assert await can(kube, ns, "httpscale-interceptor", "watch", "endpointslices",
                         group="discovery.k8s.io")
        assert await can(kube, ns, "httpscale-scaler", "list", "endpointslices",
                         group="discovery.k8s.io", where=ns)
        assert not await can(kube, ns, "httpscale-scaler", "list", "endpointslices",
                             group="discovery.k8s.io", where="default")
        assert await can(kube, ns, "httpscale-scaler", "watch", "httpscaledobjects",
                         group="http.keda.sh")
        assert await can(kube, ns, "httpscale-operator", "update", "leases",
                         group="coordination.k8s.io", where=ns)
        assert await can(kube, ns, "httpscale-operator", "create", "scaledobjects",
                         group="keda.sh", where="default")
        assert not await can(kube, ns, "httpscale-interceptor", "create", "scaledobjects",
                             group="keda.sh", where="default")
    finally:
        for doc in cluster_scoped:
            with contextlib.suppress(ApiError):
                await kube.request("DELETE", KINDS[doc["kind"]].path(
                    name=doc["metadata"]["name"]))


# --- examples ---------------------------------------------------------------------------------

def example(name: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def test_examples_are_complete_and_point_at_each_other(default: list[Obj]) -> None:
    assert EXAMPLE_FILES == ["airflow-webui.yaml", "interceptor-route.yaml",
                             "path-routing.yaml"]
    proxy = one(default, "Service", "httpscale-interceptor-proxy")
    scaler = one(default, "Service", "httpscale-scaler")
    for name in EXAMPLE_FILES:
        docs = example(name)
        deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
        services = {d["metadata"]["name"]: d for d in of_kind(docs, "Service")}
        for doc in docs:
            assert "namespace" not in doc["metadata"], "examples go where -n says"
        for service in services.values():
            if service["spec"].get("type") == "ExternalName":
                # the interceptor's proxy Service, from another namespace
                assert service["spec"]["externalName"] == \
                    f"{proxy['metadata']['name']}.httpscale.svc.cluster.local"
                assert [p["port"] for p in service["spec"]["ports"]] == \
                    [p["port"] for p in proxy["spec"]["ports"]]
                continue
            (deployment,) = [d for d in deployments.values() if service["spec"]["selector"].items()
                             <= d["spec"]["template"]["metadata"]["labels"].items()]
            declared = {p["name"] for p in pod_spec(deployment)["containers"][0]["ports"]}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= declared
        targets = []  # (workload, service, port) of every scaling object
        for httpso in of_kind(docs, "HTTPScaledObject"):
            ref = httpso["spec"]["scaleTargetRef"]
            targets.append((ref.get("name") or ref["deployment"], ref["service"], ref["port"]))
        routes = {r["metadata"]["name"]: r for r in of_kind(docs, "InterceptorRoute")}
        for scaled in of_kind(docs, "ScaledObject"):
            (trigger,) = scaled["spec"]["triggers"]
            assert trigger["type"] == "external-push"
            assert trigger["metadata"]["scalerAddress"] == \
                f"{scaler['metadata']['name']}.httpscale:9091"
            route = routes[trigger["metadata"]["interceptorRoute"]]
            targets.append((scaled["spec"]["scaleTargetRef"]["name"],
                            route["spec"]["target"]["service"], route["spec"]["target"]["port"]))
        assert targets, name
        for workload, service, port in targets:
            assert workload in deployments, (name, workload)
            assert "replicas" not in deployments[workload]["spec"], "KEDA owns the count"
            assert port in [p["port"] for p in services[service]["spec"]["ports"]]
        for ingress in of_kind(docs, "Ingress"):
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    assert services[backend["name"]]["spec"]["type"] == "ExternalName"
    # the path-routed pair: one host, /api and /
    pair = of_kind(example("path-routing.yaml"), "HTTPScaledObject")
    assert {h for d in pair for h in d["spec"]["hosts"]} == {"shop.example.com"}
    assert sorted(p for d in pair for p in d["spec"]["pathPrefixes"]) == ["/", "/api"]
    # the Airflow case is written with the older fields
    (airflow,) = of_kind(example("airflow-webui.yaml"), "HTTPScaledObject")
    assert {"host", "targetPendingRequests"} <= airflow["spec"].keys()
    assert "hosts" not in airflow["spec"]
    assert "deployment" in airflow["spec"]["scaleTargetRef"]


@pytest.mark.parametrize("name", EXAMPLE_FILES)
async def test_the_apiserver_accepts_every_example(kube: Kube, ns: str, name: str) -> None:
    for doc in example(name):
        doc["metadata"]["namespace"] = ns
        applied = await apply(kube, doc, dry_run=True)
        assert (applied["kind"], applied["metadata"]["name"]) == \
            (doc["kind"], doc["metadata"]["name"])


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    def change(doc: Obj) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value
    return change


def _drop(path: str) -> Callable[[Obj], None]:
    def change(doc: Obj) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]
    return change


# (example, kind, object, change, what the apiserver answers)
BAD_VARIANTS = [
    ("airflow-webui.yaml", "HTTPScaledObject", "airflow-webserver",
     _set("spec.hosts", ["airflow.example.com"]), "set either hosts or the older host, not both"),
    ("airflow-webui.yaml", "HTTPScaledObject", "airflow-webserver",
     _drop("spec.scaleTargetRef.port"), "set exactly one of port or portName"),
    ("airflow-webui.yaml", "HTTPScaledObject", "airflow-webserver",
     _set("spec.scaleTargetRef.name", "airflow-scheduler"),
     "deployment is deprecated and conflicts with name"),
    ("airflow-webui.yaml", "HTTPScaledObject", "airflow-webserver",
     _set("spec.replicas.min", 3), "max must be at least min"),
    ("airflow-webui.yaml", "HTTPScaledObject", "airflow-webserver",
     _set("spec.targetPendingRequests", 10.0), "must be a whole number like 80, not 80.0"),
    ("airflow-webui.yaml", "HTTPScaledObject", "airflow-webserver",
     _set("spec.scaledownPeriod", "15 minutes"), "must be a duration"),
    ("airflow-webui.yaml", "HTTPScaledObject", "airflow-webserver",
     _set("spec.host", "https://airflow.example.com"), "spec.host in body should match"),
    ("airflow-webui.yaml", "HTTPScaledObject", "airflow-webserver",
     _set("spec.scaleTargetRef.deploymnet", "x"),
     'unknown field "spec.scaleTargetRef.deploymnet"'),
    ("interceptor-route.yaml", "InterceptorRoute", "orders",
     _set("spec.scalingMetric", {}), "set at least one of concurrency or requestRate"),
    ("interceptor-route.yaml", "InterceptorRoute", "orders",
     _set("spec.scalingMetric.requestRate.granularity", "2m"),
     "granularity must not be longer than window"),
    ("interceptor-route.yaml", "InterceptorRoute", "orders",
     _set("spec.coldStart", {}), "set at least one of fallback, placeholder or maxPendingRequests"),
    ("interceptor-route.yaml", "InterceptorRoute", "orders",
     _set("spec.target.portName", "http"), "set exactly one of port or portName"),
    ("path-routing.yaml", "HTTPScaledObject", "shop-api",
     _set("spec.pathPrefixes", ["/api?v=1"]), "spec.pathPrefixes[0] in body should match"),
    ("path-routing.yaml", "HTTPScaledObject", "shop-web",
     _set("spec.scalingMetric.requestRate.window", "0s"), "must be a duration longer than 0"),
]


@pytest.mark.parametrize(("name", "kind", "obj", "change", "message"), BAD_VARIANTS,
                         ids=[f"{v[2]}-{v[4][:32]}" for v in BAD_VARIANTS])
async def test_bad_variants_of_the_examples_are_refused_with_the_schemas_message(
    kube: Kube, ns: str, name: str, kind: str, obj: str, change: Callable[[Obj], None],
    message: str,
) -> None:
    """What `kubectl apply -f` of a new object does: a create with strict field validation
    (dry-run here), so these are the messages a user sees."""
    doc = one(example(name), kind, obj)
    doc["metadata"]["namespace"] = ns
    resource = KINDS[kind]
    query = [("dryRun", "All"), ("fieldValidation", "Strict")]
    await kube.request("POST", resource.path(ns), query=query, body=doc)  # as written: fine
    change(doc)
    with pytest.raises(ApiError) as refused:
        await kube.request("POST", resource.path(ns), query=query, body=doc)
    # An unknown field fails decoding (400 BadRequest); a broken rule, validation (422).
    assert refused.value.status == (400 if message.startswith("unknown field") else 422), \
        str(refused.value)
    assert message in str(refused.value), str(refused.value)
