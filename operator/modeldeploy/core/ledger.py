"""Status bookkeeping of rollouts (B3, B4, B6.1): start one, record success or failure.

Part of the pure core: each function takes a status and returns a new one with the
ledger (`versions`), the current rollout and its history entry updated together,
plus the Event that tells people about it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from modeldeploy import constants as c
from modeldeploy.core import capacity
from modeldeploy.core.conditions import set_condition
from modeldeploy.core.plan import Event, Problem
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Baseline, Revert, RolloutRecord, Status, VersionRecord
from modeldeploy.model.text import shorten
from modeldeploy.model.times import format_time


def set_status_condition(
    status: Status,
    resource: Resource,
    type_: str,
    value: bool,
    reason: str,
    message: str,
    now: datetime,
) -> Status:
    conditions = set_condition(
        status.conditions, type_, value, reason, message, now, resource.generation
    )
    return replace(status, conditions=conditions)


@dataclass(frozen=True)
class Target:
    """What the Deployment should run: a version, its template hash, and (when the
    operator chose it, not the spec) the trigger to record."""

    version: str
    digest: str
    trigger: str | None = None


def gated(status: Status, version: str, digest: str) -> bool:
    """Whether `version`'s pods of template `digest` carry the validated readiness gate."""
    record = status.version_record(version)
    return bool(record and record.template_hash == digest and record.gated)


def upsert_version(status: Status, record: VersionRecord) -> Status:
    """Put `record` in the ledger; a record of the same content keeps its gate."""
    before = status.version_record(record.name)
    if record.gated is None and before and before.template_hash == record.template_hash:
        record = replace(record, gated=before.gated)
    versions = [v for v in status.versions if v.name != record.name]
    versions.append(record)
    return replace(status, versions=tuple(sorted(versions, key=lambda v: v.name)))


def with_rollout(status: Status, rollout: RolloutRecord, history_limit: int) -> Status:
    """Set the current rollout and its history entry (matched by revision)."""
    history = [h for h in status.history if h.revision != rollout.revision]
    history.insert(0, rollout)
    history.sort(key=lambda h: h.revision, reverse=True)
    return replace(status, rollout=rollout, history=tuple(history[:history_limit]))


def strategy(status: Status, spec: Spec, digest: str) -> str:
    """How the Deployment of template `digest` makes room: as its rollout does (Auto
    may have switched it to Replace), else as a rollout of the spec would begin."""
    rollout = status.rollout
    if rollout is not None and rollout.template_hash == digest and rollout.strategy:
        return rollout.strategy
    return capacity.started_strategy(spec.rollout)


def trigger_of(status: Status, resource: Resource, version: str) -> str:
    """Manual, unless the spec names what the operator itself last wrote (revert, retry)."""
    intent = status.intent
    # Our own spec write bumps the generation by exactly one; anything later is a user's.
    if intent and intent.version == version and resource.generation <= intent.generation + 1:
        return intent.trigger
    return c.TRIGGER_MANUAL


def start_rollout(
    status: Status,
    resource: Resource,
    spec: Spec,
    target: Target,
    baseline: tuple[Baseline, ...],
    now: datetime,
) -> tuple[Status, Event]:
    """Record the rollout of `target` as begun, with the restart counts its pods had then."""
    version, digest = target.version, target.digest
    trigger = target.trigger or trigger_of(status, resource, version)
    revision = max((h.revision for h in status.history), default=0) + 1
    rollout = RolloutRecord(
        revision=revision,
        version=version,
        template_hash=digest,
        trigger=trigger,
        started_at=now,
        generation=resource.generation,
        # From the version the last rollout went to (a failed one, for a revert).
        from_version=status.rollout.version if status.rollout else status.serving_version,
        baseline=baseline,
        strategy=capacity.started_strategy(spec.rollout),
    )
    status = with_rollout(replace(status, intent=None), rollout, spec.rollout.history_limit)
    previous = status.version_record(version)
    same = previous is not None and previous.template_hash == digest
    status = upsert_version(
        status,
        VersionRecord(
            name=version,
            state=c.STATE_RETRYING if trigger == c.TRIGGER_RETRY else c.STATE_PROGRESSING,
            template_hash=digest,
            last_available_at=previous.last_available_at if previous else None,
            # As this content was rolled out before (a revert finds its ReplicaSet as it
            # was), else gated when validation is asked for now.
            gated=bool(previous.gated) if same and previous else spec.validation is not None,
        ),
    )
    if trigger != c.TRIGGER_AUTOMATIC:
        status = set_status_condition(
            status,
            resource,
            c.ROLLED_BACK,
            False,
            c.REASON_NOT_ROLLED_BACK,
            f"{trigger.lower()} rollout of {version} started",
            now,
        )
    source = f" from {rollout.from_version}" if rollout.from_version else ""
    return status, Event(
        "Normal",
        c.EVENT_ROLLOUT_STARTED,
        f"Rolling out {version}{source} (trigger {trigger}, revision {revision})",
    )


def record_revert(
    status: Status, resource: Resource, failed: str, target: str, now: datetime
) -> tuple[Status, Event]:
    """The revert took effect: loop-guard entry, RolledBack condition and Event."""
    record = status.version_record(failed)
    reason = (record.reason if record else None) or c.REASON_ROLLED_BACK
    detail = f": {record.message}" if record and record.message else ""
    revert = Revert(from_version=failed, to_version=target, at=now, generation=resource.generation)
    status = replace(status, reverts=(*status.reverts, revert))
    status = set_status_condition(
        status,
        resource,
        c.ROLLED_BACK,
        True,
        reason,
        shorten(f"reverted {failed} -> {target} at {format_time(now)}{detail}"),
        now,
    )
    return status, Event(
        "Normal",
        c.EVENT_ROLLED_BACK,
        f"spec.activeVersion reverted from {failed} to last good {target}: {reason}",
    )


def succeed(status: Status, spec: Spec, now: datetime) -> tuple[Status, Event]:
    rollout = status.rollout
    assert rollout is not None
    reason = c.REASON_ROLLED_BACK if rollout.trigger == c.TRIGGER_AUTOMATIC else c.REASON_SUCCEEDED
    finished = replace(
        rollout, outcome=c.OUTCOME_SUCCEEDED, reason=reason, finished_at=now, baseline=()
    )
    status = with_rollout(status, finished, spec.rollout.history_limit)
    status = upsert_version(
        status,
        VersionRecord(
            name=rollout.version,
            state=c.STATE_AVAILABLE,
            template_hash=rollout.template_hash,
            last_available_at=now,
        ),
    )
    status = replace(
        status,
        serving_version=rollout.version,
        last_good_version=rollout.version,
        last_good_template_hash=rollout.template_hash,
    )
    took = (now - rollout.started_at).total_seconds()
    return status, Event(
        "Normal",
        c.EVENT_ROLLOUT_SUCCEEDED,
        f"{rollout.version} is serving, {spec.replicas}/{spec.replicas} ready in {took:.1f}s",
    )


def fail(status: Status, spec: Spec, failure: Problem, now: datetime) -> tuple[Status, Event]:
    rollout = status.rollout
    assert rollout is not None
    failure = Problem(failure.reason, shorten(failure.message))
    finished = replace(
        rollout,
        outcome=c.OUTCOME_FAILED,
        reason=failure.reason,
        message=failure.message,
        finished_at=now,
        baseline=(),
    )
    status = with_rollout(status, finished, spec.rollout.history_limit)
    status = upsert_version(
        status,
        VersionRecord(
            name=rollout.version,
            state=c.STATE_FAILED,
            template_hash=rollout.template_hash,
            reason=failure.reason,
            message=failure.message,
            failed_at=now,
        ),
    )
    return status, Event(
        "Warning",
        c.EVENT_ROLLOUT_FAILED,
        f"{rollout.version} failed ({failure.reason}): {failure.message}",
    )


def fail_in_guard(
    status: Status, spec: Spec, failure: Problem, now: datetime
) -> tuple[Status, Event]:
    """A promoted version failed its guard: its rollout is Failed after all (stage Guard),
    it is quarantined, and the last good version is again the one before it."""
    record = status.analysis
    assert record is not None
    status, event = fail(status, spec, failure, now)
    assert status.rollout is not None
    guarded = replace(status.rollout, stage=c.STAGE_GUARD)
    status = replace(
        with_rollout(status, guarded, spec.rollout.history_limit),
        last_good_version=record.previous_good,
        last_good_template_hash=record.previous_good_hash,
    )
    said = f"{guarded.version} failed in its guard window after promotion"
    message = event.message.replace(f"{guarded.version} failed", said, 1)
    return status, replace(event, message=message)


def supersede(status: Status, spec: Spec, now: datetime) -> Status:
    """The rollout in progress was replaced by a spec naming another template."""
    rollout = status.rollout
    assert rollout is not None
    superseded = replace(
        rollout,
        outcome=c.OUTCOME_SUPERSEDED,
        finished_at=now,
        message=f"replaced by {spec.active_version} before it finished",
        baseline=(),
    )
    return with_rollout(status, superseded, spec.rollout.history_limit)


def bound(status: Status, spec: Spec) -> Status:
    """Keep status small whatever the spec's size (docs/status.md, "Size"): the ledger
    holds the versions still in spec plus the few removed most recently, and only the
    most recent failures and rollouts keep their reason and message (the rest keep
    what quarantine needs: state, template hash, time)."""
    listed = [v for v in status.versions if v.name in spec.versions]
    removed = sorted(
        (v for v in status.versions if v.name not in spec.versions), key=_last_seen, reverse=True
    )
    kept = listed + removed[:REMOVED_KEPT]
    failed = sorted((v for v in kept if v.message), key=_last_seen, reverse=True)
    quiet = {v.name for v in failed[MESSAGES_KEPT:]}
    versions = tuple(
        sorted(
            (replace(v, message=None, reason=None) if v.name in quiet else v for v in kept),
            key=lambda v: v.name,
        )
    )
    history = tuple(
        h if index < MESSAGES_KEPT or h.message is None else replace(h, message=None)
        for index, h in enumerate(status.history)
    )
    if versions == status.versions and history == status.history:
        return status
    return replace(status, versions=versions, history=history)


REMOVED_KEPT = 10  # ledger entries kept for versions no longer in spec
MESSAGES_KEPT = 20  # ledger and history entries that keep their message


def _last_seen(record: VersionRecord) -> datetime:
    times = [t for t in (record.failed_at, record.last_available_at) if t is not None]
    return max(times, default=datetime.min.replace(tzinfo=UTC))
