"""MLServer 1.7 (someone else's model server) on the real node, with modeldeploy's defaults.

Each ModelDeployment names an image of testbed/mlserver_image.py and its model's path,
nothing else of the server's (no probe, port, drain or grace period): the defaults must
be right for it (docs/runtimes/mlserver.md). Inference goes through the Service the
whole time a release fails and is reverted, and must never fail. The drain tests keep
10-second inferences (the slowinfer image) in flight through a rollout and a revert:
none may be cut. Times measured go to the session's summary, never into an assertion.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from modeldeploy.constants import LABEL_NAME, LABEL_VERSION
from testbed import manifests, mlserver_image
from testbed.modelserver.client import InferenceLoad, LongRequests, infer
from testbed.support import OperatorProcess
from tests.e2e.helpers import Kube, ReadyPodSampler, release_and_await_revert, wait_for
from tests.e2e.serving import REPLICAS, serve, validated

RecordProperty = Callable[[str, object], None]

# Golden requests on the Open Inference Protocol for the sklearn model: the good image
# passes both, wronganswers fails both (docs/runtimes/mlserver-findings.md).
FRAUD_ROW = {"name": "features", "datatype": "FP64", "shape": [1, 3], "data": [3, 1, 2.5]}
KNOWN_FRAUD = {
    "name": "known-fraud",
    "body": {"inputs": [FRAUD_ROW], "outputs": [{"name": "predict_proba"}]},
    "expect": {"values": [{"path": "outputs[0].data[1]", "number": 0.9995, "tolerance": 0.001}]},
}
KNOWN_FRAUD_CLASS = {
    "name": "known-fraud-class",
    "body": {"inputs": [FRAUD_ROW]},
    "expect": {"values": [{"path": "outputs[0].data[0]", "number": 1}]},
}
# MLServer imports for seconds before it even listens, more on a loaded machine.
START_S = 240


def mlserver_model(variants: dict[str, str], active: str = "v1", **rollout: Any) -> dict[str, Any]:
    return manifests.mlserver_model("fraud", variants, active, REPLICAS, **rollout)


def pods(kube: Kube, namespace: str) -> list[Any]:
    selector = f"{LABEL_NAME}=fraud"
    return list(kube.core.list_namespaced_pod(namespace, label_selector=selector).items)


def only_pods_of(kube: Kube, namespace: str, version: str) -> bool:
    """Every pod left runs `version` (the others are gone, not just terminating)."""
    left = pods(kube, namespace)
    return bool(left) and all(p.metadata.labels[LABEL_VERSION] == version for p in left)


# ------------------------------------------------------------------------- defaults


def test_a_good_version_serves_with_the_defaults_alone(
    kube: Kube, namespace: str, operator: OperatorProcess, mlserver: str
) -> None:
    url = serve(kube, namespace, mlserver_model({"v1": "good"}))
    status, answer = infer(url)
    assert status == 200, answer
    assert (answer["model_name"], answer["model_version"]) == ("fraud", "v1")
    assert answer["outputs"][0]["data"] == [1]  # the fraud case, classified
    for pod in pods(kube, namespace):
        assert pod.spec.node_name == mlserver
        (container,) = pod.spec.containers
        assert container.image == mlserver_image.image_name("good")
        # The defaults at work: the model's own readiness, and a drain before SIGTERM.
        assert container.readiness_probe.http_get.path == "/v2/models/fraud/ready"
        assert container.lifecycle.pre_stop.sleep.seconds == 5
        assert pod.spec.termination_grace_period_seconds == 35


# ------------------------------------------------------------- failed releases


def revert_under_load(
    kube: Kube, namespace: str, url: str, record_property: RecordProperty
) -> InferenceLoad:
    """Select v2 with inference going through the Service; wait until v2 failed and v1
    is back; then some more requests. The Ready serving pods never drop below REPLICAS."""
    with (
        ReadyPodSampler(kube, namespace, "fraud", REPLICAS) as sampler,
        InferenceLoad(url) as load,
    ):
        wait_for(lambda: sampler.minimum is not None, 60, "the sampler to see the serving pods")
        wait_for(lambda: load.requests > 0, 30, "the first request")
        selected = time.monotonic()
        release_and_await_revert(kube, namespace, "fraud", failed_within=START_S)
        record_property("figure: selected to reverted (s)", round(time.monotonic() - selected, 1))
        more = load.requests + 20
        wait_for(lambda: load.requests >= more, 30, "20 more requests after the revert")
    record_property("figure: failed requests", f"{len(load.failures)} of {load.requests}")
    assert sampler.minimum is not None and sampler.minimum >= REPLICAS
    return load


def test_a_crashlooping_release_is_reverted_and_no_request_fails(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    mlserver: str,
    record_property: RecordProperty,
) -> None:
    """The corrupt model: MLServer logs the failed load and exits 0, again and again."""
    url = serve(kube, namespace, mlserver_model({"v1": "good", "v2": "corrupt"}))
    load = revert_under_load(kube, namespace, url, record_property)
    failed = kube.ledger(namespace, "fraud")["v2"]
    assert failed["reason"] == "CrashLoopBackOff", failed
    assert "exit 0" in failed["message"], failed  # a crash loop whatever the exit code
    assert load.failures == []
    assert set(load.answered) == {"v1"}
    assert kube.condition(namespace, "fraud", "RolledBack")["status"] == "True"


def test_wrong_answers_are_caught_by_golden_requests_and_no_request_fails(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    mlserver: str,
    record_property: RecordProperty,
) -> None:
    """wronganswers loads, is ready and answers 200: only the golden requests see it."""
    body = validated(
        mlserver_model({"v1": "good", "v2": "wronganswers"}), KNOWN_FRAUD, KNOWN_FRAUD_CLASS
    )
    url = serve(kube, namespace, body)
    load = revert_under_load(kube, namespace, url, record_property)
    failed = kube.ledger(namespace, "fraud")["v2"]
    assert failed["reason"] == "ValidationFailed", failed
    assert "known-fraud" in failed["message"], failed
    assert load.failures == []
    assert set(load.answered) == {"v1"}  # its pods never joined the Service


# ------------------------------------------------------------------------ drain


SLOW_INFERENCE_S = 10  # the slowinfer image's predict()


@pytest.fixture
def slow_model(kube: Kube, namespace: str, operator: OperatorProcess, mlserver: str) -> str:
    """v1 on slowinfer serving (every inference takes 10 s); the Service's URL."""
    body = mlserver_model({"v1": "slowinfer", "v2": "slowinfer", "v3": "corrupt"})
    return serve(kube, namespace, body, answer_within=3 * SLOW_INFERENCE_S)


def long_requests(url: str) -> LongRequests:
    """A 10 s request started every 0.3 s: about 30 in flight at any moment."""
    return LongRequests(url, every=0.3, timeout=6 * SLOW_INFERENCE_S)


def stopping_pod_ip(kube: Kube, namespace: str, version: str) -> str | None:
    """The IP of a pod of `version` that has been told to stop (deletion requested)."""
    for pod in pods(kube, namespace):
        if pod.metadata.labels[LABEL_VERSION] == version and pod.metadata.deletion_timestamp:
            return str(pod.status.pod_ip) if pod.status.pod_ip else None
    return None


def on_a_stale_route(ip: str, after: tuple[float, ...]) -> list[Future[tuple[int, Any]]]:
    """Long requests straight to a stopping pod, `after` seconds from now: what a client
    whose route to the pod is not updated yet sends (kube-proxy on another node, an
    ingress controller reading endpoints). The drain must answer them."""
    url = f"http://{ip}:{mlserver_image.HTTP_PORT}/v2/models/fraud/infer"
    pool = ThreadPoolExecutor(max_workers=len(after))

    def send(delay: float) -> tuple[int, Any]:
        time.sleep(delay)  # when it is sent, not how long anything took
        return infer(url, timeout=6 * SLOW_INFERENCE_S)

    sent = [pool.submit(send, delay) for delay in after]
    pool.shutdown(wait=False)
    return sent


def test_a_rollout_cuts_no_request_in_flight(
    kube: Kube, namespace: str, slow_model: str, record_property: RecordProperty
) -> None:
    """v1 -> v2 with long inferences in flight: each old pod leaves the Service, keeps
    serving through its drain, then answers what it holds before it exits. Requests sent
    straight to a stopping pod a moment after it was told to stop are answered too."""
    load = long_requests(slow_model)
    with load:
        wait_for(lambda: load.requests >= 5, 60, "the first long requests to be answered")
        selected = time.monotonic()
        kube.select(namespace, "fraud", "v2")
        ip = wait_for(
            lambda: stopping_pod_ip(kube, namespace, "v1"), START_S, "a v1 pod told to stop"
        )
        stale = on_a_stale_route(ip, after=(1.5, 3.0))
        kube.wait_good(namespace, "fraud", "v2", timeout=START_S)
        wait_for(lambda: only_pods_of(kube, namespace, "v2"), 120, "the v1 pods to be gone")
        record_property(
            "figure: roll, selected to old pods gone (s)", round(time.monotonic() - selected, 1)
        )
        in_flight = load.in_flight
        load.finish()
    record_property("figure: long requests", f"{len(load.failures)} cut of {load.requests}")
    record_property("figure: in flight when the roll ended", in_flight)
    assert load.failures == []
    answers = [sent.result(timeout=120) for sent in stale]
    assert [status for status, _ in answers] == [200, 200], answers
    assert {answer["model_version"] for _, answer in answers} == {"v1"}
    assert load.answered.get("v1", 0) > 0 and load.answered.get("v2", 0) > 0, load.answered
    assert load.longest >= SLOW_INFERENCE_S  # they were long ones


def test_a_revert_cuts_no_request_in_flight_and_never_waits_for_the_drain(
    kube: Kube, namespace: str, slow_model: str, record_property: RecordProperty
) -> None:
    """v3 (corrupt) crash-loops while long inferences are in flight on v1: the revert
    cuts none of them, and its broken pods' preStop does not hold it up."""
    load = long_requests(slow_model)
    with load:
        wait_for(lambda: load.requests >= 5, 60, "the first long requests to be answered")
        kube.select(namespace, "fraud", "v3")
        wait_for(
            lambda: kube.ledger(namespace, "fraud").get("v3", {}).get("state") == "Failed",
            START_S,
            "v3 to be marked Failed",
        )
        failed = time.monotonic()
        wait_for(
            lambda: (
                kube.get(namespace, "fraud")["spec"]["activeVersion"] == "v1"
                and kube.status(namespace, "fraud").get("servingVersion") == "v1"
            ),
            60,
            "the revert to v1",
        )
        record_property("figure: Failed to reverted (s)", round(time.monotonic() - failed, 1))
        wait_for(lambda: only_pods_of(kube, namespace, "v1"), 120, "the v3 pods to be gone")
        record_property("figure: Failed to v3 pods gone (s)", round(time.monotonic() - failed, 1))
        load.finish()
    record_property("figure: long requests", f"{len(load.failures)} cut of {load.requests}")
    assert load.failures == []
    assert set(load.answered) == {"v1"}
    assert kube.ledger(namespace, "fraud")["v3"]["reason"] == "CrashLoopBackOff"
