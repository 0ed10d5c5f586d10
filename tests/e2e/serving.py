"""Helpers for e2e tests that serve real models on the test bed's real node: the
reference model server's manifests, its Service, golden requests that know its model's
answer, and watches that note when something was first seen."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from modeldeploy.constants import GROUP, LABEL_NAME, LABEL_VERSION, PLURAL, VERSION
from testbed import images, manifests
from testbed.modelserver import train
from testbed.modelserver.client import PROBE, infer
from tests.e2e.helpers import Kube, KubeWatch, ready, wait_for

REPLICAS = 2


def image(variant: str) -> str:
    return images.model_server_image(variant)


def real_model(name: str, variants: dict[str, str], active: str, **rollout: Any) -> dict[str, Any]:
    """A ModelDeployment whose versions (name -> image variant) run on the real node."""
    return manifests.real_model(name, variants, active, REPLICAS, **rollout)


def serve(kube: Kube, namespace: str, body: dict[str, Any], answer_within: float = 3) -> str:
    """Create the resource, wait until it serves; the Service's inference URL.
    `answer_within`: how long one inference may take (a slow model's, say)."""
    name = body["metadata"]["name"]
    kube.create(namespace, body)
    wait_for(
        lambda: (
            ready(kube, namespace, name) and kube.status(namespace, name).get("lastGoodVersion")
        ),
        120,
        f"{name} to serve on the real node",
    )
    service = kube.core.read_namespaced_service(name, namespace)
    url = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/v2/models/{name}/infer"
    wait_for(
        lambda: infer(url, answer_within)[0] == 200,
        30 + answer_within,
        "the Service to route to the pods",
    )
    return url


class FirstSeen(KubeWatch):
    """The monotonic time a watch first showed an object matching `predicate`."""

    def __init__(self, list_call: Callable[..., Any], predicate: Callable[[Any], bool]) -> None:
        super().__init__()
        self.list_call, self.predicate = list_call, predicate
        self.at: float | None = None
        self.events = 0  # the first ones list what exists: the watch is running

    def _read(self) -> None:
        for event in self._watch.stream(self.list_call, timeout_seconds=600):  # type: ignore[no-untyped-call]
            if self.at is None and self.predicate(event["object"]):
                self.at = time.monotonic()
            self.events += 1


def probe_score() -> float:
    """What the trained model scores PROBE: the fraud case of its self-check."""
    model = train.trained_model()
    row = PROBE["inputs"][0]["data"]
    z = sum(w * v for w, v in zip(model["weights"], row, strict=True)) + model["bias"]
    return 1.0 / (1.0 + math.exp(-z))


SCORE = {
    "name": "known-fraud",
    "body": PROBE,
    "timeoutSeconds": 2,
    "expect": {
        "values": [{"path": "outputs[0].data[0]", "number": probe_score(), "tolerance": 0.001}]
    },
}


LABEL = {
    "name": "known-fraud-label",
    "body": PROBE,
    "timeoutSeconds": 2,
    "expect": {"values": [{"path": "outputs[1].data[0]", "equals": "fraud"}]},
}


def validated(body: dict[str, Any], *requests: dict[str, Any]) -> dict[str, Any]:
    body["spec"]["validation"] = {"requests": list(requests)}
    return body


def resources(kube: Kube, namespace: str) -> Callable[..., Any]:
    def list_call(**kw: Any) -> Any:
        return kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kw)

    return list_call


def pods_of(kube: Kube, namespace: str, name: str) -> Callable[..., Any]:
    def list_call(**kw: Any) -> Any:
        selector = f"{LABEL_NAME}={name}"
        return kube.core.list_namespaced_pod(namespace, label_selector=selector, **kw)

    return list_call


def ready_pod_of(version: str, condition: str = "Ready") -> Callable[[dict[str, Any]], bool]:
    """A pod of `version` whose `condition` is True (pods as a watch through a plain
    function gives them: dicts). ContainersReady: Ready but for a readiness gate."""

    def predicate(pod: dict[str, Any]) -> bool:
        labels = pod["metadata"].get("labels") or {}
        conditions = (pod.get("status") or {}).get("conditions") or ()
        return labels.get(LABEL_VERSION) == version and any(
            k["type"] == condition and k["status"] == "True" for k in conditions
        )

    return predicate


def last_good_is(version: str) -> Callable[[Any], bool]:
    return lambda body: (body.get("status") or {}).get("lastGoodVersion") == version


def failed(version: str) -> Callable[[Any], bool]:
    def predicate(body: Any) -> bool:
        ledger = (body.get("status") or {}).get("versions") or ()
        return any(v["name"] == version and v["state"] == "Failed" for v in ledger)

    return predicate


def reverted_and_done(kube: Kube, namespace: str) -> bool:
    """The spec names v1 again and the automatic rollout back to it has finished (its pods
    never left, but on a loaded machine it can take a while to be seen Ready)."""
    status = kube.status(namespace, "fraud")
    latest = (status.get("history") or [{}])[0]
    return bool(
        kube.get(namespace, "fraud")["spec"]["activeVersion"] == "v1"
        and status.get("servingVersion") == "v1"
        and (latest.get("version"), latest.get("outcome")) == ("v1", "Succeeded")
    )
