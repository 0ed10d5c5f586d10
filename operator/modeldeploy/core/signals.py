"""Failure signals and deadlines of a rollout (B5): failed, finished, or when to look again.

Part of the pure core, below the failure handling: it reads the observed pods and
Deployment of the template being rolled out and never the status, so the same
evidence always gives the same verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from modeldeploy import constants as c
from modeldeploy.core.plan import Problem
from modeldeploy.model.observed import ChildState, ContainerState, Observed, PodState
from modeldeploy.model.spec import RolloutPolicy, Spec


@dataclass(frozen=True)
class Verdict:
    """One look at a rollout: failed (why), complete, or the seconds until a deadline."""

    failure: Problem | None = None
    complete: bool = False
    wake_in_s: float | None = None  # None: only a watch event can change the verdict


def pod_deadline(pod: PodState, policy: RolloutPolicy, now: datetime) -> datetime | None:
    """When a pod that is not Ready yet fails: its unschedulable grace or its ready timeout."""
    if pod.unschedulable_since is not None:
        return pod.unschedulable_since + timedelta(seconds=policy.unschedulable_grace_s)
    if pod.ready:
        return None
    return (pod.created_at or now) + timedelta(seconds=policy.ready_timeout_s)


def pod_failure(pod: PodState, policy: RolloutPolicy, now: datetime) -> Problem | None:
    """The first failure signal a pod of the new template shows, if any."""
    for container in pod.containers:
        failure = _container_failure(pod.name, container, policy)
        if failure is not None:
            return failure
    deadline = pod_deadline(pod, policy, now)
    if deadline is None or now < deadline:
        return None
    if pod.unschedulable_since is not None:
        return Problem(
            c.REASON_UNSCHEDULABLE,
            f"pod {pod.name}: unschedulable for {policy.unschedulable_grace_s}s: "
            f"{pod.unschedulable_message or 'no node fits'}",
        )
    return Problem(
        c.REASON_NOT_READY,
        f"pod {pod.name}: container {c.CONTAINER} not Ready after {policy.ready_timeout_s}s",
    )


def _container_failure(
    pod: str, container: ContainerState, policy: RolloutPolicy
) -> Problem | None:
    where = f"pod {pod}: container {container.name}"
    if container.waiting_reason in c.WAITING_FAILURES:
        detail = f": {container.waiting_message}" if container.waiting_message else ""
        return Problem(container.waiting_reason, f"{where} {container.waiting_reason}{detail}")
    crashing = container.waiting_reason == c.REASON_CRASH_LOOP
    if not crashing and container.restart_count <= policy.max_restarts:
        return None
    last = ""
    if container.last_terminated_reason:
        last = f" (exit {container.last_exit_code} {container.last_terminated_reason})"
    oom = container.last_terminated_reason == c.REASON_OOM_KILLED
    return Problem(
        c.REASON_OOM_KILLED if oom else c.REASON_CRASH_LOOP,
        f"{where} restarted {_times(container.restart_count)}{last}",
    )


def _times(count: int) -> str:
    return f"{count} time" if count == 1 else f"{count} times"


def next_deadline(pods: list[PodState], policy: RolloutPolicy, now: datetime) -> float | None:
    """Seconds until the earliest pod deadline (ready timeout, unschedulable grace)."""
    deadlines = [d for pod in pods if (d := pod_deadline(pod, policy, now)) is not None]
    if not deadlines:
        return None
    return max(0.0, (min(deadlines) - now).total_seconds()) + 0.05


def rollout_complete(deployment: ChildState | None, digest: str, replicas: int) -> bool:
    """kubectl's rollout-status predicate (B4), for the Deployment running `digest`."""
    return (
        deployment is not None
        and deployment.template_hash == digest
        and deployment.observed_generation >= deployment.generation
        and deployment.updated_replicas == replicas
        and deployment.replicas == replicas
        and deployment.available_replicas == replicas
    )


def _deadline_exceeded(
    name: str, spec: Spec, deployment: ChildState | None, digest: str
) -> Problem | None:
    if (
        deployment is None
        or deployment.template_hash != digest
        or deployment.observed_generation < deployment.generation
        or not deployment.progress_deadline_exceeded
    ):
        return None
    return Problem(
        c.REASON_PROGRESS_DEADLINE,
        f"deployment {name}: no progress within {spec.rollout.progress_deadline_s}s "
        f"({deployment.available_replicas}/{spec.replicas} available)",
    )


def evaluate(name: str, spec: Spec, observed: Observed, digest: str, now: datetime) -> Verdict:
    """The verdict on the rollout of template `digest` from what the cluster shows now."""
    pods = sorted(
        (p for p in observed.pods if p.template_hash == digest and not p.deleting),
        key=lambda p: p.name,
    )
    for pod in pods:
        failure = pod_failure(pod, spec.rollout, now)
        if failure:
            return Verdict(failure=failure)
    failure = _deadline_exceeded(name, spec, observed.deployment, digest)
    if failure:
        return Verdict(failure=failure)
    if rollout_complete(observed.deployment, digest, spec.replicas):
        return Verdict(complete=True)
    return Verdict(wake_in_s=next_deadline(pods, spec.rollout, now))
