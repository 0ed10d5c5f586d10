"""The Helm chart (deploy/helm/modeldeploy) through Helm 4 itself: lint, then what it renders.

`helm template` with the default values, the namespace-scoped variant and leader
election on and off; the objects are read back and checked: RBAC kinds and rules
(the same as deploy/base/rbac.yaml), the operator's flags (a flag the operator may
not have yet is rendered only when its value is set), the security context, the PDB.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.processes import ROOT
from testbed.support import build_tool

CHART = ROOT / "deploy" / "helm" / "modeldeploy"
RELEASE, NAMESPACE = "md", "ops"
FULLNAME = "md-modeldeploy"
Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def helm() -> Path:
    """Helm 4 from its pinned Go module (make integration and make e2e build it first)."""
    return build_tool("helm")


def run(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)


def render(helm: Path, *sets: str, crds: bool = False) -> Objects:
    flags = [arg for value in sets for arg in ("--set", value)]
    crd_flag = ["--include-crds"] if crds else []
    rendered = run(helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, *crd_flag, *flags)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def kinds(objects: Objects) -> list[tuple[str, str | None]]:
    return sorted((o["kind"], o["metadata"].get("namespace")) for o in objects)


def the(objects: Objects, kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def args(objects: Objects) -> list[str]:
    container = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return list(container["args"])


def base_rules() -> list[dict[str, Any]]:
    documents = yaml.safe_load_all((ROOT / "deploy" / "base" / "rbac.yaml").read_text())
    (role,) = [doc for doc in documents if doc["kind"] == "ClusterRole"]
    return list(role["rules"])


def test_the_chart_lints_clean(helm: Path) -> None:
    linted = run(helm, "lint", "--strict", str(CHART))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "0 chart(s) failed" in linted.stdout


def test_default_values_install_a_cluster_wide_operator(helm: Path) -> None:
    objects = render(helm)
    assert kinds(objects) == [
        ("ClusterRole", None),
        ("ClusterRoleBinding", None),
        ("Deployment", NAMESPACE),
        ("ServiceAccount", NAMESPACE),
    ]
    assert the(objects, "ClusterRole")["rules"] == base_rules()
    binding = the(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    assert args(objects) == [
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=json",
        "--metrics-port=9090",
        "--metrics-address=0.0.0.0",  # the pod's address, for scraping
    ]
    deployment = the(objects, "Deployment")["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"] == {"type": "Recreate"}
    (container,) = deployment["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/modeldeploy/operator:0.1.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Not the liveness check: ready once started (kopf opens the port after startup).
    assert container["readinessProbe"] == {"tcpSocket": {"port": "health"}, "periodSeconds": 5}
    assert "affinity" not in deployment["template"]["spec"]  # one replica: nothing to spread


def test_the_default_security_context_is_restricted(helm: Path) -> None:
    pod = the(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_namespace_scope_grants_roles_in_the_watched_namespaces_only(helm: Path) -> None:
    objects = render(helm, "scope=namespace", "watchNamespaces={ml,staging}")
    assert kinds(objects) == [
        ("Deployment", NAMESPACE),
        ("Role", "ml"),
        ("Role", "staging"),
        ("RoleBinding", "ml"),
        ("RoleBinding", "staging"),
        ("ServiceAccount", NAMESPACE),
    ]
    for role in (o for o in objects if o["kind"] == "Role"):
        # All but the nodes, which no Role can grant (docs/capacity.md).
        assert role["rules"] == [r for r in base_rules() if r["resources"] != ["nodes"]]
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": FULLNAME,
        }
        assert binding["subjects"][0]["namespace"] == NAMESPACE  # the operator's own
    assert [a for a in args(objects) if a.startswith("--namespace")] == [
        "--namespace=ml",
        "--namespace=staging",
    ]


def test_namespace_scope_defaults_to_the_release_namespace(helm: Path) -> None:
    objects = render(helm, "scope=namespace")
    assert [
        o["metadata"]["namespace"] for o in objects if o["kind"] in ("Role", "RoleBinding")
    ] == [
        NAMESPACE,
        NAMESPACE,
    ]
    assert f"--namespace={NAMESPACE}" in args(objects)


def test_cluster_scope_with_watch_namespaces_limits_the_watch(helm: Path) -> None:
    objects = render(helm, "watchNamespaces={ml}")
    assert ("ClusterRole", None) in kinds(objects)
    assert "--namespace=ml" in args(objects)


def test_leader_election_off_renders_no_election_flags_or_lease_role(helm: Path) -> None:
    objects = render(helm)
    assert not [a for a in args(objects) if a.startswith("--leader-elect")]
    assert not [o for o in objects if o["kind"] == "Role"]


def test_leader_election_on_runs_replicas_with_a_lease(helm: Path) -> None:
    objects = render(
        helm,
        "replicas=2",
        "leaderElection.enabled=true",
        "leaderElection.leaseDuration=20s",
        "podDisruptionBudget.enabled=true",
    )
    assert [a for a in args(objects) if a.startswith("--leader-elect")] == [
        "--leader-elect",
        f"--leader-elect-namespace={NAMESPACE}",
        f"--leader-elect-lease-name={FULLNAME}",
        "--leader-elect-lease-duration=20s",  # the durations left empty are not passed
    ]
    role = the(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    assert the(objects, "RoleBinding")["roleRef"]["name"] == role["metadata"]["name"]
    deployment = the(objects, "Deployment")["spec"]
    assert deployment["replicas"] == 2
    assert deployment["strategy"] == {"type": "RollingUpdate"}
    pdb = the(objects, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == deployment["selector"]["matchLabels"]
    # Preferably not both replicas on one node, as deploy/base/operator.yaml.
    (spread,) = deployment["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert spread["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": deployment["selector"]["matchLabels"]},
    }


def test_two_replicas_without_leader_election_are_refused(helm: Path) -> None:
    rendered = run(helm, "template", RELEASE, str(CHART), "--set", "replicas=2")
    assert rendered.returncode != 0
    assert "replicas above 1 need leaderElection.enabled" in rendered.stderr


def test_a_scope_other_than_cluster_or_namespace_is_refused(helm: Path) -> None:
    rendered = run(helm, "template", RELEASE, str(CHART), "--set", "scope=everywhere")
    assert rendered.returncode != 0
    assert 'scope must be cluster or namespace, not "everywhere"' in rendered.stderr


def test_the_old_allow_list_for_every_purpose_is_refused_naming_the_new_ones(helm: Path) -> None:
    rendered = run(helm, "template", RELEASE, str(CHART), "--set", "allowedUrlPrefixes={http://x/}")
    assert rendered.returncode != 0
    assert "set allowedAnalysisSources and allowedWebhooks instead" in rendered.stderr


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (
            [
                "allowedWebhooks={https://hooks.example/}",
                "allowedAnalysisSources={team-a=http://prometheus.monitoring:9090/}",
                "allowedRegistries={team-a=http://mlflow.ml:5000/}",
            ],
            [
                "--allowed-analysis-source=team-a=http://prometheus.monitoring:9090/",
                "--allowed-webhook=https://hooks.example/",
                "--allowed-registry=team-a=http://mlflow.ml:5000/",
            ],
        ),
        (["metrics.bindAddress=127.0.0.1"], ["--metrics-port=9090", "--metrics-address=127.0.0.1"]),
        (
            ["webhook=https://hooks.example/x", "workers=4"],
            ["--webhook=https://hooks.example/x", "--workers=4"],
        ),
    ],
)
def test_optional_flags_appear_only_when_set(
    helm: Path, sets: list[str], expected: list[str]
) -> None:
    rendered = args(render(helm, *sets))
    assert [a for a in rendered if a in expected] == expected


def test_metrics_off_drops_the_flag_the_port_and_the_scrape_annotations(helm: Path) -> None:
    objects = render(helm, "metrics.enabled=false")
    assert not [a for a in args(objects) if a.startswith("--metrics")]
    template = the(objects, "Deployment")["spec"]["template"]
    assert [p["name"] for p in template["spec"]["containers"][0]["ports"]] == ["health"]
    assert "prometheus.io/scrape" not in (template["metadata"].get("annotations") or {})


def test_placement_values_reach_the_pod(helm: Path) -> None:
    pod = the(
        render(
            helm,
            "nodeSelector.modeldeploy\\.io/node=real",
            "tolerations[0].key=modeldeploy.io/real-node",
            "tolerations[0].operator=Exists",
        ),
        "Deployment",
    )["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"modeldeploy.io/node": "real"}
    assert pod["tolerations"] == [{"key": "modeldeploy.io/real-node", "operator": "Exists"}]


def test_an_affinity_of_the_values_replaces_the_default_spread(helm: Path) -> None:
    pod = the(
        render(
            helm,
            "replicas=2",
            "leaderElection.enabled=true",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].key=pool",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        ),
        "Deployment",
    )["spec"]["template"]["spec"]
    assert list(pod["affinity"]) == ["nodeAffinity"]


def test_the_chart_installs_the_crd_of_the_repository(helm: Path) -> None:
    crds = [o for o in render(helm, crds=True) if o["kind"] == "CustomResourceDefinition"]
    assert crds == [yaml.safe_load((ROOT / "crds" / "modeldeployment.yaml").read_text())]


def test_the_network_policy_is_off_by_default(helm: Path) -> None:
    assert "NetworkPolicy" not in [o["kind"] for o in render(helm)]


def test_the_network_policy_matches_the_component_and_follows_the_ports(helm: Path) -> None:
    policy = the(render(helm, "networkPolicy.enabled=true"), "NetworkPolicy")
    component = yaml.safe_load(
        (ROOT / "deploy" / "components" / "networkpolicy" / "networkpolicy.yaml").read_text()
    )
    # The same rules as deploy/components/networkpolicy; only names and labels differ.
    assert policy["spec"]["egress"] == component["spec"]["egress"]
    assert policy["spec"]["ingress"] == component["spec"]["ingress"]
    moved = the(
        render(helm, "networkPolicy.enabled=true", "metrics.port=9100", "liveness.port=8081"),
        "NetworkPolicy",
    )
    assert [r["ports"][0]["port"] for r in moved["spec"]["ingress"]] == [9100, 8081]
