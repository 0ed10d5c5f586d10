"""What the cluster shows of a ModelDeployment's children, trimmed to what decisions need.

Parsed from watch events into the operator's caches (handlers), read by the pure
core. Nothing here reads the clock: a pod without a creation time is dated when it
is judged, by the caller's `now`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from modeldeploy import constants as c
from modeldeploy.model.spec import JSON
from modeldeploy.model.times import parse_time


@dataclass(frozen=True)
class ContainerState:
    name: str
    ready: bool = False
    restart_count: int = 0
    waiting_reason: str | None = None
    waiting_message: str | None = None
    last_terminated_reason: str | None = None
    last_exit_code: int | None = None


@dataclass(frozen=True)
class PodState:
    name: str
    owner: str  # the ModelDeployment it serves (LABEL_NAME)
    template_hash: str | None
    created_at: datetime | None
    controller_uid: str | None = None  # its ReplicaSet
    ready: bool = False
    ready_since: datetime | None = None  # when Ready last changed (lastTransitionTime)
    deleting: bool = False
    containers: tuple[ContainerState, ...] = ()
    unschedulable_since: datetime | None = None
    unschedulable_message: str | None = None
    uid: str = ""  # which object this is, for pruning the caches (runtime.py)
    ip: str | None = None  # status.podIP: where validation requests go
    config_hash: str | None = None  # of the configuration snapshot it mounts (its label)
    # The readiness gate (c.CONDITION_VALIDATED): whether the pod's spec has it, whether
    # all its containers are ready (ContainersReady: Ready but for the gate), and the
    # gate's condition (None: not set yet).
    gated: bool = False
    containers_ready: bool = False
    gate: bool | None = None
    # What the model container asks of a node (its requests, limits standing in where
    # a request is left out, as the API server defaults them): quantity strings.
    requests: tuple[tuple[str, str], ...] = ()

    @property
    def answering(self) -> bool:
        """Ready, or Ready but for our readiness gate: a server to send golden requests."""
        return self.ready or (self.gated and self.containers_ready)


@dataclass(frozen=True)
class ChildState:
    """An owned Deployment or Service as observed, trimmed to what decisions need."""

    name: str
    controller_uid: str | None  # uid of the controller ownerReference, if any
    spec: JSON = field(default_factory=dict)
    template_hash: str | None = None
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    uid: str = ""
    # The Deployment controller's verdict that a rollout made no progress: it names the
    # ReplicaSet it was stated for (the condition outlives the rollout it was about).
    progress_deadline: DeploymentCondition | None = None  # ProgressDeadlineExceeded

    @property
    def progress_deadline_exceeded(self) -> bool:
        return self.progress_deadline is not None


@dataclass(frozen=True)
class DeploymentCondition:
    reason: str
    message: str
    since: datetime | None  # lastTransitionTime (lastUpdateTime for Progressing)
    replica_set: str | None = None  # the ReplicaSet its message names, if it names one


@dataclass(frozen=True)
class ReplicaSetState:
    """Which Deployment controls a ReplicaSet (how a pod is traced to its owner), which
    of our templates it runs, and whether the ReplicaSet controller may not create its
    pods (ReplicaFailure: a quota, a LimitRange, admission)."""

    uid: str
    controller_uid: str | None
    name: str = ""  # which object this is (the caches; the Deployment's conditions name it)
    template_hash: str | None = None  # our template-hash label, copied from the pods'
    replica_failure: DeploymentCondition | None = None


class RefusalKey(StrEnum):
    """What was refused: a refusal is kept, backed off from and said under this key."""

    APPLY_DEPLOYMENT = "apply Deployment"
    APPLY_SERVICE = "apply Service"
    APPLY_STANDBY = "apply standby Deployment"
    APPLY_BUDGET = "apply PodDisruptionBudget"
    REVERT = "revert"  # the conditional spec write
    RETRY = "retry"  # a spec write that is no revert: the retry or refresh annotation handled
    STATUS = "status"  # the status write
    DELETE_SNAPSHOT = "delete snapshot"
    WEBHOOK = "webhook"  # a webhook's URL (its Secret, or the allow-list)


@dataclass(frozen=True)
class Refusal:
    """The API server (or admission) refused a write; its own words, and when to retry."""

    action: RefusalKey
    generation: int  # of the resource when it was refused
    code: int
    message: str
    at: datetime
    attempts: int = 1


@dataclass(frozen=True)
class Measurement:
    """One analysis query's answer: a value, or None with why (no data, unreachable,
    or an invalid query the user must fix)."""

    check: str
    template_hash: str
    at: datetime
    value: float | None = None
    text: str | None = None  # the value as Prometheus wrote it ("0.02", "+Inf", "NaN")
    error: str | None = None
    invalid: bool = False


@dataclass(frozen=True)
class ValidationResult:
    """How one pod answered the golden requests: all as expected, or the first that
    was not (or got no answer), in a sentence."""

    pod: str
    template_hash: str
    passed: bool
    at: datetime
    message: str = ""
    seconds: float = 0.0  # the requests took, together


@dataclass(frozen=True)
class SnapshotResult:
    """A configuration snapshot just taken of a version's source ConfigMap, or why not."""

    version: str
    source: str
    name: str | None = None  # the snapshot ConfigMap, created or found
    hash: str | None = None
    error: str | None = None  # the source is missing, or the API refused


@dataclass(frozen=True)
class RegistryResult:
    """What the registry answered for one version's reference: the model version behind
    it, or why not. `unreachable`: no answer (down, 5xx, deadline): asked again later;
    otherwise `error` is the registry's own word on the spec (no such model or alias)."""

    version: str
    model: str
    requested_version: str | None = None
    alias: str | None = None
    model_version: str | None = None
    source: str | None = None
    run_id: str | None = None
    error: str | None = None
    unreachable: bool = False


@dataclass(frozen=True)
class Undelivered:
    """Webhook attempts of one owed notice to one receiver that failed so far."""

    receiver: str  # host:port
    error: str  # the last attempt's
    since: datetime  # the first failed attempt
    attempts: int


@dataclass(frozen=True)
class Observed:
    deployment: ChildState | None = None
    service: ChildState | None = None
    standby: ChildState | None = None  # the standby Deployment, `<name>-standby`
    budget: ChildState | None = None  # the PodDisruptionBudget (spec.disruption)
    pods: tuple[PodState, ...] = ()
    replica_sets: tuple[ReplicaSetState, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    refusals: tuple[Refusal, ...] = ()  # what the API refused lately (kept in memory)
    delivered: frozenset[tuple[str, str, datetime]] = frozenset()  # Notice keys sent
    validations: tuple[ValidationResult, ...] = ()
    snapshots: tuple[SnapshotResult, ...] = ()  # taken in this reconcile
    deleted_snapshots: frozenset[str] = frozenset()  # snapshot ConfigMaps known gone
    resolutions: tuple[RegistryResult, ...] = ()  # registry references resolved now
    # Registry writes the registry took (or refused for good), by key (in memory).
    registry_written: frozenset[tuple[str, str, str, datetime]] = frozenset()
    registry_down: str | None = None  # the registry's last call got no answer: why
    undelivered: tuple[Undelivered, ...] = ()  # webhook attempts that failed (in memory)
    # Unschedulable pods asking for more of a resource than any node has, and how much
    # more (read from the nodes only for a pod the scheduler found Insufficient).
    too_large: tuple[tuple[str, str], ...] = ()

    def refusal(self, key: RefusalKey, generation: int) -> Refusal | None:
        """The latest refusal of `key` for this very spec (a new spec tries afresh)."""
        return next(
            (r for r in self.refusals if r.action == key and r.generation == generation), None
        )


def _controller_uid(meta: Mapping[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def parse_child(body: Mapping[str, Any]) -> ChildState:
    """A Deployment or Service body, trimmed to what decisions read."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    conditions = {k.get("type"): k for k in status.get("conditions") or ()}
    progressing = conditions.get("Progressing") or {}
    return ChildState(
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        controller_uid=_controller_uid(meta),
        spec=dict(body.get("spec") or {}),
        template_hash=(meta.get("annotations") or {}).get(c.ANNOTATION_TEMPLATE_HASH),
        generation=int(meta.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        replicas=int(status.get("replicas", 0)),
        updated_replicas=int(status.get("updatedReplicas", 0)),
        ready_replicas=int(status.get("readyReplicas", 0)),
        available_replicas=int(status.get("availableReplicas", 0)),
        progress_deadline=_condition(progressing, "lastUpdateTime")
        if progressing.get("reason") == c.REASON_PROGRESS_DEADLINE
        else None,
    )


# The Deployment controller names the ReplicaSet in its Progressing messages
# ('ReplicaSet "m-5d8c7b9f4" has timed out progressing.').
_NAMED_REPLICA_SET = re.compile(r'ReplicaSet "([^"]+)"')


def _condition(raw: Mapping[str, Any], stated: str) -> DeploymentCondition:
    message = raw.get("message") or ""
    named = _NAMED_REPLICA_SET.search(message)
    return DeploymentCondition(
        reason=raw.get("reason") or raw.get("type") or "",
        message=message,
        since=parse_time(raw.get(stated) or raw.get("lastTransitionTime")),
        replica_set=named.group(1) if named else None,
    )


def parse_replica_set(body: Mapping[str, Any]) -> ReplicaSetState:
    meta = body.get("metadata") or {}
    conditions = {k.get("type"): k for k in (body.get("status") or {}).get("conditions") or ()}
    failure = conditions.get("ReplicaFailure") or {}
    return ReplicaSetState(
        uid=meta.get("uid", ""),
        controller_uid=_controller_uid(meta),
        name=meta.get("name", ""),
        template_hash=(meta.get("labels") or {}).get(c.LABEL_TEMPLATE_HASH),
        replica_failure=_condition(failure, "lastTransitionTime")
        if failure.get("status") == "True"
        else None,
    )


def _container(raw: Mapping[str, Any]) -> ContainerState:
    waiting = (raw.get("state") or {}).get("waiting") or {}
    terminated = (raw.get("lastState") or {}).get("terminated") or {}
    return ContainerState(
        name=raw.get("name", ""),
        ready=bool(raw.get("ready")),
        restart_count=int(raw.get("restartCount", 0)),
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
        last_terminated_reason=terminated.get("reason"),
        last_exit_code=terminated.get("exitCode"),
    )


def parse_pod(body: Mapping[str, Any]) -> PodState:
    """A pod body, trimmed to its failure signals: containers, readiness, scheduling."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    labels = meta.get("labels") or {}
    conditions = {k.get("type"): k for k in status.get("conditions") or ()}
    scheduled = conditions.get("PodScheduled") or {}
    gates = {g.get("conditionType") for g in (body.get("spec") or {}).get("readinessGates") or ()}
    gate = (conditions.get(c.CONDITION_VALIDATED) or {}).get("status")
    unschedulable = (
        scheduled.get("status") == "False" and scheduled.get("reason") == c.REASON_UNSCHEDULABLE
    )
    return PodState(
        name=meta.get("name", ""),
        owner=labels.get(c.LABEL_NAME, ""),
        template_hash=labels.get(c.LABEL_TEMPLATE_HASH),
        created_at=parse_time(meta.get("creationTimestamp")),
        controller_uid=_controller_uid(meta),
        ready=(conditions.get("Ready") or {}).get("status") == "True",
        ready_since=parse_time((conditions.get("Ready") or {}).get("lastTransitionTime")),
        deleting=bool(meta.get("deletionTimestamp")),
        containers=tuple(_container(raw) for raw in status.get("containerStatuses") or ()),
        unschedulable_since=parse_time(scheduled.get("lastTransitionTime"))
        if unschedulable
        else None,
        unschedulable_message=scheduled.get("message") if unschedulable else None,
        uid=meta.get("uid", ""),
        ip=status.get("podIP") or None,
        config_hash=labels.get(c.LABEL_CONFIG_HASH),
        gated=c.CONDITION_VALIDATED in gates,
        containers_ready=(conditions.get("ContainersReady") or {}).get("status") == "True",
        gate=None if gate is None else gate == "True",
        requests=_requests(body),
    )


def _requests(body: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    for container in (body.get("spec") or {}).get("containers") or ():
        if container.get("name") == c.CONTAINER:
            resources = container.get("resources") or {}
            asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
            return tuple(sorted((str(k), str(v)) for k, v in asked.items()))
    return ()


def owner_key(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, ModelDeployment name) of a child carrying our name label."""
    meta = body.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(c.LABEL_NAME)
    return (meta.get("namespace", ""), owner) if owner else None
