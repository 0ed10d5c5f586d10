"""`decide`: everything the operator should do about one ModelDeployment, now.

The top of the pure core and its one entry: (resource, observed children, now) ->
`Decision`. Handlers write what it returns in a fixed order: status first, then the
Deployment and Service, then any spec change (docs/behaviour.md, B2-B9).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core import analysis, ledger, quarantine, retry, summary
from modeldeploy.core.plan import Decision, Event, Problem, SpecChange
from modeldeploy.core.render import covers, render_deployment, render_service, template_hash
from modeldeploy.core.signals import Verdict, evaluate
from modeldeploy.model.observed import ChildState, Observed
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import JSON, Spec, SpecError
from modeldeploy.model.status import Status, to_json


@dataclass(frozen=True)
class Step:
    """What one look at the active version's rollout found."""

    status: Status
    events: tuple[Event, ...] = ()
    failed: bool = False  # it failed just now
    requeue: float | None = None
    queries: tuple[analysis.Query, ...] = ()


def decide(resource: Resource, observed: Observed, now: datetime) -> Decision:
    """Everything the operator should do about one ModelDeployment, now."""
    before = resource.status
    status = replace(
        before,
        observed_generation=resource.generation,
        reverts=quarantine.recent_reverts(before, now),
    )
    spec = resource.spec
    if isinstance(spec, SpecError):
        return _blocked(resource, before, status, Problem(c.REASON_INVALID_SPEC, str(spec)), now)
    conflict = _name_conflict(resource, observed)
    if conflict:
        return _blocked(resource, before, status, Problem(c.REASON_NAME_CONFLICT, conflict), now)

    events: list[Event] = []
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

    stall: Problem | None = None
    if quarantined and spec_change is None:
        handled = quarantine.handle_quarantined(status, resource, spec, step.failed, now)
        status, stall, spec_change = handled.status, handled.stall, handled.spec_change
        events += handled.events

    deployment = None if quarantined else render_deployment(resource, spec, spec.active, digest)
    service = render_service(resource, spec) if spec.service.enabled else None
    status = summary.summarise(status, resource, spec, observed, digest, quarantined, stall, now)
    events += summary.stall_event(before, stall)
    return Decision(
        status=status,
        status_changed=to_json(status) != to_json(before),
        deployment=deployment if _needs_apply(deployment, observed.deployment) else None,
        service=service if _needs_apply(service, observed.service) else None,
        events=tuple(events),
        spec_change=spec_change,
        requeue_after=step.requeue,
        queries=step.queries,
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
    events = []
    rollout = status.rollout
    current = (
        rollout is not None
        and rollout.template_hash == digest
        and rollout.outcome in (c.OUTCOME_PROGRESSING, c.OUTCOME_SUCCEEDED)
    )
    if not current:
        status, started = ledger.start_rollout(status, resource, spec, digest, now)
        events.append(started)
    rollout = status.rollout
    assert rollout is not None
    if rollout.outcome != c.OUTCOME_PROGRESSING:
        return Step(status, tuple(events))
    verdict = evaluate(resource.name, spec, observed, digest, now)
    queries: tuple[analysis.Query, ...] = ()
    analysing = status.analysis is not None and status.analysis.template_hash == digest
    if verdict.failure is None and spec.analysis and (verdict.complete or analysing):
        # Ready is not enough: judge what the version serves (AnalysisFailed).
        status, verdict, queries = _analyse(status, resource, spec, digest, observed, now)
    if verdict.failure is not None:
        status, failed = ledger.fail(status, spec, verdict.failure, now)
        return Step(status, (*events, failed), failed=True)
    if verdict.complete:
        status, succeeded = ledger.succeed(status, spec, now)
        return Step(status, (*events, succeeded))
    return Step(status, tuple(events), requeue=verdict.wake_in_s, queries=queries)


def _analyse(
    status: Status,
    resource: Resource,
    spec: Spec,
    digest: str,
    observed: Observed,
    now: datetime,
) -> tuple[Status, Verdict, tuple[analysis.Query, ...]]:
    """Start or continue the analysis of `digest`; its verdict stands in for success."""
    assert spec.analysis is not None
    record = status.analysis
    if record is None or record.template_hash != digest:
        record = analysis.start(spec.active_version, digest, spec.analysis, now)
    record = analysis.fold(record, spec.analysis, observed.measurements)
    phase, message = analysis.verdict(record, spec.analysis, now)
    status = replace(status, analysis=replace(record, phase=phase))
    if phase == analysis.FAILED:
        return status, Verdict(failure=Problem(c.REASON_ANALYSIS_FAILED, message)), ()
    if phase == analysis.PASSED:
        return status, Verdict(complete=True), ()
    due = analysis.queries(record, spec.analysis, now, resource.name, resource.namespace)
    return status, Verdict(wake_in_s=analysis.next_wake_s(record, spec.analysis, now)), due


def _needs_apply(desired: JSON | None, observed: ChildState | None) -> bool:
    if desired is None:
        return False
    if observed is None:
        return True
    wanted_hash = desired["metadata"].get("annotations", {}).get(c.ANNOTATION_TEMPLATE_HASH)
    return observed.template_hash != wanted_hash or not covers(observed.spec, desired["spec"])


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
    return Decision(
        status=status,
        status_changed=to_json(status) != to_json(before),
        events=summary.stall_event(before, stall),
    )
