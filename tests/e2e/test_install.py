"""What a user installs, applied to the real API server: the CRD alone, and the whole set.

`kubectl apply -f crds/` must install the CRD and nothing else (no kustomization
file among the manifests); `kubectl apply -k deploy/` must build and be accepted by
the server (a server-side dry run: the operator image is not pulled here); the
namespaced variant's Role must be all the operator needs; the NetworkPolicy
component must be one the server accepts.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from testbed.support import OperatorProcess
from tests.e2e.helpers import Kube, revert_scenario

ROOT = Path(__file__).resolve().parents[2]
CRD = "customresourcedefinition.apiextensions.k8s.io/modeldeployments.modeldeploy.io"


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, check=False)


def test_applying_the_crds_folder_installs_the_crd_and_nothing_else(cluster: Path) -> None:
    applied = kubectl("apply", "--filename", str(ROOT / "crds"), "--output", "name")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.split() == [CRD]


def test_the_kustomization_applies_on_the_server(cluster: Path) -> None:
    kubectl("create", "namespace", "modeldeploy-system")  # may exist from an earlier run
    applied = kubectl(
        "apply", "--kustomize", str(ROOT / "deploy"), "--dry-run=server", "--output", "name"
    )
    assert applied.returncode == 0, applied.stderr
    assert sorted(applied.stdout.split()) == [
        "clusterrole.rbac.authorization.k8s.io/modeldeploy-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/modeldeploy-operator",
        CRD,
        "deployment.apps/modeldeploy-operator",
        "namespace/modeldeploy-system",
        "poddisruptionbudget.policy/modeldeploy-operator",
        "role.rbac.authorization.k8s.io/modeldeploy-operator-leader-election",
        "rolebinding.rbac.authorization.k8s.io/modeldeploy-operator-leader-election",
        "serviceaccount/modeldeploy-operator",
    ]


def namespaced_install(namespace: str) -> list[dict[str, Any]]:
    """deploy/overlays/namespaced as a team would apply it, for `namespace`."""
    built = kubectl("kustomize", str(ROOT / "deploy" / "overlays" / "namespaced"))
    assert built.returncode == 0, built.stderr
    objects = [o for o in yaml.safe_load_all(built.stdout.replace("team-a", namespace)) if o]
    return [o for o in objects if o["kind"] != "CustomResourceDefinition"]  # installed already


def test_the_namespaced_install_runs_the_operator_on_its_role_alone(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, tmp_path: Path
) -> None:
    objects = namespaced_install(namespace)
    assert {o["kind"] for o in objects} == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
    }  # nothing cluster-wide
    assert {o["metadata"]["namespace"] for o in objects} == {namespace}
    rbac = [o for o in objects if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    manifest = tmp_path / "rbac.yaml"
    manifest.write_text(yaml.safe_dump_all(rbac))
    applied = kubectl("apply", "--server-side", "--filename", str(manifest))
    assert applied.returncode == 0, applied.stderr
    # The operator as the Deployment runs it, with the ServiceAccount's token and nothing more.
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={namespace}" in args
    token = kube.core.create_namespaced_service_account_token(
        "modeldeploy-operator", namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    stopped_operator.env["KUBECONFIG"] = str(kubeconfig_for(token, tmp_path))
    outside_a_pod = [f"--leader-elect-namespace={namespace}"]  # in a pod: the pod's namespace
    stopped_operator.start(
        *[a for a in args if a.startswith(("--namespace", "--leader-elect"))], *outside_a_pod
    )
    revert_scenario(kube, namespace, "team-model")
    log = stopped_operator.log()
    assert "leads" in log
    assert "Forbidden" not in log
    assert " 403 " not in log


def kubeconfig_for(token: str, tmp_path: Path) -> Path:
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_network_policy_component_is_accepted_by_the_server(
    cluster: Path, tmp_path: Path
) -> None:
    # Accepted, not enforced: the test bed's network plugin does not implement policies.
    (tmp_path / "deploy").symlink_to(ROOT / "deploy")
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["deploy/base"],
                "components": ["deploy/components/networkpolicy"],
            }
        )
    )
    kubectl("create", "namespace", "modeldeploy-system")  # may exist from an earlier run
    applied = kubectl("apply", "--kustomize", str(tmp_path), "--dry-run=server", "-o", "name")
    assert applied.returncode == 0, applied.stderr
    assert "networkpolicy.networking.k8s.io/modeldeploy-operator" in applied.stdout.split()
