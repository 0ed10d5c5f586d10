"""A failing version stops serving at the verdict, on the real node (B19, B22).

A client sends inference requests through the Service the whole time and notes which
version answered each one: the `wronganswers` image answers every request with the
prediction reversed, so each answer it gives is a wrong one delivered as a 200. With
golden requests the version's pods carry a readiness gate and never get traffic; a
version that fails once it serves (its bake's analysis) is left out of the Service at
the first Ready last good pod, or at once when a warm standby takes over. What the
tests measure (wrong answers after the verdict, the time from the verdict to the last
one) goes to the session's summary; the bounds asserted are the Service's own: once
it no longer selects the failed pods (and kube-proxy's sync has passed), none answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from modeldeploy.constants import CONDITION_VALIDATED, LABEL_NAME, LABEL_STANDBY_OF, LABEL_VERSION
from testbed.metrics import Exporter
from testbed.modelserver.client import InferenceLoad
from testbed.support import OperatorProcess
from tests.e2e.helpers import Kube, KubeWatch, wait_for
from tests.e2e.serving import (
    SCORE,
    FirstSeen,
    failed,
    real_model,
    resources,
    reverted_and_done,
    serve,
    validated,
)

RecordProperty = Callable[[str, object], None]
# kube-proxy applies a Service's new endpoints at most once a second (its iptables
# minSyncPeriod); a request sent before then may still reach a pod just left out.
PROXY_SYNC_S = 1.0
SLACK_S = 1.0


class SelectorSeen(KubeWatch):
    """The monotonic time the Service's selector first matched `predicate`."""

    def __init__(
        self, kube: Kube, namespace: str, name: str, predicate: Callable[[dict[str, str]], bool]
    ) -> None:
        super().__init__()
        self.kube, self.namespace, self.name, self.predicate = kube, namespace, name, predicate
        self.at: float | None = None
        self.events = 0

    def _read(self) -> None:
        stream = self._watch.stream(  # type: ignore[no-untyped-call]
            self.kube.core.list_namespaced_service,
            self.namespace,
            field_selector=f"metadata.name={self.name}",
            timeout_seconds=600,
        )
        for event in stream:
            selector = dict(event["object"].spec.selector or {})
            if self.at is None and self.predicate(selector):
                self.at = time.monotonic()
            self.events += 1


def names_of(kube: Kube, namespace: str, version: str) -> set[str]:
    pods = kube.core.list_namespaced_pod(
        namespace, label_selector=f"{LABEL_NAME}=fraud,{LABEL_VERSION}={version}"
    ).items
    return {p.metadata.name for p in pods if p.metadata.deletion_timestamp is None}


@pytest.mark.parametrize("previous", ["good", "slowload"], ids=["v1-loads-fast", "v1-loads-in-20s"])
def test_a_version_caught_by_its_golden_requests_never_answers_through_the_service(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    real_node: str,
    record_property: RecordProperty,
    previous: str,
) -> None:
    body = validated(real_model("fraud", {"v1": previous, "v2": "wronganswers"}, "v1"), SCORE)
    url = serve(kube, namespace, body)
    v1_before = names_of(kube, namespace, "v1")
    with (
        FirstSeen(resources(kube, namespace), failed("v2")) as v2_failed,
        InferenceLoad(url) as load,
    ):
        wait_for(lambda: v2_failed.events and load.requests > 0, 30, "the watch and a request")
        kube.select(namespace, "fraud", "v2")
        wait_for(lambda: v2_failed.at is not None, 180, "v2 to fail its golden requests")
        v1_at_the_verdict = names_of(kube, namespace, "v1")
        wait_for(lambda: reverted_and_done(kube, namespace), 120, "the revert to v1, done")
        settled = load.requests + 20
        wait_for(lambda: load.requests >= settled, 30, "20 more requests")
    record_property("figure: wrong answers through the Service (v2's)", load.answered.get("v2", 0))
    record_property("figure: requests", f"{load.requests}, {len(load.failures)} failed")
    assert load.answered.get("v2", 0) == 0, "the failed version answered through the Service"
    assert load.failures == []
    assert v1_at_the_verdict >= v1_before, "a last good pod left before the verdict"
    ledger = kube.ledger(namespace, "fraud")
    assert ledger["v2"]["reason"] == "ValidationFailed"
    shut = [
        condition
        for pod in kube.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_NAME}=fraud,{LABEL_VERSION}=v2"
        ).items
        for condition in pod.status.conditions or ()
        if condition.type == CONDITION_VALIDATED
    ]
    for condition in shut:  # any v2 pod still there says why it never got traffic
        assert (condition.status, condition.reason) == ("False", "GoldenRequestsFailed")


def bake_failing(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    exporter: Exporter,
    prometheus: str,
    standby: bool,
) -> str:
    """v1 serves; v2 (wronganswers, no golden requests) will fail its bake's analysis."""
    operator.stop()
    operator.start(f"--allowed-analysis-source={prometheus}/")
    body = real_model("fraud", {"v1": "good", "v2": "wronganswers"}, "v1")
    body["spec"]["analysis"] = {
        "prometheus": prometheus,
        "bakeSeconds": 60,
        "intervalSeconds": 1,
        "checks": [
            {
                "name": "error-rate",
                "query": 'max(model_error_ratio{namespace="{{namespace}}",model="{{name}}",'
                'version="{{version}}"})',
                "max": 0.05,
            }
        ],
    }
    if standby:
        body["spec"]["rollout"]["standby"] = {"seconds": 600}
    exporter.serve(namespace, "fraud", "v1", errors=0.0, accuracy=1)
    exporter.serve(namespace, "fraud", "v2", errors=0.5, accuracy=0.1)
    return serve(kube, namespace, body)


@pytest.mark.parametrize("standby", [True, False], ids=["with-standby", "without-standby"])
def test_a_version_that_fails_in_its_bake_stops_answering_at_the_verdict(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    real_node: str,
    exporter: Exporter,
    prometheus: str,
    record_property: RecordProperty,
    standby: bool,
) -> None:
    url = bake_failing(kube, namespace, operator, exporter, prometheus, standby)
    left_out = (
        (lambda s: s == {LABEL_STANDBY_OF: "fraud"})
        if standby
        else (lambda s: "modeldeploy.io/template-hash" in s)
    )
    with (
        FirstSeen(resources(kube, namespace), failed("v2")) as v2_failed,
        SelectorSeen(kube, namespace, "fraud", left_out) as narrowed,
        InferenceLoad(url) as load,
    ):
        wait_for(
            lambda: v2_failed.events and narrowed.events and load.requests > 0,
            30,
            "the watches and a request",
        )
        kube.select(namespace, "fraud", "v2")
        wait_for(lambda: v2_failed.at is not None, 180, "v2 to fail in its bake")
        wait_for(lambda: narrowed.at is not None, 120, "v2 left out of the Service")
        if standby:  # SERVING names what answers: the standby's version
            assert kube.status(namespace, "fraud")["servingVersion"] == "v1"
        wait_for(lambda: reverted_and_done(kube, namespace), 180, "the revert to v1, done")
        settled = load.requests + 20
        wait_for(lambda: load.requests >= settled, 30, "20 more requests")
    assert v2_failed.at is not None and narrowed.at is not None
    assert load.answered.get("v2", 0) > 0  # it did serve: this is the case being tested
    after_verdict = load.answers_after("v2", v2_failed.at)
    label = "with" if standby else "without"
    record_property(f"figure: wrong answers after the verdict, {label} standby", len(after_verdict))
    last = max(after_verdict, default=v2_failed.at)
    record_property(
        f"figure: verdict to last wrong answer, {label} standby (ms)",
        round((last - v2_failed.at) * 1000),
    )
    record_property(
        f"figure: verdict to the Service leaving v2 out, {label} standby (ms)",
        round((narrowed.at - v2_failed.at) * 1000),
    )
    late = load.answers_after("v2", narrowed.at + PROXY_SYNC_S + SLACK_S)
    assert late == [], f"{len(late)} wrong answers after the Service left v2 out"
    assert load.failures == []
    selector = kube.core.read_namespaced_service("fraud", namespace).spec.selector
    assert selector == {LABEL_NAME: "fraud"}  # all as usual once v1 is back


def test_golden_requests_added_later_check_what_serves_and_never_revert(
    kube: Kube, namespace: str, operator: OperatorProcess, real_node: str
) -> None:
    # The serving version answers wrong, and nothing checked it: it was promoted.
    body = real_model("fraud", {"v1": "good", "v0": "wronganswers"}, "v0")
    serve(kube, namespace, body)
    generation = kube.apps.read_namespaced_deployment("fraud", namespace).metadata.generation
    kube.custom.patch_namespaced_custom_object(
        "modeldeploy.io",
        "v1alpha1",
        namespace,
        "modeldeployments",
        "fraud",
        {"spec": {"validation": {"requests": [SCORE]}}},
    )
    validated_condition = wait_for(
        lambda: (
            (k := kube.condition(namespace, "fraud", "Validated")).get("reason")
            == "GoldenRequestsFailed"
            and k
        ),
        60,
        "Validated=False with the wrong answer",
    )
    assert validated_condition["status"] == "False"
    assert "v0, which serves: request known-fraud to pod fraud-" in validated_condition["message"]
    assert kube.delivered(namespace, "fraud", "ServingValidationFailed") == 1
    time.sleep(3)  # it never reverts, and writes nothing more: look again a while later
    assert kube.get(namespace, "fraud")["spec"]["activeVersion"] == "v0"
    deployment = kube.apps.read_namespaced_deployment("fraud", namespace)
    assert deployment.metadata.generation == generation  # no rollout
    assert kube.event_reasons(namespace, "fraud").count("ServingValidationFailed") == 1
