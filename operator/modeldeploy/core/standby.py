"""The standby (spec.rollout.standby): the previous good version kept warm after a new one
is promoted, so a late revert is a Service switch, not a model reload (docs/standby.md).

Part of the pure core. The standby is a second Deployment, `<name>-standby`, whose pods
carry `modeldeploy.io/standby-of` instead of the name label, so the main Deployment's
selector and the Service never pick them up by accident. It is always the last good
version exactly as it was observed good (its template hash): its life, all in
`status.standby`: created, or moved to the new last good version, when a user's rollout
begins (so its pods load while the new version rolls out), given `seconds` once the new
version is promoted, serving when a revert to the same template comes inside the window,
or when the new version fails before its promotion (in its bake, its pods may already
have taken every old pod's place) and the standby is warm (the Service switches to it at
once while the main Deployment rolls back), removed when the main Deployment serves
that template again, when the window ends, or when the new version fails before
promotion with the standby not warm. A version edited in place since renders other
pods: the standby is left as it was, never re-rendered.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from modeldeploy import constants as c
from modeldeploy.core.draft import Draft
from modeldeploy.core.render import template_hash
from modeldeploy.model.observed import ChildState
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import RolloutRecord, StandbyRecord, Status


def plan(draft: Draft, resource: Resource, standby: ChildState | None, now: datetime) -> Draft:
    """The warm standby's record, whether its Deployment should exist (keep_standby) or
    go (remove_standby), and when its window ends."""
    status, spec = draft.status, draft.spec
    record, rollout = status.standby, status.rollout

    def gone(remove: bool) -> Draft:
        return replace(draft, status=replace(status, standby=None), remove_standby=remove)

    config = spec.rollout.standby
    if config is None or rollout is None:
        return gone(record is not None or standby is not None)
    wanted = _begin(status, resource, spec, rollout)
    returning = record is not None and rollout.template_hash == record.template_hash
    if wanted is not None and (record is None or (_moved_on(record, wanted) and not returning)):
        # A user's rollout of another template began: the last good version is the standby.
        record = wanted
    if record is None:
        return replace(draft, remove_standby=standby is not None)
    back = rollout.template_hash == record.template_hash
    promoted = not back and rollout.outcome == c.OUTCOME_SUCCEEDED
    if record.ends_at is None and promoted:
        record = replace(record, ends_at=now + timedelta(seconds=config.seconds))
    if record.ends_at is None and rollout.outcome == c.OUTCOME_FAILED and not _ready(standby):
        # Failed before promotion, and nothing warm to switch to: the revert brings the
        # old pods back (most never left).
        return gone(True)
    if record.serving and back and rollout.outcome == c.OUTCOME_SUCCEEDED:
        return gone(True)  # the main serves it again
    # A revert to it inside the window, or any automatic one (a version that failed
    # before promotion, in its bake, may have taken every old pod's place): switch; at
    # the verdict itself when the revert will come to it, before the revert is written.
    reverting = rollout.trigger == c.TRIGGER_AUTOMATIC and rollout.outcome == c.OUTCOME_PROGRESSING
    verdict = (
        rollout.outcome == c.OUTCOME_FAILED
        and spec.rollout.auto_rollback
        and record.template_hash == status.last_good_template_hash
        and not back
    )
    if (
        not record.serving
        and ((back and (record.ends_at is not None or reverting)) or verdict)
        and _ready(standby)
    ):
        record = replace(record, serving=True)
    if not record.serving and record.ends_at is not None and now >= record.ends_at:
        return gone(True)  # the window is over
    kept = replace(draft, status=replace(status, standby=record), keep_standby=True)
    if record.ends_at is not None and not record.serving:
        return kept.wake_in((record.ends_at - now).total_seconds() + 0.05)
    return kept


def _begin(
    status: Status, resource: Resource, spec: Spec, rollout: RolloutRecord
) -> StandbyRecord | None:
    """A user's rollout begins: keep the last good version, as it was observed good."""
    last_good = status.last_good_version
    if (
        rollout.outcome != c.OUTCOME_PROGRESSING
        or rollout.trigger == c.TRIGGER_AUTOMATIC
        or last_good is None
        or last_good == rollout.version
        or last_good not in spec.versions
    ):
        return None
    digest = template_hash(resource.name, spec, spec.versions[last_good])
    if digest != status.last_good_template_hash:
        return None
    return StandbyRecord(version=last_good, template_hash=digest)


def _moved_on(record: StandbyRecord, wanted: StandbyRecord) -> bool:
    """The last good version is another template than the one kept warm, and the standby
    is not serving a revert: keep the new one instead (its window starts again)."""
    return not record.serving and (record.version, record.template_hash) != (
        wanted.version,
        wanted.template_hash,
    )


def renders_as_observed(record: StandbyRecord, spec: Spec, name: str) -> bool:
    """Whether the spec still renders the standby's version as it was observed good."""
    version = spec.versions.get(record.version)
    return version is not None and template_hash(name, spec, version) == record.template_hash


def _ready(standby: ChildState | None) -> bool:
    """Every standby pod Ready: switching to it costs no capacity it has."""
    return (
        standby is not None
        and standby.observed_generation >= standby.generation
        and standby.replicas > 0
        and standby.ready_replicas >= standby.replicas
    )
