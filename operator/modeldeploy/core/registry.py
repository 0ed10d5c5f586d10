"""Registry resolution (docs/registry.md): a version may name an MLflow model version.

Part of the pure core, under `decide`, beside `config`: at a version's first rollout
the edge asks the registry what its reference (`versions[].registry`: a model and a
version number or an alias) names; `status.registry` records the model version, its
storage location (`source`, the pods' MODEL_URI) and run; the record is kept while the
version names that reference, so an alias moved later changes nothing until a person
asks (the refresh-registry annotation). This module says which references to resolve,
folds the answers into status, and says why a version waits: the spec names something
the registry does not have (Stalled, InvalidSpec, in the registry's own words), or the
registry did not answer (condition RegistryReady False; tried again with backoff).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core.conditions import get_condition
from modeldeploy.core.draft import Draft
from modeldeploy.core.ledger import set_status_condition
from modeldeploy.core.plan import Event, Problem, ResolveRequest
from modeldeploy.model.egress import Purpose
from modeldeploy.model.observed import Observed, RegistryResult
from modeldeploy.model.resource import Resource
from modeldeploy.model.settings import Settings
from modeldeploy.model.spec import Spec, with_resolutions
from modeldeploy.model.status import RegistryRecord, Status
from modeldeploy.model.text import shorten

MISSING_RETRY_S = 30.0  # what the registry does not have is asked for again this often


def step(
    draft: Draft, resource: Resource, observed: Observed, now: datetime, settings: Settings
) -> Draft:
    """Fold what the registry just answered into status and forget records of references
    the spec no longer names; the draft's spec then runs each version's model as resolved.
    The active version whose reference is not resolved yet is not rolled out (`waiting`):
    the registry was not asked yet, did not answer, or has no such model version (a stall
    in its own words)."""
    records, events = folded(draft.status.registry, observed.resolutions, now)
    records = kept(records, draft.spec)
    status = replace(draft.status, registry=records)
    spec = with_resolutions(draft.spec, status.resolutions())
    status = _condition(status, resource, spec, observed, now)
    _, consume, refresh_events = _refresh(resource, spec, observed)
    draft = replace(draft, status=status, spec=spec, consume_refresh_registry=consume)
    draft = draft.said(*events, *refresh_events)
    active = spec.active
    if active.registry is None or active.resolved is not None:
        return draft
    waiting = replace(draft, waiting=True)
    refused = _refused(spec, resource, settings)
    if refused is not None:
        said = f"spec.registry.mlflow.trackingURI: {refused}; not rolling it out"
        return replace(waiting, stall=draft.stall or Problem(c.REASON_INVALID_SPEC, shorten(said)))
    answer = next((r for r in observed.resolutions if r.version == active.name), None)
    if answer is None or not answer.error or answer.unreachable:
        return waiting
    said = (
        f"spec.versions[{active.name}].registry ({active.registry.named}): "
        f"{answer.error}; not rolling it out"
    )
    stall = draft.stall or Problem(c.REASON_INVALID_SPEC, shorten(said))
    return replace(waiting, stall=stall).wake_in(MISSING_RETRY_S)


def wanted(
    status: Status,
    resource: Resource,
    spec: Spec,
    observed: Observed,
    now: datetime,
    settings: Settings,
) -> tuple[ResolveRequest, ...]:
    """The references to resolve before deciding (core/reads.reads): the active
    version's while unresolved, and the one the refresh-registry annotation names."""
    records, _ = folded(status.registry, observed.resolutions, now)
    records = kept(records, spec)
    spec = with_resolutions(spec, replace(status, registry=records).resolutions())
    if spec.active.registry is None or _refused(spec, resource, settings) is not None:
        return ()
    refresh, _, _ = _refresh(resource, spec, observed)
    return _requests(spec, observed, refresh)


def _refused(spec: Spec, resource: Resource, settings: Settings) -> str | None:
    """Why the admin's allow-list refuses the registry the spec names, if it does."""
    assert spec.registry is not None  # parse_spec refuses a reference without a registry
    return settings.egress.why_not(spec.registry.tracking_uri, Purpose.REGISTRY, resource.namespace)


def folded(
    records: tuple[RegistryRecord, ...], answers: tuple[RegistryResult, ...], now: datetime
) -> tuple[tuple[RegistryRecord, ...], tuple[Event, ...]]:
    """Each answer with a model version becomes its version's record (one per version)."""
    out = {r.version: r for r in records}
    events: list[Event] = []
    for answer in answers:
        if answer.error or answer.model_version is None or answer.source is None:
            continue
        record = RegistryRecord(
            version=answer.version,
            model=answer.model,
            model_version=answer.model_version,
            source=answer.source,
            resolved_at=now,
            requested_version=answer.requested_version,
            alias=answer.alias,
            run_id=answer.run_id or None,
        )
        before = out.get(answer.version)
        if before is not None and replace(before, resolved_at=now) == record:
            continue  # resolved again to the same: nothing changes, not even the time
        out[answer.version] = record
        events.append(
            Event(
                "Normal",
                c.EVENT_REGISTRY_RESOLVED,
                shorten(
                    f"{answer.version}: {record.reference.named} is model version "
                    f"{record.model_version} of {record.model} at {record.source}",
                    1024,
                ),
            )
        )
    return tuple(sorted(out.values(), key=lambda r: r.version)), tuple(events)


def kept(records: tuple[RegistryRecord, ...], spec: Spec) -> tuple[RegistryRecord, ...]:
    """A record stays while its version is in the spec naming the same reference."""
    return tuple(
        r
        for r in records
        if r.version in spec.versions and spec.versions[r.version].registry == r.reference
    )


def _condition(
    status: Status,
    resource: Resource,
    spec: Spec,
    observed: Observed,
    now: datetime,
) -> Status:
    """RegistryReady, only with spec.registry: whether its last call (a resolution or
    an owed write) was answered."""
    if spec.registry is None:
        kept_conditions = tuple(k for k in status.conditions if k.type != c.REGISTRY_READY)
        return replace(status, conditions=kept_conditions)
    answers = observed.resolutions
    down = next((a.error for a in answers if a.unreachable), None) or observed.registry_down
    if down is not None:
        owed = len(status.registry_writes)
        waiting = f"; {owed} write(s) to it owed" if owed else ""
        message = shorten(f"the registry was not reached: {down}{waiting}; trying again")
        return set_status_condition(
            status, resource, c.REGISTRY_READY, False, c.REASON_REGISTRY_UNREACHABLE, message, now
        )
    current = get_condition(status.conditions, c.REGISTRY_READY)
    if not answers and not observed.registry_written and current and current.status == "True":
        return status  # no call now: the condition says how the last one went
    if not answers and not observed.registry_written and current is None:
        return status  # never called yet
    return set_status_condition(
        status,
        resource,
        c.REGISTRY_READY,
        True,
        c.REASON_REGISTRY_ANSWERED,
        "the registry answered",
        now,
    )


def _refresh(
    resource: Resource, spec: Spec, observed: Observed
) -> tuple[str | None, bool, tuple[Event, ...]]:
    """The version the refresh-registry annotation asks to resolve again, and whether
    the annotation is handled now (the answer is in, or it names nothing to resolve)."""
    asked = resource.refresh_registry
    if asked is None:
        return None, False, ()
    if asked not in spec.versions or spec.versions[asked].registry is None:
        ignored = Event(
            "Warning",
            c.EVENT_REGISTRY_REFRESH_FAILED,
            f"{c.ANNOTATION_REFRESH_REGISTRY}={asked} names no version with a registry "
            "reference; ignored",
        )
        return None, True, (ignored,)
    answer = next((r for r in observed.resolutions if r.version == asked), None)
    if answer is not None and answer.error and not answer.unreachable:
        failed = Event(
            "Warning",
            c.EVENT_REGISTRY_REFRESH_FAILED,
            shorten(f"{asked} not resolved again: {answer.error}", 1024),
        )
        return asked, True, (failed,)
    # Unreachable: the annotation stays, and is asked about again with the backoff.
    return asked, answer is not None and not answer.unreachable, ()


def _requests(spec: Spec, observed: Observed, refresh: str | None) -> tuple[ResolveRequest, ...]:
    """The active version's reference while unresolved, and a refreshed version's;
    never twice in one reconcile."""
    wanted = [spec.active_version]
    if refresh is not None and refresh != spec.active_version:
        wanted.append(refresh)
    requests = []
    for name in wanted:
        version = spec.versions[name]
        reference = version.registry
        if reference is None or (version.resolved is not None and name != refresh):
            continue
        if any(r.version == name for r in observed.resolutions):
            continue  # asked (or tried) in this very reconcile
        requests.append(
            ResolveRequest(
                version=name,
                model=reference.model,
                requested_version=reference.version,
                alias=reference.alias,
            )
        )
    return tuple(requests)
