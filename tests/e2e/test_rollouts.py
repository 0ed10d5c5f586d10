"""The operator's behaviour on the real test bed (B1-B11), one test per behaviour."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from modeldeploy.constants import ANNOTATION_RETRY, GROUP, PLURAL, VERSION
from modeldeploy.core.plan import SpecChange
from modeldeploy.faults import ENV, EXIT_CODE
from modeldeploy.kube import KubeCluster
from modeldeploy.model.resource import parse_resource
from modeldeploy.ports import Refused
from testbed.support import OperatorProcess
from tests.e2e.helpers import (
    Kube,
    ReadyPodSampler,
    model_deployment,
    ready,
    release_and_await_revert,
    reverted_to,
    wait_for,
)

GOOD = "registry.example/fraud:1.0"
GOOD_V3 = "registry.example/fraud:3.0"


def create_serving(
    kube: Kube, ns: str, name: str, versions: dict[str, str], active: str, **kwargs: Any
) -> None:
    kube.create(ns, model_deployment(name, versions, active, **kwargs))
    wait_for(
        lambda: ready(kube, ns, name) and kube.status(ns, name).get("lastGoodVersion"),
        60,
        f"{name} to become Ready on {active}",
    )


# --------------------------------------------------------------------- B1 render


def test_healthy_version_renders_owned_deployment_and_service(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    create_serving(kube, namespace, "iris", {"v1": GOOD}, "v1", replicas=3)
    body = kube.get(namespace, "iris")
    deployment = kube.apps.read_namespaced_deployment("iris", namespace)
    service = kube.core.read_namespaced_service("iris", namespace)
    for child in (deployment, service):
        (owner,) = child.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "ModelDeployment",
            "iris",
            body["metadata"]["uid"],
            True,
        )
    assert deployment.spec.selector.match_labels == {"modeldeploy.io/name": "iris"}
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0
    template = deployment.spec.template
    assert template.metadata.labels["modeldeploy.io/version"] == "v1"
    (container,) = template.spec.containers
    env = {e.name: e.value for e in container.env}
    assert (container.name, container.image) == ("model", GOOD)
    assert env == {"MODEL_NAME": "iris", "MODEL_VERSION": "v1", "MODEL_URI": "s3://models/iris/v1"}
    status = body["status"]
    assert status["phase"] == "Available"
    assert status["observedGeneration"] == body["metadata"]["generation"]
    columns = subprocess.run(
        ["kubectl", "get", "mdep", "iris", "-n", namespace, "--no-headers"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert columns[:6] == ["iris", "v1", "v1", "v1", "3/3", "Available"], columns


# ------------------------------------------------------- B5, B6 failure + revert


def test_crashloop_reverts_to_last_good(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name, replicas = "fraud", 3
    create_serving(
        kube,
        namespace,
        name,
        {"v1": GOOD, "v2": "registry.example/fraud:2.0-crashloop"},
        "v1",
        replicas=replicas,
    )
    with ReadyPodSampler(kube, namespace, name, replicas) as sampler:
        wait_for(lambda: sampler.minimum is not None, 30, "the sampler to see the serving pods")
        release_and_await_revert(kube, namespace, name)
    status = kube.status(namespace, name)
    failed = kube.ledger(namespace, name)["v2"]
    assert failed["reason"] == "CrashLoopBackOff"
    assert f"pod {name}-" in failed["message"]
    assert "container model restarted" in failed["message"]
    latest, failure = status["history"][:2]
    assert (failure["version"], failure["trigger"], failure["outcome"]) == (
        "v2",
        "Manual",
        "Failed",
    )
    assert (latest["from"], latest["version"], latest["trigger"], latest["outcome"]) == (
        "v2",
        "v1",
        "Automatic",
        "Succeeded",
    )
    assert kube.condition(namespace, name, "RolledBack")["status"] == "True"
    reasons = wait_for(
        lambda: (r := kube.event_reasons(namespace, name)) and "RolledBack" in r and r,
        60,
        "the RolledBack event",
    )
    assert "RolloutFailed" in reasons
    assert sampler.minimum is not None
    assert sampler.minimum >= replicas, f"ready serving pods fell to {sampler.minimum}"


@pytest.mark.parametrize(
    ("image", "extra", "reason"),
    [
        pytest.param("registry.example/m:2-pullfail", {}, "ImagePullBackOff", id="pullfail"),
        pytest.param(
            "registry.example/m:2-notready",
            {"readyTimeoutSeconds": 3},
            "ReadyTimeout",
            id="notready",
        ),
        pytest.param("registry.example/m:2-oom", {}, "OOMKilled", id="oom"),
        pytest.param(
            "registry.example/m:2",
            {"unschedulableGraceSeconds": 2},
            "Unschedulable",
            id="unschedulable",
        ),
    ],
)
def test_failing_version_reverts_to_last_good(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    image: str,
    extra: dict[str, Any],
    reason: str,
) -> None:
    name = "model"
    gpus = {"v2": {"limits": {"nvidia.com/gpu": 64}}} if reason == "Unschedulable" else None
    create_serving(kube, namespace, name, {"v1": GOOD, "v2": image}, "v1", resources=gpus)
    with ReadyPodSampler(kube, namespace, name, 2) as sampler:
        wait_for(lambda: sampler.minimum is not None, 30, "the sampler to see the serving pods")
        release_and_await_revert(kube, namespace, name, **extra)
    failed = kube.ledger(namespace, name)["v2"]
    if reason == "ImagePullBackOff":  # ErrImagePull comes first and fails the rollout too
        assert failed["reason"] in {"ErrImagePull", "ImagePullBackOff"}
    else:
        assert failed["reason"] == reason
    assert f"pod {name}-" in failed["message"]
    assert sampler.minimum is not None and sampler.minimum >= 2


def test_slowready_within_ready_timeout_is_not_reverted(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "slow"
    create_serving(
        kube,
        namespace,
        name,
        {"v1": GOOD, "v2": "registry.example/m:2-slowready"},
        "v1",
        readyTimeoutSeconds=60,
        maxSurge=2,
    )
    kube.select(namespace, name, "v2")
    wait_for(
        lambda: kube.status(namespace, name).get("lastGoodVersion") == "v2",
        90,
        "v2 to succeed after its slow model load",
    )
    body = kube.get(namespace, name)
    assert body["spec"]["activeVersion"] == "v2"
    assert body["status"]["history"][0]["outcome"] == "Succeeded"
    assert "RolledBack" not in kube.event_reasons(namespace, name)


def test_first_version_failure_is_failed_without_revert(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "first"
    kube.create(namespace, model_deployment(name, {"v1": "registry.example/m:1-crashloop"}, "v1"))
    wait_for(lambda: kube.status(namespace, name).get("phase") == "Failed", 60, "phase Failed")
    stalled = kube.condition(namespace, name, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "FirstVersionFailed")
    assert kube.get(namespace, name)["spec"]["activeVersion"] == "v1"
    assert "RolledBack" not in kube.event_reasons(namespace, name)


# ---------------------------------------------------------------- B7 quarantine


def test_quarantined_version_is_refused_and_retry_rolls_it_out(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "quarantine"
    create_serving(
        kube, namespace, name, {"v1": GOOD, "v2": "registry.example/m:2-crashloop"}, "v1"
    )
    kube.select(namespace, name, "v2")
    wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 60, "the first revert")
    revision = kube.status(namespace, name)["history"][0]["revision"]

    kube.select(namespace, name, "v2")  # a user selects the failed version again
    wait_for(
        lambda: kube.get(namespace, name)["spec"]["activeVersion"] == "v1",
        30,
        "the quarantined version to be reverted",
    )
    messages = wait_for(
        lambda: [m for _, r, m in kube.events(namespace, name) if r == "VersionQuarantined"],
        60,
        "the VersionQuarantined event",
    )
    assert "modeldeploy.io/retry=v2" in messages[0]
    status = kube.status(namespace, name)
    assert all(h["revision"] <= revision or h["version"] != "v2" for h in status["history"]), (
        "a quarantined version must not be rolled out again"
    )

    retry = {"metadata": {"annotations": {ANNOTATION_RETRY: "v2"}}}
    kube.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, retry)
    retried = wait_for(
        lambda: [
            h
            for h in kube.status(namespace, name).get("history", [])
            if h["version"] == "v2" and h["trigger"] == "Retry"
        ],
        30,
        "a rollout of v2 with trigger Retry",
    )
    assert retried
    wait_for(
        lambda: (
            ANNOTATION_RETRY not in (kube.get(namespace, name)["metadata"].get("annotations") or {})
        ),
        60,
        "the retry annotation to be consumed",
    )


# ------------------------------------------------------------ B8 manual rollback


def test_manual_rollback_is_a_manual_rollout(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "manual"
    create_serving(kube, namespace, name, {"v1": GOOD, "v2": GOOD_V3}, "v1")
    kube.select(namespace, name, "v2")
    kube.wait_good(namespace, name, "v2")
    kube.select(namespace, name, "v1")
    wait_for(
        lambda: (
            kube.status(namespace, name).get("lastGoodVersion") == "v1"
            and ready(kube, namespace, name)
        ),
        60,
        "back on v1",
    )
    latest = kube.status(namespace, name)["history"][0]
    assert (latest["from"], latest["version"], latest["trigger"], latest["outcome"]) == (
        "v2",
        "v1",
        "Manual",
        "Succeeded",
    )


# ------------------------------------------------- B6 the conditional revert


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param("select-v3", id="the-user-selects-another-version"),
        pytest.param("fix-v2", id="the-user-fixes-the-failed-version"),
    ],
)
def test_user_edit_racing_the_revert_wins(
    kube: Kube, namespace: str, stopped_operator: OperatorProcess, edit: str
) -> None:
    """The race itself: the failure is recorded (status, with the intent to revert) and
    the operator dies before its revert patch; the user's edit lands in between; the
    restarted operator must not revert over it: the spec's generation moved past the
    recorded intent, so the revert is skipped and said so. (A revert patch that meets
    the edit in flight, a bare 422 from the real API server, is the next test.)"""
    name = "race"
    stopped_operator.start()
    create_serving(
        kube,
        namespace,
        name,
        {"v1": GOOD, "v2": "registry.example/m:2-crashloop", "v3": GOOD_V3},
        "v1",
    )
    stopped_operator.stop()
    stopped_operator.env[ENV] = "status:RolloutFailed"  # dies right after recording it
    stopped_operator.start()
    kube.select(namespace, name, "v2")
    process = stopped_operator.process
    assert process is not None
    wait_for(lambda: process.poll() is not None, 60, "the operator to die after the verdict")
    assert process.returncode == EXIT_CODE
    status = kube.status(namespace, name)
    assert status["intent"]["version"] == "v1"  # the revert was decided, not yet written
    assert kube.get(namespace, name)["spec"]["activeVersion"] == "v2"
    if edit == "select-v3":
        kube.select(namespace, name, "v3")
        wanted = "v3"
    else:
        body = kube.get(namespace, name)
        versions = [
            dict(v, image="registry.example/m:2-fixed") if v["name"] == "v2" else v
            for v in body["spec"]["versions"]
        ]
        kube.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": {"versions": versions}}
        )
        wanted = "v2"
    del stopped_operator.env[ENV]
    stopped_operator.start()
    wait_for(
        lambda: kube.status(namespace, name).get("lastGoodVersion") == wanted,
        90,
        f"{wanted} rolled out as the user asked",
    )
    assert kube.get(namespace, name)["spec"]["activeVersion"] == wanted
    assert kube.delivered(namespace, name, "RevertSkipped") == 1
    assert "RolledBack" not in kube.event_reasons(namespace, name)
    assert kube.condition(namespace, name, "Stalled").get("reason") != "RevertDenied"
    assert kube.status(namespace, name).get("reverts", []) == []


def test_revert_patch_applies_only_while_spec_names_the_failed_version(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """The spec moved between the decision and the patch: the API server answers the
    failed `test` with a bare 422, which must read as "moved on", never as a refusal."""
    name = "conditional"
    create_serving(kube, namespace, name, {"v1": GOOD, "v3": GOOD_V3}, "v1")
    kube.select(namespace, name, "v3")
    resource = parse_resource(kube.get(namespace, name))
    revert = SpecChange(set_version="v1", expect_version="v2")
    assert KubeCluster().change_spec(resource, revert) is False
    assert kube.get(namespace, name)["spec"]["activeVersion"] == "v3"


def test_a_stale_status_write_is_stale_and_a_refused_one_is_refused(
    kube: Kube, namespace: str
) -> None:
    # The API server answers a failed JSON-patch `test` with a bare 422, like a real
    # refusal: only the first may be taken for staleness (no operator runs here).
    kube.create(namespace, model_deployment("guarded", {"v1": GOOD}, "v1"))
    resource = parse_resource(kube.get(namespace, "guarded"))
    current = kube.get(namespace, "guarded")["metadata"]["resourceVersion"]
    cluster = KubeCluster()
    assert cluster.replace_status(resource, "1", {"phase": "Pending"}) is None
    with pytest.raises(Refused) as refused:
        cluster.replace_status(resource, current, {"phase": "Sideways"})
    assert refused.value.code == 422
    assert "Sideways" in refused.value.message  # the API server's own words
    made = cluster.replace_status(resource, current, {"phase": "Pending"})
    assert made == kube.get(namespace, "guarded")["metadata"]["resourceVersion"]


# ------------------------------------------------------------ B10 crash safety


def test_operator_killed_after_bad_version_reverts_exactly_once(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "restart"
    create_serving(
        kube, namespace, name, {"v1": GOOD, "v2": "registry.example/m:2-crashloop"}, "v1"
    )
    kube.select(namespace, name, "v2")
    wait_for(
        lambda: (
            kube.apps.read_namespaced_deployment(name, namespace).spec.template.metadata.labels[
                "modeldeploy.io/version"
            ]
            == "v2"
        ),
        60,
        "the operator to roll v2 out",
    )
    operator.stop(kill=True)  # before it sees v2 crash (the first crash takes ~1 s)

    def crashed_unwatched() -> bool:
        pods = kube.core.list_namespaced_pod(
            namespace, label_selector="modeldeploy.io/version=v2"
        ).items
        return any(
            (cs.restart_count or 0) >= 2
            for pod in pods
            for cs in pod.status.container_statuses or ()
        )

    wait_for(crashed_unwatched, 60, "v2 to crash-loop while the operator is down")
    operator.start()
    wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 60, "the revert after restart")
    operator.stop(kill=True)
    operator.start()  # a second restart must not revert or record anything again
    wait_for(lambda: ready(kube, namespace, name), 30, "Ready after the second restart")
    status = kube.status(namespace, name)
    automatic = [h for h in status["history"] if h["trigger"] == "Automatic"]
    assert len(automatic) == 1
    assert len(status["reverts"]) == 1
    assert kube.delivered(namespace, name, "RolledBack") == 1
    revisions = [h["revision"] for h in status["history"]]
    assert revisions == sorted(revisions, reverse=True) == list(range(len(revisions), 0, -1))


# ------------------------------------------------------------------ B11 deletion


def test_deleting_the_resource_removes_children_while_operator_stopped(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "gone"
    create_serving(kube, namespace, name, {"v1": GOOD}, "v1")
    operator.stop()
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    wait_for(
        lambda: (
            kube.deployment_or_none(namespace, name) is None
            and kube.service_or_none(namespace, name) is None
        ),
        60,
        "garbage collection of the Deployment and Service",
    )


# ----------------------------------------------------- B1, B2 ownership and drift


def test_reconciling_an_unchanged_resource_writes_nothing(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "steady"
    create_serving(kube, namespace, name, {"v1": GOOD}, "v1")
    # Settled: the Events the rollout owed were delivered and left the outbox.
    wait_for(lambda: kube.status(namespace, name).get("outbox") == [], 30, "an empty outbox")

    def versions() -> tuple[str, object, str]:
        # The Deployment's status is the controller manager's to write (a pod's condition
        # under load moves its resourceVersion): our writes show in its generation and in
        # the time of modeldeploy's managedFields entry.
        deployment = kube.apps.read_namespaced_deployment(name, namespace).metadata
        ours = [
            (f.operation, f.time) for f in deployment.managed_fields if f.manager == "modeldeploy"
        ]
        return (
            kube.get(namespace, name)["metadata"]["resourceVersion"],
            (deployment.generation, ours),
            kube.core.read_namespaced_service(name, namespace).metadata.resource_version,
        )

    before = versions()
    operator.stop()
    operator.start()  # the restart's initial listing reconciles every resource again
    line = f"reconciled {namespace}/{name}: up to date, nothing written"
    wait_for(lambda: line in operator.log(), 30, "the reconcile after the restart")
    assert versions() == before
    assert operator.log().count(f"applied Deployment {namespace}/{name}") == 1


def test_hand_edited_deployment_is_repaired(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "drift"
    create_serving(kube, namespace, name, {"v1": GOOD}, "v1")
    kube.apps.patch_namespaced_deployment(
        name,
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "model", "image": "registry.example/hand-edited:9"}]
                    }
                }
            }
        },
    )
    wait_for(
        lambda: (
            kube.apps.read_namespaced_deployment(name, namespace)
            .spec.template.spec.containers[0]
            .image
            == GOOD
        ),
        30,
        "the drift to be repaired",
    )


def test_foreign_deployment_is_left_alone_with_name_conflict(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "taken"
    kube.apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "other:1"}]},
                },
            },
        },
    )
    kube.create(namespace, model_deployment(name, {"v1": GOOD}, "v1"))
    wait_for(
        lambda: kube.condition(namespace, name, "Ready").get("reason") == "NameConflict",
        30,
        "Ready=False reason NameConflict",
    )
    deployment = kube.apps.read_namespaced_deployment(name, namespace)
    assert deployment.spec.template.spec.containers[0].image == "other:1"
    assert not deployment.metadata.owner_references
