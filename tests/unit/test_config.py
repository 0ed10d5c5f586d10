"""Configuration snapshots: naming, hashing, what decide asks for, and the reconcile's writes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modeldeploy import constants as c
from modeldeploy.cli import show_versions, version_rows
from modeldeploy.core import config
from modeldeploy.core.decide import decide
from modeldeploy.core.reads import reads
from modeldeploy.core.render import template_hash
from modeldeploy.model.observed import ContainerState, Observed, PodState, SnapshotResult
from modeldeploy.model.resource import Resource, parse_resource
from modeldeploy.model.spec import JSON, Spec
from modeldeploy.model.status import to_json
from modeldeploy.ports import Memory, Refused, Services
from modeldeploy.reconcile import reconcile_once
from tests.unit.builders import OURS, RS_UID, UID, at, body, present
from tests.unit.fake_cluster import RecordingCluster, RecordingMeasurer, RecordingNotifier

A = {"threshold": "0.5"}
B = {"threshold": "0.99999"}
C = {"threshold": "0.7"}


def with_config(active: str = "v1", source: str = "fraud-config", **extra: Any) -> JSON:
    raw = body(active=active, **extra)
    for entry in raw["spec"]["versions"]:
        entry["config"] = {"configMapName": f"{source}-{entry['name']}"}
    return raw


def spec(res: Resource) -> Spec:
    assert isinstance(res.spec, Spec)
    return res.spec


# ------------------------------------------------------------- pure pieces


def test_the_content_hash_ignores_key_order_and_sees_every_byte() -> None:
    first = config.content_hash({"a": "1", "b": "2"}, {})
    assert first == config.content_hash({"b": "2", "a": "1"}, {})
    assert first != config.content_hash({"a": "1", "b": "2 "}, {})
    assert first != config.content_hash({"a": "1"}, {"b": "Mg=="})
    assert len(first) == config.HASH_LENGTH


def test_a_snapshot_is_named_after_resource_version_and_hash_within_the_limits() -> None:
    assert config.snapshot_name("fraud", "v1.2", "0123456789abcdef") == "fraud-v1.2-01234567"
    longest = config.snapshot_name("r" * 63, "v" * 63, "0123456789abcdef")
    assert len(longest) == 63 + 63 + 8 + 2
    cut = config.snapshot_name("r" * 200, "v" * 100, "0123456789abcdef")
    assert len(cut) <= 253 and cut.endswith("-01234567")
    assert cut != config.snapshot_name("r" * 200, "w" * 100, "0123456789abcdef")


def test_the_snapshot_is_an_immutable_owned_labelled_copy() -> None:
    res = parse_resource(with_config())
    source = {"metadata": {"name": "fraud-config-v1"}, "data": A, "binaryData": {"x": "AA=="}}
    digest = config.content_hash(A, {"x": "AA=="})
    snapshot = config.render_snapshot(res, "v1", "fraud-config-v1", source, digest)
    meta = snapshot["metadata"]
    assert snapshot["immutable"] is True
    assert (snapshot["data"], snapshot["binaryData"]) == (A, {"x": "AA=="})
    assert meta["name"] == f"m-v1-{digest[:8]}"
    assert meta["labels"][c.LABEL_MANAGED_BY] == c.MANAGER
    assert meta["labels"][c.LABEL_NAME] == "m"
    assert meta["labels"][c.LABEL_CONFIG_HASH] == digest
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelDeployment", UID, True)
    assert config.is_snapshot(snapshot, res, digest)
    assert not config.is_snapshot({**snapshot, "data": B}, res, digest)
    foreign = copy.deepcopy(snapshot)
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    assert not config.is_snapshot(foreign, res, digest)


# ------------------------------------------------------------- decide


def taken(version: str, data: dict[str, str], source: str | None = None) -> SnapshotResult:
    digest = config.content_hash(data, {})
    return SnapshotResult(
        version=version,
        source=source or f"fraud-config-{version}",
        name=config.snapshot_name("m", version, digest),
        hash=digest,
    )


def test_a_version_with_a_config_is_not_rolled_out_before_its_snapshot_is_taken() -> None:
    res = parse_resource(with_config())
    assert [(s.version, s.source) for s in reads(res, Observed(), at(0)).snapshots] == [
        ("v1", "fraud-config-v1")
    ]
    decision = decide(res, Observed(), at(0))
    assert decision.deployment is None
    assert decision.status.rollout is None
    assert reads(res, Observed(snapshots=(taken("v1", A),)), at(0)).snapshots == ()
    decision = decide(res, Observed(snapshots=(taken("v1", A),)), at(0))
    (record,) = decision.status.configs
    assert (record.version, record.source, record.hash) == (
        "v1",
        "fraud-config-v1",
        config.content_hash(A, {}),
    )
    pod = present(decision.deployment)["spec"]["template"]
    assert pod["metadata"]["labels"][c.LABEL_CONFIG_HASH] == record.hash
    config_volume, _scratch = pod["spec"]["volumes"]
    assert config_volume == {"name": c.CONFIG_VOLUME, "configMap": {"name": record.name}}
    (container,) = pod["spec"]["containers"]
    assert container["volumeMounts"][0] == {
        "name": c.CONFIG_VOLUME,
        "mountPath": c.CONFIG_PATH,
        "readOnly": True,
    }
    assert {"name": "MODEL_CONFIG", "value": c.CONFIG_PATH} in container["env"]


def test_the_content_hash_is_part_of_the_template_hash() -> None:
    res = parse_resource(with_config())
    first = decide(res, Observed(snapshots=(taken("v1", A),)), at(0))
    other = decide(res, Observed(snapshots=(taken("v1", C),)), at(0))
    assert (
        present(first.status.rollout).template_hash != present(other.status.rollout).template_hash
    )
    again = decide(res, Observed(snapshots=(taken("v1", A),)), at(5))
    assert (
        present(again.status.rollout).template_hash == present(first.status.rollout).template_hash
    )


def test_a_missing_source_stalls_with_invalid_spec_naming_it_and_rolls_nothing_out() -> None:
    res = parse_resource(with_config())
    missing = SnapshotResult(
        "v1", "fraud-config-v1", error="ConfigMap fraud-config-v1 not found in namespace ns"
    )
    decision = decide(res, Observed(snapshots=(missing,)), at(0))
    stalled = next(k for k in decision.status.conditions if k.type == c.STALLED)
    assert (stalled.status, stalled.reason) == ("True", "InvalidSpec")
    assert "spec.versions[v1].config: ConfigMap fraud-config-v1 not found" in stalled.message
    assert decision.deployment is None
    assert decision.requeue_after == config.SOURCE_RETRY_S


def stored(raw: JSON, status: Any) -> Resource:
    """The resource as it reads back once `status` was written."""
    return parse_resource({**raw, "status": to_json(status)})


def test_a_rollback_uses_the_snapshot_the_version_ran_with_not_the_source_now() -> None:
    raw = with_config()
    res = parse_resource(raw)
    decision = decide(res, Observed(snapshots=(taken("v1", A),)), at(0))
    res = stored(raw, decision.status)
    v1_hash = template_hash("m", spec(res), spec(res).versions["v1"])
    moved = with_config(active="v2", generation=2)
    res = stored(moved, decision.status)
    # Only v2 needs a snapshot: v1's source is never read again for v1.
    assert [s.version for s in reads(res, Observed(), at(1)).snapshots] == ["v2"]
    decision = decide(res, Observed(snapshots=(taken("v2", B),)), at(1))
    back = stored(with_config(active="v1", generation=3), decision.status)
    assert template_hash("m", spec(back), spec(back).versions["v1"]) == v1_hash
    assert reads(back, Observed(), at(2)).snapshots == ()
    snapshot = present(spec(back).versions["v1"].snapshot)
    assert snapshot.hash == config.content_hash(A, {})


def test_refresh_annotation_takes_a_new_snapshot_and_is_consumed() -> None:
    raw = with_config()
    decision = decide(parse_resource(raw), Observed(snapshots=(taken("v1", A),)), at(0))
    raw["metadata"]["annotations"] = {c.ANNOTATION_REFRESH_CONFIG: "v1"}
    res = stored(raw, decision.status)
    assert [s.version for s in reads(res, Observed(), at(1)).snapshots] == ["v1"]
    decision = decide(res, Observed(snapshots=(taken("v1", C),)), at(1))
    assert present(decision.spec_change).remove_refresh
    current = [r for r in decision.status.configs if r.retired_at is None]
    assert [r.hash for r in current] == [config.content_hash(C, {})]
    retired = [r for r in decision.status.configs if r.retired_at is not None]
    assert [r.hash for r in retired] == [config.content_hash(A, {})]
    assert present(decision.status.rollout).revision == 2  # a new candidate


def test_retrying_a_version_takes_a_new_snapshot_of_its_source() -> None:
    raw = with_config()
    decision = decide(parse_resource(raw), Observed(snapshots=(taken("v1", A),)), at(0))
    raw["metadata"]["annotations"] = {c.ANNOTATION_RETRY: "v1"}
    assert [
        s.version for s in reads(stored(raw, decision.status), Observed(), at(1)).snapshots
    ] == ["v1"]


def test_a_refresh_of_a_version_without_a_config_is_consumed_with_a_warning() -> None:
    raw = body()
    raw["metadata"]["annotations"] = {c.ANNOTATION_REFRESH_CONFIG: "v1"}
    decision = decide(parse_resource(raw), Observed(), at(0))
    assert present(decision.spec_change).remove_refresh
    assert "ConfigRefreshFailed" in [e.reason for e in decision.events]


def mounting(res: Resource, config_hash: str) -> PodState:
    return PodState(
        name="m-1-a",
        owner="m",
        template_hash="h",
        created_at=at(0),
        controller_uid=RS_UID,
        ready=True,
        containers=(ContainerState(name=c.CONTAINER, ready=True),),
        config_hash=config_hash,
    )


def test_a_removed_versions_snapshot_is_deleted_once_no_pod_mounts_it() -> None:
    raw = with_config()
    decision = decide(parse_resource(raw), Observed(snapshots=(taken("v1", A),)), at(0))
    res = stored(raw, decision.status)
    decision = decide(res, Observed(snapshots=(taken("v2", B),)), at(1))
    v2 = taken("v2", B)
    only_v1 = copy.deepcopy(raw)
    only_v1["spec"]["versions"] = [raw["spec"]["versions"][0]]
    res = stored(only_v1, decision.status)
    still_mounted = Observed(pods=(mounting(res, present(v2.hash)),), replica_sets=OURS)
    decision = decide(res, still_mounted, at(2))
    assert decision.deletes == ()
    assert present(next(r for r in decision.status.configs if r.version == "v2").retired_at)
    res = stored(only_v1, decision.status)
    decision = decide(res, Observed(), at(3))
    assert decision.deletes == (v2.name,)
    assert [r.version for r in decision.status.configs] == ["v1", "v2"]  # until seen gone
    res = stored(only_v1, decision.status)
    decision = decide(res, Observed(deleted_snapshots=frozenset({present(v2.name)})), at(4))
    assert [r.version for r in decision.status.configs] == ["v1"]
    assert decision.deletes == ()


# ------------------------------------------------------------- the reconcile's writes


class Bed:
    def __init__(self, raw: JSON) -> None:
        self.api = RecordingCluster.holding(raw)
        self.services = Services(self.api, RecordingNotifier(), RecordingMeasurer())
        self.memory = Memory()

    def reconcile(self, observed: Observed, seconds: float) -> float | None:
        return reconcile_once(
            self.services, self.api.snapshot(), observed, at(seconds), self.memory
        )

    def source(self, name: str, data: dict[str, str]) -> None:
        self.api.config_maps[name] = {"metadata": {"name": name}, "data": data}


def test_the_snapshot_is_created_before_the_status_that_records_it_and_the_deployment() -> None:
    bed = Bed(with_config())
    bed.source("fraud-config-v1", A)
    bed.reconcile(Observed(), 0)
    name = config.snapshot_name("m", "v1", config.content_hash(A, {}))
    order = [w for w in bed.api.writes if w[0] in ("create ConfigMap", "status", "apply")]
    assert order[0] == ("create ConfigMap", name)
    assert [w[0] for w in order[1:3]] == ["status", "apply"]
    snapshot = bed.api.config_maps[name]
    assert (snapshot["immutable"], snapshot["data"]) == (True, A)
    volumes = bed.api.children["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["configMap"]["name"] == name
    # The source changes: the version keeps its snapshot; nothing is read or made again.
    bed.source("fraud-config-v1", C)
    bed.api.writes.clear()
    bed.reconcile(Observed(), 1)
    assert not [w for w in bed.api.writes if w[0] == "create ConfigMap"]


def test_a_name_taken_by_another_configmap_is_never_used_nor_overwritten() -> None:
    bed = Bed(with_config())
    bed.source("fraud-config-v1", A)
    name = config.snapshot_name("m", "v1", config.content_hash(A, {}))
    bed.api.config_maps[name] = {"metadata": {"name": name}, "data": B}  # not ours
    bed.reconcile(Observed(), 0)
    assert bed.api.config_maps[name]["data"] == B
    stalled = next(k for k in bed.api.body["status"]["conditions"] if k["type"] == c.STALLED)
    assert stalled["reason"] == "InvalidSpec"
    assert f"a ConfigMap named {name} exists and is not this snapshot" in stalled["message"]
    assert "Deployment" not in bed.api.children


@pytest.mark.parametrize("removed", [True, False])
def test_a_removed_versions_snapshot_is_deleted_and_forgotten(removed: bool) -> None:
    bed = Bed(with_config())
    bed.source("fraud-config-v1", A)
    bed.source("fraud-config-v2", B)
    bed.reconcile(Observed(), 0)
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(Observed(), 1)
    v2 = config.snapshot_name("m", "v2", config.content_hash(B, {}))
    assert v2 in bed.api.config_maps
    versions = bed.api.body["spec"]["versions"]
    bed.api.edit_spec(activeVersion="v1", versions=versions[:1] if removed else versions)
    bed.reconcile(Observed(), 2)
    bed.reconcile(Observed(), 3)
    assert (v2 in bed.api.config_maps) is not removed
    names = [r["name"] for r in bed.api.body["status"]["configs"]]
    assert (v2 in names) is not removed


def test_the_plugin_shows_each_versions_config_hash_and_whether_its_source_drifted() -> None:
    raw = with_config()
    decision = decide(parse_resource(raw), Observed(snapshots=(taken("v1", A),)), at(0))
    written = {**raw, "status": to_json(decision.status)}
    a, changed = config.content_hash(A, {}), config.content_hash(C, {})
    rows = {r["name"]: r for r in version_rows(written, {"fraud-config-v1": a})}
    assert rows["v1"]["config"] == {
        "configMap": "fraud-config-v1",
        "snapshot": f"m-v1-{a[:8]}",
        "hash": a,
        "sourceHash": a,
        "drifted": False,
    }
    assert rows["v2"]["config"]["hash"] is None
    drifted = show_versions(written, {"fraud-config-v1": changed})
    assert f"{a[:8]} (drifted)" in drifted
    assert "fraud-config-v2: no snapshot yet" in drifted
    assert f"{a[:8]} (source unreadable)" in show_versions(written, {})


def test_a_refused_delete_backs_off_instead_of_trying_again_at_once() -> None:
    bed = Bed(with_config())
    bed.source("fraud-config-v1", A)
    bed.source("fraud-config-v2", B)
    bed.reconcile(Observed(), 0)
    bed.api.edit_spec(activeVersion="v2")
    bed.reconcile(Observed(), 1)
    bed.api.refuse["delete ConfigMap"] = Refused(403, "configmaps is forbidden")
    bed.api.edit_spec(activeVersion="v1", versions=bed.api.body["spec"]["versions"][:1])
    bed.reconcile(Observed(), 2)
    tries = [w for w in bed.api.writes if w == ("refused", "delete ConfigMap")]
    bed.reconcile(Observed(), 3)  # not due yet: not tried again
    assert [w for w in bed.api.writes if w == ("refused", "delete ConfigMap")] == tries
    del bed.api.refuse["delete ConfigMap"]
    bed.reconcile(Observed(), 7.5)
    v2 = config.snapshot_name("m", "v2", config.content_hash(B, {}))
    assert v2 not in bed.api.config_maps
