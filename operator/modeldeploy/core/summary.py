"""The summary of a decided status: replica counts, the kstatus conditions, the phase.

Part of the pure core, the last step of `decide`: conditions are the truth
(Reconciling, Stalled, Ready, RolledBack), the phase is derived from them, and a
Warning Event marks a new stall.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core.conditions import derive_phase, is_true
from modeldeploy.core.ledger import set_status_condition
from modeldeploy.core.plan import Event, Problem
from modeldeploy.model.observed import Observed
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import JSON, Spec
from modeldeploy.model.status import Status
from modeldeploy.model.text import shorten


def summarise(
    status: Status,
    resource: Resource,
    spec: Spec,
    observed: Observed,
    digest: str,
    quarantined: bool,
    stall: Problem | None,
    now: datetime,
) -> Status:
    """Counts, conditions and phase from the decided state."""
    status = _with_counts(status, spec, observed)
    rollout = status.rollout
    in_progress = rollout is not None and rollout.outcome == c.OUTCOME_PROGRESSING
    reverting = quarantined and stall is None
    reconciling = _reconciling(status, spec, in_progress, reverting)
    status = set_status_condition(
        status, resource, c.RECONCILING, in_progress or reverting, *reconciling, now
    )
    status = set_status_condition(
        status,
        resource,
        c.STALLED,
        stall is not None,
        stall.reason if stall else c.REASON_NOT_STALLED,
        stall.message if stall else "",
        now,
    )
    available = (
        not quarantined
        and rollout is not None
        and rollout.template_hash == digest
        and rollout.outcome == c.OUTCOME_SUCCEEDED
        and observed.deployment is not None
        and observed.deployment.available_replicas >= spec.replicas
    )
    ready = _ready(status, spec, available, quarantined, in_progress, stall, reconciling)
    status = set_status_condition(status, resource, c.READY, available, *ready, now)
    return with_phase(status, resource, now)


def _with_counts(status: Status, spec: Spec, observed: Observed) -> Status:
    deployment = observed.deployment
    ready = deployment.ready_replicas if deployment else 0
    return replace(
        status,
        replicas=deployment.replicas if deployment else 0,
        ready_replicas=ready,
        updated_replicas=deployment.updated_replicas if deployment else 0,
        readiness=f"{ready}/{spec.replicas}",
    )


def _reconciling(status: Status, spec: Spec, in_progress: bool, reverting: bool) -> tuple[str, str]:
    rollout = status.rollout
    if in_progress and rollout is not None:
        counts = f"{status.updated_replicas} updated, {status.ready_replicas}/{spec.replicas} ready"
        # Replace states what it costs while it lasts (B23).
        cost = (
            f"; Replace: up to {spec.rollout.max_unavailable} of {spec.replicas} pods down"
            if rollout.strategy == c.STRATEGY_REPLACE
            else ""
        )
        if rollout.capacity_wait is not None:
            return (
                c.REASON_INSUFFICIENT_CAPACITY,
                shorten(
                    f"rolling out {rollout.version}, waiting for room: {counts}{cost}; "
                    f"{rollout.capacity_wait}"
                ),
            )
        return c.REASON_ROLLOUT_IN_PROGRESS, f"rolling out {rollout.version}: {counts}{cost}"
    if reverting:
        return (
            c.REASON_QUARANTINED,
            f"{spec.active_version} failed; reverting to {status.last_good_version}",
        )
    return c.REASON_IDLE, "no rollout in progress"


def _ready(
    status: Status,
    spec: Spec,
    available: bool,
    quarantined: bool,
    in_progress: bool,
    stall: Problem | None,
    reconciling: tuple[str, str],
) -> tuple[str, str]:
    """Ready's reason and message: the first that applies of available, stalled, busy."""
    reconciling_reason, progress_message = reconciling
    if available:
        rollout = status.rollout
        automatic = rollout is not None and rollout.trigger == c.TRIGGER_AUTOMATIC
        reverted = automatic and is_true(status.conditions, c.ROLLED_BACK)
        reason = c.REASON_ROLLED_BACK if reverted else c.REASON_AVAILABLE
        return (
            reason,
            f"{spec.active_version} serving, {status.ready_replicas}/{spec.replicas} ready",
        )
    if stall:
        return stall.reason, stall.message
    if quarantined:
        return c.REASON_QUARANTINED, progress_message
    if in_progress:
        return reconciling_reason, progress_message
    return c.REASON_REPLICAS_UNAVAILABLE, f"{status.ready_replicas}/{spec.replicas} replicas ready"


def with_phase(status: Status, resource: Resource, now: datetime) -> Status:
    """Every condition present (Unknown is never left implicit), then the derived phase."""
    if not any(k.type == c.ROLLED_BACK for k in status.conditions):
        status = set_status_condition(
            status,
            resource,
            c.ROLLED_BACK,
            False,
            c.REASON_NOT_ROLLED_BACK,
            "no automatic revert yet",
            now,
        )
    serving = status.serving_version is not None
    return replace(status, phase=derive_phase(status.conditions, serving))


def stall_event(before: Status, stall: Problem | None) -> tuple[Event, ...]:
    """A Warning Event when the resource newly stalls or stalls for a new reason."""
    if stall is None or stall.reason == c.REASON_ROLLED_BACK:
        return ()  # a revert is announced by its own RolledBack Event
    previous = next((k for k in before.conditions if k.type == c.STALLED), None)
    if previous and previous.status == "True" and previous.reason == stall.reason:
        return ()
    return (Event("Warning", stall.reason, stall.message),)


def blocked(resource: Resource, status: Status, stall: Problem, now: datetime) -> Status:
    """Invalid spec or name conflict: every condition says so; children are left alone."""
    status = set_status_condition(
        status, resource, c.RECONCILING, False, c.REASON_IDLE, "blocked", now
    )
    status = set_status_condition(
        status, resource, c.STALLED, True, stall.reason, stall.message, now
    )
    status = set_status_condition(
        status, resource, c.READY, False, stall.reason, stall.message, now
    )
    return with_phase(status, resource, now)


# What a status write may wait for (docs/status.md, how often status is written): the
# replica counts, the printer column and the condition messages that repeat them.
PROGRESS_FIELDS = frozenset({"replicas", "readyReplicas", "updatedReplicas", "readiness"})


def only_progress(before: JSON, after: JSON) -> bool:
    """Whether status `after` differs from `before` only in progress: no condition,
    verdict, ledger entry or notice."""
    return _without_progress(before) == _without_progress(after)


def _without_progress(status: JSON) -> JSON:
    kept = {k: v for k, v in status.items() if k not in PROGRESS_FIELDS}
    kept["conditions"] = [
        {k: v for k, v in condition.items() if k != "message"}
        for condition in status.get("conditions") or []
    ]
    return kept
