"""A PodDisruptionBudget per model (spec.disruption) on the real API server: a drain's
evictions never take more serving pods than it allows, and it goes when not asked for."""

from __future__ import annotations

from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from modeldeploy.constants import GROUP, PLURAL, VERSION
from testbed.support import OperatorProcess
from tests.e2e.helpers import Kube, model_deployment, wait_for

GOOD = "registry.example/fraud:1.0"


def evict(kube: Kube, namespace: str, pod: str) -> int:
    """What `kubectl drain` does to one pod: the HTTP status of its eviction."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}}
    try:
        kube.core.create_namespaced_pod_eviction(pod, namespace, body)
    except ApiException as error:
        return int(error.status)
    return 201


def test_a_drain_takes_no_more_serving_pods_than_the_budget_allows(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "budgeted"
    body = model_deployment(name, {"v1": GOOD}, "v1", 3)
    body["spec"]["disruption"] = {"maxUnavailable": 1}
    kube.create(namespace, body)
    kube.wait_good(namespace, name, "v1")
    policy: Any = kubernetes.client.PolicyV1Api(kube.api)
    budget = wait_for(
        lambda: (
            (b := policy.read_namespaced_pod_disruption_budget(name, namespace))
            and b.status.disruptions_allowed == 1
            and b
        ),
        60,
        "the budget to allow one disruption",
    )
    assert budget.metadata.owner_references[0].uid == kube.get(namespace, name)["metadata"]["uid"]
    assert budget.spec.max_unavailable == 1
    pods = [
        p.metadata.name
        for p in kube.core.list_namespaced_pod(
            namespace, label_selector=f"modeldeploy.io/name={name}"
        ).items
    ]
    assert len(pods) == 3
    assert evict(kube, namespace, pods[0]) == 201
    assert evict(kube, namespace, pods[1]) == 429  # the budget holds the second
    # No longer asked for: the budget goes.
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"disruption": None}}
    )

    def gone() -> bool:
        try:
            policy.read_namespaced_pod_disruption_budget(name, namespace)
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(gone, 60, "the budget to be deleted")
