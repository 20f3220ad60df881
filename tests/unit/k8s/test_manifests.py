"""What the Kubernetes manifests promise, read off the rendered overlays.

Each overlay under k8s/overlays/ is rendered with `kubectl kustomize` (the
one `make k8s-check` installs into .tools/bin, else $KUBECTL, else kubectl
on PATH) and the objects are checked: the network policy lets exactly the
documented callers in and out, every Deployment is hardened and probed the
same way, and production has an autoscaler and a disruption budget per
service. Schema validation is `make k8s-check`'s part; this file checks
meaning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = sorted(path.name for path in (ROOT / "k8s" / "overlays").iterdir() if path.is_dir())
SERVICES = {"decision": 50051, "profiles": 50052, "segments": 50053, "experiments": 50054}
METRICS = {"decision": 9091, "profiles": 9092, "segments": 9093, "experiments": 9094}
# Who calls whom inside the namespace (docs/operations.md, "Network policy").
# segments reads profiles for EvaluateSegments by profile id, and lists
# campaigns and experiments before DeleteSegment; experiments follows the
# profiles change feed and writes sticky variants onto profiles.
CALLS = {("decision", "profiles"), ("decision", "segments"), ("decision", "experiments")} | {
    ("segments", "profiles"),
    ("segments", "decision"),
    ("segments", "experiments"),
    ("experiments", "profiles"),
}
INSTALL = "run `make k8s-tools` (installs kubectl into .tools/bin) or set KUBECTL=/path/to/kubectl"

Object = dict[str, Any]


def kubectl() -> str:
    """The kubectl to render with: the project's own first."""
    for candidate in (os.environ.get("KUBECTL"), str(ROOT / ".tools" / "bin" / "kubectl")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(f"kubectl is needed to render k8s/overlays: {INSTALL}")
    return found


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Object]]:
    """Every overlay's objects, by overlay name."""
    binary = kubectl()
    objects = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [binary, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            pytest.fail(
                f"{binary} kustomize k8s/overlays/{overlay} failed (kustomize v5 is needed; "
                f"{INSTALL}):\n{result.stderr}"
            )
        objects[overlay] = [item for item in yaml.safe_load_all(result.stdout) if item]
    return objects


def of_kind(objects: list[Object], kind: str) -> list[Object]:
    return [item for item in objects if item["kind"] == kind]


# --- A small NetworkPolicy evaluator: enough of the API's semantics to ask
# "may this pod open a connection to that pod's port?" of the rendered
# policies (selectors, peers, ports, policy types, additive rules).


@dataclass(frozen=True)
class Pod:
    """A pod as the policies see it: its labels and its namespace's labels."""

    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def namespace_labels_all(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector's verdict; the empty selector selects everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(peer: Object, policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # no pod of this model has an address outside the cluster
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], pod.namespace_labels_all()):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), pod.labels)


def port_matches(rule: Object, target: Pod, port: int, protocol: str) -> bool:
    if not rule.get("ports"):
        return True
    for entry in rule["ports"]:
        if entry.get("protocol", "TCP") != protocol:
            continue
        number = entry.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            number = target.ports.get(number)
        if number is not None and number <= port <= entry.get("endPort", number):
            return True
    return False


def types_of(policy: Object) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def allowed(
    policies: list[Object], direction: str, subject: Pod, other: Pod, port: int, protocol: str
) -> bool:
    """Whether `subject`'s policies allow traffic to (Egress) or from (Ingress)
    `other` on `target`'s port, the target being the receiving side."""
    target = other if direction == "Egress" else subject
    relevant = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == subject.namespace
        and selects(policy["spec"]["podSelector"], subject.labels)
        and direction in types_of(policy)
    ]
    if not relevant:
        return True  # not isolated in this direction
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in relevant:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (
                not peers or any(peer_matches(p, subject.namespace, other) for p in peers)
            ) and port_matches(rule, target, port, protocol):
                return True
    return False


def reaches(
    policies: list[Object], source: Pod, target: Pod, port: int, protocol: str = "TCP"
) -> bool:
    """A connection needs the source's egress and the target's ingress."""
    return allowed(policies, "Egress", source, target, port, protocol) and allowed(
        policies, "Ingress", target, source, port, protocol
    )


def namespace_of(objects: list[Object]) -> str:
    (namespace,) = of_kind(objects, "Namespace")
    name: str = namespace["metadata"]["name"]
    return name


def service_pods(objects: list[Object]) -> dict[str, Pod]:
    """The four services' pods, with their template labels and named ports."""
    pods = {}
    for deployment in of_kind(objects, "Deployment"):
        template = deployment["spec"]["template"]
        ports = {
            port["name"]: port["containerPort"]
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        }
        pods[deployment["metadata"]["name"]] = Pod(
            deployment["metadata"]["namespace"], template["metadata"]["labels"], ports=ports
        )
    return pods


def outside(namespace: str, labels: dict[str, str] | None = None, **namespace_labels: str) -> Pod:
    return Pod(namespace, labels or {"app": "backend"}, namespace_labels=namespace_labels)


# --- The network policy.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_default_deny_closes_the_namespace_both_ways(
    rendered: dict[str, list[Object]], overlay: str
) -> None:
    policies = of_kind(rendered[overlay], "NetworkPolicy")
    deny = [
        policy
        for policy in policies
        if policy["spec"]["podSelector"] in ({}, None)
        and set(policy["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
    ]
    assert deny, f"{overlay}: no NetworkPolicy denies all ingress and egress"
    stranger = Pod(namespace_of(rendered[overlay]), {"app": "stranger"})
    nowhere = outside("elsewhere")
    assert not reaches(policies, stranger, nowhere, 443)
    assert not reaches(policies, nowhere, stranger, 8080)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inner_services_take_grpc_only_from_their_callers(
    rendered: dict[str, list[Object]], overlay: str
) -> None:
    objects = rendered[overlay]
    policies = of_kind(objects, "NetworkPolicy")
    pods = service_pods(objects)
    assert set(pods) == set(SERVICES)
    stranger = Pod(namespace_of(objects), {"app": "stranger"})
    for target, port in SERVICES.items():
        for source, pod in pods.items():
            expected = (source, target) in CALLS
            assert reaches(policies, pod, pods[target], port) == expected, (
                f"{overlay}: {source} -> {target}:{port} should be "
                f"{'allowed' if expected else 'denied'}"
            )
        assert not reaches(policies, stranger, pods[target], port), (
            f"{overlay}: any pod -> {target}"
        )
        assert not reaches(policies, outside("shop"), pods[target], port), (
            f"{overlay}: an unlabelled namespace reaches {target}"
        )
    # Each side on its own too: the inner services' ingress admits no pod of
    # the namespace but their callers, whatever the callers' egress says.
    for target in ("profiles", "segments", "experiments"):
        port = SERVICES[target]
        admitted = {
            source
            for source, pod in [*pods.items(), ("stranger", stranger)]
            if allowed(policies, "Ingress", pods[target], pod, port, "TCP")
        }
        assert admitted == {s for s, t in CALLS if t == target}, f"{overlay}: {target} {admitted}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_clients_admins_and_prometheus_reach_what_is_documented(
    rendered: dict[str, list[Object]], overlay: str
) -> None:
    objects = rendered[overlay]
    policies = of_kind(objects, "NetworkPolicy")
    pods = service_pods(objects)
    client = outside("shop", **{"tessera-client": "true"})
    admin = outside("ops", **{"tessera-admin": "true"})
    prometheus = outside("monitoring", {"app.kubernetes.io/name": "prometheus"})
    grafana = outside("monitoring", {"app.kubernetes.io/name": "grafana"})
    for name, pod in pods.items():
        grpc, metrics = SERVICES[name], METRICS[name]
        # Decide from backends, and Track/TrackStream (ProfileService RPCs).
        assert reaches(policies, client, pod, grpc) == (name in ("decision", "profiles")), name
        assert reaches(policies, admin, pod, grpc), name
        assert reaches(policies, prometheus, pod, metrics), name
        assert not reaches(policies, prometheus, pod, grpc), name
        assert not reaches(policies, grafana, pod, metrics), name
        assert not reaches(policies, client, pod, metrics), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_is_dns_the_stores_and_the_peers(
    rendered: dict[str, list[Object]], overlay: str
) -> None:
    objects = rendered[overlay]
    policies = of_kind(objects, "NetworkPolicy")
    pods = service_pods(objects)
    dns = Pod("kube-system", {"k8s-app": "kube-dns"})
    postgres = outside("data", {"app": "postgresql"}, **{"tessera-stores": "true"})
    unlabelled_postgres = outside("other-data", {"app": "postgresql"})
    stranger = Pod(namespace_of(objects), {"app": "stranger"})
    for name, pod in pods.items():
        assert reaches(policies, pod, dns, 53, "UDP"), name
        assert reaches(policies, pod, dns, 53, "TCP"), name
        assert reaches(policies, pod, postgres, 5432), name
        assert reaches(policies, pod, postgres, 6379), name
        assert not reaches(policies, pod, postgres, 22), name
        assert not reaches(policies, pod, unlabelled_postgres, 5432), name
        assert not reaches(policies, pod, outside("anywhere"), 443), name
    assert reaches(policies, stranger, dns, 53, "UDP")
    assert not reaches(policies, stranger, postgres, 5432), (
        "only the four services reach the stores"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_unauthenticated_serving_ships_only_with_the_network_policy(
    rendered: dict[str, list[Object]], overlay: str
) -> None:
    (config,) = [
        c
        for c in of_kind(rendered[overlay], "ConfigMap")
        if "tessera-config" in c["metadata"]["name"]
    ]
    if config["data"].get("TESSERA_ALLOW_UNAUTHENTICATED") == "true":
        names = {
            policy["metadata"]["name"] for policy in of_kind(rendered[overlay], "NetworkPolicy")
        }
        assert "default-deny" in names


# --- Deployments.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_is_probed_hardened_and_bounded(
    rendered: dict[str, list[Object]], overlay: str
) -> None:
    deployments = of_kind(rendered[overlay], "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == set(SERVICES)
    secrets = {s["metadata"]["name"] for s in of_kind(rendered[overlay], "Secret")}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            assert ports == {"grpc": SERVICES[name], "metrics": METRICS[name]}, name
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                assert container[probe]["grpc"]["port"] == SERVICES[name], (name, probe)
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, (name, bound)
            env = {item["name"]: item.get("valueFrom", {}) for item in container.get("env", [])}
            for variable, key in (
                ("TESSERA_DATABASE_URL", "database-url"),
                ("TESSERA_REDIS_URL", "redis-url"),
            ):
                reference = env[variable]["secretKeyRef"]
                assert reference["key"] == key, name
                # Created in the cluster (production) or generated with a hash suffix (dev).
                assert reference["name"] == "tessera-stores" or reference["name"] in secrets, name
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(METRICS[name]), name


# --- Production.


def test_production_has_an_autoscaler_and_a_disruption_budget_per_service(
    rendered: dict[str, list[Object]],
) -> None:
    objects = rendered["production"]
    budgets = of_kind(objects, "PodDisruptionBudget")
    autoscalers = of_kind(objects, "HorizontalPodAutoscaler")
    for deployment in of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudgets"
        assert covering[0]["spec"]["maxUnavailable"] == 1, name
        scaling = [
            a
            for a in autoscalers
            if a["spec"]["scaleTargetRef"]
            == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        ]
        assert len(scaling) == 1, f"{name}: {len(scaling)} HorizontalPodAutoscalers"
        assert scaling[0]["spec"]["minReplicas"] >= 2, name
        # The autoscaler owns the count; a fixed one would be reset by every apply.
        assert "replicas" not in deployment["spec"], name


def test_production_keeps_the_store_urls_out_of_git(rendered: dict[str, list[Object]]) -> None:
    assert of_kind(rendered["production"], "Secret") == []


def test_production_migrates_in_a_job_not_at_every_pod_start(
    rendered: dict[str, list[Object]],
) -> None:
    objects = rendered["production"]
    (job,) = of_kind(objects, "Job")
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    (config,) = of_kind(objects, "ConfigMap")
    (dev_config,) = of_kind(rendered["dev"], "ConfigMap")
    policies = of_kind(objects, "NetworkPolicy")
    migrator = Pod(namespace_of(objects), pod["metadata"]["labels"])
    postgres = outside("data", {"app": "postgresql"}, **{"tessera-stores": "true"})

    assert container["args"] == ["migrate"]
    assert container["image"] == next(
        c["image"]
        for d in of_kind(objects, "Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    )
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"]}
    assert env["TESSERA_DATABASE_URL"] == {"name": "tessera-stores", "key": "database-url"}
    assert config["data"]["TESSERA_MIGRATE_ON_START"] == "false"
    assert "TESSERA_MIGRATE_ON_START" not in dev_config["data"]  # embedded: each service migrates
    assert reaches(policies, migrator, postgres, 5432)
    assert reaches(policies, migrator, Pod("kube-system", {"k8s-app": "kube-dns"}), 53, "UDP")
    for name, target in service_pods(objects).items():
        assert not reaches(policies, migrator, target, SERVICES[name]), name
    assert of_kind(rendered["dev"], "Job") == []
