"""Retry (B7): the `modeldeploy.io/retry=<version>` annotation lifts a quarantine.

Part of the pure core: the operator consumes the annotation, marks the version
Retrying, records its intent (so the rollout's trigger reads Retry) and selects
the version if the spec does not already.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core.draft import Draft
from modeldeploy.core.ledger import upsert_version
from modeldeploy.core.plan import Event, SpecChange
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Intent, Status

CONSUME_ONLY = SpecChange(None, None, remove_retry=True)


def handle_retry(draft: Draft, resource: Resource, now: datetime) -> Draft:
    """Consume the retry annotation: lift the quarantine and select that version, by a
    write that applies only to the spec the retry was decided on (a `test` of its
    generation): a spec written after the request stands, and the retry is skipped."""
    status, spec = draft.status, draft.spec
    version = resource.retry_version or ""
    skipped = _overtaken(status, resource, spec, version)
    if skipped is not None:
        return replace(draft, status=skipped[0], spec_change=CONSUME_ONLY).said(skipped[1])
    if version not in spec.versions:
        ignored = Event(
            "Warning",
            c.EVENT_RETRY,
            f"{c.ANNOTATION_RETRY}={version} names no entry of spec.versions; ignored",
        )
        return replace(draft, spec_change=CONSUME_ONLY).said(ignored)
    rollout = status.rollout
    if (
        rollout
        and rollout.version == version
        and rollout.trigger == c.TRIGGER_RETRY
        and rollout.outcome == c.OUTCOME_PROGRESSING
    ):
        return replace(draft, spec_change=CONSUME_ONLY)  # already retrying
    record = status.version_record(version)
    if record and record.state == c.STATE_FAILED:
        status = upsert_version(status, replace(record, state=c.STATE_RETRYING))
    status = replace(
        status,
        intent=Intent(
            trigger=c.TRIGGER_RETRY,
            version=version,
            generation=resource.generation,
            from_version=spec.active_version,
            at=now,
        ),
    )
    change = SpecChange(
        set_version=version if version != spec.active_version else None,
        expect_version=None,
        expect_generation=resource.generation,
        remove_retry=True,
    )
    retrying = Event("Normal", c.EVENT_RETRY, f"Retrying {version} on request")
    return replace(draft, status=status, spec_change=change).said(retrying)


def _overtaken(
    status: Status, resource: Resource, spec: Spec, version: str
) -> tuple[Status, Event] | None:
    """The retry of `version` was decided on an older spec and its write did not apply:
    the spec changed after the request, so that newer spec stands. The annotation is
    consumed, the quarantine kept, and that is said."""
    intent = status.intent
    if (
        intent is None
        or intent.trigger != c.TRIGGER_RETRY
        or intent.version != version
        or intent.applied
        or resource.generation <= intent.generation
        or spec.active_version == version
    ):
        return None
    record = status.version_record(version)
    if record is not None and record.state == c.STATE_RETRYING:
        status = upsert_version(status, replace(record, state=c.STATE_FAILED))
    said = Event(
        "Normal",
        c.EVENT_RETRY_SKIPPED,
        f"the spec changed to {spec.active_version} after the retry of {version} was asked; "
        f"the newer spec stands (ask again to retry {version})",
    )
    return replace(status, intent=None), said
