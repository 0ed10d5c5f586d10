"""Retry (B7): the `modeldeploy.io/retry=<version>` annotation lifts a quarantine.

Part of the pure core: the operator consumes the annotation, marks the version
Retrying, records its intent (so the rollout's trigger reads Retry) and selects
the version if the spec does not already.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core.ledger import upsert_version
from modeldeploy.core.plan import Event, SpecChange
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import Intent, Status

CONSUME_ONLY = SpecChange(None, None, remove_retry=True)


@dataclass(frozen=True)
class Outcome:
    status: Status
    spec_change: SpecChange
    events: tuple[Event, ...] = ()


def handle_retry(status: Status, resource: Resource, spec: Spec, now: datetime) -> Outcome:
    """Consume the retry annotation: lift the quarantine and select that version, by a
    write that applies only to the spec the retry was decided on (a `test` of its
    generation): a spec written after the request stands, and the retry is skipped."""
    version = resource.retry_version or ""
    skipped = _overtaken(status, resource, spec, version, now)
    if skipped is not None:
        return skipped
    if version not in spec.versions:
        ignored = Event(
            "Warning",
            c.EVENT_RETRY,
            f"{c.ANNOTATION_RETRY}={version} names no entry of spec.versions; ignored",
        )
        return Outcome(status, CONSUME_ONLY, (ignored,))
    rollout = status.rollout
    if (
        rollout
        and rollout.version == version
        and rollout.trigger == c.TRIGGER_RETRY
        and rollout.outcome == c.OUTCOME_PROGRESSING
    ):
        return Outcome(status, CONSUME_ONLY)  # already retrying
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
    return Outcome(
        status, change, (Event("Normal", c.EVENT_RETRY, f"Retrying {version} on request"),)
    )


def _overtaken(
    status: Status, resource: Resource, spec: Spec, version: str, now: datetime
) -> Outcome | None:
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
    return Outcome(replace(status, intent=None), CONSUME_ONLY, (said,))
