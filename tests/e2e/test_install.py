"""What a user installs, applied to the real API server: the CRD alone, and the whole set.

`kubectl apply -f crds/` must install the CRD and nothing else (no kustomization
file among the manifests); `kubectl apply -k deploy/` must build and be accepted by
the server (a server-side dry run: the operator image is not pulled here).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

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
        "serviceaccount/modeldeploy-operator",
    ]
