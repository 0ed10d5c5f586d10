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
from modeldeploy.core import analysis, ledger, outbox, quarantine, retry, summary
from modeldeploy.core.plan import Decision, Event, Problem, SpecChange
from modeldeploy.core.render import covers, render_deployment, render_service, template_hash
from modeldeploy.core.signals import Verdict, baseline, evaluate, owned_pods
from modeldeploy.model.observed import ChildState, Observed, Refusal
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import JSON, Spec, SpecError
from modeldeploy.model.status import Status, to_json
from modeldeploy.model.text import shorten

APPLY = {"Deployment": "apply Deployment", "Service": "apply Service"}
REVERT = "revert"


@dataclass(frozen=True)
class Step:
    """What one look at the active version's rollout found."""

    status: Status
    events: tuple[Event, ...] = ()
    failed: bool = False  # it failed just now
    requeue: float | None = None
    queries: tuple[analysis.Query, ...] = ()
    stall: Problem | None = None  # it cannot progress without a human (an invalid query)


def decide(resource: Resource, observed: Observed, now: datetime) -> Decision:
    """Everything the operator should do about one ModelDeployment, now."""
    before = resource.status
    status = replace(
        outbox.prune(before, observed.delivered),
        observed_generation=resource.generation,
        reverts=quarantine.recent_reverts(before, now),
    )
    spec = resource.spec
    if isinstance(spec, SpecError):
        problem = Problem(c.REASON_INVALID_SPEC, shorten(str(spec)))
        return _blocked(resource, before, status, problem, now)
    conflict = _name_conflict(resource, observed)
    if conflict:
        return _blocked(resource, before, status, Problem(c.REASON_NAME_CONFLICT, conflict), now)

    events: list[Event] = []
    settled = quarantine.settle_intent(status, resource, spec, now)
    status = settled.status
    events += settled.events
    spec_change: SpecChange | None = None
    if resource.retry_version is not None:
        retried = retry.handle_retry(status, resource, spec, now)
        status, spec_change = retried.status, retried.spec_change
        events += retried.events

    digest = template_hash(resource.name, spec, spec.active)
    rollout = status.rollout
    if rollout and rollout.outcome == c.OUTCOME_PROGRESSING and rollout.template_hash != digest:
        status = ledger.supersede(status, spec, now)

    quarantined = quarantine.is_quarantined(status, spec.active_version, digest)
    step = Step(status)
    if not quarantined:
        step = _progress(status, resource, spec, digest, observed, now)
        events += step.events
        quarantined = step.failed
    status = step.status

    stall, requeue = step.stall, step.requeue
    if quarantined and spec_change is None:
        refused = _refusal(observed, resource, REVERT)
        handled = quarantine.handle_quarantined(status, resource, spec, step.failed, refused, now)
        status, stall, spec_change = handled.status, handled.stall, handled.spec_change
        events += handled.events
        if refused and handled.stall:
            requeue = _sooner(requeue, _retry_in(refused, now))

    deployment = None if quarantined else render_deployment(resource, spec, spec.active, digest)
    service = render_service(resource, spec) if spec.service.enabled else None
    children = {"Deployment": deployment, "Service": service}
    for kind, manifest in children.items():
        refused = _refusal(observed, resource, APPLY[kind])
        if manifest is not None and refused is not None:
            stall = stall or Problem(
                c.REASON_INVALID_SPEC,
                shorten(
                    f"the API server refused the {kind} (HTTP {refused.code}): {refused.message}"
                ),
            )
            if not quarantine.retry_due(refused, now):
                children[kind] = None
                requeue = _sooner(requeue, _retry_in(refused, now))

    status = summary.summarise(status, resource, spec, observed, digest, quarantined, stall, now)
    events += summary.stall_event(before, stall)
    status = outbox.add(status, events, now)
    status = ledger.bound(status, spec)
    return Decision(
        status=status,
        status_changed=to_json(status) != to_json(before),
        deployment=_if_needed(children["Deployment"], observed.deployment),
        service=_if_needed(children["Service"], observed.service),
        spec_change=spec_change,
        requeue_after=requeue,
        queries=step.queries,
        events=tuple(events),
    )


def _progress(
    status: Status,
    resource: Resource,
    spec: Spec,
    digest: str,
    observed: Observed,
    now: datetime,
) -> Step:
    """Start the rollout of `digest` if it is new, then judge it: failed, done or waiting."""
    events: tuple[Event, ...] = ()
    rollout = status.rollout
    current = (
        rollout is not None
        and rollout.template_hash == digest
        and rollout.outcome in (c.OUTCOME_PROGRESSING, c.OUTCOME_SUCCEEDED)
    )
    if not current:
        before = baseline(owned_pods(observed, digest))
        status, started = ledger.start_rollout(status, resource, spec, digest, before, now)
        events = (started,)
    elif status.intent is not None and status.intent.applied:
        status = replace(status, intent=None)  # a revert to what already serves: no rollout
    rollout = status.rollout
    assert rollout is not None
    if rollout.outcome != c.OUTCOME_PROGRESSING:
        return Step(status, events)
    verdict = evaluate(resource.name, spec, observed, rollout, now)
    queries: tuple[analysis.Query, ...] = ()
    stall: Problem | None = None
    analysing = status.analysis is not None and status.analysis.template_hash == digest
    if verdict.failure is None and spec.analysis and (verdict.complete or analysing):
        # Ready is not enough: judge what the version serves (AnalysisFailed).
        status, verdict, queries, stall = _analyse(status, resource, spec, digest, observed, now)
    if verdict.failure is not None:
        status, failed = ledger.fail(status, spec, verdict.failure, now)
        return Step(status, (*events, failed), failed=True)
    if verdict.complete:
        status, succeeded = ledger.succeed(status, spec, now)
        return Step(status, (*events, succeeded))
    return Step(status, events, requeue=verdict.wake_in_s, queries=queries, stall=stall)


def _analyse(
    status: Status,
    resource: Resource,
    spec: Spec,
    digest: str,
    observed: Observed,
    now: datetime,
) -> tuple[Status, Verdict, tuple[analysis.Query, ...], Problem | None]:
    """Start or continue the analysis of `digest`; its verdict stands in for success."""
    assert spec.analysis is not None
    record = status.analysis
    if record is None or record.template_hash != digest:
        record = analysis.start(spec.active_version, digest, spec.analysis, now)
    record = analysis.fold(record, spec.analysis, observed.measurements)
    phase, message = analysis.verdict(record, spec.analysis, now)
    status = replace(status, analysis=replace(record, phase=phase))
    if phase == analysis.FAILED:
        return status, Verdict(failure=Problem(c.REASON_ANALYSIS_FAILED, message)), (), None
    if phase == analysis.PASSED:
        return status, Verdict(complete=True), (), None
    stall = Problem(c.REASON_INVALID_QUERY, message) if phase == analysis.INVALID else None
    due = analysis.queries(record, spec.analysis, now, resource.name, resource.namespace)
    wake = Verdict(wake_in_s=analysis.next_wake_s(record, spec.analysis, now))
    return status, wake, due, stall


def _refusal(observed: Observed, resource: Resource, action: str) -> Refusal | None:
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
        quarantine.retry_delay_s(refusal) - (now - refusal.at).total_seconds() + 0.05,
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
    return None


def _name_conflict(resource: Resource, observed: Observed) -> str | None:
    for kind, child in (("Deployment", observed.deployment), ("Service", observed.service)):
        if child is not None and child.controller_uid != resource.uid:
            return (
                f"a {kind} named {resource.name} exists and is not controlled by this "
                f"ModelDeployment; it is left untouched"
            )
    return None


def _blocked(
    resource: Resource, before: Status, status: Status, stall: Problem, now: datetime
) -> Decision:
    """Invalid spec or name conflict: report it, leave every child untouched."""
    status = summary.blocked(resource, status, stall, now)
    events = summary.stall_event(before, stall)
    status = outbox.add(status, events, now)
    return Decision(status=status, status_changed=to_json(status) != to_json(before), events=events)
