"""spec.validation on simulated (kwok) pods: what it does where no process answers.

kwok gives each pod an IP, but nothing serves it: a golden request gets no answer
(connection refused, or no answer within its deadline) or, on a network whose gateway
answers for any address, an answer that is not the model's. Either way the version
fails with ValidationFailed, and the message says which request, which pod, and what
came back: validation needs pods that answer, so it is not for simulated pods (the
real node's tests, tests/e2e/test_real_validation.py, show it working). The CRD's
validation of the new fields is checked here too.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from testbed.support import OperatorProcess, free_port
from tests.e2e.helpers import Kube, metric, model_deployment, scrape, wait_for

GOLDEN = {
    "name": "known-fraud",
    "body": {
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 3], "data": [3, 1, 2.5]}]
    },
    "timeoutSeconds": 1,
    "expect": {"values": [{"path": "outputs[1].data[0]", "equals": "fraud"}]},
}
RecordProperty = Any


def test_simulated_pods_fail_validation_and_the_message_says_what_came_back(
    kube: Kube,
    namespace: str,
    stopped_operator: OperatorProcess,
    record_property: RecordProperty,
) -> None:
    port = free_port()
    stopped_operator.start(f"--metrics-port={port}")
    body = model_deployment("simulated", {"v1": "registry.example/m:1"}, "v1")
    body["spec"]["validation"] = {"requests": [GOLDEN]}
    kube.create(namespace, body)
    failed = wait_for(
        lambda: (
            kube.ledger(namespace, "simulated").get("v1", {}).get("state") == "Failed"
            and kube.ledger(namespace, "simulated")["v1"]
        ),
        60,
        "v1 to fail validation",
    )
    assert failed["reason"] == "ValidationFailed"
    message = failed["message"]
    assert re.match(r"request known-fraud to pod simulated-[a-z0-9]+-[a-z0-9]+", message), message
    unanswered = "got no answer" in message and "validation needs pods that answer" in message
    foreign = "expected status 200, got" in message and "; answer: " in message
    assert unanswered or foreign, message
    record_property("figure: kwok pod validation outcome", "no answer" if unanswered else message)
    stalled = kube.condition(namespace, "simulated", "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "FirstVersionFailed")
    status = kube.status(namespace, "simulated")
    assert status["validation"]["phase"] == "Failed"
    assert "lastGoodVersion" not in status
    text = wait_for(lambda: scrape(port), 10, "the operator's metrics")
    outcome = "Unanswered" if unanswered else "Failed"
    assert metric(text, f'modeldeploy_validation_requests_total{{outcome="{outcome}"}}') >= 1
    assert metric(text, "modeldeploy_validation_duration_seconds_count") >= 1


def test_without_validation_simulated_pods_serve_as_before(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.create(namespace, model_deployment("plain", {"v1": "registry.example/m:1"}, "v1"))
    kube.wait_good(namespace, "plain", "v1")
    assert "validation" not in kube.status(namespace, "plain")


# ---------------------------------------------------------------- admission


def with_validation(request: dict[str, Any]) -> dict[str, Any]:
    body = model_deployment("checked", {"v1": "registry.example/m:1"}, "v1")
    body["spec"]["validation"] = {"requests": [request]}
    return body


def expecting(value: dict[str, Any]) -> dict[str, Any]:
    return with_validation({"name": "r", "expect": {"values": [value]}})


def with_config(config: dict[str, Any]) -> dict[str, Any]:
    body = model_deployment("checked", {"v1": "registry.example/m:1"}, "v1")
    body["spec"]["versions"][0]["config"] = config
    return body


def apply(namespace: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "apply", "-n", namespace, "-f", "-"],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        check=False,
    )


REFUSED = [
    pytest.param(
        expecting({"path": "outputs[0]", "equals": "x", "tolerance": 0.1}),
        "a tolerance applies only to a number",
        id="tolerance-on-a-string",
    ),
    pytest.param(
        expecting({"path": "outputs[0]", "equals": "x", "number": 1}),
        "a value needs equals (a string) or number",
        id="both-equals-and-number",
    ),
    pytest.param(
        expecting({"path": "outputs[0]"}),
        "a value needs equals (a string) or number",
        id="neither",
    ),
    pytest.param(
        expecting({"path": "outputs[0]", "equals": ["x"]}),
        "spec.validation.requests[0].expect.values[0].equals",
        id="equals-a-list",
    ),
    pytest.param(
        expecting({"path": "outputs[x]", "number": 1}),
        "spec.validation.requests[0].expect.values[0].path",
        id="not-a-json-path",
    ),
    pytest.param(
        with_validation({"name": "r", "timeoutSeconds": 0}),
        "spec.validation.requests[0].timeoutSeconds",
        id="zero-timeout",
    ),
    pytest.param(
        with_validation({"name": "r", "path": "v2/models/m/infer"}),
        "spec.validation.requests[0].path",
        id="relative-path",
    ),
    pytest.param(
        with_validation({"name": "r", "method": "DELETE"}),
        "spec.validation.requests[0].method",
        id="method",
    ),
    pytest.param(with_config({}), "configMapName", id="config-without-a-name"),
    pytest.param(
        with_config({"configMapName": "Not_A_Name"}),
        "spec.versions[0].config.configMapName",
        id="config-bad-name",
    ),
]


@pytest.mark.parametrize(("body", "message"), REFUSED)
def test_a_bad_validation_or_config_is_rejected_by_kubectl_apply(
    cluster: object, namespace: str, body: dict[str, Any], message: str
) -> None:
    result = apply(namespace, body)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert message in result.stderr, result.stderr


def test_model_config_is_an_env_name_the_operator_sets(cluster: object, namespace: str) -> None:
    body = model_deployment("checked", {"v1": "registry.example/m:1"}, "v1")
    body["spec"]["versions"][0]["env"] = [{"name": "MODEL_CONFIG", "value": "/x"}]
    result = apply(namespace, body)
    assert result.returncode != 0
    assert "MODEL_CONFIG are set by the operator" in result.stderr


def test_a_golden_request_gets_the_crds_defaults(
    kube: Kube, cluster: object, namespace: str
) -> None:
    body = with_validation(
        {
            "name": "r",
            "expect": {
                "values": [{"path": "$.outputs[0].data[0]", "number": 0.99, "tolerance": 0.01}]
            },
        }
    )
    body["spec"]["versions"][0]["config"] = {"configMapName": "fraud-config"}
    assert apply(namespace, body).returncode == 0
    (request,) = kube.get(namespace, "checked")["spec"]["validation"]["requests"]
    assert request["path"] == "/v2/models/{{name}}/infer"
    assert (request["method"], request["timeoutSeconds"], request["expect"]["status"]) == (
        "POST",
        5,
        200,
    )
