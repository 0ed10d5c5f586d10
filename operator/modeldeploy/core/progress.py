"""One rollout's progress: start it if it is new, judge it (signals, analysis), guard it.

Part of the pure core, below `decide`: given the version the Deployment should run
(the target), it records the start (ledger), asks the failure signals and the analysis
for a verdict, and after promotion keeps the guard (docs/analysis.md). It returns the
draft with what it found; a version that failed just now is Failed in its ledger.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core import analysis, capacity, guard, ledger, validation
from modeldeploy.core.draft import Draft
from modeldeploy.core.ledger import Target
from modeldeploy.core.plan import Event, Problem
from modeldeploy.core.signals import Verdict, baseline, evaluate, owned_pods
from modeldeploy.model.observed import Observed
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Spec
from modeldeploy.model.status import RolloutRecord, Status
from modeldeploy.model.text import shorten


def progress(
    draft: Draft, resource: Resource, target: Target, observed: Observed, now: datetime
) -> Draft:
    """Start the rollout of `target` if it is new, then judge it: failed, done or waiting.
    The draft's target is `target`, unless it failed just now (the ledger says so) or the
    Deployment must wait (a rollback's running pods are being validated)."""
    spec, digest = draft.spec, target.digest
    status = superseded(draft.status, spec, digest, now)
    rollout = status.rollout
    current = (
        rollout is not None
        and rollout.template_hash == digest
        and rollout.outcome in (c.OUTCOME_PROGRESSING, c.OUTCOME_SUCCEEDED)
    )
    if not current:
        before = baseline(owned_pods(observed, digest))
        status, started = ledger.start_rollout(status, resource, spec, target, before, now)
        draft = draft.said(started)
    elif status.intent is not None and status.intent.applied:
        status = replace(status, intent=None)  # a revert to what already serves: no rollout
    draft = replace(draft, status=status, stall=None, queries=(), target=target)
    rollout = status.rollout
    assert rollout is not None
    if rollout.outcome != c.OUTCOME_PROGRESSING:
        return _guarded(draft, resource, target, observed, now)
    verdict = evaluate(resource.name, spec, observed, rollout, now)
    # spec.validation: complete only once every Ready pod answered as expected.
    checked = validation.judge_rollout(status, resource, spec, rollout, observed, verdict, now)
    status, verdict = checked.status, checked.verdict
    status, switched = _room(status, spec, status.rollout or rollout, verdict)
    draft = draft.said(*switched).validate((), checked.gates)
    queries: tuple[analysis.Query, ...] = ()
    stall: Problem | None = verdict.stall
    analysing = status.analysis is not None and status.analysis.template_hash == digest
    if verdict.failure is None and spec.analysis and (verdict.complete or analysing):
        # Ready is not enough: judge what the version serves (AnalysisFailed).
        status, verdict, queries, stall = _analyse(status, resource, spec, target, observed, now)
    if verdict.failure is not None:
        status, failed = ledger.fail(status, spec, verdict.failure, now)
        return replace(draft, status=status, target=None).said(failed)
    if verdict.complete and not checked.pending:
        promoted_from = status
        status, succeeded = ledger.succeed(status, spec, now)
        if spec.validation is not None:  # what serves passed these very requests
            status = validation.passed_rollout(status, resource, spec.validation, now)
        draft = replace(draft, status=status).said(succeeded)
        if spec.analysis and spec.analysis.guard_s and status.analysis:
            record = guard.begin(status.analysis, promoted_from, spec.analysis, now)
            guarding = replace(draft, status=replace(status, analysis=record))
            return guarding.wake_in(guard.next_wake_s(record, spec.analysis, now))
        return draft
    waiting = replace(
        draft,
        status=status,
        queries=queries,
        stall=stall,
        target=None if checked.hold else target,
    )
    return waiting.wake_in(verdict.wake_in_s).validate(checked.requests)


def _room(
    status: Status, spec: Spec, rollout: RolloutRecord, verdict: Verdict
) -> tuple[Status, tuple[Event, ...]]:
    """Record whether a new pod waits for room (B23); Auto then goes on as Replace, once
    per rollout, and says so."""
    updated = replace(rollout, capacity_wait=verdict.capacity_wait)
    events: tuple[Event, ...] = ()
    replacing = rollout.from_version is not None
    if capacity.switches(spec.rollout, rollout.strategy, verdict.capacity_wait, replacing):
        updated = replace(updated, strategy=c.STRATEGY_REPLACE)
        events = (
            Event(
                "Normal",
                c.EVENT_STRATEGY_SWITCHED,
                shorten(
                    f"no room for a new pod of {rollout.version}, so rollout "
                    f"#{rollout.revision} goes on as Replace: up to "
                    f"{spec.rollout.max_unavailable} of {spec.replicas} pods down at a time "
                    f"({verdict.capacity_wait})"
                ),
            ),
        )
    if updated == rollout:
        return status, ()
    return ledger.with_rollout(status, updated, spec.rollout.history_limit), events


def _guarded(
    draft: Draft, resource: Resource, target: Target, observed: Observed, now: datetime
) -> Draft:
    """A promoted version in its guard window: measure on, and fail it if it degrades."""
    status, spec = draft.status, draft.spec
    rollout = status.rollout
    if (
        spec.analysis is None
        or rollout is None
        or rollout.outcome != c.OUTCOME_SUCCEEDED
        or not guard.guarding(status, target.digest)
    ):
        return draft
    assert status.analysis is not None
    record = analysis.fold(status.analysis, spec.analysis, observed.measurements)
    phase, message = guard.verdict(record, spec.analysis, now)
    status = replace(status, analysis=replace(record, phase=phase))
    if phase == analysis.FAILED:
        problem = Problem(c.REASON_ANALYSIS_FAILED, message)
        status, failed = ledger.fail_in_guard(status, spec, problem, now)
        return replace(draft, status=status, target=None).said(failed)
    if phase == analysis.PASSED:
        return replace(draft, status=status)
    stall = Problem(c.REASON_INVALID_QUERY, message) if phase == analysis.INVALID else None
    due = analysis.queries(record, spec.analysis, now, resource.name, resource.namespace)
    measuring = replace(draft, status=status, queries=due, stall=stall)
    return measuring.wake_in(guard.next_wake_s(record, spec.analysis, now))


def superseded(status: Status, spec: Spec, digest: str | None, now: datetime) -> Status:
    """A rollout in progress of another template than the one wanted now is superseded."""
    rollout = status.rollout
    if rollout and rollout.outcome == c.OUTCOME_PROGRESSING and rollout.template_hash != digest:
        return ledger.supersede(status, spec, now)
    return status


def _analyse(
    status: Status,
    resource: Resource,
    spec: Spec,
    target: Target,
    observed: Observed,
    now: datetime,
) -> tuple[Status, Verdict, tuple[analysis.Query, ...], Problem | None]:
    """Start or continue the analysis of `target`; its verdict stands in for success."""
    assert spec.analysis is not None
    record = status.analysis
    if record is None or record.template_hash != target.digest:
        record = analysis.start(target.version, target.digest, spec.analysis, now)
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
