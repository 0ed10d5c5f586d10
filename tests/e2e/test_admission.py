"""Bad specs are rejected by `kubectl apply` with a readable message (CRD schema + CEL)."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest

from tests.e2e.helpers import model_deployment

VALID = model_deployment("bad", {"v1": "registry.example/m:1", "v2": "registry.example/m:2"}, "v1")


def with_spec(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    body["spec"].update(changes)
    return body


def with_version(index: int, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    body["spec"]["versions"][index].update(changes)
    return body


CASES = [
    pytest.param(
        with_spec(activeVersion="v9"),
        "spec.activeVersion must name an entry",
        id="active-version-not-listed",
    ),
    pytest.param(
        with_spec(versions=[{"name": "v1", "image": "a:1"}, {"name": "v1", "image": "b:1"}]),
        "Duplicate value",
        id="duplicate-version-names",
    ),
    pytest.param(with_version(1, image=""), "spec.versions[1].image", id="empty-image"),
    pytest.param(with_version(1, name="V 2"), "spec.versions[1].name", id="malformed-version-name"),
    pytest.param(
        with_version(1, name="v" * 64), "spec.versions[1].name", id="version-name-too-long"
    ),
    pytest.param(with_spec(replicas=-1), "spec.replicas", id="negative-replicas"),
    pytest.param(with_spec(versions=[]), "spec.versions", id="no-versions"),
    pytest.param(
        {**VALID, "spec": {"versions": VALID["spec"]["versions"]}},
        "activeVersion",
        id="missing-active-version",
    ),
    pytest.param(with_spec(rollout={"maxSurge": 0}), "spec.rollout.maxSurge", id="zero-surge"),
    pytest.param(
        with_spec(rollout={"strategy": "Replace", "maxUnavailable": 0}),
        "maxUnavailable must be at least 1",
        id="replace-that-can-never-make-room",
    ),
    pytest.param(
        with_spec(rollout={"strategy": "Sideways"}), "spec.rollout.strategy", id="unknown-strategy"
    ),
    pytest.param(
        with_spec(rollout={"readyTimeoutSeconds": 0}),
        "spec.rollout.readyTimeoutSeconds",
        id="zero-ready-timeout",
    ),
    pytest.param(with_spec(template={"port": 70000}), "spec.template.port", id="port-out-of-range"),
    pytest.param(
        with_spec(template={"drainSeconds": 20, "terminationGracePeriodSeconds": 10}),
        "terminationGracePeriodSeconds must not be shorter than drainSeconds",
        id="grace-shorter-than-drain",
    ),
    pytest.param(
        with_spec(template={"terminationGracePeriodSeconds": 3}),
        "terminationGracePeriodSeconds must not be shorter than drainSeconds",
        id="grace-shorter-than-the-default-drain",
    ),
    pytest.param(
        with_spec(template={"drainSeconds": -1}), "spec.template.drainSeconds", id="negative-drain"
    ),
    pytest.param(
        with_version(0, env=[{"name": "MODEL_VERSION", "value": "x"}]),
        "set by the operator",
        id="reserved-env-name",
    ),
    pytest.param(with_spec(replica=3), 'unknown field "spec.replica"', id="unknown-field"),
    pytest.param(
        with_version(0, resources={"limits": {"cpu": "lots"}}),
        "spec.versions[0].resources.limits.cpu",
        id="bad-quantity",
    ),
]


@pytest.mark.parametrize(("body", "message"), CASES)
def test_invalid_spec_is_rejected_by_kubectl_apply(
    cluster: object, namespace: str, body: dict[str, Any], message: str
) -> None:
    result = subprocess.run(
        ["kubectl", "apply", "-n", namespace, "-f", "-"],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_valid_spec_is_accepted(cluster: object, namespace: str) -> None:
    result = subprocess.run(
        ["kubectl", "apply", "-n", namespace, "-f", "-"],
        input=json.dumps(VALID),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
