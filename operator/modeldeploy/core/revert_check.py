"""Before a revert, the target's running pods answer the golden requests (spec.validation).

Part of the pure core, under `decide` and over the failure handling: when
`revert` decided a revert (RevertSpec's spec write, KeepSpec's Deployment
switch) to a version whose Ready pods still run, nothing is written until they
answered as expected; one that does not stalls the resource (RollbackTargetUnhealthy)
instead of reverting to it (docs/validation-and-config.md).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core.draft import Draft
from modeldeploy.core.plan import Event, Problem
from modeldeploy.core.render import template_hash
from modeldeploy.core.validation import examine, record_for, wake_in_s
from modeldeploy.model.observed import Observed
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import ValidationSpec
from modeldeploy.model.text import shorten


def before_revert(
    before: Draft, handled: Draft, resource: Resource, observed: Observed, now: datetime
) -> Draft:
    """Before spec.activeVersion is written back (RevertSpec) or the Deployment switched
    back (KeepSpec), the target's running Ready pods get the golden requests. Until they
    answered, nothing is written; one that fails stalls the resource
    (RollbackTargetUnhealthy) instead of reverting to it. No pods running: revert as
    usual, and the revert's rollout validates its new pods. `before` is the draft the
    revert was decided on, `handled` the one with it."""
    spec = before.spec
    target = _revert_target(handled)
    if spec.validation is None or target is None:
        return handled
    version = spec.versions[target]
    digest = template_hash(resource.name, spec, version)
    deployment = observed.deployment
    if deployment is not None and deployment.template_hash == digest:
        return handled  # switched already: its rollout validates it
    previous = before.status.validation
    record = record_for(previous, target, digest, None, resource.generation, now)
    found = examine(record, resource, spec.validation, spec.template.port, observed)
    if found.failure is None and not found.due:
        if found.ready and found.record != previous:
            handled = replace(handled, status=replace(handled.status, validation=found.record))
        return _without_spurious_quarantine_event(handled, before).validate((), found.gates)
    status = replace(before.status, validation=found.record)
    failed = spec.active_version
    if found.failure is not None:
        intent = status.intent
        if intent is not None and intent.from_version == failed:
            status = replace(status, intent=None)  # decided before its pods failed
        ledger = status.version_record(failed)
        why = f" ({ledger.reason})" if ledger is not None and ledger.reason else ""
        problem = Problem(
            c.REASON_TARGET_UNHEALTHY,
            shorten(
                f"{failed} failed{why}; not reverting to {target}, whose running pods failed "
                f"validation: {found.failure}"
            ),
        )
        return replace(before, status=status, stall=problem).validate((), found.gates)
    waited = (now - found.record.started_at).total_seconds()
    if waited >= deadline_s(spec.validation):
        # Unanswered that long: a failed version must not keep serving for want of an
        # answer from the last good one. Revert; its rollout validates its pods.
        said = Event(
            "Warning",
            c.EVENT_TARGET_UNCHECKED,
            shorten(
                f"reverting to {target} without its running pods' answers: "
                f"{found.record.message or 'none came'} within {deadline_s(spec.validation):g}s; "
                "the revert's rollout validates its pods"
            ),
        )
        reverting = _without_spurious_quarantine_event(handled, before)
        return reverting.said(said).validate((), found.gates)
    # Waiting for the target's answers: nothing written yet, not even the intent.
    left = deadline_s(spec.validation) - waited
    waiting = replace(before, status=status, stall=None).validate(found.requests, found.gates)
    return waiting.wake_in(min(wake_in_s(spec.validation), left + 0.05))


def deadline_s(spec: ValidationSpec) -> float:
    """How long a revert waits for its target's running pods to answer: every request's
    deadline, asked twice over, and slack."""
    return 2 * wake_in_s(spec)


def _revert_target(handled: Draft) -> str | None:
    if handled.fallback is not None:
        return handled.fallback
    change = handled.spec_change
    if change is not None and change.expect_version is not None:
        return change.set_version
    return None


def _without_spurious_quarantine_event(handled: Draft, before: Draft) -> Draft:
    """The revert went ahead a reconcile or more after the failure (its target's pods
    were validated first): that is no user re-selecting a quarantined version, so the
    Event that says so is not owed."""
    rollout = before.status.rollout
    if (
        rollout is not None
        and rollout.version == before.spec.active_version
        and rollout.outcome == c.OUTCOME_FAILED
    ):
        events = tuple(e for e in handled.events if e.reason != c.EVENT_QUARANTINED)
        return replace(handled, events=events)
    return handled
