"""Failure handling and quarantine (B6, B7, B9): a failed version is never rolled out again;
revert to the last good version when that is safe, else say why not (a stall).

Part of the pure core, above the ledger: it decides the revert and records it in
status (intent, loop-guard entry, RolledBack condition) before the handlers make
the conditional spec write the `SpecChange` describes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from modeldeploy import constants as c
from modeldeploy.core.ledger import set_status_condition
from modeldeploy.core.plan import Event, Problem, SpecChange
from modeldeploy.core.render import template_hash
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Intent, Revert, Status, VersionRecord
from modeldeploy.model.times import format_time


@dataclass(frozen=True)
class Outcome:
    """What handling a quarantined active version decided."""

    status: Status
    stall: Problem | None = None
    spec_change: SpecChange | None = None
    events: tuple[Event, ...] = ()


def is_quarantined(status: Status, version: str, digest: str) -> bool:
    """Recorded Failed with the content (template hash) it has now (B7)."""
    record = status.version_record(version)
    return bool(record and record.state == c.STATE_FAILED and record.template_hash == digest)


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


def recent_reverts(status: Status, now: datetime) -> tuple[Revert, ...]:
    """The loop guard's memory (B9): automatic reverts within its window."""
    window = timedelta(seconds=c.REVERT_LOOP_WINDOW_S)
    return tuple(r for r in status.reverts if now - r.at < window)


def handle_quarantined(
    status: Status, resource: Resource, spec: Spec, just_failed: bool, now: datetime
) -> Outcome:
    """The active version is recorded Failed: never roll it out; revert if we may."""
    version = spec.active_version
    record = status.version_record(version)
    assert record is not None
    stall = _no_revert(status, spec, version, record)
    if stall is not None:
        return Outcome(status, stall=stall)
    target, why_not = revert_target(status, spec, resource.name, version)
    if target is None:
        reason = (
            c.REASON_FIRST_VERSION_FAILED
            if status.last_good_version is None
            else c.REASON_NO_TARGET
        )
        return Outcome(
            status, stall=Problem(reason, f"{version} failed ({_why(record)}); {why_not}")
        )
    change = _revert_change(version, target, record)
    if _revert_recorded(status, resource, version):
        return Outcome(status, spec_change=change)  # recorded before a restart; finish the write
    loop = _revert_loop(status, version)
    if loop is not None:
        return Outcome(status, stall=loop)
    events = () if just_failed else (_quarantine_event(resource, version, record),)
    return Outcome(_record_revert(status, resource, record, target, now), None, change, events)


def _why(record: VersionRecord) -> str:
    return f"{record.reason}: {record.message}"


def _no_revert(status: Status, spec: Spec, version: str, record: VersionRecord) -> Problem | None:
    """Why no automatic revert may happen at all: it is off, or this was the revert."""
    if not spec.rollout.auto_rollback:
        return Problem(
            c.REASON_AUTO_ROLLBACK_DISABLED,
            f"{version} failed ({_why(record)}); autoRollback is off",
        )
    rollout = status.rollout
    if rollout and rollout.version == version and rollout.trigger == c.TRIGGER_AUTOMATIC:
        return Problem(
            c.REASON_TARGET_UNHEALTHY,
            f"revert target {version} failed too ({_why(record)}); no further automatic action",
        )
    return None


def _revert_recorded(status: Status, resource: Resource, version: str) -> bool:
    intent = status.intent
    return bool(
        intent
        and intent.trigger == c.TRIGGER_AUTOMATIC
        and intent.from_version == version
        and intent.generation == resource.generation
    )


def _revert_loop(status: Status, version: str) -> Problem | None:
    reverts_from_here = [r for r in status.reverts if r.from_version == version]
    if len(reverts_from_here) < c.REVERT_LOOP_LIMIT:
        return None
    return Problem(
        c.REASON_REVERT_LOOP,
        f"{version} was re-applied and reverted {len(reverts_from_here)} times within "
        f"{int(c.REVERT_LOOP_WINDOW_S // 60)} minutes; not reverting again",
    )


def _revert_change(version: str, target: str, record: VersionRecord) -> SpecChange:
    revert_event = Event(
        "Normal",
        c.EVENT_ROLLED_BACK,
        f"spec.activeVersion reverted from {version} to last good {target}: {record.reason}",
    )
    return SpecChange(set_version=target, expect_version=version, events=(revert_event,))


def _quarantine_event(resource: Resource, version: str, record: VersionRecord) -> Event:
    failed_at = format_time(record.failed_at) if record.failed_at else "an earlier rollout"
    return Event(
        "Warning",
        c.EVENT_QUARANTINED,
        f"{version} failed at {failed_at} ({record.reason}) and is quarantined; "
        f"not rolling it out. To retry it: kubectl annotate modeldeployment "
        f"{resource.name} {c.ANNOTATION_RETRY}={version} "
        f"(or: kubectl modeldeploy retry {resource.name} {version})",
    )


def _record_revert(
    status: Status, resource: Resource, record: VersionRecord, target: str, now: datetime
) -> Status:
    """Intent, loop-guard entry and RolledBack condition, written before the spec change."""
    version = record.name
    status = replace(
        status,
        intent=Intent(
            trigger=c.TRIGGER_AUTOMATIC,
            version=target,
            generation=resource.generation,
            from_version=version,
            at=now,
        ),
        reverts=(*status.reverts, Revert(from_version=version, to_version=target, at=now)),
    )
    return set_status_condition(
        status,
        resource,
        c.ROLLED_BACK,
        True,
        record.reason or c.REASON_ROLLED_BACK,
        f"reverted {version} -> {target} at {format_time(now)}: {record.message}",
        now,
    )
