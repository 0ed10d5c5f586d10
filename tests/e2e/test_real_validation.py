"""Golden-request validation and configuration snapshots on the real node.

Pods run the reference model server; the operator sends the golden requests straight
to each pod's IP. A version that loads and answers 200 with wrong predictions (the
wronganswers image: its weights negated) is reverted before any of its pods turns
Ready (its readiness gate stays closed) when spec.validation is set, and promoted when
it is not; the difference is what validation is for. The configuration snapshot is shown
travelling with its version: after a revert, v1's pods, new ones included, run with
the threshold v1 was snapshotted with, not what its source ConfigMap holds now. The
times measured go to the session's summary; none is asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from modeldeploy.constants import LABEL_NAME, LABEL_VERSION
from testbed.modelserver.client import InferenceLoad, infer
from testbed.support import OperatorProcess, free_port
from tests.e2e.helpers import (
    Kube,
    KubeWatch,
    metric,
    put_source,
    release_and_await_revert,
    scrape,
    wait_for,
)
from tests.e2e.serving import (
    LABEL,
    REPLICAS,
    SCORE,
    FirstSeen,
    failed,
    last_good_is,
    pods_of,
    probe_score,
    ready_pod_of,
    real_model,
    resources,
    reverted_and_done,
    serve,
    validated,
)

RecordProperty = Callable[[str, object], None]


class ReadyCount(KubeWatch):
    """The monotonic time a pod watch first showed `count` pods of `version` with their
    containers ready (Ready but for the readiness gate golden requests open)."""

    def __init__(self, list_call: Callable[..., Any], version: str, count: int) -> None:
        super().__init__()
        self.list_call, self.count = list_call, count
        self.predicate = ready_pod_of(version, "ContainersReady")
        self.ready: dict[str, bool] = {}
        self.at: float | None = None
        self.events = 0

    def _read(self) -> None:
        for event in self._watch.stream(self.list_call, timeout_seconds=600):  # type: ignore[no-untyped-call]
            pod = event["object"]
            alive = event["type"] != "DELETED" and not pod["metadata"].get("deletionTimestamp")
            self.ready[pod["metadata"]["name"]] = alive and self.predicate(pod)
            if self.at is None and sum(self.ready.values()) >= self.count:
                self.at = time.monotonic()
            self.events += 1


def wrong_answers_rollout(
    kube: Kube, namespace: str, body: dict[str, Any], record_property: RecordProperty
) -> tuple[InferenceLoad, FirstSeen, FirstSeen, FirstSeen]:
    """v1 serves; v2 (wronganswers) is selected under load through the Service; wait
    until it is either reverted or promoted. The watches say when v2 first had a pod with
    its containers ready (Ready, but for the readiness gate of a validated version), was
    recorded Failed, or became the last good version."""
    url = serve(kube, namespace, body)
    with (
        FirstSeen(
            pods_of(kube, namespace, "fraud"), ready_pod_of("v2", "ContainersReady")
        ) as v2_ready,
        FirstSeen(resources(kube, namespace), failed("v2")) as v2_failed,
        FirstSeen(resources(kube, namespace), last_good_is("v2")) as promoted,
        InferenceLoad(url) as load,
    ):
        wait_for(
            lambda: v2_ready.events and v2_failed.events and promoted.events,
            30,
            "the watches to start",
        )
        wait_for(lambda: load.requests > 0, 10, "the first request")
        kube.select(namespace, "fraud", "v2")
        wait_for(
            lambda: v2_failed.at is not None or promoted.at is not None,
            180,
            "v2 to be judged",
        )
        if v2_failed.at is not None:
            wait_for(lambda: reverted_and_done(kube, namespace), 90, "the revert to v1, done")
        else:
            wait_for(lambda: load.answered.get("v2", 0) >= 20, 30, "v2 to answer")
        settled = load.requests + 20
        wait_for(lambda: load.requests >= settled, 30, "20 more requests")
    record_property("figure: failed requests", f"{len(load.failures)} of {load.requests}")
    record_property("figure: answers served by v2 (all wrong)", load.answered.get("v2", 0))
    return load, v2_ready, v2_failed, promoted


def test_wrong_answers_are_reverted_before_becoming_last_good_with_validation(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    real_node: str,
    record_property: RecordProperty,
) -> None:
    body = validated(real_model("fraud", {"v1": "good", "v2": "wronganswers"}, "v1"), SCORE)
    load, v2_ready, v2_failed, promoted = wrong_answers_rollout(
        kube, namespace, body, record_property
    )
    assert promoted.at is None, "v2 became the last good version"
    assert v2_ready.at is not None and v2_failed.at is not None
    record_property(
        "figure: v2 containers ready to Failed (ms)", round((v2_failed.at - v2_ready.at) * 1000)
    )
    assert load.answered.get("v2", 0) == 0  # its pods never Ready: the gate stayed closed
    failure = kube.ledger(namespace, "fraud")["v2"]
    assert failure["reason"] == "ValidationFailed"
    message = failure["message"]
    assert message.startswith("request known-fraud to pod fraud-"), message
    assert f"expected outputs[0].data[0] = {probe_score():g} ± 0.001, got 0.000" in message
    assert "; answer: {" in message
    status = kube.status(namespace, "fraud")
    assert status["lastGoodVersion"] == "v1"
    assert [(h["version"], h["outcome"]) for h in status["history"][:2]] == [
        ("v1", "Succeeded"),
        ("v2", "Failed"),
    ]
    rolled_back = kube.condition(namespace, "fraud", "RolledBack")
    assert (rolled_back["status"], rolled_back["reason"]) == ("True", "ValidationFailed")
    assert load.failures == []  # zero failed inference requests through the Service


def test_wrong_answers_are_promoted_without_validation(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    real_node: str,
    record_property: RecordProperty,
) -> None:
    body = real_model("fraud", {"v1": "good", "v2": "wronganswers"}, "v1")
    load, _, v2_failed, promoted = wrong_answers_rollout(kube, namespace, body, record_property)
    assert v2_failed.at is None
    assert promoted.at is not None, "without validation, Ready and 200 is all it takes"
    url = service_url(kube, namespace)
    # Old pods drain for a few seconds after the promotion: ask until v2 answers.
    answer = wait_for(
        lambda: (got := infer(url))[0] == 200 and got[1]["model_version"] == "v2" and got[1],
        30,
        "v2 to answer through the Service",
    )
    assert answer["outputs"][1]["data"] == ["legit"]  # the fraud case, waved through
    assert load.failures == []


def service_url(kube: Kube, namespace: str) -> str:
    service = kube.core.read_namespaced_service("fraud", namespace)
    return f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/v2/models/fraud/infer"


def test_a_version_that_fails_every_other_request_fails_validation(
    kube: Kube, namespace: str, operator: OperatorProcess, real_node: str
) -> None:
    # Two golden requests in a row to a fresh badanswers pod: the second is answered 500.
    body = validated(real_model("fraud", {"v1": "good", "v2": "badanswers"}, "v1"), SCORE, LABEL)
    serve(kube, namespace, body)
    release_and_await_revert(kube, namespace, "fraud", failed_within=120)
    failure = kube.ledger(namespace, "fraud")["v2"]
    assert failure["reason"] == "ValidationFailed"
    assert "expected status 200, got 500" in failure["message"]
    assert '"error": "inference failed"' in failure["message"]


def threshold_of(answer: dict[str, Any]) -> float:
    return float(answer["parameters"]["threshold"])


def test_the_configuration_travels_with_the_version(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    real_node: str,
    record_property: RecordProperty,
) -> None:
    put_source(kube, namespace, "fraud-config", {"threshold": "0.5"})  # A
    put_source(kube, namespace, "fraud-config-b", {"threshold": "0.99999"})  # B
    body = validated(real_model("fraud", {"v1": "good", "v2": "good"}, "v1"), LABEL)
    for entry in body["spec"]["versions"]:
        entry["config"] = {
            "configMapName": {"v1": "fraud-config", "v2": "fraud-config-b"}[entry["name"]]
        }
    url = serve(kube, namespace, body)
    status, answer = infer(url)
    assert (status, threshold_of(answer), answer["outputs"][1]["data"]) == (200, 0.5, ["fraud"])

    put_source(kube, namespace, "fraud-config", {"threshold": "0.9995"})  # C: v1's source moves on
    with InferenceLoad(url) as load:
        wait_for(lambda: load.requests > 0, 10, "the first request")
        # v2's threshold labels the fraud case legit: its golden request fails.
        release_and_await_revert(kube, namespace, "fraud", failed_within=120)
        settled = load.requests + 20
        wait_for(lambda: load.requests >= settled, 30, "20 more requests after the revert")
    failure = kube.ledger(namespace, "fraud")["v2"]
    assert failure["reason"] == "ValidationFailed"
    assert 'expected outputs[1].data[0] = "fraud", got "legit"' in failure["message"]
    record_property(
        "figure: failed requests (config revert)", f"{len(load.failures)} of {load.requests}"
    )
    assert load.failures == []

    # Every v1 pod, including ones started after the source changed, runs with A.
    old = {p.metadata.name for p in v1_pods(kube, namespace)}
    for name in old:
        kube.core.delete_namespaced_pod(name, namespace)
    wait_for(
        lambda: (
            len(fresh := {p.metadata.name for p in v1_pods(kube, namespace, ready=True)})
            >= REPLICAS
            and not fresh & old
        ),
        120,
        "new v1 pods to be Ready",
    )
    for pod in v1_pods(kube, namespace, ready=True):
        status, answer = infer(f"http://{pod.status.pod_ip}:8080/v2/models/fraud/infer")
        assert (status, answer["model_version"]) == (200, "v1")
        assert threshold_of(answer) == 0.5, pod.metadata.name  # A, not C
        assert answer["outputs"][1]["data"] == ["fraud"]


def v1_pods(kube: Kube, namespace: str, ready: bool = False) -> list[Any]:
    pods = kube.core.list_namespaced_pod(
        namespace, label_selector=f"{LABEL_NAME}=fraud,{LABEL_VERSION}=v1"
    ).items
    alive = [p for p in pods if p.metadata.deletion_timestamp is None]
    if not ready:
        return alive
    return [
        p
        for p in alive
        if any(k.type == "Ready" and k.status == "True" for k in p.status.conditions or ())
    ]


@pytest.mark.parametrize("validation", [False, True], ids=["without", "with"])
def test_time_validation_adds_to_a_rollout(
    kube: Kube,
    namespace: str,
    stopped_operator: OperatorProcess,
    real_node: str,
    record_property: RecordProperty,
    validation: bool,
) -> None:
    """From the moment the last new pod is Ready to the version being the last good one:
    what the golden requests add (measured both ways, reported, never asserted)."""
    port = free_port()
    stopped_operator.start(f"--metrics-port={port}")
    body = real_model("fraud", {"v1": "good", "v2": "good"}, "v1")
    body["spec"]["versions"][1]["env"] = [{"name": "RELEASE", "value": "2"}]  # a new template
    if validation:
        validated(body, SCORE, LABEL)
    serve(kube, namespace, body)
    with (
        ReadyCount(pods_of(kube, namespace, "fraud"), "v2", REPLICAS) as all_ready,
        FirstSeen(resources(kube, namespace), last_good_is("v2")) as promoted,
    ):
        wait_for(lambda: all_ready.events and promoted.events, 30, "the watches to start")
        kube.select(namespace, "fraud", "v2")
        wait_for(lambda: promoted.at is not None, 180, "v2 to become the last good version")
    assert all_ready.at is not None and promoted.at is not None
    lag = round((promoted.at - all_ready.at) * 1000)
    label = "with" if validation else "without"
    record_property(
        f"figure: last v2 pod's containers ready to last good, {label} validation (ms)", lag
    )
    if validation:
        text = scrape(port)
        count = metric(text, "modeldeploy_validation_duration_seconds_count")
        total = metric(text, "modeldeploy_validation_duration_seconds_sum")
        assert count >= 2 * REPLICAS * 2  # two requests to each pod of v1, then of v2
        assert metric(text, 'modeldeploy_validation_requests_total{outcome="Passed"}') == count
        record_property("figure: mean golden request (ms)", round(total / count * 1000, 1))
        assert kube.status(namespace, "fraud")["validation"]["phase"] == "Passed"
