"""The measured scenarios: detect-to-revert per failure kind, and recovery side by side.

Each scenario applies a bad version and times, from watch events, the first failure
signal, the revert, and the moment the good version fully serves again: for
modeldeploy, for a plain Deployment (with and without a `kubectl rollout undo`
script) and for an Argo Rollout that aborts on its progress deadline.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.cluster import CRASHLOOP, GOOD, ArgoRollouts, Bed, Timeline, log, watching
from bench.report import summary
from testbed.support import WaitTimeout, wait_for

# name -> (bad image, spec.rollout): kwok plays each failure by the image tag's suffix.
SCENARIOS: dict[str, tuple[str, dict[str, int]]] = {
    "crashloop": (CRASHLOOP, {}),
    "pullfail": ("registry.example/bench:2-pullfail", {}),
    "oom": ("registry.example/bench:2-oom", {}),
    "notready": ("registry.example/bench:2-notready", {"readyTimeoutSeconds": 10}),
}
ROLLOUTS = ("argoproj.io", "v1alpha1")  # the Rollout API: group, version


def detect_to_revert(bed: Bed, repetitions: int, batch: int) -> dict[str, list[float]]:
    """Per scenario, ms from a v2 pod's first failure signal to spec.activeVersion on v1."""
    results: dict[str, list[float]] = {}
    for scenario, (image, rollout) in SCENARIOS.items():
        samples: list[float] = []
        for first in range(0, repetitions, batch):
            names = [f"{scenario}-{i}" for i in range(first, min(repetitions, first + batch))]
            samples += revert_batch(bed, scenario, names, image, rollout)
        results[scenario] = samples
        log(f"detect-to-revert {scenario}: {summary(samples)} ms")
    return results


def revert_batch(
    bed: Bed, scenario: str, names: list[str], image: str, rollout: dict[str, int]
) -> list[float]:
    """`names` serving v1, then all switched to `image` at once; their detect-to-revert ms."""
    timeline = Timeline()
    timeout = dict.fromkeys(names, rollout["readyTimeoutSeconds"]) if rollout else None
    for name in names:
        bed.model(name, image, **rollout)
    wait_for(lambda: bed.all_good(set(names)), 120, f"{scenario} models on v1")
    with watching(bed, "modeldeploy.io/version=v2", timeline, timeout):
        for name in names:
            timeline.selected[name] = time.time()
            bed.select(name, "v2")
        wait_for(lambda: all(x in timeline.reverted for x in names), 120, f"{scenario} reverts")
        time.sleep(0.5)  # late pod events still carry the first-signal times
    for name in names:
        bed.delete_model(name)
    return [
        max(0.0, timeline.reverted[name] - timeline.signal[name]) * 1000
        for name in names
        if name in timeline.signal
    ]


def poll(step: Callable[[], bool], give_up_s: float) -> None:
    """Run `step` every 0.2 s until it returns True or `give_up_s` passed.

    Giving up is a result here (a plain Deployment never recovers by itself), not an error.
    """
    with contextlib.suppress(WaitTimeout):
        wait_for(step, give_up_s, "recovery")


# The patch that puts the crash-looping image into a plain Deployment's or Rollout's pods.
BAD_TEMPLATE = {
    "spec": {"template": {"spec": {"containers": [{"name": "model", "image": CRASHLOOP}]}}}
}


def plain_deployment(name: str, replicas: int, deadline: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name, "bench": "plain"}},
            "spec": {"containers": [{"name": "model", "image": GOOD}]},
        },
    }
    if deadline is not None:
        spec["progressDeadlineSeconds"] = deadline
    return {"metadata": {"name": name}, "spec": spec}


def deployment_recovered(bed: Bed, name: str, replicas: int) -> bool:
    deployment = bed.apps.read_namespaced_deployment(name, bed.namespace)
    bad_pods = [
        p
        for p in bed.core.list_namespaced_pod(bed.namespace, label_selector=f"app={name}").items
        if "crashloop" in p.spec.containers[0].image
    ]
    status = deployment.status
    return bool(
        deployment.spec.template.spec.containers[0].image == GOOD
        and not bad_pods
        and status.available_replicas == replicas
        and status.updated_replicas == replicas
        and (status.replicas or 0) == replicas
    )


def deadline_exceeded(bed: Bed, name: str) -> bool:
    conditions = bed.apps.read_namespaced_deployment(name, bed.namespace).status.conditions or ()
    return any(
        c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" for c in conditions
    )


def recover_plain(
    bed: Bed, name: str, replicas: int, deadline: int | None, undo: bool, give_up_s: float
) -> dict[str, Any]:
    """A plain Deployment: bad image applied, then (optionally) `kubectl rollout undo`."""
    bed.apps.create_namespaced_deployment(bed.namespace, plain_deployment(name, replicas, deadline))
    wait_for(lambda: deployment_recovered(bed, name, replicas), 60, f"{name} ready")
    timeline = Timeline()
    reported: float | None = None
    recovered: float | None = None

    def step() -> bool:
        nonlocal reported, recovered
        if reported is None and deadline_exceeded(bed, name):
            reported = time.time()
            if undo:
                subprocess.run(
                    ["kubectl", "rollout", "undo", "-n", bed.namespace, f"deployment/{name}"],
                    check=True,
                    capture_output=True,
                )
        if deployment_recovered(bed, name, replicas):
            recovered = time.time()
        return recovered is not None

    with watching(bed, f"app={name}", timeline):
        timeline.selected[name] = applied = time.time()
        bed.apps.patch_namespaced_deployment(name, bed.namespace, BAD_TEMPLATE)
        poll(step, give_up_s)
    return {
        "failure_reported_s": None if reported is None else round(reported - applied, 1),
        "recovered_s": None if recovered is None else round(recovered - applied, 1),
        "min_ready_ratio": timeline.min_ready.get(name, 0) / replicas,
    }


def recover_modeldeploy(bed: Bed, replicas: int) -> dict[str, Any]:
    """The same bad image as a ModelDeployment's v2: the operator puts v1 back."""
    name = "recover"
    bed.model(name, CRASHLOOP, replicas=replicas)
    wait_for(lambda: bed.all_good({name}), 60, "the model on v1")
    timeline = Timeline()

    def recovered() -> bool:
        deployment = bed.apps.read_namespaced_deployment(name, bed.namespace)
        version = deployment.spec.template.metadata.labels["modeldeploy.io/version"]
        bad = bed.core.list_namespaced_pod(
            bed.namespace,
            label_selector=f"modeldeploy.io/name={name},modeldeploy.io/version=v2",
        ).items
        status = deployment.status
        return bool(
            version == "v1"
            and not bad
            and name in timeline.reverted
            and status.available_replicas == replicas
            and (status.replicas or 0) == replicas
        )

    with watching(bed, f"modeldeploy.io/name={name}", timeline):
        timeline.selected[name] = applied = time.time()
        bed.select(name, "v2")
        wait_for(recovered, 60, "modeldeploy to recover")
        done = time.time()
    bed.delete_model(name)
    return {
        "recovered_s": round(done - applied, 2),
        "min_ready_ratio": timeline.min_ready.get(name, 0) / replicas,
    }


def argo_rollout(name: str, replicas: int, deadline: int) -> dict[str, Any]:
    """The plain Deployment's twin as a Rollout that aborts when its deadline passes."""
    spec = plain_deployment(name, replicas, deadline)["spec"]
    spec["progressDeadlineAbort"] = True
    spec["strategy"] = {"canary": {}}  # no steps: a rolling update, maxUnavailable 25%
    return {
        "apiVersion": "/".join(ROLLOUTS),
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": spec,
    }


def recover_argo(bed: Bed, argo: ArgoRollouts, replicas: int, deadline: int) -> dict[str, Any]:
    """The same bad image on an Argo Rollout: its own abort takes it back to stable."""
    name = "argo"
    assert argo.namespace == bed.namespace
    rollout = (*ROLLOUTS, bed.namespace, "rollouts")
    bed.custom.create_namespaced_custom_object(*rollout, argo_rollout(name, replicas, deadline))

    def serving(image: str) -> bool:
        pods = bed.core.list_namespaced_pod(bed.namespace, label_selector=f"app={name}").items
        current = [p for p in pods if p.metadata.deletion_timestamp is None]
        return len(current) == replicas and all(
            p.spec.containers[0].image == image
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())
            for p in current
        )

    wait_for(lambda: serving(GOOD), 60, f"{name} ready")
    timeline = Timeline()
    reported: float | None = None
    recovered: float | None = None
    status: dict[str, Any] = {}

    def step() -> bool:
        nonlocal reported, recovered, status
        status = bed.custom.get_namespaced_custom_object(*rollout, name).get("status") or {}
        if reported is None and status.get("abort"):
            reported = time.time()
        if reported is not None and serving(GOOD):
            recovered = time.time()
        return recovered is not None

    with watching(bed, f"app={name}", timeline):
        timeline.selected[name] = applied = time.time()
        bed.custom.patch_namespaced_custom_object(*rollout, name, BAD_TEMPLATE)
        poll(step, deadline + 90)
    bed.custom.delete_namespaced_custom_object(*rollout, name)
    return {
        "failure_reported_s": None if reported is None else round(reported - applied, 1),
        "recovered_s": None if recovered is None else round(recovered - applied, 1),
        "min_ready_ratio": timeline.min_ready.get(name, 0) / replicas,
        "phase_after": status.get("phase"),
        "note": "aborted back to the stable pods; the Rollout's spec still names the bad image",
    }
