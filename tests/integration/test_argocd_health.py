"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua interpreter."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ARGOCD = Path(__file__).resolve().parents[2] / "deploy" / "argocd"
LUA = shutil.which("lua5.4") or shutil.which("lua")


def lua_value(value: Any) -> str:
    """A Python JSON value as a Lua constructor."""
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"[{json.dumps(k)}] = {lua_value(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "{" + ", ".join(lua_value(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    return json.dumps(value)


def health(obj: dict[str, Any]) -> tuple[str, str]:
    assert LUA, "a Lua interpreter is needed (make integration installs Debian's lua5.4 as root)"
    script = (
        f"obj = {lua_value(obj)}\n"
        f"local hs = (function() {(ARGOCD / 'health.lua').read_text()} end)()\n"
        "io.write(hs.status, '\\n', hs.message)"
    )
    out = subprocess.run([LUA, "-"], input=script, capture_output=True, text=True, check=True)
    status, message = out.stdout.split("\n", 1)
    return status, message


def resource(generation: int, observed: int, **conditions: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "conditions": [
                {"type": type_, "status": status, "reason": reason, "message": f"{type_} says so"}
                for type_, (status, reason) in conditions.items()
            ],
        },
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            resource(
                2,
                2,
                Ready=("True", "Available"),
                Stalled=("False", "NotStalled"),
                Reconciling=("False", "Idle"),
            ),
            "Healthy",
            id="ready-is-healthy",
        ),
        pytest.param(
            resource(
                2,
                2,
                Ready=("False", "RevertLoop"),
                Stalled=("True", "RevertLoop"),
                Reconciling=("False", "Idle"),
            ),
            "Degraded",
            id="stalled-is-degraded",
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
            resource(3, 2, Ready=("True", "Available")),
            "Progressing",
            id="unobserved-spec-is-progressing",
        ),
        pytest.param({"metadata": {"generation": 1}}, "Progressing", id="no-status-yet"),
    ],
)
def test_argocd_health_follows_the_kstatus_conditions(obj: dict[str, Any], expected: str) -> None:
    assert health(obj)[0] == expected


def test_degraded_message_names_the_reason() -> None:
    obj = resource(1, 1, Stalled=("True", "RollbackTargetUnhealthy"), Ready=("False", "x"))
    assert health(obj) == ("Degraded", "RollbackTargetUnhealthy: Stalled says so")


def test_configmap_patch_carries_the_same_script() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    script = patch["data"]["resource.customizations.health.modeldeploy.io_ModelDeployment"]
    assert script.strip() == (ARGOCD / "health.lua").read_text().strip()
