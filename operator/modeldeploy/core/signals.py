"""Failure signals of one rollout (B5), judged only on evidence that appeared after it began.

Part of the pure core, below the failure handling. Which signal counts from when is
docs/signals.md: restarts count from the baseline taken when the rollout began,
a pod's waiting reason counts once its container failed again after the start,
ready and unschedulable timeouts count from the later of the pod's and the
rollout's start, the Deployment controller's verdicts count when stated for this
template's ReplicaSet (by its name, never by time).
Only pods whose ReplicaSet our Deployment controls are looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from modeldeploy import constants as c
from modeldeploy.core import capacity
from modeldeploy.core.capacity import Placement
from modeldeploy.core.plan import Problem
from modeldeploy.model.observed import (
    ChildState,
    ContainerState,
    Observed,
    PodState,
    ReplicaSetState,
)
from modeldeploy.model.spec import RolloutPolicy, Spec
from modeldeploy.model.status import Baseline, RolloutRecord
from modeldeploy.model.text import shorten

# The Deployment controller reports FailedCreate at once even for what clears by
# itself (a new namespace's ServiceAccount not created yet); a quota, LimitRange or
# Pod Security refusal is still there after this long.
REPLICA_FAILURE_GRACE_S = 5


@dataclass(frozen=True)
class Verdict:
    """One look at a rollout: failed (why), complete, or the seconds until a deadline."""

    failure: Problem | None = None
    complete: bool = False
    wake_in_s: float | None = None  # None: only a watch event can change the verdict
    capacity_wait: str | None = None  # a new pod waits for room: the scheduler's words
    stall: Problem | None = None  # the progress deadline passed while waiting for room


@dataclass(frozen=True)
class Window:
    """When the rollout began (to the second: Kubernetes' own times are whole seconds)
    and the restart counts its pods already had then."""

    started_at: datetime
    restarts: Mapping[tuple[str, str], int]

    @classmethod
    def of(cls, rollout: RolloutRecord) -> Window:
        return cls(
            started_at=rollout.started_at.replace(microsecond=0),
            restarts={(b.pod, b.container): b.restarts for b in rollout.baseline},
        )

    def is_new(self, pod: PodState) -> bool:
        return pod.created_at is None or pod.created_at >= self.started_at

    def restarts_since(self, pod: PodState, container: ContainerState) -> int:
        if self.is_new(pod):
            return container.restart_count
        return container.restart_count - self.restarts.get((pod.name, container.name), 0)


def baseline(pods: tuple[PodState, ...]) -> tuple[Baseline, ...]:
    """What the pods of a template had restarted before its rollout began."""
    return tuple(
        Baseline(pod=pod.name, container=container.name, restarts=container.restart_count)
        for pod in sorted(pods, key=lambda p: p.name)
        for container in pod.containers
        if container.restart_count > 0
    )


def owned_pods(observed: Observed, digest: str) -> tuple[PodState, ...]:
    """Live pods of template `digest` whose ReplicaSet our Deployment controls.

    A pod anyone creates with our labels (and even our template hash) is not ours
    and never changes a verdict.
    """
    deployment = observed.deployment
    if deployment is None:
        return ()
    ours = {rs.uid for rs in observed.replica_sets if rs.controller_uid == deployment.uid}
    return tuple(
        sorted(
            (
                p
                for p in observed.pods
                if p.template_hash == digest and not p.deleting and p.controller_uid in ours
            ),
            key=lambda p: p.name,
        )
    )


def pod_deadline(
    pod: PodState, policy: RolloutPolicy, window: Window, room: Placement | None = None
) -> datetime | None:
    """When a pod that is not Ready fails: its unschedulable grace or its ready timeout,
    each counted from no earlier than the rollout's start (a readiness blip of a pod
    that was Ready counts from the blip). A pod waiting for room never does (B23)."""
    if pod.unschedulable_since is not None:
        if room is not None and room.kind == capacity.WAIT:
            return None
        since = max(pod.unschedulable_since, window.started_at)
        return since + timedelta(seconds=policy.unschedulable_grace_s)
    if pod.ready:
        return None
    # Not Ready since the latest of: its creation, its last readiness change, the start.
    since = max(t for t in (pod.created_at, pod.ready_since, window.started_at) if t is not None)
    return since + timedelta(seconds=policy.ready_timeout_s)


def room_for(pod: PodState, observed: Observed) -> Placement | None:
    """Whether an unschedulable pod waits for room or can never run (None: scheduled)."""
    if pod.unschedulable_since is None:
        return None
    return capacity.placement(pod, dict(observed.too_large).get(pod.name))


def pod_failure(
    pod: PodState,
    policy: RolloutPolicy,
    window: Window,
    now: datetime,
    room: Placement | None = None,
) -> Problem | None:
    """The first failure signal a pod of the new template shows since the rollout began."""
    for container in pod.containers:
        failure = _container_failure(pod, container, policy, window)
        if failure is not None:
            return failure
    if room is not None and room.kind == capacity.NEVER:
        return Problem(c.REASON_UNSCHEDULABLE, shorten(f"pod {pod.name}: {room.why}"))
    deadline = pod_deadline(pod, policy, window, room)
    if deadline is None or now < deadline:
        return None
    if pod.unschedulable_since is not None:
        return Problem(
            c.REASON_UNSCHEDULABLE,
            shorten(
                f"pod {pod.name}: unschedulable for {policy.unschedulable_grace_s}s: "
                f"{pod.unschedulable_message or 'no node fits'}"
            ),
        )
    return Problem(
        c.REASON_NOT_READY,
        f"pod {pod.name}: container {c.CONTAINER} not Ready after {policy.ready_timeout_s}s",
    )


def _container_failure(
    pod: PodState, container: ContainerState, policy: RolloutPolicy, window: Window
) -> Problem | None:
    where = f"pod {pod.name}: container {container.name}"
    restarts = window.restarts_since(pod, container)
    # A pod that was there before the rollout counts only once it fails again after it.
    fresh = window.is_new(pod) or restarts > 0
    if container.waiting_reason in c.WAITING_FAILURES and fresh:
        detail = f": {container.waiting_message}" if container.waiting_message else ""
        return Problem(
            container.waiting_reason, shorten(f"{where} {container.waiting_reason}{detail}")
        )
    crashing = container.waiting_reason == c.REASON_CRASH_LOOP and fresh
    if not crashing and restarts <= policy.max_restarts:
        return None
    last = ""
    if container.last_terminated_reason:
        last = f" (exit {container.last_exit_code} {container.last_terminated_reason})"
    oom = container.last_terminated_reason == c.REASON_OOM_KILLED
    since = "" if window.is_new(pod) else " since the rollout began"
    return Problem(
        c.REASON_OOM_KILLED if oom else c.REASON_CRASH_LOOP,
        f"{where} restarted {_times(restarts)}{since}{last}",
    )


def _times(count: int) -> str:
    return f"{count} time" if count == 1 else f"{count} times"


def next_deadline(
    pods: tuple[PodState, ...],
    policy: RolloutPolicy,
    window: Window,
    now: datetime,
    observed: Observed | None = None,
) -> float | None:
    """Seconds until the earliest pod deadline (ready timeout, unschedulable grace)."""
    deadlines = []
    for pod in pods:
        room = room_for(pod, observed) if observed is not None else None
        deadline = pod_deadline(pod, policy, window, room)
        if deadline is not None:
            deadlines.append(deadline)
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


def replica_set_of(observed: Observed, digest: str) -> ReplicaSetState | None:
    """The ReplicaSet of template `digest` that our Deployment controls."""
    deployment = observed.deployment
    if deployment is None:
        return None
    return next(
        (
            rs
            for rs in observed.replica_sets
            if rs.controller_uid == deployment.uid and rs.template_hash == digest
        ),
        None,
    )


def deployment_failure(
    name: str, spec: Spec, observed: Observed, digest: str, window: Window, now: datetime
) -> tuple[Problem | None, float | None]:
    """The Deployment controller's own verdicts on this template: a progress deadline
    stated for its ReplicaSet (the condition stays after a rollout it was about, with
    its old times, so its message must name this template's ReplicaSet; never judged
    by time), or pods its ReplicaSet may not create (quota, LimitRange, admission).
    Also the seconds until a fresh ReplicaFailure has lasted its grace."""
    deployment = observed.deployment
    if (
        deployment is None
        or deployment.template_hash != digest
        or deployment.observed_generation < deployment.generation
    ):
        return None, None
    ours = replica_set_of(observed, digest)
    if ours is None:
        return None, None
    stuck = deployment.progress_deadline
    if stuck is not None and stuck.replica_set == ours.name:
        return Problem(
            c.REASON_PROGRESS_DEADLINE,
            f"deployment {name}: no progress within {spec.rollout.progress_deadline_s}s "
            f"({deployment.available_replicas}/{spec.replicas} available)",
        ), None
    failure = ours.replica_failure
    if failure is None:
        return None, None
    # It lasts its grace after the later of when it was stated and the start.
    since = max(t for t in (failure.since, window.started_at) if t is not None)
    lasted = (now - since).total_seconds()
    if lasted < REPLICA_FAILURE_GRACE_S:
        return None, REPLICA_FAILURE_GRACE_S - lasted + 0.05
    return Problem(
        failure.reason, shorten(f"deployment {name}: {failure.reason}: {failure.message}")
    ), None


def evaluate(
    name: str, spec: Spec, observed: Observed, rollout: RolloutRecord, now: datetime
) -> Verdict:
    """The verdict on `rollout` from what the cluster shows now."""
    digest, window = rollout.template_hash, Window.of(rollout)
    pods = owned_pods(observed, digest)
    waiting: str | None = None
    for pod in pods:
        room = room_for(pod, observed)
        failure = pod_failure(pod, spec.rollout, window, now, room)
        if failure:
            return Verdict(failure=failure)
        if room is not None and room.kind == capacity.WAIT and waiting is None:
            waiting = f"pod {pod.name}: {room.why}"
    failure, wake = deployment_failure(name, spec, observed, digest, window, now)
    if failure and waiting is not None and failure.reason == c.REASON_PROGRESS_DEADLINE:
        # No room is not the version's fault: stalled for a person, never Failed.
        stall = Problem(
            c.REASON_INSUFFICIENT_CAPACITY,
            shorten(
                f"no room for {rollout.version} within "
                f"{spec.rollout.progress_deadline_s}s: {waiting}"
            ),
        )
        return Verdict(capacity_wait=waiting, stall=stall)
    if failure:
        return Verdict(failure=failure)
    if rollout_complete(observed.deployment, digest, spec.replicas):
        return Verdict(complete=True)
    deadlines = [
        s for s in (next_deadline(pods, spec.rollout, window, now, observed), wake) if s is not None
    ]
    return Verdict(wake_in_s=min(deadlines, default=None), capacity_wait=waiting)
