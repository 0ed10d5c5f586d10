"""What Argo CD, Flux and Helm 4 make of a ModelDeployment, by running their own rules.

Shared by the integration and e2e tiers: the Argo CD health check
(deploy/argocd/health.lua) under a real Lua interpreter, and the kstatus checker
(testbed/go/kstatus: sigs.k8s.io/cli-utils and the fluxcd fork Flux and Helm 4 run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARGOCD = Path(__file__).resolve().parents[1] / "deploy" / "argocd"
LUA = shutil.which("lua5.4") or shutil.which("lua")

# The Argo CD health status that says what each kstatus status says.
ARGOCD_FOR_KSTATUS = {"Current": "Healthy", "InProgress": "Progressing", "Failed": "Degraded"}


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


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of the health check, run as Argo CD runs it: `obj` set, hs returned."""
    assert LUA, "a Lua interpreter is needed (make integration installs Debian's lua5.4 as root)"
    script = (
        f"obj = {lua_value(obj)}\n"
        f"local hs = (function() {(ARGOCD / 'health.lua').read_text()} end)()\n"
        "io.write(hs.status, '\\n', hs.message)"
    )
    out = subprocess.run([LUA, "-"], input=script, capture_output=True, text=True, check=True)
    status, message = out.stdout.split("\n", 1)
    return status, message


@dataclass(frozen=True)
class Kstatus:
    """One object's kstatus verdict from both libraries."""

    status: str
    message: str
    fluxcd_status: str
    fluxcd_message: str


def kstatus(binary: Path, obj: dict[str, Any]) -> Kstatus:
    """The verdict of status.Compute (upstream and fluxcd fork) for `obj`."""
    out = subprocess.run(
        [str(binary)], input=json.dumps(obj), capture_output=True, text=True, check=True
    )
    verdict = json.loads(out.stdout)
    return Kstatus(
        verdict["status"], verdict["message"], verdict["fluxcdStatus"], verdict["fluxcdMessage"]
    )
