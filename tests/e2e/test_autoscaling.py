"""A real HorizontalPodAutoscaler owns replicas when spec.replicas is left out (B24).

The test bed's controller manager runs the HPA controller and a real metrics-server
serves it the resource metrics API (testbed/resource_metrics.py), scraping what kwok
says each simulated pod uses: a pod annotated `kwok.x-k8s.io/usage-cpu` uses that much
CPU (testbed/usage.yaml). The test is the load: it sets every pod of the model busy, so
CPU utilisation over the target scales the Deployment from minReplicas to maxReplicas;
it keeps the load on for five minutes with a bad release and its revert in the middle
(no write war, and the revert keeps the autoscaled count); then it takes the load away
and the HPA scales back to minReplicas. modeldeploy never writes `replicas`.
"""

from __future__ import annotations

import time
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from testbed.support import OperatorProcess
from tests.e2e.helpers import Kube, model_deployment, reverted_to, wait_for

GOOD, CRASH = "registry.example/fraud:1.0", "registry.example/fraud:2-crashloop"
WATCH_S = 300  # five minutes of no write war

pytestmark = [pytest.mark.slow, pytest.mark.timeout(WATCH_S + 480)]
LEAST, MOST = 2, 4  # the HPA's minReplicas and maxReplicas
REQUEST, TARGET = "100m", 50  # each pod's CPU request; the HPA's target, % of it
BUSY, IDLE = "200m", "10m"  # a pod's CPU use under load (200 %) and without (10 %)
USAGE = "kwok.x-k8s.io/usage-cpu"
# Metrics take two scrapes (10 s apart) per new pod and the HPA syncs every 15 s.
SCALE_S = 150


def hpa(name: str) -> dict[str, object]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": LEAST,
            "maxReplicas": MOST,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": TARGET},
                    },
                }
            ],
            # Down after 30 s of low use rather than the default 5 min: the test's length.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}},
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


def load(kube: Kube, namespace: str, name: str, usage: str) -> None:
    """Every pod of the model uses `usage` CPU from now on, pods that start later too
    (the caller calls this again while it waits): kwok reads the annotation per scrape."""
    selector = kube.apps.read_namespaced_deployment(name, namespace).spec.selector.match_labels
    labels = ",".join(f"{key}={value}" for key, value in selector.items())
    for pod in kube.core.list_namespaced_pod(namespace, label_selector=labels).items:
        if (pod.metadata.annotations or {}).get(USAGE) != usage:
            try:
                kube.core.patch_namespaced_pod(
                    pod.metadata.name, namespace, {"metadata": {"annotations": {USAGE: usage}}}
                )
            except ApiException as error:
                if error.status != 404:  # gone meanwhile: a pod the next call will not see
                    raise


def replicas(kube: Kube, namespace: str, name: str) -> int:
    return int(kube.apps.read_namespaced_deployment(name, namespace).spec.replicas)


def scaled_to(kube: Kube, namespace: str, name: str, usage: str, count: int) -> bool:
    load(kube, namespace, name, usage)
    return replicas(kube, namespace, name) == count


def rescale_reasons(kube: Kube, namespace: str, name: str) -> list[str]:
    """The HPA's own account of each change of scale (its SuccessfulRescale Events)."""
    events = kube.core.list_namespaced_event(
        namespace,
        field_selector=f"involvedObject.name={name},involvedObject.kind=HorizontalPodAutoscaler",
    )
    return [e.message for e in events.items if e.reason == "SuccessfulRescale"]


def cpu_utilization(autoscaling: Any, namespace: str, name: str) -> int | None:
    """The average CPU utilisation the HPA last read from the metrics API, if any."""
    status = autoscaling.read_namespaced_horizontal_pod_autoscaler(name, namespace).status
    for metric in status.current_metrics or ():
        if metric.type == "Resource" and metric.resource.name == "cpu":
            return int(metric.resource.current.average_utilization)
    return None


def test_an_autoscaler_owns_the_count_with_no_write_war_and_a_revert_keeps_it(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    resource_metrics: None,
    record_property: Any,
) -> None:
    name = "scaled"
    body = model_deployment(name, {"v1": GOOD, "v2": CRASH}, "v1")
    del body["spec"]["replicas"]  # an autoscaler's to own
    body["spec"]["template"] = {"resources": {"requests": {"cpu": REQUEST}}}
    kube.create(namespace, body)
    kube.wait_good(namespace, name, "v1")
    autoscaling: Any = kubernetes.client.AutoscalingV2Api(kube.api)
    autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, hpa(name))

    # Idle: the HPA reads a utilisation under its target and holds minReplicas.
    def idle_measured() -> bool:
        utilization = cpu_utilization(autoscaling, namespace, name)
        return scaled_to(kube, namespace, name, IDLE, LEAST) and (
            utilization is not None and utilization < TARGET
        )

    wait_for(
        idle_measured,
        SCALE_S,
        f"the HPA to hold {LEAST} replicas on a measured utilisation under {TARGET} %",
    )

    # Load: every pod busy, over the target: the HPA scales up because of the metric.
    loaded = time.monotonic()
    wait_for(
        lambda: scaled_to(kube, namespace, name, BUSY, MOST),
        SCALE_S,
        f"the HPA to scale the busy Deployment up to {MOST}",
    )
    record_property("figure: load to scale-up, s", time.monotonic() - loaded)
    assert any("above target" in reason for reason in rescale_reasons(kube, namespace, name)), (
        rescale_reasons(kube, namespace, name)
    )
    assert (cpu_utilization(autoscaling, namespace, name) or 0) > TARGET
    wait_for(
        lambda: kube.status(namespace, name).get("readiness") == f"{MOST}/{MOST}",
        60,
        "the operator to judge against the autoscaled count",
    )

    began = time.monotonic()
    seen: set[int] = set()
    released = reverted = False
    while time.monotonic() - began < WATCH_S:
        load(kube, namespace, name, BUSY)  # the load stays on, new pods included
        seen.add(replicas(kube, namespace, name))
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
    assert seen == {MOST}, f"spec.replicas took {sorted(seen)}"
    assert "modeldeploy" not in replicas_owners(kube, namespace, name)
    assert kube.status(namespace, name)["readiness"] == f"{MOST}/{MOST}"

    # The load goes: the HPA scales back down, and still only the HPA writes the count.
    dropped = time.monotonic()
    wait_for(
        lambda: scaled_to(kube, namespace, name, IDLE, LEAST),
        SCALE_S,
        f"the HPA to scale the idle Deployment back to {LEAST}",
    )
    record_property("figure: load gone to scale-down, s", time.monotonic() - dropped)
    assert any("below target" in reason for reason in rescale_reasons(kube, namespace, name)), (
        rescale_reasons(kube, namespace, name)
    )
    wait_for(
        lambda: kube.status(namespace, name).get("readiness") == f"{LEAST}/{LEAST}",
        60,
        "the operator to judge against the count scaled down",
    )
    assert "modeldeploy" not in replicas_owners(kube, namespace, name)
    assert kube.get(namespace, name)["spec"].get("replicas") is None
