"""The test bed simulates what stages.yaml and usage.yaml promise, seen through plain
Deployments and the resource metrics API."""

from __future__ import annotations

import subprocess
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.helpers import Kube, wait_for

# How long a simulated behaviour may take to show on a loaded machine: generous, since
# these tests check what happens, not how fast (timings are bench/'s).
DEADLINE_S = 90
USAGE_CPU = "kwok.x-k8s.io/usage-cpu"  # what a simulated pod uses (testbed/usage.yaml)


def deployment(name: str, image: str, **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    container: dict[str, Any] = {"name": "server", "image": image}
    if "resources" in spec:
        container["resources"] = spec.pop("resources")
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            **spec,
        },
    }


def pods(kube: Kube, namespace: str, name: str) -> list[Any]:
    return list(kube.core.list_namespaced_pod(namespace, label_selector=f"app={name}").items)


def container(kube: Kube, namespace: str, name: str) -> Any:
    for pod in pods(kube, namespace, name):
        for status in pod.status.container_statuses or ():
            return status
    return None


def test_nodes_are_ready_with_their_resources(kube: Kube) -> None:
    nodes = [
        node
        for node in kube.core.list_node().items
        if (node.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"
    ]  # a real node, when the test bed has one, reports the machine's own resources
    assert len(nodes) >= 3
    for node in nodes:
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        assert node.status.allocatable["cpu"] == "32"
        assert node.status.allocatable["memory"] == "128Gi"
    assert sum(1 for n in nodes if n.status.allocatable.get("nvidia.com/gpu") == "1") == 1


def test_healthy_image_completes_rollout_status(kube: Kube, namespace: str) -> None:
    kube.apps.create_namespaced_deployment(namespace, deployment("web", "registry.example/m:1"))
    subprocess.run(
        ["kubectl", "rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s"],
        check=True,
        capture_output=True,
    )


def test_crashloop_image_keeps_restarting_in_crash_loop_back_off(
    kube: Kube, namespace: str
) -> None:
    kube.apps.create_namespaced_deployment(
        namespace, deployment("c", "registry.example/m:1-crashloop")
    )
    status = wait_for(
        lambda: (s := container(kube, namespace, "c")) and s.restart_count >= 3 and s,
        DEADLINE_S,
        "restartCount >= 3",
    )
    assert status.state.waiting.reason == "CrashLoopBackOff"
    assert status.last_state.terminated.exit_code == 1


def test_pullfail_image_shows_image_pull_backoff(kube: Kube, namespace: str) -> None:
    kube.apps.create_namespaced_deployment(
        namespace, deployment("p", "registry.example/m:1-pullfail")
    )
    wait_for(
        lambda: (
            (s := container(kube, namespace, "p"))
            and s.state.waiting
            and s.state.waiting.reason == "ImagePullBackOff"
        ),
        DEADLINE_S,
        "ImagePullBackOff",
    )


def test_notready_image_runs_but_is_never_ready(kube: Kube, namespace: str) -> None:
    kube.apps.create_namespaced_deployment(
        namespace, deployment("n", "registry.example/m:1-notready")
    )
    status = wait_for(
        lambda: (s := container(kube, namespace, "n")) and s.state.running and s,
        DEADLINE_S,
        "the container to run",
    )
    assert status.ready is False
    assert pods(kube, namespace, "n")[0].status.phase == "Running"


def test_slowready_image_becomes_ready_after_about_20_seconds(kube: Kube, namespace: str) -> None:
    kube.apps.create_namespaced_deployment(
        namespace, deployment("s", "registry.example/m:1-slowready")
    )
    wait_for(
        lambda: (s := container(kube, namespace, "s")) and s.state.running, DEADLINE_S, "running"
    )
    wait_for(lambda: (s := container(kube, namespace, "s")) and s.ready, DEADLINE_S, "Ready")
    pod = pods(kube, namespace, "s")[0]
    became_ready = next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready")
    created: datetime = pod.metadata.creation_timestamp
    assert (became_ready - created).total_seconds() >= 18


def test_oom_image_is_oom_killed_and_restarting(kube: Kube, namespace: str) -> None:
    kube.apps.create_namespaced_deployment(namespace, deployment("o", "registry.example/m:1-oom"))
    status = wait_for(
        lambda: (s := container(kube, namespace, "o")) and s.restart_count >= 2 and s,
        DEADLINE_S,
        "restarts",
    )
    assert status.last_state.terminated.reason == "OOMKilled"
    assert status.last_state.terminated.exit_code == 137


def test_stuck_rollout_gets_progress_deadline_exceeded(kube: Kube, namespace: str) -> None:
    kube.apps.create_namespaced_deployment(
        namespace, deployment("d", "registry.example/m:1-notready", progressDeadlineSeconds=10)
    )

    def deadline_exceeded() -> bool:
        conditions = kube.apps.read_namespaced_deployment("d", namespace).status.conditions or ()
        return any(
            c.type == "Progressing"
            and c.status == "False"
            and c.reason == "ProgressDeadlineExceeded"
            for c in conditions
        )

    wait_for(deadline_exceeded, DEADLINE_S, "Progressing=False/ProgressDeadlineExceeded")


@pytest.mark.parametrize("gpus", [64])
def test_pod_asking_for_too_many_gpus_stays_unschedulable(
    kube: Kube, namespace: str, gpus: int
) -> None:
    kube.apps.create_namespaced_deployment(
        namespace,
        deployment(
            "g", "registry.example/m:1", resources={"limits": {"nvidia.com/gpu": str(gpus)}}
        ),
    )

    def unschedulable() -> bool:
        found = pods(kube, namespace, "g")
        return bool(found) and any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
            for c in found[0].status.conditions or ()
        )

    wait_for(unschedulable, DEADLINE_S, "PodScheduled=False/Unschedulable")
    assert pods(kube, namespace, "g")[0].spec.node_name is None


def test_a_pods_annotated_cpu_use_is_what_the_metrics_api_reports(
    kube: Kube, namespace: str, resource_metrics: None
) -> None:
    """metrics-server, scraping kwok, serves metrics.k8s.io (usage.yaml's annotation)."""
    kube.apps.create_namespaced_deployment(namespace, deployment("busy", "registry.example/m:1"))
    pod = wait_for(lambda: pods(kube, namespace, "busy"), DEADLINE_S, "the pod")[0]
    kube.core.patch_namespaced_pod(
        pod.metadata.name, namespace, {"metadata": {"annotations": {USAGE_CPU: "250m"}}}
    )

    def cpu() -> str | None:
        metrics = kube.custom.get_namespaced_custom_object(
            "metrics.k8s.io", "v1beta1", namespace, "pods", pod.metadata.name
        )
        return str(metrics["containers"][0]["usage"]["cpu"])

    # The first samples can straddle the annotation: wait for a rate measured under it.
    used = wait_for(
        lambda: (value := cpu()) is not None and nanocores(value) > 200e6 and value,
        DEADLINE_S,
        "the pod's CPU use in the metrics API",
    )
    assert 240e6 < nanocores(used) < 260e6, used


def nanocores(quantity: str) -> float:
    """A CPU quantity as metrics-server writes it (`250012345n`, `250m`, `1`)."""
    units = {"n": 1, "u": 1e3, "m": 1e6}
    if quantity[-1] in units:
        return float(quantity[:-1]) * units[quantity[-1]]
    return float(quantity) * 1e9
