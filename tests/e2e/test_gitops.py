"""What a pipeline sees of a failed release: Helm 4, kubectl wait, the plugin, Flux, Argo CD.

Each test backs one row of the README's "GitOps, Helm and CI" table. Helm is the real
Helm 4 binary (built from its Go module), releasing the chart in charts/model; Flux's
verdict is the kstatus library's (upstream and the fluxcd fork, testbed/go/kstatus),
Argo CD's is deploy/argocd/health.lua under lua5.4. Every figure a test prints
(`measured`) is what the README quotes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.constants import MANAGER
from testbed.support import OperatorProcess, build_tool
from tests.e2e.helpers import Kube, ready, wait_for
from tests.verdicts import ARGOCD, ARGOCD_FOR_KSTATUS, argocd_health, kstatus

CHART = Path(__file__).resolve().parent / "charts" / "model"
NAME = "model"  # the release, and the ModelDeployment the chart names after it
GOOD, GOOD_V3 = "registry.example/m:1", "registry.example/m:3"  # the chart's v1; a v3
MODES = ["RevertSpec", "KeepSpec"]
# Helm's own deadline for a wait; a failed release must be reported long before it.
HELM_TIMEOUT = "120s"

RecordProperty = Callable[[str, object], None]


@dataclass(frozen=True)
class Run:
    """One finished command: its exit code, output and how long it took."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    def said(self) -> str:
        return f"exit {self.code} after {self.seconds:.1f} s\n{self.stdout}{self.stderr}"


def run(command: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, env=env, timeout=240, check=False
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


class Helm:
    """The Helm 4 binary for one namespace's release of the test chart, with its own homes."""

    def __init__(self, binary: Path, home: Path, namespace: str) -> None:
        self.binary, self.namespace = binary, namespace
        self.env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def command(self, verb: str, mode: str, version: str, *flags: str) -> list[str]:
        """`helm install|upgrade|template` of the chart, onFailure `mode`, `version` active;
        `version` v3 adds a third, good version to the chart's two."""
        values = ["--set", f"onFailure={mode}", "--set", f"activeVersion={version}"]
        if version == "v3":
            values += ["--set", f"versions.v3={GOOD_V3}"]
        return [str(self.binary), verb, NAME, str(CHART), "-n", self.namespace, *values, *flags]

    def install(self, mode: str, version: str, *flags: str) -> Run:
        return run(self.command("install", mode, version, *flags), self.env)

    def upgrade(self, mode: str, version: str, *flags: str) -> Run:
        return run(self.command("upgrade", mode, version, *flags), self.env)

    def template(self, mode: str, version: str) -> str:
        rendered = run(self.command("template", mode, version), self.env)
        assert rendered.code == 0, rendered.said()
        return rendered.stdout

    def history(self) -> list[tuple[int, str, str]]:
        """(revision, status, description) of each revision, oldest first."""
        listed = run(
            [str(self.binary), "history", NAME, "-n", self.namespace, "-o", "json"], self.env
        )
        assert listed.code == 0, listed.said()
        return [(r["revision"], r["status"], r["description"]) for r in json.loads(listed.stdout)]


@pytest.fixture(scope="module")
def helm_binary() -> Path:
    return build_tool("helm")


@pytest.fixture(scope="module")
def kstatus_binary() -> Path:
    return build_tool("kstatus")


@pytest.fixture
def helm(helm_binary: Path, namespace: str, tmp_path: Path) -> Helm:
    return Helm(helm_binary, tmp_path / "helm", namespace)


@dataclass(frozen=True)
class Verdicts:
    """What the tools make of the live object: kstatus (both libraries agree) and Argo CD."""

    kstatus: str
    message: str
    argocd: str
    argocd_message: str


class Judges:
    """Runs the kstatus checker and the Argo CD health check on the live object."""

    def __init__(self, kube: Kube, namespace: str, binary: Path) -> None:
        self.kube, self.namespace, self.binary = kube, namespace, binary

    def now(self) -> Verdicts:
        body = self.kube.get(self.namespace, NAME)
        verdict = kstatus(self.binary, body)
        assert (verdict.fluxcd_status, verdict.fluxcd_message) == (
            verdict.status,
            verdict.message,
        ), "sigs.k8s.io/cli-utils and github.com/fluxcd/cli-utils disagree"
        health, health_message = argocd_health(body)
        return Verdicts(verdict.status, verdict.message, health, health_message)


@pytest.fixture
def judges(kube: Kube, namespace: str, kstatus_binary: Path) -> Judges:
    return Judges(kube, namespace, kstatus_binary)


def installed(helm: Helm, kube: Kube, namespace: str, mode: str) -> None:
    """`helm install --wait` of v1; it returns once v1 serves."""
    done = helm.install(mode, "v1", "--wait", "--timeout", HELM_TIMEOUT)
    assert done.code == 0, done.said()
    assert ready(kube, namespace, NAME)


def serving_image(kube: Kube, namespace: str) -> str:
    deployment = kube.apps.read_namespaced_deployment(NAME, namespace)
    return str(deployment.spec.template.spec.containers[0].image)


def condition(kube: Kube, namespace: str, type_: str) -> tuple[str, str]:
    found = kube.condition(namespace, NAME, type_)
    return found.get("status", ""), found.get("reason", "")


def settled(kube: Kube, namespace: str, active: str) -> dict[str, Any]:
    """The resource once the operator is done: the spec names `active`, the Deployment
    serves v1 and no rollout is in progress."""

    def done() -> dict[str, Any] | None:
        body = kube.get(namespace, NAME)
        status = body.get("status") or {}
        return (
            body
            if body["spec"]["activeVersion"] == active
            and status.get("observedGeneration") == body["metadata"]["generation"]
            and status.get("servingVersion") == "v1"
            and condition(kube, namespace, "Reconciling")[0] == "False"
            else None
        )

    return wait_for(done, 90, f"spec {active}, v1 serving, no rollout in progress")


def record_run(record_property: RecordProperty, what: str, done: Run) -> None:
    record_property(f"figure: {what}: exit code", done.code)
    record_property(f"figure: {what}: seconds", round(done.seconds, 1))
    record_property(f"figure: {what}: stderr", done.stderr.strip().splitlines())


# ------------------------------------------------------------------ first rollout


@pytest.mark.parametrize("mode", MODES)
def test_helm_install_wait_waits_for_the_first_rollout(
    kube: Kube,
    namespace: str,
    stopped_operator: OperatorProcess,
    helm: Helm,
    judges: Judges,
    mode: str,
    record_property: RecordProperty,
) -> None:
    """The CRD defaults status to {observedGeneration: 0}: kstatus reads a new resource
    as not yet observed (InProgress), so Helm waits until the operator rolled it out."""
    installing = subprocess.Popen(
        helm.command("install", mode, "v1", "--wait", "--timeout", HELM_TIMEOUT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=helm.env,
    )
    try:
        wait_for(lambda: kube.get(namespace, NAME), 60, "Helm to create the ModelDeployment")
        unobserved = judges.now()
        assert unobserved.kstatus == "InProgress", unobserved
        assert "latest observed generation is 0" in unobserved.message
        assert unobserved.argocd == "Progressing"
        # No operator runs yet: nothing can have made the release look done.
        assert installing.poll() is None, installing.communicate()
        started = time.monotonic()
        stopped_operator.start()
        out, err = installing.communicate(timeout=240)
    finally:
        if installing.poll() is None:
            installing.kill()
            installing.communicate()
    assert installing.returncode == 0, out + err
    assert "STATUS: deployed" in out
    body = kube.get(namespace, NAME)
    assert ready(kube, namespace, NAME)
    assert body["status"]["servingVersion"] == "v1"
    assert (judges.now().kstatus, judges.now().argocd) == ("Current", "Healthy")
    record_property(
        f"figure: operator start -> helm install --wait returns ({mode}), s",
        round(time.monotonic() - started, 1),
    )


# ------------------------------------------------------------- helm upgrade --wait


@pytest.mark.parametrize("mode", MODES)
def test_helm_upgrade_wait_fails_on_a_crashlooping_release(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    helm: Helm,
    judges: Judges,
    mode: str,
    record_property: RecordProperty,
) -> None:
    installed(helm, kube, namespace, mode)
    upgrade = helm.upgrade(mode, "v2", "--wait", "--timeout", HELM_TIMEOUT)
    record_run(record_property, f"helm upgrade --wait ({mode})", upgrade)
    assert upgrade.code == 1, upgrade.said()
    assert "Error: UPGRADE FAILED: resource ModelDeployment" in upgrade.stderr
    assert "not ready. status: Failed, message: v2 failed" in upgrade.stderr
    if mode == "RevertSpec":
        assert "spec.activeVersion was reverted to v1" in upgrade.stderr
    else:
        assert "v2 failed (CrashLoopBackOff)" in upgrade.stderr
        assert "the spec still names v2 (onFailure: KeepSpec)" in upgrade.stderr
    # Helm's history says the release failed; the cluster serves v1.
    assert [(r, s) for r, s, _ in helm.history()] == [(1, "deployed"), (2, "failed")]
    body = settled(kube, namespace, "v1" if mode == "RevertSpec" else "v2")
    assert serving_image(kube, namespace) == GOOD
    assert body["status"]["lastGoodVersion"] == "v1"
    assert condition(kube, namespace, "Stalled") == ("True", "RolledBack")
    # RevertSpec: v1 serves as the spec says, so Ready; KeepSpec: the spec's v2 does not.
    assert condition(kube, namespace, "Ready")[0] == ("True" if mode == "RevertSpec" else "False")
    seen = judges.now()
    assert (seen.kstatus, seen.argocd) == ("Failed", "Degraded"), seen
    assert seen.argocd_message.startswith("RolledBack: v2 failed")


@pytest.mark.parametrize("mode", MODES)
def test_helm_reupgrade_after_a_failed_release(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    helm: Helm,
    judges: Judges,
    mode: str,
    record_property: RecordProperty,
) -> None:
    """The same values again, then a fixed release. RevertSpec: the operator's revert made
    it a manager of .spec.activeVersion, so Helm's server-side apply of v2 conflicts with
    it; KeepSpec: nobody else wrote the field, so no conflict, and v2 is still failed."""
    installed(helm, kube, namespace, mode)
    assert helm.upgrade(mode, "v2", "--wait", "--timeout", HELM_TIMEOUT).code == 1
    settled(kube, namespace, "v1" if mode == "RevertSpec" else "v2")

    again = helm.upgrade(mode, "v2", "--wait", "--timeout", HELM_TIMEOUT)
    record_run(record_property, f"helm upgrade --wait to v2 again ({mode})", again)
    assert again.code == 1, again.said()
    if mode == "RevertSpec":
        assert (
            f'Apply failed with 1 conflict: conflict with "{MANAGER}" using '
            "modeldeploy.io/v1alpha1: .spec.activeVersion"
        ) in again.stderr
        assert kube.get(namespace, NAME)["spec"]["activeVersion"] == "v1"
    else:
        assert "conflict" not in again.stderr
        assert "status: Failed, message: v2 failed (CrashLoopBackOff)" in again.stderr
    assert judges.now().kstatus == "Failed"

    fixed = helm.upgrade(mode, "v1", "--wait", "--timeout", HELM_TIMEOUT)
    record_run(record_property, f"helm upgrade --wait back to v1 ({mode})", fixed)
    if mode == "KeepSpec":
        assert fixed.code == 0, fixed.said()
    # RevertSpec: the spec already names v1, so the apply changes no generation and
    # Helm's watcher may read the status before the operator looked again (then it fails
    # at once; recorded, not asserted). The apply makes Helm a manager of
    # .spec.activeVersion again: the revert is acknowledged, the stall clears, and the
    # operator lets go of the field.
    wait_for(lambda: condition(kube, namespace, "Stalled")[0] == "False", 30, "the stall to clear")
    assert (judges.now().kstatus, judges.now().argocd) == ("Current", "Healthy")
    body = wait_for(
        lambda: (
            (b := kube.get(namespace, NAME))
            and MANAGER not in spec_managers(b, "f:activeVersion")
            and b
        ),
        30,
        "the operator to let go of .spec.activeVersion",
    )
    assert body["spec"]["activeVersion"] == "v1"
    later = helm.upgrade(mode, "v3", "--wait", "--timeout", HELM_TIMEOUT)
    record_run(record_property, f"helm upgrade --wait to v3 afterwards ({mode})", later)
    assert later.code == 0, later.said()  # no conflict left behind
    assert kube.get(namespace, NAME)["status"]["servingVersion"] == "v3"


# ------------------------------------------------------- helm --rollback-on-failure


@pytest.mark.parametrize("mode", MODES)
def test_helm_rollback_on_failure(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    helm: Helm,
    judges: Judges,
    mode: str,
    record_property: RecordProperty,
) -> None:
    """Helm's rollback re-applies revision 1 (v1). KeepSpec: that is a spec write.
    RevertSpec: the operator already wrote v1, and Helm's server-side apply of it makes
    Helm a manager of .spec.activeVersion again: the revert is acknowledged. Either way
    the stall clears, the rollback's own wait passes, and Helm and the cluster agree."""
    installed(helm, kube, namespace, mode)
    upgrade = helm.upgrade(mode, "v2", "--rollback-on-failure", "--timeout", HELM_TIMEOUT)
    record_run(record_property, f"helm upgrade --rollback-on-failure ({mode})", upgrade)
    assert upgrade.code == 1, upgrade.said()
    history = helm.history()
    settled(kube, namespace, "v1")
    assert serving_image(kube, namespace) == GOOD
    assert len(history) == 3  # install, the failed upgrade, the rollback to 1 (v1)
    if mode == "KeepSpec":
        assert "has been rolled back due to rollback-on-failure being set" in upgrade.stderr
        assert [s for _, s, _ in history] == ["superseded", "failed", "deployed"]
    # RevertSpec: the rollback re-applies the v1 the operator wrote already; its wait may
    # read the stale status first (recorded above). Helm's apply acknowledges the revert
    # either way, and the cluster ends where Helm's history says: v1, not stalled.
    wait_for(lambda: condition(kube, namespace, "Stalled")[0] == "False", 30, "the stall to clear")
    assert ready(kube, namespace, NAME)
    assert (judges.now().kstatus, judges.now().argocd) == ("Current", "Healthy")


# --------------------------------------------------- kubectl wait and the plugin


@pytest.mark.parametrize("mode", MODES)
def test_kubectl_wait_and_plugin_wait_after_a_failed_release(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    helm: Helm,
    mode: str,
    record_property: RecordProperty,
) -> None:
    """A pipeline that runs `helm upgrade` (no --wait), then waits with kubectl or the
    plugin. Helm says deployed; the plugin exits 1 in both modes; kubectl wait for
    Ready passes a reverted release (RevertSpec: v1 serves, Ready) and times out on a
    kept one (KeepSpec: Ready=False until the spec changes)."""
    installed(helm, kube, namespace, mode)
    upgrade = helm.upgrade(mode, "v2")
    assert upgrade.code == 0, upgrade.said()
    assert "STATUS: deployed" in upgrade.stdout

    plugin = run(
        [sys.executable, "-m", "modeldeploy.cli", "-n", namespace, "wait", NAME, "--timeout=120s"]
    )
    record_run(record_property, f"kubectl modeldeploy wait ({mode})", plugin)
    assert plugin.code == 1, plugin.said()
    assert f"Error: {NAME}: the release of v2 failed: v2 failed (CrashLoopBackOff" in plugin.stderr

    settled(kube, namespace, "v1" if mode == "RevertSpec" else "v2")
    wait_timeout = "120s" if mode == "RevertSpec" else "15s"
    ready_wait = ["wait", "--for=condition=Ready", f"mdep/{NAME}", f"--timeout={wait_timeout}"]
    kubectl = run(["kubectl", "-n", namespace, *ready_wait])
    record_run(record_property, f"kubectl wait --for=condition=Ready ({mode})", kubectl)
    if mode == "RevertSpec":
        assert kubectl.code == 0, kubectl.said()
        assert "condition met" in kubectl.stdout
    else:
        assert kubectl.code == 1, kubectl.said()
        assert "timed out waiting for the condition" in kubectl.stderr


# ---------------------------------------------------------- Flux and Argo CD


def gitops_apply(helm: Helm, namespace: str, mode: str, version: str) -> None:
    """What Flux's kustomize-controller does with the manifest in Git: a forced
    server-side apply under its own field manager."""
    manifest = helm.template(mode, version)
    forced = ["--server-side", "--force-conflicts", "--field-manager=kustomize-controller"]
    applied = run(["kubectl", "-n", namespace, "apply", *forced, "-f", "-"], stdin=manifest)
    assert applied.code == 0, applied.said()


@pytest.mark.parametrize("mode", MODES)
def test_flux_and_argocd_verdicts_follow_a_failed_release(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    helm: Helm,
    judges: Judges,
    mode: str,
    record_property: RecordProperty,
) -> None:
    """A Git-driven apply of v1, then v2: at every look both kstatus libraries (Flux's
    health check) agree, and Argo CD's health check says the same; a failed release
    ends Failed / Degraded in both modes."""
    seen: list[str] = []

    def look(done: Callable[[Verdicts], bool]) -> bool:
        verdicts = judges.now()
        assert ARGOCD_FOR_KSTATUS[verdicts.kstatus] == verdicts.argocd, verdicts
        if not seen or seen[-1] != verdicts.kstatus:
            seen.append(verdicts.kstatus)
        return done(verdicts)

    gitops_apply(helm, namespace, mode, "v1")
    wait_for(lambda: look(lambda v: v.kstatus == "Current"), 90, "v1 Current")
    gitops_apply(helm, namespace, mode, "v2")
    active = "v1" if mode == "RevertSpec" else "v2"
    wait_for(
        lambda: (
            look(lambda v: v.kstatus == "Failed")
            and kube.get(namespace, NAME)["spec"]["activeVersion"] == active
        ),
        90,
        "the failed release to read Failed",
    )
    record_property(f"figure: kstatus verdicts seen ({mode})", " -> ".join(seen))
    verdicts = judges.now()
    record_property(f"figure: kstatus message ({mode})", verdicts.message)
    record_property(
        f"figure: Argo CD health ({mode})", f"{verdicts.argocd}: {verdicts.argocd_message}"
    )
    assert serving_image(kube, namespace) == GOOD
    if mode == "KeepSpec":
        # The fix in Git: select v1 again.
        gitops_apply(helm, namespace, mode, "v1")
        wait_for(lambda: look(lambda v: v.kstatus == "Current"), 90, "v1 Current again")
        assert judges.now().argocd == "Healthy"
        return
    # RevertSpec: Git still names v2, so Flux corrects the drift at its next interval
    # by re-applying v2; the operator refuses the quarantined version and reverts again.
    gitops_apply(helm, namespace, mode, "v2")
    wait_for(
        lambda: (
            len(kube.status(namespace, NAME).get("reverts") or ()) == 2
            and look(lambda v: v.kstatus == "Failed")
            and kube.get(namespace, NAME)["spec"]["activeVersion"] == "v1"
        ),
        90,
        "the second revert",
    )


# ------------------------------------------------------ the Argo CD recipe's premise


def spec_managers(body: dict[str, Any], field: str) -> set[str]:
    """The managers whose managedFields entry (not the status one) holds spec.`field`."""
    return {
        entry["manager"]
        for entry in body["metadata"].get("managedFields") or ()
        if entry.get("subresource") != "status"
        and field in (entry.get("fieldsV1") or {}).get("f:spec", {})
    }


def test_argocd_ignore_differences_recipe_premise(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    helm: Helm,
) -> None:
    """deploy/argocd/application-revertspec.yaml ignores what manager modeldeploy owns.
    After a revert that is .spec.activeVersion and nothing else of the spec, and only
    until the revert is acknowledged: once Git (here Helm) applies the reverted value
    too, the operator lets go of the field, so later Git changes to it are diffed again
    and apply without a conflict."""
    recipe = (ARGOCD / "application-revertspec.yaml").read_text()
    assert f"managedFieldsManagers: [{MANAGER}]" in recipe
    assert "RespectIgnoreDifferences=true" in recipe

    installed(helm, kube, namespace, "RevertSpec")
    assert helm.upgrade("RevertSpec", "v2", "--wait", "--timeout", HELM_TIMEOUT).code == 1
    body = settled(kube, namespace, "v1")
    (operator_spec,) = [
        entry["fieldsV1"]["f:spec"]
        for entry in body["metadata"]["managedFields"]
        if entry["manager"] == MANAGER and entry.get("subresource") != "status"
    ]
    assert operator_spec == {"f:activeVersion": {}}
    assert spec_managers(body, "f:activeVersion") == {MANAGER}

    # Git (here: Helm) says v1 too: acknowledged; the operator lets go of the field.
    assert helm.upgrade("RevertSpec", "v1").code == 0
    wait_for(
        lambda: spec_managers(kube.get(namespace, NAME), "f:activeVersion") == {"helm"},
        30,
        "the operator to let go of .spec.activeVersion",
    )

    # A later change from Git applies without forcing anything.
    gitops_apply(helm, namespace, "RevertSpec", "v3")
    assert "kustomize-controller" in spec_managers(kube.get(namespace, NAME), "f:activeVersion")
