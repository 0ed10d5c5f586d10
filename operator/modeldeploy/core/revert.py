"""The revert (B6, B7, B9): a failed version is quarantined, never rolled out again; the
spec goes back to the last good version when that is safe, else say why not (a stall).

Part of the pure core, above the ledger: it decides the revert and records it in
status as an intent before reconcile.py makes the conditional spec write the
`SpecChange` describes; a refused revert is retried with backoff (RevertDenied).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from modeldeploy import constants as c
from modeldeploy.core import ledger
from modeldeploy.core.draft import Draft
from modeldeploy.core.plan import Event, Problem, SpecChange
from modeldeploy.core.render import template_hash
from modeldeploy.model.observed import Refusal
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Intent, Revert, Status, VersionRecord
from modeldeploy.model.text import shorten
from modeldeploy.model.times import format_time


def is_quarantined(status: Status, version: str, digest: str) -> bool:
    """Recorded Failed with the content (template hash) it has now (B7)."""
    record = status.version_record(version)
    return bool(record and record.state == c.STATE_FAILED and record.template_hash == digest)


def revert_target(status: Status, spec: Spec, name: str, failed: str) -> str | Problem:
    """The last good version if it still is what was observed good (B6.5), else why not."""
    last_good = status.last_good_version
    if last_good is None:
        return Problem(c.REASON_FIRST_VERSION_FAILED, "no version was ever observed Available")
    # Its spec, the shared template, or (after an operator upgrade) our rendering changed:
    # the pods observed good cannot be recreated, though the ones still running serve on.
    changed = (
        f"last good version {last_good} now renders different pods than when it was observed "
        "good (its settings, spec.template or the operator's rendering changed)"
    )
    if last_good == failed:
        return Problem(c.REASON_NO_TARGET, changed)
    if last_good not in spec.versions:
        return Problem(
            c.REASON_NO_TARGET, f"last good version {last_good} was removed from spec.versions"
        )
    current = template_hash(name, spec, spec.versions[last_good])
    if current != status.last_good_template_hash:
        return Problem(c.REASON_NO_TARGET, changed)
    if is_quarantined(status, last_good, current):
        return Problem(c.REASON_TARGET_UNHEALTHY, f"last good version {last_good} failed too since")
    return last_good


def kept_reverts(status: Status) -> tuple[Revert, ...]:
    """The reverts status keeps, whatever the clock: each one away from a version that is
    still quarantined since it failed. They are the loop guard's count (B9), and the
    latest is the verdict on the release it reverted (B15), which stands until the spec
    is written again (a retry or new content lifts the quarantine only by writing it).
    Bounded: a version stops being reverted at the guard's limit."""
    return tuple(r for r in status.reverts if _since_its_failure(status, r))


def _since_its_failure(status: Status, revert: Revert) -> bool:
    record = status.version_record(revert.from_version)
    return bool(
        record
        and record.state == c.STATE_FAILED
        and record.failed_at is not None
        and revert.at >= record.failed_at
    )


def handle_quarantined(
    draft: Draft,
    resource: Resource,
    just_failed: bool,
    refusal: Refusal | None,
    now: datetime,
) -> Draft:
    """The active version is recorded Failed: never roll it out; revert if we may.

    The revert is recorded as an intent in status first; the RolledBack condition
    and Event come only when the spec is seen to name the target (ledger.start_rollout).
    The draft's stall says why not, when not; its spec change is the revert's write.
    """
    status, spec = draft.status, draft.spec
    version = spec.active_version
    record = status.version_record(version)
    assert record is not None
    stall = _no_revert(status, spec, version, record)
    if stall is not None:
        return replace(draft, stall=stall)
    target = revert_target(status, spec, resource.name, version)
    if isinstance(target, Problem):
        why = shorten(f"{version} failed ({_why(record)}); {target.message}")
        return replace(draft, stall=Problem(target.reason, why))
    if spec.rollout.keeps_spec:
        return replace(draft, stall=_kept(resource, version, target, record), fallback=target)
    change = SpecChange(
        set_version=target, expect_version=version, expect_generation=resource.generation
    )
    if _revert_recorded(status, resource, version):
        # Recorded before a restart or before a refusal: make (or retry) the write.
        if refusal is not None and not retry_due(refusal, now):
            return replace(draft, stall=_denied(refusal, version, target))
        return replace(draft, stall=None, spec_change=change)
    loop = _revert_loop(status, version)
    if loop is not None:
        return replace(draft, stall=loop)
    events = () if just_failed else (_quarantine_event(resource, version, record),)
    intent = Intent(
        trigger=c.TRIGGER_AUTOMATIC,
        version=target,
        generation=resource.generation,
        from_version=version,
        at=now,
    )
    reverting = replace(
        draft, status=replace(status, intent=intent), stall=None, spec_change=change
    )
    return reverting.said(*events)


def _kept(resource: Resource, version: str, target: str, record: VersionRecord) -> Problem:
    """KeepSpec: the last good version serves while the spec keeps naming the failed one."""
    return Problem(
        c.REASON_ROLLED_BACK,
        shorten(
            f"{version} failed ({record.reason}) and the Deployment is back on the last good "
            f"version {target}; the spec still names {version} (onFailure: KeepSpec): select "
            f"another version, or retry it: kubectl modeldeploy retry {resource.name} {version}"
        ),
    )


def reverted(status: Status, resource: Resource, spec: Spec) -> Problem | None:
    """RevertSpec: after an automatic revert the release that was reverted still shows as
    failed (Stalled), so kstatus-based tools (Helm 4 --wait, Flux, kpt) and Argo CD see
    it failed, not succeeded; until someone writes the spec again, or applies
    activeVersion with the reverted value (server-side apply: Helm's rollback, Flux,
    `kubectl apply --server-side`), which makes them a manager of the field again."""
    latest = status.reverts[-1] if status.reverts else None
    if spec.rollout.keeps_spec or latest is None or latest.generation != resource.generation:
        return None
    if set(resource.active_version_managers) - {c.MANAGER}:
        return None  # acknowledged: the writer of the spec now states the reverted value
    record = status.version_record(latest.from_version)
    why = f" ({record.reason}: {record.message})" if record and record.reason else ""
    return Problem(
        c.REASON_ROLLED_BACK,
        shorten(
            f"{latest.from_version} failed{why} and spec.activeVersion was reverted to "
            f"{latest.to_version} at {format_time(latest.at)}; this stays until the spec is "
            f"written again or {latest.to_version} is applied"
        ),
    )


REVERT_BACKOFF_S = (5, 10, 20, 40, 80, 160, 300)


def retry_due(refusal: Refusal, now: datetime) -> bool:
    """Whether a refused write may be tried again: backing off, up to 5 minutes apart."""
    return now >= refusal.at + timedelta(seconds=retry_delay_s(refusal))


def retry_delay_s(refusal: Refusal) -> int:
    return REVERT_BACKOFF_S[min(refusal.attempts, len(REVERT_BACKOFF_S)) - 1]


def retry_in(refusal: Refusal, now: datetime) -> float:
    """Seconds until a refused write is due again (at least a moment)."""
    return max(0.05, retry_delay_s(refusal) - (now - refusal.at).total_seconds() + 0.05)


def _denied(refusal: Refusal, version: str, target: str) -> Problem:
    return Problem(
        c.REASON_REVERT_DENIED,
        shorten(
            f"the revert {version} -> {target} was refused (HTTP {refusal.code}): "
            f"{refusal.message}; retrying in up to {retry_delay_s(refusal)}s"
        ),
    )


def _why(record: VersionRecord) -> str:
    return f"{record.reason}: {record.message}"


def _no_revert(status: Status, spec: Spec, version: str, record: VersionRecord) -> Problem | None:
    """Why no automatic revert may happen at all: it is off, or this was the revert."""
    if not spec.rollout.auto_rollback:
        return Problem(
            c.REASON_AUTO_ROLLBACK_DISABLED,
            shorten(f"{version} failed ({_why(record)}); autoRollback is off"),
        )
    rollout = status.rollout
    if rollout and rollout.version == version and rollout.trigger == c.TRIGGER_AUTOMATIC:
        return Problem(
            c.REASON_TARGET_UNHEALTHY,
            shorten(
                f"revert target {version} failed too ({_why(record)}); no further automatic action"
            ),
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
    """B9: a version reverted this often since it failed is being re-applied by someone
    (a GitOps tool, however slowly it self-heals); stop and say so."""
    reverts = [r for r in status.reverts if r.from_version == version]
    counted = [r for r in reverts if _since_its_failure(status, r)]
    if len(counted) < c.REVERT_LOOP_LIMIT:
        return None
    return Problem(
        c.REASON_REVERT_LOOP,
        f"{version} was re-applied and reverted {len(counted)} times since it failed; not "
        "reverting again (a GitOps tool applying it from Git? name another version there, or "
        f"retry it: kubectl modeldeploy retry NAME {version})",
    )


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


def settle_intent(draft: Draft, resource: Resource, now: datetime) -> Draft:
    """What became of an automatic revert the operator wrote.

    The spec names the target at a later generation: the revert happened; record it
    (loop guard, RolledBack, Event) once. The spec names something else: a user's
    edit came first; their choice stands, and the skipped revert is said once and
    never counted as one.
    """
    status, spec = draft.status, draft.spec
    intent = status.intent
    if (
        intent is None
        or intent.trigger != c.TRIGGER_AUTOMATIC
        or intent.applied
        or resource.generation <= intent.generation
    ):
        return draft
    if spec.active_version == intent.version:
        failed = intent.from_version or "?"
        status, reverted = ledger.record_revert(status, resource, failed, intent.version, now)
        applied = replace(intent, applied=True)
        return replace(draft, status=replace(status, intent=applied)).said(reverted)
    skipped = Event(
        "Normal",
        c.EVENT_REVERT_SKIPPED,
        f"the spec changed to {spec.active_version} before the revert of {intent.from_version} "
        f"to {intent.version}; the newer spec stands",
    )
    return replace(draft, status=replace(status, intent=None)).said(skipped)
