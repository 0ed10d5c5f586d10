"""Configuration snapshots (versions[].config) against the real API server, on kwok pods.

The operator runs on its own ServiceAccount with deploy/rbac.yaml, so the ConfigMap
verbs it was given (get, create, delete) are shown to be enough. What the mounted
configuration does inside a real pod is tests/e2e/test_real_validation.py's part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest

from modeldeploy import constants as c
from modeldeploy.core.config import content_hash
from testbed.support import OperatorProcess
from tests.e2e.conftest import on_its_service_account
from tests.e2e.helpers import (
    Kube,
    model_deployment,
    plugin,
    put_source,
    ready,
    release_and_await_revert,
    reverted_to,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
A = {"threshold": "0.5", "labels.json": '{"fraud": "A-fraud"}'}
B = {"threshold": "0.99"}
C = {"threshold": "0.7"}


@pytest.fixture
def least_privilege(
    kube: Kube, stopped_operator: OperatorProcess, tmp_path: Path
) -> OperatorProcess:
    """The operator with only what deploy/rbac.yaml grants its ServiceAccount."""
    on_its_service_account(kube, stopped_operator, tmp_path)
    stopped_operator.start()
    return stopped_operator


def configured(name: str, versions: dict[str, str], sources: dict[str, str]) -> dict[str, Any]:
    body = model_deployment(name, versions, "v1")
    for entry in body["spec"]["versions"]:
        entry["config"] = {"configMapName": sources[entry["name"]]}
    return body


def snapshots(kube: Kube, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    """Current snapshot records, by version."""
    records = kube.status(namespace, name).get("configs") or ()
    return {r["version"]: r for r in records if "retiredAt" not in r}


def config_map_or_none(kube: Kube, namespace: str, name: str) -> Any:
    try:
        return kube.core.read_namespaced_config_map(name, namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise


def mounted(kube: Kube, namespace: str, name: str) -> str:
    """The snapshot the Deployment's pod template mounts."""
    template = kube.apps.read_namespaced_deployment(name, namespace).spec.template
    (volume,) = [v for v in template.spec.volumes if v.name == c.CONFIG_VOLUME]
    return str(volume.config_map.name)


def test_a_versions_config_is_snapshotted_owned_immutable_and_a_revert_restores_it(
    kube: Kube, namespace: str, least_privilege: OperatorProcess
) -> None:
    put_source(kube, namespace, "fraud-config", A)
    put_source(kube, namespace, "fraud-config-b", B)
    versions = {"v1": "registry.example/m:1", "v2": "registry.example/m:2-crashloop"}
    body = configured("fraud", versions, {"v1": "fraud-config", "v2": "fraud-config-b"})
    created = kube.create(namespace, body)
    wait_for(lambda: ready(kube, namespace, "fraud"), 60, "v1 to serve")
    record = snapshots(kube, namespace, "fraud")["v1"]
    assert (record["source"], record["hash"]) == ("fraud-config", content_hash(A, {}))
    assert record["name"] == f"fraud-v1-{record['hash'][:8]}"
    snapshot = kube.core.read_namespaced_config_map(record["name"], namespace)
    assert snapshot.immutable is True
    assert snapshot.data == A
    (owner,) = snapshot.metadata.owner_references
    assert (owner.kind, owner.uid, owner.controller) == (
        "ModelDeployment",
        created["metadata"]["uid"],
        True,
    )
    assert snapshot.metadata.labels[c.LABEL_CONFIG_HASH] == record["hash"]
    template = kube.apps.read_namespaced_deployment("fraud", namespace).spec.template
    (container,) = template.spec.containers
    (mount,) = [m for m in container.volume_mounts if m.name == c.CONFIG_VOLUME]
    assert (mount.mount_path, mount.read_only) == (c.CONFIG_PATH, True)
    assert {e.name: e.value for e in container.env}["MODEL_CONFIG"] == c.CONFIG_PATH
    assert mounted(kube, namespace, "fraud") == record["name"]
    assert template.metadata.labels[c.LABEL_CONFIG_HASH] == record["hash"]
    v1_template = template.metadata.labels[c.LABEL_TEMPLATE_HASH]
    with pytest.raises(kubernetes.client.ApiException) as refused:
        kube.core.patch_namespaced_config_map(record["name"], namespace, {"data": C})
    assert refused.value.status == 422  # immutable: nobody edits what a version ran with

    put_source(kube, namespace, "fraud-config", C)  # the source moves on
    shown = plugin("-n", namespace, "versions", "fraud")
    assert f"{record['hash'][:8]} (drifted)" in shown.stdout, shown.stdout
    assert "fraud-config-b: no snapshot yet" in shown.stdout

    release_and_await_revert(kube, namespace, "fraud")
    v2 = snapshots(kube, namespace, "fraud")["v2"]
    assert kube.core.read_namespaced_config_map(v2["name"], namespace).data == B
    # Back on v1: the snapshot it ran with (A), not what its source holds now (C).
    assert snapshots(kube, namespace, "fraud")["v1"] == record
    deployment = kube.apps.read_namespaced_deployment("fraud", namespace)
    assert deployment.spec.template.metadata.labels[c.LABEL_TEMPLATE_HASH] == v1_template
    assert mounted(kube, namespace, "fraud") == record["name"]
    assert kube.core.read_namespaced_config_map(record["name"], namespace).data == A
    pods = kube.core.list_namespaced_pod(
        namespace, label_selector=f"{c.LABEL_NAME}=fraud,{c.LABEL_VERSION}=v1"
    ).items
    assert pods and {p.spec.volumes[0].config_map.name for p in pods} == {record["name"]}

    # v2 leaves the spec: its snapshot goes once no pod mounts it.
    spec = kube.get(namespace, "fraud")["spec"]
    kube.custom.patch_namespaced_custom_object(
        c.GROUP,
        c.VERSION,
        namespace,
        c.PLURAL,
        "fraud",
        {"spec": {"versions": [v for v in spec["versions"] if v["name"] == "v1"]}},
    )
    wait_for(
        lambda: config_map_or_none(kube, namespace, v2["name"]) is None,
        60,
        "v2's snapshot to be deleted",
    )
    wait_for(
        lambda: "v2" not in {r["version"] for r in kube.status(namespace, "fraud")["configs"]},
        30,
        "v2's snapshot to leave status",
    )
    assert config_map_or_none(kube, namespace, record["name"]) is not None


def test_refresh_takes_a_new_snapshot_a_new_template_and_retires_the_old_one(
    kube: Kube, namespace: str, least_privilege: OperatorProcess
) -> None:
    put_source(kube, namespace, "fraud-config", A)
    kube.create(
        namespace, configured("fraud", {"v1": "registry.example/m:1"}, {"v1": "fraud-config"})
    )
    wait_for(lambda: ready(kube, namespace, "fraud"), 60, "v1 to serve")
    first = snapshots(kube, namespace, "fraud")["v1"]
    before = kube.status(namespace, "fraud")["rollout"]["templateHash"]
    put_source(kube, namespace, "fraud-config", C)
    kube.custom.patch_namespaced_custom_object(
        c.GROUP,
        c.VERSION,
        namespace,
        c.PLURAL,
        "fraud",
        {"metadata": {"annotations": {c.ANNOTATION_REFRESH_CONFIG: "v1"}}},
    )
    wait_for(
        lambda: snapshots(kube, namespace, "fraud")["v1"]["hash"] == content_hash(C, {}),
        30,
        "a new snapshot of v1's source",
    )
    wait_for(
        lambda: (
            (s := kube.status(namespace, "fraud"))["rollout"]["templateHash"] != before
            and s.get("lastGoodTemplateHash") == s["rollout"]["templateHash"]
            and ready(kube, namespace, "fraud")
        ),
        60,
        "v1 to roll out again with its new configuration",
    )
    second = snapshots(kube, namespace, "fraud")["v1"]
    assert mounted(kube, namespace, "fraud") == second["name"] != first["name"]
    annotations = kube.get(namespace, "fraud")["metadata"].get("annotations") or {}
    assert c.ANNOTATION_REFRESH_CONFIG not in annotations  # consumed
    wait_for(
        lambda: config_map_or_none(kube, namespace, first["name"]) is None,
        60,
        "the retired snapshot to be deleted once its pods are gone",
    )


def test_a_missing_source_stalls_until_it_exists(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.create(namespace, configured("fraud", {"v1": "registry.example/m:1"}, {"v1": "absent"}))
    stalled = wait_for(
        lambda: (k := kube.condition(namespace, "fraud", "Stalled")).get("status") == "True" and k,
        30,
        "the resource to stall",
    )
    assert stalled["reason"] == "InvalidSpec"
    assert "spec.versions[v1].config: ConfigMap absent not found" in stalled["message"]
    assert kube.deployment_or_none(namespace, "fraud") is None
    put_source(kube, namespace, "absent", A)
    wait_for(lambda: ready(kube, namespace, "fraud"), 60, "v1 to serve once its source exists")
    assert reverted_to(kube, namespace, "fraud", "v1")
