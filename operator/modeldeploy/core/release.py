"""Did a release succeed? The judgement `kubectl modeldeploy wait` gives a pipeline.

Part of the pure core, beside `decide`: a release is the spec a user wrote (the
version it names, at its generation). It succeeded when that version serves with
every replica Ready; it failed when that version was recorded Failed (and maybe
reverted), the resource stalled, or a newer spec replaced it. A generation the
operator wrote itself (an automatic revert) stands for the user's release before it,
which failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from modeldeploy import constants as c
from modeldeploy.core.conditions import get_condition, is_true
from modeldeploy.core.render import template_hash
from modeldeploy.core.revert import is_quarantined
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import SpecError


@dataclass(frozen=True)
class Release:
    version: str
    generation: int


@dataclass(frozen=True)
class Judgement:
    succeeded: bool
    message: str


def release_of(resource: Resource) -> Release:
    """The release the spec stands for now: the user's, even if the operator reverted it
    (a revert seen in status, or one just written and not yet seen)."""
    status, generation = resource.status, resource.generation
    latest = status.reverts[-1] if status.reverts else None
    if latest is not None and latest.generation == generation:
        return Release(latest.from_version, generation - 1)
    intent = status.intent
    spec = resource.spec
    active = "" if isinstance(spec, SpecError) else spec.active_version
    if (
        intent is not None
        and intent.trigger == c.TRIGGER_AUTOMATIC
        and intent.generation + 1 == generation
        and intent.version == active
        and intent.from_version
    ):
        return Release(intent.from_version, intent.generation)
    return Release(active, generation)


def judge(resource: Resource, release: Release) -> Judgement | None:
    """The outcome of `release` as the resource shows it now; None while undecided."""
    status, spec, version = resource.status, resource.spec, release.version
    if status.observed_generation < release.generation:
        return None  # the operator has not looked at this spec yet
    if isinstance(spec, SpecError):
        return Judgement(False, f"the spec is invalid: {spec}")
    if version not in spec.versions:
        return Judgement(False, f"{version} is no longer in spec.versions")
    record = status.version_record(version)
    digest = template_hash(resource.name, spec, spec.versions[version])
    stalled = get_condition(status.conditions, c.STALLED)
    stall = (
        f"; stalled ({stalled.reason})" if stalled is not None and stalled.status == "True" else ""
    )
    if record is not None and is_quarantined(status, version, digest):
        reverted = (
            f" and spec.activeVersion was reverted to {spec.active_version}"
            if spec.active_version != version
            else ""
        )
        return Judgement(
            False, f"{version} failed ({record.reason}: {record.message}){reverted}{stall}"
        )
    if spec.active_version != version:
        return Judgement(False, f"a newer spec replaced it: it names {spec.active_version}")
    if stalled is not None and stall:
        return Judgement(False, f"stalled ({stalled.reason}): {stalled.message}")
    if is_true(status.conditions, c.READY) and status.serving_version == version:
        ready = get_condition(status.conditions, c.READY)
        return Judgement(True, f"{version} is serving: {ready.message if ready else ''}")
    return None
