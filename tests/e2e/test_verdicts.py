"""Verdicts you can trust, on the real API server (docs/signals.md, docs/behaviour.md).

Each test reproduces a way the verdict used to go wrong: old pods of a revert target
failing it, a spec the API server refuses stalling silently, foreign objects changing a
verdict, refused pods waiting for the progress deadline, status growing past etcd's
limit, a denied revert announced as done, writes under a manager nobody recognises.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from modeldeploy.constants import ANNOTATION_RETRY, GROUP, PLURAL, VERSION
from modeldeploy.model.text import MESSAGE_LIMIT
from testbed.support import OperatorProcess
from tests.e2e.helpers import (
    Kube,
    PolicyDenyingMovesTo,
    model_deployment,
    ready,
    release_and_await_revert,
    reverted_to,
    wait_for,
)

GOOD, GOOD_V3 = "registry.example/fraud:1.0", "registry.example/fraud:3.0"
CRASH = "registry.example/fraud:2.0-crashloop"


def create_serving(kube: Kube, ns: str, body: dict[str, Any]) -> None:
    kube.create(ns, body)
    name = body["metadata"]["name"]
    wait_for(
        lambda: ready(kube, ns, name) and kube.status(ns, name).get("lastGoodVersion"),
        60,
        f"{name} to become Ready",
    )


def pods_of(kube: Kube, ns: str, name: str, version: str) -> list[Any]:
    selector = f"modeldeploy.io/name={name},modeldeploy.io/version={version}"
    return list(kube.core.list_namespaced_pod(ns, label_selector=selector).items)


# ------------------------------------------------ 1: only evidence after the start


def test_a_revert_target_with_old_restarts_is_not_failed_by_them(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "veteran"
    create_serving(kube, namespace, model_deployment(name, {"v1": GOOD, "v2": CRASH}, "v1"))
    veteran = pods_of(kube, namespace, name, "v1")[0].metadata.name
    # One serving pod has restarted 5 times in its life (maxRestarts is 2).
    kube.core.patch_namespaced_pod_status(
        veteran,
        namespace,
        [{"op": "replace", "path": "/status/containerStatuses/0/restartCount", "value": 5}],
    )
    release_and_await_revert(kube, namespace, name)
    wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 60, "v1 serving again")
    ledger = kube.ledger(namespace, name)
    assert ledger["v1"]["state"] == "Available"
    # Stalled only to say the release was reverted, never that v1 failed.
    assert kube.condition(namespace, name, "Stalled")["reason"] == "RolledBack"
    deployment = kube.apps.read_namespaced_deployment(name, namespace)
    assert deployment.spec.template.spec.containers[0].image == GOOD


def test_a_revert_target_with_a_readiness_blip_is_not_failed_by_it(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "blip"
    timeout = 30
    body = model_deployment(name, {"v1": GOOD, "v2": CRASH}, "v1", readyTimeoutSeconds=timeout)
    create_serving(kube, namespace, body)
    pod = pods_of(kube, namespace, name, "v1")[0]
    created = pod.metadata.creation_timestamp
    wait_for(
        lambda: (datetime.now(UTC) - created).total_seconds() > timeout + 2,
        timeout + 30,
        "the v1 pods to be older than the ready timeout",
    )
    set_ready(kube, namespace, pod, False)  # a readiness blip just before the release
    release_and_await_revert_started(kube, namespace, name)
    set_ready(kube, namespace, pod, True)  # it ends well within the timeout from the start
    back = partial(reverted_to, kube, namespace, name, "v1")
    kube.wait_saying(namespace, name, back, 60, "v1 serving again")
    assert kube.ledger(namespace, name)["v1"]["state"] == "Available"


def test_a_revert_target_is_not_failed_by_the_failed_versions_progress_deadline(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """One replica (a one-GPU model): the Deployment controller keeps the failed rollout's
    ProgressDeadlineExceeded, same times, when it sees the revert's template and cannot
    measure progress. A revert starting in that second must not take it for its own.
    Three resources at once, so the same-second start is met more than by chance."""
    names = [f"one-{i}" for i in range(3)]
    for name in names:
        body = model_deployment(
            name,
            {"v1": GOOD, "v2": "registry.example/fraud:2.0-notready"},
            "v1",
            replicas=1,
            progressDeadlineSeconds=8,
            readyTimeoutSeconds=600,  # only the progress deadline catches v2
        )
        create_serving(kube, namespace, body)
    for name in names:
        kube.select(namespace, name, "v2")
    for name in names:
        back = partial(reverted_to, kube, namespace, name, "v1")
        kube.wait_saying(namespace, name, back, 120, f"{name} back on v1")
        ledger = kube.ledger(namespace, name)
        assert ledger["v2"]["reason"] == "ProgressDeadlineExceeded"
        assert ledger["v1"]["state"] == "Available", ledger["v1"]
        stalled = kube.condition(namespace, name, "Stalled")
        assert stalled["reason"] == "RolledBack", stalled  # never RollbackTargetUnhealthy
        assert kube.condition(namespace, name, "Ready")["status"] == "True"


def release_and_await_revert_started(kube: Kube, namespace: str, name: str) -> None:
    kube.select(namespace, name, "v2")
    wait_for(
        lambda: (
            kube.get(namespace, name)["spec"]["activeVersion"] == "v1"
            and kube.ledger(namespace, name).get("v2", {}).get("state") == "Failed"
        ),
        60,
        "v2 Failed and the revert under way",
    )


def set_ready(kube: Kube, namespace: str, pod: Any, value: bool) -> None:
    """Flip a kwok pod's Ready and ContainersReady conditions, keeping their times."""
    current = kube.core.read_namespaced_pod(pod.metadata.name, namespace)
    conditions = [
        {**c.to_dict(), "status": ("True" if value else "False")}
        if c.type in ("Ready", "ContainersReady")
        else c.to_dict()
        for c in current.status.conditions
    ]
    patch = {"status": {"conditions": [_condition_json(c) for c in conditions]}}
    kube.core.patch_namespaced_pod_status(pod.metadata.name, namespace, patch)


def _condition_json(condition: dict[str, Any]) -> dict[str, Any]:
    names = {"last_probe_time": "lastProbeTime", "last_transition_time": "lastTransitionTime"}
    out = {names.get(k, k): v for k, v in condition.items() if v is not None}
    for key in ("lastProbeTime", "lastTransitionTime"):
        if key in out and not isinstance(out[key], str):
            out[key] = out[key].strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


# -------------------------------------- 3: what the API server refuses is said


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"name": "1fraud"}, "must start with a letter", id="name-starts-with-digit"),
        pytest.param({"name": "f" * 64}, "at most 63 characters", id="name-too-long"),
        pytest.param(
            {"template": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}},
            "request must not exceed its limit",
            id="request-above-limit",
        ),
    ],
)
def test_what_admission_can_check_is_refused_by_kubectl_apply(
    cluster: object, namespace: str, change: dict[str, Any], message: str
) -> None:
    body = model_deployment(change.pop("name", "fraud"), {"v1": GOOD}, "v1")
    body["spec"].update(change)
    body["metadata"]["namespace"] = namespace
    result = subprocess.run(
        ["kubectl", "apply", "-f", "-"],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    ("template", "words"),
    [
        pytest.param(
            {"readinessProbe": {"httpGet": {"path": "/ready", "port": "not a port name!"}}},
            "port",
            id="malformed-probe",
        ),
        pytest.param(
            {"tolerations": [{"key": "gpu", "operator": "Sometimes"}]},
            "operator",
            id="malformed-toleration",
        ),
    ],
)
def test_a_spec_the_api_server_refuses_stalls_with_its_message_until_fixed(
    kube: Kube, namespace: str, operator: OperatorProcess, template: dict[str, Any], words: str
) -> None:
    name = "refused"
    body = model_deployment(name, {"v1": GOOD}, "v1")
    body["spec"]["template"] = template
    kube.create(namespace, body)
    stalled = wait_for(
        lambda: (k := kube.condition(namespace, name, "Stalled")).get("status") == "True" and k,
        60,
        "Stalled=True",
    )
    assert stalled["reason"] == "InvalidSpec"
    assert "the API server refused the Deployment (HTTP 422)" in stalled["message"]
    assert words in stalled["message"]
    assert kube.delivered(namespace, name, "InvalidSpec") == 1
    assert kube.deployment_or_none(namespace, name) is None
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"template": None}}
    )
    wait_for(lambda: ready(kube, namespace, name), 60, "Ready once the spec is fixed")
    assert kube.condition(namespace, name, "Stalled")["status"] == "False"


@pytest.mark.parametrize("retry", ["v1", "0"], ids=["retry-the-version", "retry-no-version"])
def test_a_version_the_api_server_cannot_type_stalls_quietly_with_its_message(
    kube: Kube, namespace: str, operator: OperatorProcess, retry: str
) -> None:
    """The schema lets an env entry's configMapKeyRef be a string; server-side apply then
    answers 500 "failed to create typed patch object", the same every time: a refusal,
    shown and backed off from, never a reconcile retried (and status rewritten) in a loop.
    Found by tests/e2e/test_fuzz.py, with a retry annotation that no reconcile consumed."""
    name = "untyped"
    body = model_deployment(name, {"v1": GOOD}, "v1")
    body["metadata"]["annotations"] = {ANNOTATION_RETRY: retry}
    body["spec"]["versions"][0]["env"] = [{"name": "W", "valueFrom": {"configMapKeyRef": "x"}}]
    kube.create(namespace, body)
    stalled = wait_for(
        lambda: (k := kube.condition(namespace, name, "Stalled")).get("status") == "True" and k,
        60,
        "Stalled=True",
    )
    assert stalled["reason"] == "InvalidSpec"
    assert "the API server refused the Deployment (HTTP 500)" in stalled["message"]
    assert "configMapKeyRef: expected map" in stalled["message"]
    assert kube.delivered(namespace, name, "InvalidSpec") == 1
    wait_for(lambda: not kube.status(namespace, name).get("outbox"), 60, "the outbox drained")
    settled = kube.get(namespace, name)["metadata"]["resourceVersion"]
    # Several backed-off attempts fit in this time; each is refused again, and a refusal
    # already said is not written again.
    time.sleep(10)
    assert kube.get(namespace, name)["metadata"]["resourceVersion"] == settled
    assert kube.deployment_or_none(namespace, name) is None


# ---------------------------------------------------- 4: status stays bounded


def test_status_stays_small_at_every_bound_and_a_bad_release_is_still_reverted(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "at-every-bound"
    versions = {f"v{i:04d}-{'x' * 57}": f"registry.example/{'m' * 60}:{i}" for i in range(998)}
    good, bad = "v-good", "v-bad"
    body = model_deployment(name, {good: GOOD, bad: CRASH, **versions}, good, historyLimit=100)
    create_serving(kube, namespace, body)
    operator.stop()
    filled = _status_at_every_bound(kube.status(namespace, name), list(versions), bad)
    current = kube.get(namespace, name)
    kube.custom.replace_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {**current, "status": filled}
    )
    operator.start()
    release_and_await_revert(kube, namespace, name, good=good, bad=bad)
    stored = kube.get(namespace, name)
    stored["metadata"].pop("managedFields", None)  # the API server's bookkeeping, not ours
    size = len(json.dumps(stored, separators=(",", ":")))  # as etcd stores it
    assert size < 512 * 1024, size
    kinds = [h["trigger"] for h in kube.status(namespace, name)["history"][:2]]
    assert kinds == ["Automatic", "Manual"]


def _status_at_every_bound(status: dict[str, Any], names: list[str], bad: str) -> dict[str, Any]:
    """A status as long-lived as the CRD allows: every version failed once with a long
    message, 100 history entries, an analysis of 16 checks."""
    long = "m" * MESSAGE_LIMIT  # the longest message the operator writes
    at = status["rollout"]["startedAt"]
    history = [
        {**status["history"][0], "revision": r, "message": long, "reason": "CrashLoopBackOff"}
        for r in range(1, 101)
    ]
    ledger = [
        {
            "name": n,
            "state": "Failed",
            "templateHash": "0" * 12,
            "reason": "CrashLoopBackOff",
            "message": long,
            "failedAt": at,
        }
        for n in names
    ]
    return {
        **status,
        "history": history[::-1],
        "rollout": {
            **history[-1],
            "outcome": "Succeeded",
            "revision": 100,
            "version": status["rollout"]["version"],
            "templateHash": status["rollout"]["templateHash"],
        },
        "versions": [*status["versions"], *ledger],
        "analysis": {
            "version": bad,
            "templateHash": "0" * 12,
            "startedAt": at,
            "endsAt": at,
            "phase": "Passed",
            "checks": [{"name": f"check-{i:02d}-{'c' * 52}", "message": long} for i in range(16)],
        },
    }


# ------------------------------------------------ 5: the revert is conditional


def test_a_revert_refused_by_a_validating_admission_policy_is_revert_denied_not_rolled_back(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "frozen"
    create_serving(kube, namespace, model_deployment(name, {"v1": GOOD, "v2": CRASH}, "v1"))
    with PolicyDenyingMovesTo(namespace, "v1"):
        kube.select(namespace, name, "v2")
        stalled = wait_for(
            lambda: (
                (k := kube.condition(namespace, name, "Stalled")).get("reason") == "RevertDenied"
                and k
            ),
            60,
            "RevertDenied",
        )
        assert "spec.activeVersion is frozen in this namespace" in stalled["message"]
        assert kube.condition(namespace, name, "RolledBack")["status"] == "False"
        assert kube.get(namespace, name)["spec"]["activeVersion"] == "v2"
        assert kube.status(namespace, name).get("reverts", []) == []
        assert "RolledBack" not in kube.event_reasons(namespace, name)
        assert kube.delivered(namespace, name, "RevertDenied") == 1
    # The policy is gone: the backed-off retry lands and the revert is said.
    wait_for(lambda: reverted_to(kube, namespace, name, "v1"), 120, "the revert once allowed")
    assert kube.condition(namespace, name, "RolledBack")["status"] == "True"
    assert len(kube.status(namespace, name)["reverts"]) == 1


# ------------------------------------------------ 6: only our own children count


def test_a_foreign_pod_with_our_labels_and_hash_never_fails_a_rollout(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "labelled"
    slow = "registry.example/fraud:2.0-slowready"
    body = model_deployment(name, {"v1": GOOD, "v2": slow}, "v1", readyTimeoutSeconds=90)
    create_serving(kube, namespace, body)
    kube.select(namespace, name, "v2")
    template = wait_for(
        lambda: (
            (d := kube.deployment_or_none(namespace, name))
            and d.spec.template.metadata.labels["modeldeploy.io/version"] == "v2"
            and d.spec.template.metadata.labels
        ),
        30,
        "the v2 template",
    )
    kube.core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "impostor", "labels": dict(template)},
            "spec": {"containers": [{"name": "model", "image": CRASH}]},
        },
    )
    wait_for(
        lambda: kube.status(namespace, name).get("lastGoodVersion") == "v2", 120, "v2 to succeed"
    )
    assert "v2" not in [
        v for v, r in kube.ledger(namespace, name).items() if r.get("state") == "Failed"
    ]


def test_a_labelled_deployment_of_another_name_is_no_name_conflict(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "owner"
    create_serving(kube, namespace, model_deployment(name, {"v1": GOOD}, "v1"))
    labels = {"modeldeploy.io/name": name, "app.kubernetes.io/managed-by": "modeldeploy"}
    kube.apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "someone-else", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "other"}},
                "template": {
                    "metadata": {"labels": {**labels, "app": "other"}},
                    "spec": {"containers": [{"name": "x", "image": CRASH}]},
                },
            },
        },
    )
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"replicas": 3}}
    )
    wait_for(lambda: kube.status(namespace, name).get("readiness") == "3/3", 60, "3/3 ready")
    assert kube.condition(namespace, name, "Ready")["reason"] != "NameConflict"
    assert ready(kube, namespace, name)


# ---------------------------------- 7: pods the cluster refuses fail at once


def test_pods_refused_by_a_resource_quota_fail_the_rollout_in_seconds(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "quota"
    body = model_deployment(name, {"v1": GOOD, "v2": GOOD_V3}, "v1", progressDeadlineSeconds=600)
    create_serving(kube, namespace, body)
    kube.core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "two-pods"}, "spec": {"hard": {"pods": "2"}}}
    )
    # v2 is good, but its surge pod is refused: the rollout cannot finish (capacity).
    release_and_await_revert(kube, namespace, name, failed_within=90)
    failed = kube.ledger(namespace, name)["v2"]
    assert failed["reason"] == "FailedCreate"
    assert "exceeded quota" in failed["message"]


# ------------------------------------- 10: every write under our field manager


def test_every_write_carries_the_modeldeploy_field_manager(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "managed"
    create_serving(kube, namespace, model_deployment(name, {"v1": GOOD, "v2": CRASH}, "v1"))
    release_and_await_revert(kube, namespace, name)
    raw = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    managers = {(f["manager"], f.get("subresource", "")) for f in raw["metadata"]["managedFields"]}
    assert ("modeldeploy", "status") in managers
    spec_managers = [
        f["manager"]
        for f in raw["metadata"]["managedFields"]
        if "f:activeVersion" in json.dumps(f.get("fieldsV1", {}))
    ]
    assert spec_managers == ["modeldeploy"]
    for child in (
        kube.apps.read_namespaced_deployment(name, namespace),
        kube.core.read_namespaced_service(name, namespace),
    ):
        assert {f.manager for f in child.metadata.managed_fields if f.operation == "Apply"} == {
            "modeldeploy"
        }
    events = kube.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=ModelDeployment"
    ).items
    assert events
    assert {f.manager for e in events for f in e.metadata.managed_fields} == {"modeldeploy"}
    # A user re-applying the failed version with server-side apply meets a conflict
    # that names us.
    applied = model_deployment(name, {"v1": GOOD, "v2": CRASH}, "v2")
    applied["metadata"]["namespace"] = namespace
    result = subprocess.run(
        ["kubectl", "apply", "--server-side", "--field-manager=ci", "-f", "-"],
        input=json.dumps(applied),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert 'conflict with "modeldeploy"' in result.stderr
