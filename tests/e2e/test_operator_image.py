"""The operator as users run it: its own image, built without Docker, in a pod on the real node.

The image builds to the same digest twice. `kubectl apply -k deploy/overlays/testbed`
(wrapped in a kustomization that adds `--namespace` for the test's namespace, so it
never acts on other tests' resources) runs it on the real node, where it must run as
uid 10001 on a read-only root filesystem, answer the kubelet's liveness probe, log
through `kubectl logs`, reach the API server through the `kubernetes` Service and
revert a crash-looping release by itself. Everything but the CRD is removed afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import images, operator_image
from testbed.processes import ROOT
from testbed.support import OPERATOR_STARTED
from tests.e2e.helpers import Kube, model_deployment, release_and_await_revert, wait_for

OVERLAY = ROOT / "deploy" / "overlays" / "testbed"
SYSTEM = "modeldeploy-system"
SELECTOR = "app.kubernetes.io/name=modeldeploy-operator"
CRD = "customresourcedefinition.apiextensions.k8s.io/modeldeployments.modeldeploy.io"
RecordProperty = Callable[[str, object], None]


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, check=False)


def test_the_operator_image_builds_to_the_same_digest_twice(
    tmp_path: Path, record_property: RecordProperty
) -> None:
    started = time.monotonic()
    first = operator_image.build(tmp_path / "first.tar")
    record_property(
        "figure: operator image build, base cached (s)", round(time.monotonic() - started)
    )
    second = operator_image.build(tmp_path / "second.tar")
    digests = [
        images.manifest_digests(archive)[operator_image.IMAGE] for archive in (first, second)
    ]
    assert digests[0] == digests[1]
    cached = images.manifest_digests(operator_image.archive())[operator_image.IMAGE]
    assert cached == digests[0]  # what the real node imports is this very image
    record_property("figure: operator image digest", digests[0])
    record_property("figure: operator image size (MB)", round(first.stat().st_size / 1e6))
    with tarfile.open(first) as archive:
        manifest = read_json(archive, f"blobs/sha256/{digests[0].removeprefix('sha256:')}")
        _, *ours = [
            layer_members(archive, layer["digest"]) for layer in manifest["layers"]
        ]  # the first layer is Debian's, as debootstrap left it
    assert len(ours) == 2  # the dependencies with the user, and the wheel
    for members in ours:
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {m.mtime for m in members} == {images.FIXED_MTIME}
        assert {(m.uid, m.gid) for m in members} == {(0, 0)}
        assert not [m.name for m in members if m.name.endswith(".pyc")]


def read_json(archive: tarfile.TarFile, name: str) -> Any:
    data = archive.extractfile(name)
    assert data is not None
    return json.load(data)


def layer_members(archive: tarfile.TarFile, digest: str) -> list[tarfile.TarInfo]:
    data = archive.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
    assert data is not None
    with tarfile.open(fileobj=data) as layer:
        return layer.getmembers()


def limited_to(namespace: str, folder: Path) -> Path:
    """A kustomization around the overlay adding `--namespace NS` to the operator's flags."""
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(
        f"""resources:
  - {os.path.relpath(OVERLAY, folder)}
patches:
  - target: {{group: apps, kind: Deployment, name: modeldeploy-operator}}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --namespace={namespace}
"""
    )
    return folder


def operator_logs() -> str:
    return kubectl("logs", "-n", SYSTEM, "-l", SELECTOR, "--tail=-1").stdout


def probed(logs: str) -> bool:
    """kopf's liveness endpoint logged a probe of the kubelet's that it answered with 200."""
    for line in logs.splitlines():
        try:
            entry = json.loads(line)  # --log-format=json
        except ValueError:
            continue
        if (
            entry.get("first_request_line") == "GET /healthz HTTP/1.1"
            and entry.get("response_status") == 200
            and entry.get("request_header", {}).get("User-Agent", "").startswith("kube-probe/")
        ):
            return True
    return False


@pytest.fixture
def installed(
    namespace: str, real_node: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[None]:
    """The overlay applied for the test's namespace; afterwards everything but the CRD
    (which the whole session shares) deleted, and waited for."""
    applied = kubectl("apply", "-k", str(limited_to(namespace, tmp_path / "install")), "-o", "name")
    names = [name for name in applied.stdout.split() if name != CRD]
    request.node.operator_log = operator_logs
    try:
        assert applied.returncode == 0, applied.stderr
        yield
    finally:
        deleted = kubectl("delete", "--ignore-not-found", "--wait", "--timeout=120s", *names)
        assert deleted.returncode == 0, deleted.stderr


def test_the_in_cluster_operator_reverts_a_crash_looping_release(
    kube: Kube, namespace: str, real_node: str, installed: None, record_property: RecordProperty
) -> None:
    rollout = kubectl(
        "rollout", "status", "-n", SYSTEM, "deployment/modeldeploy-operator", "--timeout=180s"
    )
    assert rollout.returncode == 0, rollout.stderr
    pods = kube.core.list_namespaced_pod(SYSTEM, label_selector=SELECTOR).items
    assert pods  # one, or more with leader election
    for pod in pods:
        assert pod.spec.node_name == real_node
        assert pod.status.phase == "Running"
        (container,) = pod.status.container_statuses
        assert container.ready
        assert container.image == operator_image.IMAGE
        assert container.container_id.startswith("containerd://")  # a process, not kwok's
        uid = kubectl("exec", "-n", SYSTEM, pod.metadata.name, "--", "id", "-u")
        assert uid.stdout.strip() == str(operator_image.UID), uid.stderr
        write = kubectl(
            "exec", "-n", SYSTEM, pod.metadata.name, "--", "python3", "-c", "open('/probe', 'w')"
        )
        assert write.returncode != 0
        assert "Read-only file system" in write.stderr
    wait_for(lambda: OPERATOR_STARTED.decode() in operator_logs(), 60, "its start in its log")
    wait_for(lambda: probed(operator_logs()), 90, "the kubelet's liveness probe answered 200")

    name = "in-cluster"
    body = model_deployment(
        name, {"v1": "registry.example/m:1", "v2": "registry.example/m:2-crashloop"}, "v1"
    )
    kube.create(namespace, body)
    wait_for(lambda: kube.status(namespace, name).get("lastGoodVersion") == "v1", 90, "v1 good")
    released = time.monotonic()
    release_and_await_revert(kube, namespace, name)
    record_property(
        "figure: release to revert by the in-cluster operator (s)",
        round(time.monotonic() - released, 1),
    )
    assert f"applied Deployment {namespace}/{name}" in operator_logs()  # it was this operator
    assert kube.condition(namespace, name, "RolledBack")["status"] == "True"
