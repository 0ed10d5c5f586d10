"""`decide`: everything the operator should do about one ModelDeployment, now.

The top of the pure core and its one entry: (resource, observed children, now) ->
`Decision`. Handlers write what it returns in a fixed order: status first (with the
Events it owes in its outbox), then the Deployment and Service, then any spec
change, then the owed Events and webhooks (docs/behaviour.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core import (
    analysis,
    config,
    egress_check,
    ledger,
    outbox,
    registry,
    retry,
    revert,
    revert_check,
    standby,
    summary,
    traffic,
    validation,
    writeback,
)
from modeldeploy.core.ledger import Target
from modeldeploy.core.plan import (
    Decision,
    Event,
    PodGate,
    Problem,
    ResolveRequest,
    SnapshotRequest,
    SpecChange,
    ValidationRequest,
)
from modeldeploy.core.progress import Step, progress, superseded
from modeldeploy.core.render import (
    covers,
    render_deployment,
    render_disruption_budget,
    render_service,
    render_standby,
    template_hash,
)
from modeldeploy.model.observed import ChildState, Observed, Refusal, RefusalKey
from modeldeploy.model.resource import Resource
from modeldeploy.model.settings import Settings
from modeldeploy.model.spec import JSON, Spec, SpecError, with_replicas
from modeldeploy.model.status import Status, to_json
from modeldeploy.model.text import shorten

APPLY = {
    "Deployment": RefusalKey.APPLY_DEPLOYMENT,
    "Service": RefusalKey.APPLY_SERVICE,
    "Standby": RefusalKey.APPLY_STANDBY,
    "PodDisruptionBudget": RefusalKey.APPLY_BUDGET,
}
DEFAULTS = Settings()


@dataclass(frozen=True)
class Draft:
    """The decision as it takes shape, one rule after the other."""

    status: Status
    events: tuple[Event, ...] = ()
    spec_change: SpecChange | None = None
    stall: Problem | None = None
    requeue: float | None = None
    queries: tuple[analysis.Query, ...] = ()
    target: Target | None = None  # what the Deployment should run; None: leave it alone
    quarantined: bool = False  # the version the spec names is quarantined
    standby: standby.Plan | None = None
    validations: tuple[ValidationRequest, ...] = ()  # golden requests due (spec.validation)
    gates: tuple[PodGate, ...] = ()  # pods whose readiness gate to set

    def then(self, outcome: Step | revert.Outcome | retry.Outcome) -> Draft:
        return replace(self, status=outcome.status, events=self.events + outcome.events)


@dataclass(frozen=True)
class Reads:
    """What the edge reads before `decide`, asked for once."""

    snapshots: tuple[SnapshotRequest, ...] = ()  # to take before a version's rollout
    children: tuple[str, ...] = ()  # kinds (APPLY's keys) of our name the caches lack
    resolutions: tuple[ResolveRequest, ...] = ()  # registry references, before a rollout


def reads(
    resource: Resource, observed: Observed, now: datetime, settings: Settings = DEFAULTS
) -> Reads:
    """The configuration snapshots and registry model versions a version needs before its
    rollout, and each child this spec has that the label-filtered caches do not show: one
    of that name may exist, made by someone else, and is looked at first so it is never
    taken over (B1)."""
    spec = resource.spec
    if isinstance(spec, SpecError) or _name_conflict(resource, observed):
        return Reads()
    configs = config.step(resource.status, resource, spec, observed, now)
    children = (
        ("Deployment", True, observed.deployment),
        ("Service", spec.service.enabled, observed.service),
        ("Standby", spec.rollout.standby is not None, observed.standby),
        ("PodDisruptionBudget", spec.disruption is not None, observed.budget),
    )
    missing = tuple(kind for kind, has, seen in children if has and seen is None)
    registered = registry.step(resource.status, resource, spec, observed, now, settings)
    return Reads(configs.requests, missing, registered.requests)


def decide(
    resource: Resource, observed: Observed, now: datetime, settings: Settings = DEFAULTS
) -> Decision:
    """Everything the operator should do about one ModelDeployment, now."""
    before = resource.status
    status = replace(
        outbox.prune(writeback.prune(before, observed.registry_written), observed.delivered),
        observed_generation=resource.generation,
        reverts=revert.kept_reverts(before),
    )
    status, given_up = outbox.expire(status, observed.undelivered, now)
    spec = resource.spec
    if isinstance(spec, SpecError):
        problem = Problem(c.REASON_INVALID_SPEC, shorten(str(spec)))
        return _blocked(resource, before, status, problem, given_up, now)
    conflict = _name_conflict(resource, observed)
    if conflict:
        problem = Problem(c.REASON_NAME_CONFLICT, conflict)
        return _blocked(resource, before, status, problem, given_up, now)
    # An autoscaler's count is the one to judge against (B24).
    asked = observed.deployment.spec.get("replicas") if observed.deployment else None
    spec = with_replicas(spec, asked if isinstance(asked, int) else None)

    # Configuration snapshots (core/config.py): each version as its pods run it.
    configs = config.step(status, resource, spec, observed, now)
    status, spec = configs.status, configs.spec
    # Registry references (core/registry.py): each version's model as resolved.
    registered = registry.step(status, resource, spec, observed, now, settings)
    status, spec = registered.status, registered.spec
    draft = _requests(
        Draft(status, events=given_up + configs.events + registered.events), resource, spec, now
    )
    if configs.waiting or registered.waiting:  # no rollout before its config and model
        draft = replace(
            draft,
            stall=configs.stall or registered.stall,
            requeue=_sooner(configs.requeue, registered.requeue),
        )
    else:
        draft = _rollout(draft, resource, spec, observed, now)
        # Gated pods of the serving version that came after its rollout.
        kept_gates = validation.keep_gates(draft.status, resource, spec, observed)
        # Golden requests added or changed since it was rolled out: check what serves.
        serving_check = validation.check_serving(draft.status, resource, spec, observed, now)
        requests = draft.validations + kept_gates.requests + serving_check.requests
        draft = replace(
            draft,
            status=serving_check.status,
            validations=tuple({(r.pod, r.template_hash): r for r in requests}.values()),
            gates=draft.gates + kept_gates.gates,
            events=draft.events + kept_gates.events + serving_check.events,
            requeue=_sooner(draft.requeue, serving_check.wake_in_s),
        )
    refused = _refusal(observed, resource, RefusalKey.WEBHOOK)
    checked = egress_check.check(
        draft.status, resource, spec, refused, observed.undelivered, settings, now
    )
    draft = replace(
        draft,
        status=checked.status,
        stall=draft.stall or checked.analysis_refused,
        queries=() if checked.analysis_refused else draft.queries,
        events=draft.events + checked.events,
    )
    kept = standby.plan(draft.status, resource, spec, observed.standby, now)
    draft = replace(
        draft, status=kept.status, standby=kept, requeue=_sooner(draft.requeue, kept.wake_in_s)
    )
    record = kept.status.standby
    only = (
        None if record and record.serving else traffic.only_last_good(draft.status, spec, observed)
    )
    children, draft = _children(draft, resource, spec, observed, only, now)
    # SERVING says what answers: the standby during its switch, the last good version
    # while a failed one is kept out of the Service.
    if record and record.serving:
        draft = replace(draft, status=replace(draft.status, serving_version=record.version))
    elif only is not None:
        serving = draft.status.last_good_version
        draft = replace(draft, status=replace(draft.status, serving_version=serving))
    digest = template_hash(resource.name, spec, spec.active)
    after_revert = revert.reverted(draft.status, resource, spec)
    stall = draft.stall or after_revert
    status = summary.summarise(
        draft.status, resource, spec, observed, digest, draft.quarantined, stall, now
    )
    events = draft.events + summary.stall_event(before, stall)
    status, overflowed = outbox.add(status, events, now)
    status = ledger.bound(status, spec)
    status = writeback.owe(before, status, spec, now)  # the registry's model versions
    spec_change = draft.spec_change
    if spec_change is None and (configs.consume_refresh or registered.consume_refresh):
        spec_change = SpecChange(
            None,
            None,
            remove_refresh=configs.consume_refresh,
            remove_refresh_registry=registered.consume_refresh,
        )
    written, read = to_json(status), to_json(before)
    return Decision(
        status=status,
        status_changed=written != read,
        status_may_wait=summary.only_progress(read, written),
        deployment=_if_needed(children["Deployment"], observed.deployment),
        service=_if_needed(children["Service"], observed.service),
        standby=_if_needed(children["Standby"], observed.standby),
        remove_standby=kept.remove and observed.standby is not None,
        budget=_if_needed(children["PodDisruptionBudget"], observed.budget),
        remove_budget=spec.disruption is None
        and observed.budget is not None
        and observed.budget.controller_uid == resource.uid,
        spec_change=spec_change,
        requeue_after=_sooner(
            draft.requeue,
            0.05 if configs.consume_refresh or registered.consume_refresh else None,
        ),
        queries=draft.queries,
        validations=draft.validations,
        gates=draft.gates,
        deletes=configs.deletes,
        events=events,
        dropped_notices=overflowed + len(given_up),
        release_active_version=(
            c.MANAGER in resource.active_version_managers
            and after_revert is None
            and draft.spec_change is None
            and status.intent is None
        ),
    )


def _requests(draft: Draft, resource: Resource, spec: Spec, now: datetime) -> Draft:
    """What happened to the operator's own spec writes, and a user's retry request."""
    draft = draft.then(revert.settle_intent(draft.status, resource, spec, now))
    if resource.retry_version is None:
        return draft
    retried = retry.handle_retry(draft.status, resource, spec, now)
    return replace(draft.then(retried), spec_change=retried.spec_change)


def _rollout(
    draft: Draft, resource: Resource, spec: Spec, observed: Observed, now: datetime
) -> Draft:
    """Roll out what the spec names, or, when it is quarantined, revert or fall back."""
    active = Target(spec.active_version, template_hash(resource.name, spec, spec.active))
    status = draft.status
    just_failed = False
    if not revert.is_quarantined(status, active.version, active.digest):
        step = progress(status, resource, spec, active, observed, now)
        draft = _stepped(draft.then(step), step, active)
        if not step.failed:
            return draft
        just_failed = True
    draft = replace(draft, quarantined=True, target=None)
    if draft.spec_change is not None:
        return draft  # a retry is being written; it decides the next rollout
    refused = _refusal(observed, resource, RefusalKey.REVERT)
    handled = revert.handle_quarantined(draft.status, resource, spec, just_failed, refused, now)
    # spec.validation: a revert target's running pods answer the golden requests first.
    checked = revert_check.before_revert(draft.status, handled, resource, spec, observed, now)
    handled = checked.outcome
    draft = replace(
        draft.then(handled),
        stall=handled.stall,
        spec_change=handled.spec_change,
        validations=draft.validations + checked.requests,
        gates=draft.gates + checked.gates,
        requeue=_sooner(draft.requeue, checked.requeue),
    )
    if refused and handled.stall:
        draft = replace(draft, requeue=_sooner(draft.requeue, _retry_in(refused, now)))
    if handled.fallback is None:
        return replace(draft, status=superseded(draft.status, spec, None, now))
    # KeepSpec: the Deployment goes back to the last good version; the spec stays.
    version = spec.versions[handled.fallback]
    fallback = Target(
        version.name, template_hash(resource.name, spec, version), c.TRIGGER_AUTOMATIC
    )
    step = progress(draft.status, resource, spec, fallback, observed, now)
    draft = replace(_stepped(draft.then(step), step, fallback), stall=handled.stall)
    rollout = draft.status.rollout
    if rollout is not None and rollout.started_at == now and rollout.version == version.name:
        reverted, said = ledger.record_revert(
            draft.status, resource, spec.active_version, version.name, now
        )
        draft = replace(draft, status=reverted, events=(*draft.events, said))
    return draft


def _stepped(draft: Draft, step: Step, target: Target) -> Draft:
    return replace(
        draft,
        stall=step.stall,
        requeue=_sooner(draft.requeue, step.requeue),
        queries=step.queries,
        target=None if step.failed or step.hold else target,
        validations=draft.validations + step.validations,
        gates=draft.gates + step.gates,
    )


def _children(
    draft: Draft,
    resource: Resource,
    spec: Spec,
    observed: Observed,
    only: str | None,
    now: datetime,
) -> tuple[dict[str, JSON | None], Draft]:
    """The Deployment (for the target) and Service to apply, unless the API refused
    them for this spec and it is not yet time to try again (InvalidSpec). `only`: the
    Service selects that template's pods alone (a failed version's are left out)."""
    target = draft.target
    deployment = (
        render_deployment(
            resource,
            spec,
            spec.versions[target.version],
            target.digest,
            gated=ledger.gated(draft.status, target.version, target.digest),
            strategy=ledger.strategy(draft.status, spec, target.digest),
        )
        if target is not None
        else None
    )
    kept = draft.standby
    record = kept.status.standby if kept else None
    serving_standby = record is not None and record.serving
    service = (
        render_service(resource, spec, serving_standby, only) if spec.service.enabled else None
    )
    warm = None
    foreign = observed.standby is not None and observed.standby.controller_uid != resource.uid
    if (
        kept is not None
        and kept.keep
        and record is not None
        # as it was observed good: a version edited since is not re-rendered under it
        and standby.renders_as_observed(record, spec, resource.name)
        and not foreign  # a <name>-standby someone else made is never taken over
    ):
        config = spec.rollout.standby
        replicas = (config.replicas if config and config.replicas else None) or spec.replicas
        version = spec.versions[record.version]
        warm = render_standby(resource, spec, version, record.template_hash, replicas)
    children: dict[str, JSON | None] = {
        "Deployment": deployment,
        "Service": service,
        "Standby": warm,
        "PodDisruptionBudget": render_disruption_budget(resource, spec),
    }
    for kind, manifest in children.items():
        refused = _refusal(observed, resource, APPLY[kind])
        if manifest is None or refused is None:
            continue
        said = f"the API server refused the {kind} (HTTP {refused.code}): {refused.message}"
        draft = replace(draft, stall=draft.stall or Problem(c.REASON_INVALID_SPEC, shorten(said)))
        if not revert.retry_due(refused, now):
            children[kind] = None
            draft = replace(draft, requeue=_sooner(draft.requeue, _retry_in(refused, now)))
    return children, draft


def _refusal(observed: Observed, resource: Resource, action: RefusalKey) -> Refusal | None:
    """The API's latest refusal of `action` for this very spec (a new spec tries afresh)."""
    return next(
        (
            r
            for r in observed.refusals
            if r.action == action and r.generation == resource.generation
        ),
        None,
    )


def _retry_in(refusal: Refusal, now: datetime) -> float:
    return max(
        0.05,
        revert.retry_delay_s(refusal) - (now - refusal.at).total_seconds() + 0.05,
    )


def _sooner(first: float | None, second: float | None) -> float | None:
    return min((s for s in (first, second) if s is not None), default=None)


def _if_needed(desired: JSON | None, observed: ChildState | None) -> JSON | None:
    if desired is None:
        return None
    if observed is None:
        return desired
    wanted_hash = desired["metadata"].get("annotations", {}).get(c.ANNOTATION_TEMPLATE_HASH)
    if observed.template_hash != wanted_hash or not covers(observed.spec, desired["spec"]):
        return desired
    # A selector is ours whole: a key we no longer set must go (covers() ignores extras).
    selector = desired["spec"].get("selector")
    if desired["kind"] == "Service" and observed.spec.get("selector") != selector:
        return desired
    return None


def _name_conflict(resource: Resource, observed: Observed) -> str | None:
    named = (
        ("Deployment", observed.deployment),
        ("Service", observed.service),
        ("PodDisruptionBudget", observed.budget),
    )
    for kind, child in named:
        if child is not None and child.controller_uid != resource.uid:
            return (
                f"a {kind} named {resource.name} exists and is not controlled by this "
                f"ModelDeployment; it is left untouched"
            )
    return None


def _blocked(
    resource: Resource,
    before: Status,
    status: Status,
    stall: Problem,
    given_up: tuple[Event, ...],
    now: datetime,
) -> Decision:
    """Invalid spec or name conflict: report it, leave every child untouched."""
    status = summary.blocked(resource, status, stall, now)
    events = given_up + summary.stall_event(before, stall)
    status, overflowed = outbox.add(status, events, now)
    return Decision(
        status=status,
        status_changed=to_json(status) != to_json(before),
        events=events,
        dropped_notices=overflowed + len(given_up),
    )
