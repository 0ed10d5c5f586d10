"""A real HorizontalPodAutoscaler owns replicas when spec.replicas is left out (B24).

The test bed's controller manager runs the HPA controller. With no metrics API on the
test bed, an HPA still enforces its minReplicas before it reads any metric (the
controller's own order), so an HPA with minReplicas 3 scales a Deployment of 1 to 3
through the scale subresource exactly as it would on a load signal: a real autoscaler
writing the count, which is what the operator must never fight.
"""

from __future__ import annotations

import time
from typing import Any

import kubernetes
import pytest

from testbed.support import OperatorProcess
from tests.e2e.helpers import Kube, model_deployment, reverted_to, wait_for

GOOD, CRASH = "registry.example/fraud:1.0", "registry.example/fraud:2-crashloop"
WATCH_S = 300  # five minutes of no write war

pytestmark = [pytest.mark.slow, pytest.mark.timeout(WATCH_S + 240)]
AUTOSCALED = 3  # the HPA's minReplicas: what it writes


def hpa(name: str) -> dict[str, object]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": AUTOSCALED,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }


def replicas_owners(kube: Kube, namespace: str, name: str) -> set[str]:
    """Who owns the Deployment's spec.replicas, by its managedFields."""
    deployment = kube.apps.read_namespaced_deployment(name, namespace)
    return {
        entry.manager
        for entry in deployment.metadata.managed_fields or ()
        if "f:replicas" in (entry.fields_v1 or {}).get("f:spec", {})
    }


def test_an_autoscaler_owns_the_count_with_no_write_war_and_a_revert_keeps_it(
    kube: Kube, namespace: str, operator: OperatorProcess, record_property: Any
) -> None:
    name = "scaled"
    body = model_deployment(name, {"v1": GOOD, "v2": CRASH}, "v1")
    del body["spec"]["replicas"]  # an autoscaler's to own
    kube.create(namespace, body)
    kube.wait_good(namespace, name, "v1")
    autoscaling: Any = kubernetes.client.AutoscalingV2Api(kube.api)
    autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, hpa(name))
    wait_for(
        lambda: kube.apps.read_namespaced_deployment(name, namespace).spec.replicas == AUTOSCALED,
        120,
        "the HPA to scale the Deployment to its minReplicas",
    )
    wait_for(
        lambda: kube.status(namespace, name).get("readiness") == f"{AUTOSCALED}/{AUTOSCALED}",
        60,
        "the operator to judge against the autoscaled count",
    )
    began = time.monotonic()
    seen: set[int] = set()
    released = reverted = False
    while time.monotonic() - began < WATCH_S:
        seen.add(kube.apps.read_namespaced_deployment(name, namespace).spec.replicas)
        if not released and time.monotonic() - began > 10:
            kube.select(namespace, name, "v2")  # a bad release in the middle of it
            released = True
        if released and not reverted and reverted_to(kube, namespace, name, "v1"):
            reverted = True
            record_property(
                "figure: revert under an HPA, s into the watch", time.monotonic() - began
            )
        time.sleep(1)
    assert reverted, "the crash-looping v2 was not reverted"
    assert kube.ledger(namespace, name)["v2"]["state"] == "Failed"
    # No write war: the count the HPA set never moved, and only the HPA owns the field.
    assert seen == {AUTOSCALED}, f"spec.replicas took {sorted(seen)}"
    assert "modeldeploy" not in replicas_owners(kube, namespace, name)
    assert kube.status(namespace, name)["readiness"] == f"{AUTOSCALED}/{AUTOSCALED}"
