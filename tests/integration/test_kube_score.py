"""kube-score over what we ship and what the operator renders: no CRITICAL but the allowed.

Platform teams run kube-score on what they install. It scores here, each a source of its
own: `kubectl kustomize` of deploy/ and of every overlay under deploy/overlays/; the Helm
chart by `helm template` with its default values and with `scope: namespace`; and a model's
Deployment and Service as the operator renders them (core/render.py) from
deploy/examples/fraud-detector.yaml. kube-score is built from its pinned Go module
(testbed/go/kube-score); its JSON output grades every check of every object it knows.

A check graded CRITICAL fails its source's test unless ALLOWED names the check and the
object, with the reason it is a deliberate choice. An entry that no source finds any more
fails too, so the list shrinks with the findings. kube-score's `kube-score/ignore`
annotations are disabled: an object cannot hide a finding from this test.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.core.render import render_deployment, render_service, template_hash
from modeldeploy.model.resource import parse_resource
from modeldeploy.model.spec import Spec
from testbed.processes import ROOT
from testbed.support import build_tool

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "modeldeploy"
EXAMPLE = DEPLOY / "examples" / "fraud-detector.yaml"
RELEASE, NAMESPACE = "md", "ops"  # as tests/integration/test_helm_chart.py renders the chart
CRITICAL = 1  # kube-score's grades: 1 critical, 5 warning, 7 almost OK, 10 OK

# The operator's Deployment: as deploy/ and its overlays name it, and as the chart does.
OPERATOR = ("Deployment/modeldeploy-operator", f"Deployment/{RELEASE}-modeldeploy")
MODEL = "Deployment/fraud-detector"

NETWORK_POLICY_IS_OPT_IN = (
    "The operator's NetworkPolicy is opt-in (deploy/components/networkpolicy, the chart's "
    "networkPolicy.enabled): a wrong API server port in it cuts the operator off its API "
    "server, so an admin checks the ports first (docs/operations.md). "
    "test_the_opt_in_network_policy_covers_the_operator scores it on."
)
PULL_POLICY_IS_KUBERNETES_DEFAULT = (
    "The image is a pinned release tag, and Kubernetes' default for one (IfNotPresent) "
    "restarts the operator on a node that holds the image without its registry; the chart's "
    "image.pullPolicy sets Always for a cluster that wants it. deploy/overlays/testbed runs "
    "an image imported into the real node's containerd and in no registry: Always could "
    "not pull it."
)

# (kube-score check ID, Kind/name) -> why the CRITICAL is a deliberate choice.
ALLOWED: dict[tuple[str, str], str] = {
    **{("pod-networkpolicy", operator): NETWORK_POLICY_IS_OPT_IN for operator in OPERATOR},
    **{
        ("container-image-pull-policy", operator): PULL_POLICY_IS_KUBERNETES_DEFAULT
        for operator in OPERATOR
    },
    # A model's pods as the operator renders them from the example. First the settings
    # that are the user's or the tenant's; then what the renderer itself sets today.
    ("container-resources", MODEL): (
        "Resources are the user's (spec.template.resources, versions[].resources): the "
        "renderer copies them and adds none, and the example sets requests only."
    ),
    ("container-ephemeral-storage-request-and-limit", MODEL): (
        "Ephemeral storage is a resource like CPU and memory: the user's to set, and the "
        "renderer adds none."
    ),
    ("pod-networkpolicy", MODEL): (
        "Who may reach a model's pods is the tenant's to decide in its namespace: the "
        "operator renders no NetworkPolicy (docs/security.md, 'Not covered')."
    ),
    ("container-image-pull-policy", MODEL): (
        "The renderer sets no imagePullPolicy: Kubernetes' default for a tagged image "
        "(IfNotPresent) lets a revert start the last good version's pods on nodes that hold "
        "its image without reaching the registry, and a model image of gigabytes is not "
        "pulled again for every pod. A template that wants Always names a digest instead."
    ),
    ("deployment-has-poddisruptionbudget", MODEL): (
        "The example asks for no PodDisruptionBudget; spec.disruption renders one, owned "
        "by the resource (docs/behaviour.md B25)."
    ),
}


@dataclass(frozen=True)
class Finding:
    check: str  # kube-score's check ID
    object: str  # Kind/name
    comments: tuple[str, ...]  # kube-score's summaries, per container where it names one

    @property
    def key(self) -> tuple[str, str]:
        return (self.check, self.object)

    def __str__(self) -> str:
        return f"{self.check} on {self.object}: {'; '.join(self.comments)}"


@dataclass(frozen=True)
class Scored:
    objects: tuple[str, ...]  # Kind/name of every object kube-score graded
    critical: tuple[Finding, ...]


def kubernetes_version() -> str:
    """The test bed's Kubernetes minor version (testbed/go/k8s), as kube-score takes it."""
    for line in (ROOT / "testbed" / "go" / "k8s" / "go.mod").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "k8s.io/kubernetes":
            major, minor = fields[1].split(".")[:2]
            return f"{major}.{minor}"
    raise AssertionError("testbed/go/k8s/go.mod pins no k8s.io/kubernetes")


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
    return done.stdout


def score(kube_score: Path, manifests: str) -> Scored:
    """kube-score's CRITICALs among `manifests` (a YAML stream)."""
    done = subprocess.run(
        [
            str(kube_score),
            "score",
            "--output-format=json",  # format v2: each object's checks, each with its grade
            f"--kubernetes-version={kubernetes_version()}",
            "--disable-ignore-checks-annotations",
            "-",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: some check is CRITICAL
    objects: list[dict[str, Any]] = json.loads(done.stdout)
    names, critical = [], []
    for scored in objects:
        name = f"{scored['type_meta']['kind']}/{scored['object_meta']['name']}"
        names.append(name)
        for check in scored["checks"]:
            if check["skipped"] or check["grade"] > CRITICAL:
                continue
            comments = tuple(
                f"({c['path']}) {c['summary']}" if c.get("path") else c["summary"]
                for c in check["comments"] or ()
            )
            critical.append(Finding(check["check"]["id"], name, comments))
    return Scored(tuple(names), tuple(critical))


# ------------------------------------------------------------- the sources


def kustomize(folder: Path) -> str:
    return run("kubectl", "kustomize", str(folder))


def helm_template(helm: Path, *sets: str) -> str:
    flags = [arg for value in sets for arg in ("--set", value)]
    return run(str(helm), "template", RELEASE, str(CHART), "-n", NAMESPACE, *flags)


def rendered_model() -> str:
    """The example's active version as the operator renders it: its Deployment and Service."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"].update(namespace="ml", uid="uid-1")
    resource = parse_resource(body)
    spec = resource.spec
    assert isinstance(spec, Spec), spec
    version = spec.active
    digest = template_hash(resource.name, spec, version)
    deployment = render_deployment(resource, spec, version, digest)
    return yaml.safe_dump_all([deployment, render_service(resource, spec)])


OVERLAYS = sorted(path.parent for path in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
# name -> how it is made: kustomize FOLDER, helm SET..., or render
SOURCES: dict[str, tuple[str, ...]] = {
    "kustomize deploy": ("kustomize", "deploy"),
    **{
        f"kustomize overlays/{overlay.name}": ("kustomize", f"deploy/overlays/{overlay.name}")
        for overlay in OVERLAYS
    },
    "helm defaults": ("helm",),
    "helm scope=namespace": ("helm", "scope=namespace"),
    "rendered model": ("render",),
}


def manifests(source: str, helm: Path) -> str:
    how, *args = SOURCES[source]
    if how == "kustomize":
        return kustomize(ROOT / args[0])
    if how == "helm":
        return helm_template(helm, *args)
    return rendered_model()


@pytest.fixture(scope="module")
def kube_score() -> Path:
    """kube-score from its pinned Go module (make integration builds it first)."""
    return build_tool("kube-score")


@pytest.fixture(scope="module")
def helm() -> Path:
    return build_tool("helm")


@pytest.fixture(scope="module")
def scores(kube_score: Path, helm: Path) -> dict[str, Scored]:
    return {source: score(kube_score, manifests(source, helm)) for source in SOURCES}


# ------------------------------------------------------------- the tests


def test_the_overlays_are_found() -> None:
    assert {overlay.name for overlay in OVERLAYS} >= {"namespaced", "testbed"}


@pytest.mark.parametrize("source", SOURCES)
def test_no_critical_but_the_allowed(scores: dict[str, Scored], source: str) -> None:
    scored = scores[source]
    # What matters was scored: a source kube-score could not read must not pass for clean.
    if source == "rendered model":
        assert {MODEL, "Service/fraud-detector"} <= set(scored.objects), scored.objects
    else:
        assert set(OPERATOR) & set(scored.objects), scored.objects
    unallowed = [str(finding) for finding in scored.critical if finding.key not in ALLOWED]
    assert not unallowed, "\n".join(unallowed)


def test_every_allowed_critical_is_still_found(scores: dict[str, Scored]) -> None:
    found = {finding.key for scored in scores.values() for finding in scored.critical}
    stale = sorted(set(ALLOWED) - found)
    assert not stale, f"allowed, but no longer CRITICAL anywhere (remove them): {stale}"


def test_the_opt_in_network_policy_covers_the_operator(
    kube_score: Path, helm: Path, tmp_path: Path
) -> None:
    """The reason the operator's pod-networkpolicy is allowed holds: opted in, it passes."""
    overlay = tmp_path / "with-networkpolicy"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes no absolute path for a folder it builds on
                "resources": [os.path.relpath(DEPLOY, overlay)],
                "components": [os.path.relpath(DEPLOY / "components" / "networkpolicy", overlay)],
            }
        )
    )
    for manifests in (kustomize(overlay), helm_template(helm, "networkPolicy.enabled=true")):
        scored = score(kube_score, manifests)
        assert any(name.startswith("NetworkPolicy/") for name in scored.objects), scored.objects
        assert not [f for f in scored.critical if "networkpolicy" in f.check], scored.critical
