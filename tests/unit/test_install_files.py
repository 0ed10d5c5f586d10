"""What users install stays in step with the package: one CRD, one version, one lock.

The Helm chart's crds/ holds a copy of crds/modeldeployment.yaml (Helm reads only
files inside the chart), so it must be that file byte for byte; the chart, the
kustomizations and the operator image carry the package's version; the image's lock
file pins pyproject's runtime dependencies at their versions, each with a hash, and
the test bed's MLServer images' lock file pins its requirements.in likewise.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from testbed import lock, mlserver_image

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "modeldeploy"
LOCK = ROOT / "deploy" / "image" / "requirements.lock"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_charts_crd_is_the_crd() -> None:
    chart_crd = CHART / "crds" / "modeldeployment.yaml"
    assert chart_crd.read_bytes() == (ROOT / "crds" / "modeldeployment.yaml").read_bytes(), (
        "copy crds/modeldeployment.yaml to deploy/helm/modeldeploy/crds/"
    )
    assert [path.name for path in (CHART / "crds").iterdir()] == ["modeldeployment.yaml"]


def test_the_chart_carries_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == PROJECT["version"]
    assert chart["appVersion"] == PROJECT["version"]


def image_tags(kustomization: Path) -> dict[str, str]:
    listed = yaml.safe_load(kustomization.read_text())["images"]
    return {entry["newName"]: entry["newTag"] for entry in listed}


def test_the_kustomizations_name_the_package_version() -> None:
    deploy = ROOT / "deploy"
    for kustomization in ("kustomization.yaml", "overlays/namespaced/kustomization.yaml"):
        assert image_tags(deploy / kustomization) == {
            "registry.example/modeldeploy/operator": PROJECT["version"]
        }
    assert image_tags(deploy / "overlays" / "testbed" / "kustomization.yaml") == {
        "modeldeploy.local/operator": PROJECT["version"]
    }


def lock_entries(path: Path = LOCK) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of each requirement in a lock file."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    entries = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            pin, *options = line.split()
            name, version = pin.split("==")
            entries[name] = (version, [o.removeprefix("--hash=sha256:") for o in options])
    return entries


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_pins_the_runtime_dependencies_at_their_versions() -> None:
    locked = {normalized(name): version for name, (version, _) in lock_entries().items()}
    for requirement in PROJECT["dependencies"]:
        name, version = requirement.split("==")
        assert locked.get(normalized(name)) == version, (
            f"{requirement} is not what deploy/image/requirements.lock pins;"
            " regenerate it: python3 -m testbed.lock"
        )


def test_every_locked_package_has_wheel_hashes() -> None:
    entries = lock_entries()
    assert len(entries) > len(PROJECT["dependencies"])  # what they pull in is pinned too
    for name, (_, hashes) in entries.items():
        assert hashes, f"{name} has no hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), name


def test_the_mlserver_lock_pins_its_requirements_with_hashes() -> None:
    entries = lock_entries(mlserver_image.LOCK)
    locked = {normalized(name): version for name, (version, _) in entries.items()}
    requirements = lock.listed_requirements(mlserver_image.REQUIREMENTS)
    for requirement in requirements:
        name, version = requirement.split("==")
        assert locked.get(normalized(name)) == version, (
            f"{requirement} is not what {mlserver_image.LOCK.relative_to(ROOT)} pins;"
            " regenerate it: python3 -m testbed.lock mlserver"
        )
    assert len(entries) > len(requirements)
    for name, (_, hashes) in entries.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", d) for d in hashes), name


def rules_of(path: Path, kind: str) -> list[dict[str, object]]:
    (role,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == kind]
    return list(role["rules"])


def test_the_namespaced_role_grants_what_the_cluster_role_grants() -> None:
    """All but the nodes: a Role cannot grant what no namespace holds. A namespaced
    install cannot tell a version larger than every node from a full pool, so such a
    version waits for room until its progress deadline (docs/capacity.md)."""
    cluster_wide = rules_of(ROOT / "deploy" / "base" / "rbac.yaml", "ClusterRole")
    namespaced = rules_of(ROOT / "deploy" / "overlays" / "namespaced" / "role.yaml", "Role")
    assert namespaced == [r for r in cluster_wide if r["resources"] != ["nodes"]]
