"""Parsing at the boundary: specs, status round-trips, what pods and children show."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.model.observed import parse_child, parse_pod
from modeldeploy.model.resource import active_version_managers, parse_resource, released
from modeldeploy.model.spec import SpecError, parse_spec
from modeldeploy.model.status import (
    parse_status,
    to_json,
)
from tests.unit.builders import FULL, body


def test_status_round_trips_through_its_json() -> None:
    assert parse_status(to_json(FULL)) == FULL


def test_status_json_uses_the_crd_field_names() -> None:
    out = to_json(FULL)
    assert out["rollout"]["from"] == "v2"
    assert out["reverts"][0] == {"from": "v2", "to": "v1", "at": "2026-11-23T12:00:00.250Z"}
    assert out["lastGoodTemplateHash"] == "h1"
    assert "reason" not in out["history"][0]  # None fields are left out


def test_spec_defaults() -> None:
    spec = parse_spec(body()["spec"])
    assert (spec.rollout.auto_rollback, spec.rollout.max_restarts, spec.rollout.max_surge) == (
        True,
        2,
        1,
    )
    assert (spec.template.port, spec.service.enabled, spec.service.port) == (8080, True, 80)
    assert spec.analysis is None
    assert (spec.template.drain_s, spec.template.grace_period_s) == (5, 35)
    assert spec.template.readiness_probe is None  # render.py's default probe


def test_drain_and_grace_period_are_read_from_the_template() -> None:
    raw = body()["spec"]
    for template, expected in (
        ({"drainSeconds": 12}, (12, 42)),
        ({"drainSeconds": 0, "terminationGracePeriodSeconds": 90}, (0, 90)),
        ({"terminationGracePeriodSeconds": 5}, (5, 5)),
    ):
        spec = parse_spec({**raw, "template": template})
        assert (spec.template.drain_s, spec.template.grace_period_s) == expected, template


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activeVersion": "v9"}, "names no entry"),
        ({"versions": [{"name": "v1", "image": "a"}, {"name": "v1", "image": "b"}]}, "duplicate"),
        ({"versions": [{"name": "v1", "image": ""}]}, "must not be empty"),
        ({"versions": [{"image": "a"}]}, "every entry needs a name"),
        ({"replicas": -1}, ">= 0"),
        (
            {"template": {"drainSeconds": 20, "terminationGracePeriodSeconds": 10}},
            "shorter than drainSeconds",
        ),
        ({"analysis": {"checks": [{"name": "c", "query": "q"}]}}, "needs max or min"),
    ],
)
def test_what_admission_cannot_check_is_a_spec_error(change: dict[str, Any], message: str) -> None:
    raw = {**body()["spec"], **change}
    with pytest.raises(SpecError, match=message):
        parse_spec(raw)


def test_a_resource_with_a_bad_spec_still_parses_with_the_error() -> None:
    raw = body()
    raw["spec"]["replicas"] = "many"
    resource = parse_resource(raw)
    assert isinstance(resource.spec, SpecError)
    assert resource.name == "m"


def pod_body(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "creationTimestamp": "2026-11-23T12:00:00Z",
            "labels": {"modeldeploy.io/name": "m", "modeldeploy.io/template-hash": "h2"},
        },
        "status": status,
    }


def test_pod_signals_are_read_from_its_status() -> None:
    pod = parse_pod(
        pod_body(
            conditions=[{"type": "Ready", "status": "False"}],
            containerStatuses=[
                {
                    "name": "model",
                    "ready": False,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "x"}},
                    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                }
            ],
        )
    )
    (container,) = pod.containers
    assert (pod.owner, pod.template_hash, pod.ready) == ("m", "h2", False)
    assert (
        container.restart_count,
        container.waiting_reason,
        container.last_terminated_reason,
        container.last_exit_code,
    ) == (4, "CrashLoopBackOff", "OOMKilled", 137)


def test_unschedulable_pod_knows_since_when() -> None:
    pod = parse_pod(
        pod_body(
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes",
                    "lastTransitionTime": "2026-11-23T12:00:05Z",
                }
            ]
        )
    )
    assert pod.unschedulable_since is not None
    assert pod.unschedulable_since.second == 5
    assert pod.unschedulable_message == "0/3 nodes"


def test_child_knows_its_controller_and_a_stuck_rollout() -> None:
    child = parse_child(
        {
            "metadata": {
                "name": "m",
                "generation": 4,
                "annotations": {"modeldeploy.io/template-hash": "h1"},
                "ownerReferences": [
                    {"uid": "other", "controller": False},
                    {"uid": "uid-1", "controller": True},
                ],
            },
            "spec": {"replicas": 3},
            "status": {
                "observedGeneration": 4,
                "replicas": 4,
                "updatedReplicas": 1,
                "conditions": [
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ],
            },
        }
    )
    assert (child.controller_uid, child.template_hash, child.generation) == ("uid-1", "h1", 4)
    assert child.progress_deadline_exceeded is True


MANAGED = [
    {"manager": "helm", "operation": "Apply", "fieldsV1": {"f:spec": {"f:versions": {}}}},
    {
        "manager": "modeldeploy",
        "operation": "Update",
        "fieldsV1": {"f:spec": {"f:activeVersion": {}}},
    },
    {
        "manager": "modeldeploy",
        "operation": "Update",
        "subresource": "status",
        "fieldsV1": {"f:status": {}},
    },
    {
        "manager": "ci",
        "operation": "Update",
        "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:activeVersion": {}}},
    },
]


def test_who_owns_the_active_version_is_read_from_managed_fields() -> None:
    assert active_version_managers({"managedFields": MANAGED}) == ("ci", "modeldeploy")


def test_releasing_the_active_version_keeps_everything_else() -> None:
    kept = released(MANAGED, "modeldeploy")
    assert active_version_managers({"managedFields": kept}) == ("ci",)
    assert [e["manager"] for e in kept] == ["helm", "modeldeploy", "ci"]  # status entry stays
    assert kept[1]["subresource"] == "status"
