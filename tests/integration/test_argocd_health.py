"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua interpreter,
and held to the kstatus verdict (the checker built from sigs.k8s.io/cli-utils and
its fluxcd fork) for the same objects, so Argo CD, Flux and Helm 4 agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.support import build_tool
from tests.verdicts import ARGOCD, ARGOCD_FOR_KSTATUS, argocd_health, kstatus


@pytest.fixture(scope="module")
def kstatus_binary() -> Path:
    return build_tool("kstatus")


def resource(generation: int, observed: int, **conditions: tuple[str, str]) -> dict[str, Any]:
    """A ModelDeployment with these conditions, in this order (kstatus reads them in order)."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ml", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "conditions": [
                {"type": type_, "status": status, "reason": reason, "message": f"{type_} says so"}
                for type_, (status, reason) in conditions.items()
            ],
        },
    }


# The operator lists its conditions as Ready, Reconciling, Stalled, RolledBack.
CASES = [
    pytest.param(
        resource(
            2,
            2,
            Ready=("True", "Available"),
            Reconciling=("False", "Idle"),
            Stalled=("False", "NotStalled"),
        ),
        "Healthy",
        id="ready-is-healthy",
    ),
    pytest.param(
        resource(
            2,
            2,
            Ready=("False", "RevertLoop"),
            Reconciling=("False", "Idle"),
            Stalled=("True", "RevertLoop"),
        ),
        "Degraded",
        id="stalled-is-degraded",
    ),
    pytest.param(
        resource(
            3,
            3,
            Ready=("True", "RolledBack"),
            Reconciling=("False", "Idle"),
            Stalled=("True", "RolledBack"),
            RolledBack=("True", "CrashLoopBackOff"),
        ),
        "Degraded",
        id="revertspec-reverted-is-degraded-though-ready",
    ),
    pytest.param(
        resource(
            2,
            2,
            Ready=("False", "RolledBack"),
            Reconciling=("False", "Idle"),
            Stalled=("True", "RolledBack"),
            RolledBack=("True", "CrashLoopBackOff"),
        ),
        "Degraded",
        id="keepspec-fallen-back-is-degraded",
    ),
    pytest.param(
        resource(
            2,
            2,
            Ready=("False", "RolloutInProgress"),
            Reconciling=("True", "RolloutInProgress"),
        ),
        "Progressing",
        id="reconciling-is-progressing",
    ),
    pytest.param(
        resource(
            2,
            2,
            Ready=("False", "RolledBack"),
            Reconciling=("True", "RolloutInProgress"),
            Stalled=("True", "RolledBack"),
        ),
        "Progressing",
        id="fallback-rolling-out-is-progressing-as-kstatus-says",
    ),
    pytest.param(
        resource(
            2,
            2,
            Stalled=("True", "RolledBack"),
            Reconciling=("True", "RolloutInProgress"),
        ),
        "Degraded",
        id="first-of-stalled-or-reconciling-in-list-order-decides",
    ),
    pytest.param(
        resource(2, 2, Ready=("Unknown", "Starting")),
        "Progressing",
        id="ready-unknown-is-progressing",
    ),
    pytest.param(
        resource(3, 2, Ready=("True", "Available")),
        "Progressing",
        id="unobserved-spec-is-progressing",
    ),
    pytest.param(
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "generation": 1},
            "status": {"observedGeneration": 0},
        },
        "Progressing",
        id="new-resource-with-the-crd-status-default",
    ),
]


@pytest.mark.parametrize(("obj", "expected"), CASES)
def test_argocd_health_follows_the_kstatus_conditions(obj: dict[str, Any], expected: str) -> None:
    assert argocd_health(obj)[0] == expected


@pytest.mark.parametrize(("obj", "expected"), CASES)
def test_argocd_health_says_what_kstatus_says(
    obj: dict[str, Any], expected: str, kstatus_binary: Path
) -> None:
    verdict = kstatus(kstatus_binary, obj)
    assert verdict.fluxcd_status == verdict.status
    assert ARGOCD_FOR_KSTATUS[verdict.status] == argocd_health(obj)[0] == expected


def test_without_any_status_argocd_waits_where_kstatus_says_current(kstatus_binary: Path) -> None:
    """The one difference, on purpose: an object with no status at all (never possible
    with the CRD's status default) is Current to kstatus, Progressing to Argo CD."""
    obj: dict[str, Any] = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "generation": 1},
    }
    assert kstatus(kstatus_binary, obj).status == "Current"
    assert argocd_health(obj)[0] == "Progressing"


def test_degraded_message_names_the_reason() -> None:
    obj = resource(1, 1, Ready=("False", "x"), Stalled=("True", "RollbackTargetUnhealthy"))
    assert argocd_health(obj) == ("Degraded", "RollbackTargetUnhealthy: Stalled says so")


def test_configmap_patch_carries_the_same_script() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    script = patch["data"]["resource.customizations.health.modeldeploy.io_ModelDeployment"]
    assert script.strip() == (ARGOCD / "health.lua").read_text().strip()
