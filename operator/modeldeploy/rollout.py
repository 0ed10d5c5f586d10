"""The pure decision: (resource, observed children, now) -> desired objects, status, actions.

The heart of the operator and free of I/O: handlers read the cluster, call
`decide`, then write what it returns in a fixed order (status first, then the
Deployment and Service, then any spec change). Rules B2-B9 of DESIGN.md live here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from modeldeploy import analysis
from modeldeploy import constants as c
from modeldeploy.conditions import derive_phase, is_true, set_condition
from modeldeploy.model import (
    JSON,
    ChildState,
    Intent,
    Observed,
    PodState,
    Resource,
    Revert,
    RolloutPolicy,
    RolloutRecord,
    Spec,
    SpecError,
    Status,
    VersionRecord,
    format_time,
    parse_time,
    to_json,
)
from modeldeploy.render import covers, render_deployment, render_service, template_hash


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class SpecChange:
    """A write to the resource itself, made only after the status recording it."""

    set_version: str | None  # the new spec.activeVersion, if any
    expect_version: str | None  # apply only while the spec still names this version
    remove_retry: bool = False
    events: tuple[Event, ...] = ()  # posted once the change applied


@dataclass(frozen=True)
class Decision:
    status: Status
    status_changed: bool
    deployment: JSON | None = None  # apply this; None leaves the Deployment alone
    service: JSON | None = None
    events: tuple[Event, ...] = ()  # posted after the status write
    spec_change: SpecChange | None = None
    requeue_after: float | None = None  # seconds until the next deadline to check
    queries: tuple[analysis.Query, ...] = ()  # analysis measurements due now


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


@dataclass(frozen=True)
class Stall:
    reason: str
    message: str


# ----------------------------------------------------------------- B5: failures


def pod_failure(pod: PodState, policy: RolloutPolicy, now: datetime) -> Failure | None:
    """The first failure signal a pod of the new template shows, if any."""
    for container in pod.containers:
        where = f"pod {pod.name}: container {container.name}"
        if container.waiting_reason in c.WAITING_FAILURES:
            detail = f": {container.waiting_message}" if container.waiting_message else ""
            return Failure(container.waiting_reason, f"{where} {container.waiting_reason}{detail}")
        crashing = container.waiting_reason == c.REASON_CRASH_LOOP
        if crashing or container.restart_count > policy.max_restarts:
            oom = container.last_terminated_reason == c.REASON_OOM_KILLED
            last = ""
            if container.last_terminated_reason:
                last = f" (exit {container.last_exit_code} {container.last_terminated_reason})"
            return Failure(
                c.REASON_OOM_KILLED if oom else c.REASON_CRASH_LOOP,
                f"{where} restarted {_times(container.restart_count)}{last}",
            )
    if pod.unschedulable_since is not None:
        if now - pod.unschedulable_since >= timedelta(seconds=policy.unschedulable_grace_s):
            return Failure(
                c.REASON_UNSCHEDULABLE,
                f"pod {pod.name}: unschedulable for {policy.unschedulable_grace_s}s: "
                f"{pod.unschedulable_message or 'no node fits'}",
            )
    elif not pod.ready and now - pod.created_at >= timedelta(seconds=policy.ready_timeout_s):
        return Failure(
            c.REASON_NOT_READY,
            f"pod {pod.name}: container {c.CONTAINER} not Ready after {policy.ready_timeout_s}s",
        )
    return None


def _times(count: int) -> str:
    return f"{count} time" if count == 1 else f"{count} times"


def next_deadline(pods: list[PodState], policy: RolloutPolicy, now: datetime) -> float | None:
    """Seconds until the earliest pod deadline (ready timeout, unschedulable grace)."""
    deadlines = []
    for pod in pods:
        if pod.unschedulable_since is not None:
            deadlines.append(
                pod.unschedulable_since + timedelta(seconds=policy.unschedulable_grace_s)
            )
        elif not pod.ready:
            deadlines.append(pod.created_at + timedelta(seconds=policy.ready_timeout_s))
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


def evaluate(
    name: str, spec: Spec, observed: Observed, digest: str, now: datetime
) -> Failure | float | bool | None:
    """Verdict on the rollout of `digest`: a Failure, True when complete, else the
    seconds until the next deadline (None when only events can move it)."""
    policy = spec.rollout
    pods = sorted(
        (p for p in observed.pods if p.template_hash == digest and not p.deleting),
        key=lambda p: p.name,
    )
    for pod in pods:
        failure = pod_failure(pod, policy, now)
        if failure:
            return failure
    deployment = observed.deployment
    if (
        deployment is not None
        and deployment.template_hash == digest
        and deployment.observed_generation >= deployment.generation
        and deployment.progress_deadline_exceeded
    ):
        return Failure(
            c.REASON_PROGRESS_DEADLINE,
            f"deployment {name}: no progress within {policy.progress_deadline_s}s "
            f"({deployment.available_replicas}/{spec.replicas} available)",
        )
    if rollout_complete(deployment, digest, spec.replicas):
        return True
    return next_deadline(pods, policy, now)


# ------------------------------------------------------------ status bookkeeping


def _upsert_version(status: Status, record: VersionRecord) -> Status:
    versions = [v for v in status.versions if v.name != record.name]
    versions.append(record)
    return replace(status, versions=tuple(sorted(versions, key=lambda v: v.name)))


def _with_rollout(status: Status, rollout: RolloutRecord, history_limit: int) -> Status:
    """Set the current rollout and its history entry (matched by revision)."""
    history = [h for h in status.history if h.revision != rollout.revision]
    history.insert(0, rollout)
    history.sort(key=lambda h: h.revision, reverse=True)
    return replace(status, rollout=rollout, history=tuple(history[:history_limit]))


def _start_rollout(
    status: Status, resource: Resource, spec: Spec, digest: str, stamp: str
) -> tuple[Status, Event]:
    version = spec.active_version
    trigger = c.TRIGGER_MANUAL
    intent = status.intent
    # Our own spec write bumps the generation by exactly one; anything later is a user's.
    if intent and intent.version == version and resource.generation <= intent.generation + 1:
        trigger = intent.trigger
    revision = max((h.revision for h in status.history), default=0) + 1
    rollout = RolloutRecord(
        revision=revision,
        version=version,
        template_hash=digest,
        trigger=trigger,
        started_at=stamp,
        # From the version the last rollout went to (a failed one, for a revert).
        from_version=status.rollout.version if status.rollout else status.serving_version,
    )
    status = _with_rollout(replace(status, intent=None), rollout, spec.rollout.history_limit)
    previous = status.version_record(version)
    status = _upsert_version(
        status,
        VersionRecord(
            name=version,
            state=c.STATE_RETRYING if trigger == c.TRIGGER_RETRY else c.STATE_PROGRESSING,
            template_hash=digest,
            last_available_at=previous.last_available_at if previous else None,
        ),
    )
    if trigger != c.TRIGGER_AUTOMATIC:
        status = _set(
            status,
            resource,
            c.ROLLED_BACK,
            False,
            c.REASON_NOT_ROLLED_BACK,
            f"{trigger.lower()} rollout of {version} started",
            stamp,
        )
    source = f" from {rollout.from_version}" if rollout.from_version else ""
    return status, Event(
        "Normal",
        c.EVENT_ROLLOUT_STARTED,
        f"Rolling out {version}{source} (trigger {trigger}, revision {revision})",
    )


def _succeed(
    status: Status, spec: Spec, stamp: str, started: datetime | None, now: datetime
) -> tuple[Status, Event]:
    rollout = status.rollout
    assert rollout is not None
    reason = c.REASON_ROLLED_BACK if rollout.trigger == c.TRIGGER_AUTOMATIC else "Succeeded"
    finished = replace(rollout, outcome=c.OUTCOME_SUCCEEDED, reason=reason, finished_at=stamp)
    status = _with_rollout(status, finished, spec.rollout.history_limit)
    status = _upsert_version(
        status,
        VersionRecord(
            name=rollout.version,
            state=c.STATE_AVAILABLE,
            template_hash=rollout.template_hash,
            last_available_at=stamp,
        ),
    )
    status = replace(
        status,
        serving_version=rollout.version,
        last_good_version=rollout.version,
        last_good_template_hash=rollout.template_hash,
    )
    took = f" in {(now - started).total_seconds():.1f}s" if started else ""
    return status, Event(
        "Normal",
        c.EVENT_ROLLOUT_SUCCEEDED,
        f"{rollout.version} is serving, {spec.replicas}/{spec.replicas} ready{took}",
    )


def _fail(status: Status, spec: Spec, failure: Failure, stamp: str) -> tuple[Status, Event]:
    rollout = status.rollout
    assert rollout is not None
    finished = replace(
        rollout,
        outcome=c.OUTCOME_FAILED,
        reason=failure.reason,
        message=failure.message,
        finished_at=stamp,
    )
    status = _with_rollout(status, finished, spec.rollout.history_limit)
    status = _upsert_version(
        status,
        VersionRecord(
            name=rollout.version,
            state=c.STATE_FAILED,
            template_hash=rollout.template_hash,
            reason=failure.reason,
            message=failure.message,
            failed_at=stamp,
        ),
    )
    return status, Event(
        "Warning",
        c.EVENT_ROLLOUT_FAILED,
        f"{rollout.version} failed ({failure.reason}): {failure.message}",
    )


def _set(
    status: Status,
    resource: Resource,
    type_: str,
    value: bool,
    reason: str,
    message: str,
    stamp: str,
) -> Status:
    conditions = set_condition(
        status.conditions, type_, value, reason, message, stamp, resource.generation
    )
    return replace(status, conditions=conditions)


# --------------------------------------------------------- B6, B7, B9: reverting


def revert_target(status: Status, spec: Spec, name: str, failed: str) -> tuple[str | None, str]:
    """The last good version if it still is what was observed good (B6.5), else why not."""
    last_good = status.last_good_version
    if last_good is None:
        return None, "no version was ever observed Available"
    if last_good == failed:
        return None, f"last good version {last_good} was changed since it was observed good"
    if last_good not in spec.versions:
        return None, f"last good version {last_good} was removed from spec.versions"
    current = template_hash(name, spec, spec.versions[last_good])
    if current != status.last_good_template_hash:
        return None, f"last good version {last_good} was changed since it was observed good"
    return last_good, ""


def _recent_reverts(status: Status, now: datetime) -> tuple[Revert, ...]:
    window = timedelta(seconds=c.REVERT_LOOP_WINDOW_S)
    return tuple(
        r for r in status.reverts if (at := parse_time(r.at)) is not None and now - at < window
    )


def _handle_quarantine(
    status: Status,
    resource: Resource,
    spec: Spec,
    just_failed: bool,
    stamp: str,
) -> tuple[Status, Stall | None, SpecChange | None, list[Event]]:
    """The active version is recorded Failed: never roll it out; revert if we may."""
    version = spec.active_version
    record = status.version_record(version)
    assert record is not None
    why = f"{record.reason}: {record.message}"
    if not spec.rollout.auto_rollback:
        return (
            status,
            Stall(
                c.REASON_AUTO_ROLLBACK_DISABLED, f"{version} failed ({why}); autoRollback is off"
            ),
            None,
            [],
        )
    rollout = status.rollout
    if rollout and rollout.version == version and rollout.trigger == c.TRIGGER_AUTOMATIC:
        return (
            status,
            Stall(
                c.REASON_TARGET_UNHEALTHY,
                f"revert target {version} failed too ({why}); no further automatic action",
            ),
            None,
            [],
        )
    target, why_not = revert_target(status, spec, resource.name, version)
    if target is None:
        reason = (
            c.REASON_FIRST_VERSION_FAILED
            if status.last_good_version is None
            else (c.REASON_NO_TARGET)
        )
        return status, Stall(reason, f"{version} failed ({why}); {why_not}"), None, []
    revert_event = Event(
        "Normal",
        c.EVENT_ROLLED_BACK,
        f"spec.activeVersion reverted from {version} to last good {target}: {record.reason}",
    )
    change = SpecChange(set_version=target, expect_version=version, events=(revert_event,))
    intent = status.intent
    if (
        intent
        and intent.trigger == c.TRIGGER_AUTOMATIC
        and intent.from_version == version
        and intent.generation == resource.generation
    ):
        return status, None, change, []  # recorded before a restart; finish the write
    reverts_from_here = [r for r in status.reverts if r.from_version == version]
    if len(reverts_from_here) >= c.REVERT_LOOP_LIMIT:
        return (
            status,
            Stall(
                c.REASON_REVERT_LOOP,
                f"{version} was re-applied and reverted {len(reverts_from_here)} times within "
                f"{int(c.REVERT_LOOP_WINDOW_S // 60)} minutes; not reverting again",
            ),
            None,
            [],
        )
    events = []
    if not just_failed:
        events.append(
            Event(
                "Warning",
                c.EVENT_QUARANTINED,
                f"{version} failed at {record.failed_at} ({record.reason}) and is quarantined; "
                f"not rolling it out. To retry it: kubectl annotate modeldeployment "
                f"{resource.name} {c.ANNOTATION_RETRY}={version} "
                f"(or: kubectl modeldeploy retry {resource.name} {version})",
            )
        )
    status = replace(
        status,
        intent=Intent(
            trigger=c.TRIGGER_AUTOMATIC,
            version=target,
            generation=resource.generation,
            from_version=version,
            at=stamp,
        ),
        reverts=(*status.reverts, Revert(from_version=version, to_version=target, at=stamp)),
    )
    status = _set(
        status,
        resource,
        c.ROLLED_BACK,
        True,
        record.reason or c.REASON_ROLLED_BACK,
        f"reverted {version} -> {target} at {stamp}: {record.message}",
        stamp,
    )
    return status, None, change, events


def _handle_retry(
    status: Status, resource: Resource, spec: Spec, stamp: str
) -> tuple[Status, SpecChange, list[Event]]:
    """Consume the retry annotation: lift the quarantine and select that version."""
    version = resource.retry_version or ""
    if version not in spec.versions:
        return (
            status,
            SpecChange(None, None, remove_retry=True),
            [
                Event(
                    "Warning",
                    c.EVENT_RETRY,
                    f"{c.ANNOTATION_RETRY}={version} names no entry of spec.versions; ignored",
                )
            ],
        )
    rollout = status.rollout
    if (
        rollout
        and rollout.version == version
        and rollout.trigger == c.TRIGGER_RETRY
        and rollout.outcome == c.OUTCOME_PROGRESSING
    ):
        return status, SpecChange(None, None, remove_retry=True), []  # already retrying
    record = status.version_record(version)
    if record and record.state == c.STATE_FAILED:
        status = _upsert_version(status, replace(record, state=c.STATE_RETRYING))
    status = replace(
        status,
        intent=Intent(
            trigger=c.TRIGGER_RETRY,
            version=version,
            generation=resource.generation,
            from_version=spec.active_version,
            at=stamp,
        ),
    )
    change = SpecChange(
        set_version=version if version != spec.active_version else None,
        expect_version=None,
        remove_retry=True,
    )
    return status, change, [Event("Normal", c.EVENT_RETRY, f"Retrying {version} on request")]


# ---------------------------------------------------------------------- decide


def decide(resource: Resource, observed: Observed, now: datetime) -> Decision:
    """Everything the operator should do about one ModelDeployment, now."""
    stamp = format_time(now)
    before = resource.status
    status = replace(
        before, observed_generation=resource.generation, reverts=_recent_reverts(before, now)
    )
    spec = resource.spec
    if isinstance(spec, SpecError):
        return _blocked(resource, before, status, c.REASON_INVALID_SPEC, str(spec), stamp)
    conflict = _name_conflict(resource, observed)
    if conflict:
        return _blocked(resource, before, status, c.REASON_NAME_CONFLICT, conflict, stamp)

    events: list[Event] = []
    spec_change: SpecChange | None = None
    if resource.retry_version is not None:
        status, spec_change, retry_events = _handle_retry(status, resource, spec, stamp)
        events += retry_events

    version = spec.active_version
    digest = template_hash(resource.name, spec, spec.active)
    rollout = status.rollout
    if rollout and rollout.outcome == c.OUTCOME_PROGRESSING and rollout.template_hash != digest:
        superseded = replace(
            rollout,
            outcome=c.OUTCOME_SUPERSEDED,
            finished_at=stamp,
            message=f"replaced by {version} before it finished",
        )
        status = _with_rollout(status, superseded, spec.rollout.history_limit)

    record = status.version_record(version)
    quarantined = bool(record and record.state == c.STATE_FAILED and record.template_hash == digest)
    step = Step(status)
    if not quarantined:
        step = _progress(status, resource, spec, digest, observed, now)
        events += step.events
        quarantined = step.failed
    status = step.status

    stall: Stall | None = None
    if quarantined and spec_change is None:
        status, stall, spec_change, quarantine_events = _handle_quarantine(
            status, resource, spec, step.failed, stamp
        )
        events += quarantine_events

    deployment = None if quarantined else render_deployment(resource, spec, spec.active)
    service = render_service(resource, spec) if spec.service.enabled else None
    status = _summarise(status, resource, spec, observed, digest, quarantined, stall, stamp)
    events += _stall_event(before, status, stall)
    return Decision(
        status=status,
        status_changed=to_json(status) != to_json(before),
        deployment=deployment if _needs_apply(deployment, observed.deployment) else None,
        service=service if _needs_apply(service, observed.service) else None,
        events=tuple(events),
        spec_change=spec_change,
        requeue_after=step.requeue,
        queries=step.queries,
    )


@dataclass(frozen=True)
class Step:
    """What one look at the active version's rollout found."""

    status: Status
    events: tuple[Event, ...] = ()
    failed: bool = False  # it failed just now
    requeue: float | None = None
    queries: tuple[analysis.Query, ...] = ()


def _progress(
    status: Status,
    resource: Resource,
    spec: Spec,
    digest: str,
    observed: Observed,
    now: datetime,
) -> Step:
    """Start the rollout of `digest` if it is new, then judge it: failed, done or waiting."""
    stamp = format_time(now)
    events = []
    rollout = status.rollout
    current = (
        rollout is not None
        and rollout.template_hash == digest
        and rollout.outcome in (c.OUTCOME_PROGRESSING, c.OUTCOME_SUCCEEDED)
    )
    if not current:
        status, started = _start_rollout(status, resource, spec, digest, stamp)
        events.append(started)
    rollout = status.rollout
    assert rollout is not None
    if rollout.outcome != c.OUTCOME_PROGRESSING:
        return Step(status, tuple(events))
    verdict = evaluate(resource.name, spec, observed, digest, now)
    queries: tuple[analysis.Query, ...] = ()
    analysing = status.analysis is not None and status.analysis.template_hash == digest
    if not isinstance(verdict, Failure) and spec.analysis and (verdict is True or analysing):
        # Ready is not enough: judge what the version serves (AnalysisFailed).
        status, verdict, queries = _analyse(status, resource, spec, digest, observed, now)
    if isinstance(verdict, Failure):
        status, failed = _fail(status, spec, verdict, stamp)
        return Step(status, (*events, failed), failed=True)
    if verdict is True:
        status, succeeded = _succeed(status, spec, stamp, parse_time(rollout.started_at), now)
        return Step(status, (*events, succeeded))
    requeue = verdict if isinstance(verdict, float) else None
    return Step(status, tuple(events), requeue=requeue, queries=queries)


def _analyse(
    status: Status,
    resource: Resource,
    spec: Spec,
    digest: str,
    observed: Observed,
    now: datetime,
) -> tuple[Status, Failure | float | bool, tuple[analysis.Query, ...]]:
    """Start or continue the analysis of `digest`; its verdict stands in for success."""
    assert spec.analysis is not None
    record = status.analysis
    if record is None or record.template_hash != digest:
        record = analysis.start(spec.active_version, digest, spec.analysis, now)
    record = analysis.fold(record, spec.analysis, observed.measurements)
    phase, message = analysis.verdict(record, spec.analysis, now)
    record = replace(record, phase=phase)
    status = replace(status, analysis=record)
    if phase == analysis.FAILED:
        return status, Failure(c.REASON_ANALYSIS_FAILED, message), ()
    if phase == analysis.PASSED:
        return status, True, ()
    due = analysis.queries(record, spec.analysis, now, resource.name, resource.namespace)
    return status, analysis.next_wake_s(record, spec.analysis, now), due


def _needs_apply(desired: JSON | None, observed: ChildState | None) -> bool:
    if desired is None:
        return False
    if observed is None:
        return True
    wanted_hash = desired["metadata"].get("annotations", {}).get(c.ANNOTATION_TEMPLATE_HASH)
    return observed.template_hash != wanted_hash or not covers(observed.spec, desired["spec"])


def _name_conflict(resource: Resource, observed: Observed) -> str | None:
    for kind, child in (("Deployment", observed.deployment), ("Service", observed.service)):
        if child is not None and child.controller_uid != resource.uid:
            return (
                f"a {kind} named {resource.name} exists and is not controlled by this "
                f"ModelDeployment; it is left untouched"
            )
    return None


def _summarise(
    status: Status,
    resource: Resource,
    spec: Spec,
    observed: Observed,
    digest: str,
    quarantined: bool,
    stall: Stall | None,
    stamp: str,
) -> Status:
    """Counts, conditions and phase from the decided state."""
    deployment = observed.deployment
    ready = deployment.ready_replicas if deployment else 0
    status = replace(
        status,
        replicas=deployment.replicas if deployment else 0,
        ready_replicas=ready,
        updated_replicas=deployment.updated_replicas if deployment else 0,
        readiness=f"{ready}/{spec.replicas}",
    )
    rollout = status.rollout
    version = spec.active_version
    in_progress = rollout is not None and rollout.outcome == c.OUTCOME_PROGRESSING
    reverting = quarantined and stall is None
    if in_progress and rollout is not None:
        reconciling = (
            c.REASON_ROLLOUT_IN_PROGRESS,
            f"rolling out {rollout.version}: "
            f"{status.updated_replicas} updated, {ready}/{spec.replicas} ready",
        )
    elif reverting:
        reconciling = (
            c.REASON_QUARANTINED,
            f"{version} failed; reverting to {status.last_good_version}",
        )
    else:
        reconciling = (c.REASON_IDLE, "no rollout in progress")
    status = _set(status, resource, c.RECONCILING, in_progress or reverting, *reconciling, stamp)
    status = _set(
        status,
        resource,
        c.STALLED,
        stall is not None,
        stall.reason if stall else c.REASON_NOT_STALLED,
        stall.message if stall else "",
        stamp,
    )
    available = (
        not quarantined
        and rollout is not None
        and rollout.template_hash == digest
        and rollout.outcome == c.OUTCOME_SUCCEEDED
        and deployment is not None
        and deployment.available_replicas >= spec.replicas
    )
    if available:
        automatic = rollout is not None and rollout.trigger == c.TRIGGER_AUTOMATIC
        reverted = automatic and is_true(status.conditions, c.ROLLED_BACK)
        ready_reason = c.REASON_ROLLED_BACK if reverted else c.REASON_AVAILABLE
        ready_message = f"{version} serving, {ready}/{spec.replicas} ready"
    elif stall:
        ready_reason, ready_message = stall.reason, stall.message
    elif quarantined:
        ready_reason, ready_message = c.REASON_QUARANTINED, reconciling[1]
    elif in_progress:
        ready_reason, ready_message = c.REASON_ROLLOUT_IN_PROGRESS, reconciling[1]
    else:
        ready_reason, ready_message = (
            "ReplicasUnavailable",
            (f"{ready}/{spec.replicas} replicas ready"),
        )
    status = _set(status, resource, c.READY, available, ready_reason, ready_message, stamp)
    return _with_phase(status, resource, stamp)


def _with_phase(status: Status, resource: Resource, stamp: str) -> Status:
    """Every condition present (Unknown is never left implicit), then the derived phase."""
    if not any(k.type == c.ROLLED_BACK for k in status.conditions):
        status = _set(
            status,
            resource,
            c.ROLLED_BACK,
            False,
            c.REASON_NOT_ROLLED_BACK,
            "no automatic revert yet",
            stamp,
        )
    serving = status.serving_version is not None
    return replace(status, phase=derive_phase(status.conditions, serving))


def _stall_event(before: Status, after: Status, stall: Stall | None) -> list[Event]:
    """A Warning Event when the resource newly stalls or stalls for a new reason."""
    if stall is None:
        return []
    previous = next((k for k in before.conditions if k.type == c.STALLED), None)
    if previous and previous.status == "True" and previous.reason == stall.reason:
        return []
    return [Event("Warning", stall.reason, stall.message)]


def _blocked(
    resource: Resource, before: Status, status: Status, reason: str, message: str, stamp: str
) -> Decision:
    """Invalid spec or name conflict: report it, leave every child untouched."""
    stall = Stall(reason, message)
    status = _set(status, resource, c.RECONCILING, False, c.REASON_IDLE, "blocked", stamp)
    status = _set(status, resource, c.STALLED, True, reason, message, stamp)
    status = _set(status, resource, c.READY, False, reason, message, stamp)
    status = _with_phase(status, resource, stamp)
    return Decision(
        status=status,
        status_changed=to_json(status) != to_json(before),
        events=tuple(_stall_event(before, status, stall)),
    )
