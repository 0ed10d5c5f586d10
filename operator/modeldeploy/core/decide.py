"""`decide`: everything the operator should do about one ModelDeployment, now.

The top of the pure core and its one entry: (resource, observed children, now) ->
`Decision`. `decide` reads as the ordered list of rules: each takes the draft of the
decision (core/draft.py) and returns it with its part done. reconcile.py writes what
it returns in a fixed order: status first (with the Events it owes in its outbox),
then the children, then any spec change, then the owed Events and webhooks
(docs/behaviour.md). What it needs read first, `reads` says once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core import (
    children,
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
from modeldeploy.core.draft import Draft, sooner
from modeldeploy.core.ledger import Target
from modeldeploy.core.plan import (
    Decision,
    Event,
    Problem,
    SpecChange,
)
from modeldeploy.core.progress import progress, superseded
from modeldeploy.core.render import (
    template_hash,
)
from modeldeploy.model.observed import Observed, RefusalKey
from modeldeploy.model.resource import Resource
from modeldeploy.model.settings import Settings
from modeldeploy.model.spec import JSON, SpecError, with_replicas
from modeldeploy.model.status import Status, to_json
from modeldeploy.model.text import shorten

DEFAULTS = Settings()


def decide(
    resource: Resource, observed: Observed, now: datetime, settings: Settings = DEFAULTS
) -> Decision:
    """Everything the operator should do about one ModelDeployment, now: the rules, in
    the order the behaviour rules require, each taking and returning the draft."""
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
    conflict = children.foreign(resource, observed)
    if conflict:
        problem = Problem(c.REASON_NAME_CONFLICT, conflict)
        return _blocked(resource, before, status, problem, given_up, now)
    # An autoscaler's count is the one to judge against (B24).
    asked = observed.deployment.spec.get("replicas") if observed.deployment else None
    draft = Draft(status, with_replicas(spec, asked if isinstance(asked, int) else None))
    draft = config.step(draft.said(*given_up), resource, observed, now)  # snapshots (B20)
    draft = registry.step(draft, resource, observed, now, settings)  # model versions
    draft = revert.settle_intent(draft, resource, now)  # what became of our spec write
    if resource.retry_version is not None:
        draft = retry.handle_retry(draft, resource, now)  # B7
    if not draft.waiting:  # no rollout before its snapshot and its model are in
        draft = _rollout(draft, resource, observed, now)
        draft = validation.keep_gates(draft, resource, observed)  # pods that came later
        draft = validation.check_serving(draft, resource, observed, now)  # new requests
    refused = observed.refusal(RefusalKey.WEBHOOK, resource.generation)
    draft = egress_check.check(draft, resource, refused, observed.undelivered, settings, now)
    draft = standby.plan(draft, resource, observed.standby, now)  # B17
    draft = traffic.route(draft, observed)  # B22
    rendered, draft = children.render(draft, resource, observed, now)
    return _decision(draft, resource, observed, rendered, len(given_up), now)


def _rollout(draft: Draft, resource: Resource, observed: Observed, now: datetime) -> Draft:
    """Roll out what the spec names, or, when it is quarantined, revert or fall back."""
    spec = draft.spec
    active = Target(spec.active_version, template_hash(resource.name, spec, spec.active))
    just_failed = False
    if not revert.is_quarantined(draft.status, active.version, active.digest):
        draft = progress(draft, resource, active, observed, now)
        if not revert.is_quarantined(draft.status, active.version, active.digest):
            return draft
        just_failed = True
    draft = replace(draft, quarantined=True, target=None)
    if draft.spec_change is not None:
        return draft  # a retry is being written; it decides the next rollout
    refused = observed.refusal(RefusalKey.REVERT, resource.generation)
    handled = revert.handle_quarantined(draft, resource, just_failed, refused, now)
    # spec.validation: a revert target's running pods answer the golden requests first.
    draft = revert_check.before_revert(draft, handled, resource, observed, now)
    if refused and draft.stall:
        draft = draft.wake_in(revert.retry_in(refused, now))
    if draft.fallback is None:
        return replace(draft, status=superseded(draft.status, spec, None, now))
    # KeepSpec: the Deployment goes back to the last good version; the spec stays.
    version = spec.versions[draft.fallback]
    fallback = Target(
        version.name, template_hash(resource.name, spec, version), c.TRIGGER_AUTOMATIC
    )
    stall = draft.stall
    draft = replace(progress(draft, resource, fallback, observed, now), stall=stall)
    rollout = draft.status.rollout
    if rollout is not None and rollout.started_at == now and rollout.version == version.name:
        reverted, said = ledger.record_revert(
            draft.status, resource, spec.active_version, version.name, now
        )
        draft = replace(draft, status=reverted).said(said)
    return draft


def _decision(
    draft: Draft,
    resource: Resource,
    observed: Observed,
    rendered: dict[str, JSON | None],
    given_up: int,
    now: datetime,
) -> Decision:
    """The last draft as the edge carries it out: conditions and phase summed up, the
    Events owed in the outbox, the children only where they differ from what runs."""
    before, spec = resource.status, draft.spec
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
    consumed = draft.consume_refresh or draft.consume_refresh_registry
    if spec_change is None and consumed:
        spec_change = SpecChange(
            None,
            None,
            remove_refresh=draft.consume_refresh,
            remove_refresh_registry=draft.consume_refresh_registry,
        )
    written, read = to_json(status), to_json(before)
    unique = {(r.pod, r.template_hash): r for r in draft.validations}
    return Decision(
        status=status,
        status_changed=written != read,
        status_may_wait=summary.only_progress(read, written),
        deployment=children.needed(rendered["Deployment"], observed.deployment),
        service=children.needed(rendered["Service"], observed.service),
        standby=children.needed(rendered["Standby"], observed.standby),
        remove_standby=draft.remove_standby and observed.standby is not None,
        budget=children.needed(rendered["PodDisruptionBudget"], observed.budget),
        remove_budget=spec.disruption is None
        and observed.budget is not None
        and observed.budget.controller_uid == resource.uid,
        spec_change=spec_change,
        requeue_after=sooner(draft.requeue, 0.05 if consumed else None),
        queries=draft.queries,
        validations=tuple(unique.values()),
        gates=draft.gates,
        deletes=draft.deletes,
        events=events,
        dropped_notices=overflowed + given_up,
        release_active_version=(
            c.MANAGER in resource.active_version_managers
            and after_revert is None
            and draft.spec_change is None
            and status.intent is None
        ),
    )


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
