"""Golden-request validation (docs/validation-and-config.md): Ready is not enough, the answer
must be right.

Part of the pure core, under `decide`: with `spec.validation`, each pod of the
template being rolled out gets the golden requests, straight at its IP, once it is
Ready, or Ready but for the readiness gate its pods carry (c.CONDITION_VALIDATED):
until the operator opens that gate the pod gets no traffic and no rolling update
counts it, so a version that answers wrong never serves and no old pod leaves for it.
The rollout counts as complete only once every pod passed. A manual rollback's
running pods get the requests before the Deployment is switched (a revert's:
core/revert_check.py); gated pods that come later (a rescheduled or scaled pod of
the serving version) get them too (`keep_gates`). This module says which pods are
due, folds the answers the validator edge hands back into `status.validation`, says
which gates to set, and gives the verdict; it never sends anything itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core import golden
from modeldeploy.core.conditions import set_condition
from modeldeploy.core.draft import Draft
from modeldeploy.core.plan import Event, PodGate, Problem, ValidationRequest
from modeldeploy.core.signals import Verdict, owned_pods
from modeldeploy.model.observed import Observed, PodState
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Spec, ValidationSpec
from modeldeploy.model.status import RolloutRecord, Status, ValidationRecord
from modeldeploy.model.text import shorten

RUNNING, PASSED, FAILED = c.VALIDATION_RUNNING, c.VALIDATION_PASSED, c.VALIDATION_FAILED
SLACK_S = 5.0  # beyond the requests' own deadlines, before due pods are asked for again


@dataclass(frozen=True)
class Found:
    """What validating one template's answering pods found now (Ready ones, and ones
    Ready but for our readiness gate)."""

    record: ValidationRecord
    failure: str | None = None  # the first failure, in a sentence
    due: tuple[PodState, ...] = ()  # answering pods that have not passed yet
    requests: tuple[ValidationRequest, ...] = ()
    ready: int = 0  # answering pods of the template
    gates: tuple[PodGate, ...] = ()  # readiness gates to set: passed True, failed False


def record_for(
    existing: ValidationRecord | None,
    version: str,
    digest: str,
    revision: int | None,
    generation: int,
    now: datetime,
) -> ValidationRecord:
    """The record for this template's validation: the one in status if it is for the same
    rollout (or the same rollback-target check of this spec), else a new one that keeps
    the pods that passed before (a pod, its image and config do not change), unless that
    validation failed."""
    if (
        existing is not None
        and existing.template_hash == digest
        and existing.revision == revision
        and (revision is not None or existing.generation == generation)
    ):
        return existing
    kept = (
        existing.passed_pods
        if existing is not None and existing.template_hash == digest and existing.phase != FAILED
        else ()
    )
    return ValidationRecord(
        version=version,
        template_hash=digest,
        started_at=now,
        revision=revision,
        generation=generation if revision is None else None,
        passed_pods=kept,
    )


def examine(
    record: ValidationRecord,
    resource: Resource,
    spec: ValidationSpec,
    port: int,
    observed: Observed,
) -> Found:
    """Fold the answers of this template's pods into `record`; which answering pods are
    due; which readiness gates to set."""
    pods = owned_pods(observed, record.template_hash)
    present = {pod.name for pod in pods}
    # A pod whose gate we set True passed (this process or an earlier one saw it pass).
    passed = [name for name in record.passed_pods if name in present]
    passed += [p.name for p in pods if p.gate is True and p.name not in passed]
    failure = record.message if record.phase == FAILED else None
    failed_pod: str | None = None
    for result in observed.validations:
        if result.template_hash != record.template_hash or result.at < record.started_at:
            continue  # another template's, or from before this validation began
        if result.passed and result.pod not in passed:
            passed.append(result.pod)
        elif not result.passed and failure is None:
            failure, failed_pod = result.message, result.pod
    ready = [pod for pod in pods if pod.answering]
    due = tuple(pod for pod in ready if pod.name not in passed)
    if failure is None:
        no_address = next((pod for pod in due if not pod.ip), None)
        if no_address is not None:
            failure = f"pod {no_address.name} is Ready but has no IP address to send requests to"
    phase = FAILED if failure else (PASSED if ready and not due else RUNNING)
    record = replace(
        record,
        passed_pods=tuple(sorted(passed)),
        phase=phase,
        message=shorten(failure) if failure else _summary(len(ready) - len(due), len(ready)),
    )
    requests = (
        requests_to(due, resource, spec, port, record.version, record.template_hash)
        if failure is None
        else ()
    )
    gates = gates_for(pods, passed, failed_pod, failure)
    return Found(record, failure, due, requests, len(ready), gates)


def gates_for(
    pods: tuple[PodState, ...], passed: list[str], failed_pod: str | None, failure: str | None
) -> tuple[PodGate, ...]:
    """The gated pods whose readiness gate must change: passed ones open, a failed one
    closed with why (it never gets traffic)."""
    gates = [
        PodGate(p.name, True, c.REASON_GOLDEN_PASSED, "answered every golden request as expected")
        for p in pods
        if p.gated and p.name in passed and p.gate is not True
    ]
    for p in pods:
        if p.gated and p.name == failed_pod and p.gate is not False:
            gates.append(PodGate(p.name, False, c.REASON_GOLDEN_FAILED, shorten(failure or "")))
    return tuple(gates)


def requests_to(
    pods: tuple[PodState, ...],
    resource: Resource,
    spec: ValidationSpec,
    port: int,
    version: str,
    digest: str,
) -> tuple[ValidationRequest, ...]:
    """The golden requests for each of `pods`, their paths filled in."""
    return tuple(
        ValidationRequest(
            pod=pod.name,
            ip=pod.ip or "",
            port=port,
            template_hash=digest,
            requests=tuple(
                replace(
                    request,
                    path=golden.request_path(request, resource.name, resource.namespace, version),
                )
                for request in spec.requests
            ),
        )
        for pod in pods
    )


def keep_gates(draft: Draft, resource: Resource, observed: Observed) -> Draft:
    """A rescheduled or scaled pod of the version that serves carries the gate too: it
    gets the golden requests before it gets traffic (and is shut out, said in an Event,
    if it answers wrong). Without spec.validation any more, its gate opens at once."""
    spec, rollout = draft.spec, draft.status.rollout
    if rollout is None or rollout.outcome != c.OUTCOME_SUCCEEDED:
        return draft
    digest = rollout.template_hash
    waiting = tuple(
        p
        for p in owned_pods(observed, digest)
        if p.gated and p.containers_ready and p.gate is None and not p.ready
    )
    if not waiting:
        return draft
    if spec.validation is None:
        said = "spec.validation was removed: nothing to check before traffic"
        opened = tuple(PodGate(p.name, True, c.REASON_NOT_VALIDATED, said) for p in waiting)
        return draft.validate((), opened)
    answers = {r.pod: r for r in observed.validations if r.template_hash == digest}
    due = tuple(p for p in waiting if p.name not in answers and p.ip)
    gates, events = [], []
    for pod in waiting:
        answer = answers.get(pod.name)
        if answer is None:
            continue
        if answer.passed:
            gates.append(PodGate(pod.name, True, c.REASON_GOLDEN_PASSED, "answered as expected"))
        else:
            why = shorten(answer.message)
            gates.append(PodGate(pod.name, False, c.REASON_GOLDEN_FAILED, why))
            events.append(Event("Warning", c.EVENT_POD_SHUT_OUT, f"kept out of the Service: {why}"))
    requests = requests_to(
        due, resource, spec.validation, spec.template.port, rollout.version, digest
    )
    return draft.validate(requests, tuple(gates)).said(*events)


def _summary(passed: int, ready: int) -> str:
    return f"{passed}/{ready} Ready pods answered every golden request as expected"


def wake_in_s(spec: ValidationSpec) -> float:
    """When to ask again for pods still due: after every request could have timed out."""
    return sum(request.timeout_s for request in spec.requests) + SLACK_S


@dataclass(frozen=True)
class RolloutCheck:
    """Validation's word on a rollout: its verdict, the requests due, whether it must wait
    for answers, whether the Deployment must wait too (a rollback's running pods are
    validated before the switch), and the readiness gates to set."""

    status: Status
    verdict: Verdict
    requests: tuple[ValidationRequest, ...] = ()
    pending: bool = False
    hold: bool = False
    gates: tuple[PodGate, ...] = ()


def judge_rollout(
    status: Status,
    resource: Resource,
    spec: Spec,
    rollout: RolloutRecord,
    observed: Observed,
    verdict: Verdict,
    now: datetime,
) -> RolloutCheck:
    """A rollout is complete only once every Ready pod of its template passed, and at
    least spec.replicas of them did (the pod watch may lag the Deployment's counts); a
    pod that fails fails the rollout (ValidationFailed). Pods of the template running
    before the Deployment is switched to it (a rollback) pass first, or the switch never
    happens."""
    if spec.validation is None or verdict.failure is not None:
        return RolloutCheck(status, verdict)
    digest = rollout.template_hash
    record = record_for(
        status.validation, rollout.version, digest, rollout.revision, resource.generation, now
    )
    found = examine(record, resource, spec.validation, spec.template.port, observed)
    status = replace(status, validation=found.record)
    deployment = observed.deployment
    switched = deployment is not None and deployment.template_hash == digest
    if found.failure is not None:
        before = "" if switched else "before the Deployment was switched to it: "
        failure = Problem(c.REASON_VALIDATION_FAILED, shorten(before + found.failure))
        return RolloutCheck(status, Verdict(failure=failure), gates=found.gates)
    enough = len(found.record.passed_pods) >= spec.replicas
    if not found.due and (enough or not verdict.complete):
        return RolloutCheck(status, verdict, gates=found.gates)
    wake = min(
        (s for s in (verdict.wake_in_s, wake_in_s(spec.validation)) if s is not None),
        default=None,
    )
    return RolloutCheck(
        status,
        Verdict(wake_in_s=wake),
        found.requests,
        pending=True,
        hold=bool(found.due) and not switched,
        gates=found.gates,
    )


def spec_digest(spec: ValidationSpec) -> str:
    """A short digest of the golden requests and what they expect."""
    return hashlib.sha256(repr(spec).encode()).hexdigest()[:12]


def check_serving(draft: Draft, resource: Resource, observed: Observed, now: datetime) -> Draft:
    """Golden requests added or changed after the serving version's rollout run against
    its running pods (no rollout): Validated says what they found, a Warning Event when
    they answer wrong. It never reverts by itself: what serves was good by every rule
    it was rolled out under; a person decides."""
    status, spec = draft.status, draft.spec
    rollout = status.rollout
    if spec.validation is None:
        kept = tuple(k for k in status.conditions if k.type != c.VALIDATED)
        return replace(draft, status=replace(status, conditions=kept, validated_spec=None))
    if rollout is None or rollout.outcome != c.OUTCOME_SUCCEEDED:
        return draft
    wanted = spec_digest(spec.validation)
    if status.validated_spec == wanted:
        return draft
    record = record_for(
        status.validation, rollout.version, rollout.template_hash, None, resource.generation, now
    )
    found = examine(record, resource, spec.validation, spec.template.port, observed)
    status = replace(status, validation=found.record)
    if found.failure is not None:
        message = shorten(f"{rollout.version}, which serves: {found.failure}")
        status = _validated(status, resource, False, c.REASON_GOLDEN_FAILED, message, now)
        said = Event("Warning", c.EVENT_SERVING_ANSWERS_WRONG, message)
        return replace(draft, status=replace(status, validated_spec=wanted)).said(said)
    if found.ready and not found.due:
        message = f"{rollout.version}, which serves: {found.record.message}"
        status = _validated(status, resource, True, c.REASON_GOLDEN_PASSED, message, now)
        return replace(draft, status=replace(status, validated_spec=wanted))
    message = f"{rollout.version}, which serves: {found.record.message or 'no pod answers yet'}"
    status = _validated(status, resource, False, c.REASON_GOLDEN_CHECKING, message, now)
    checking = replace(draft, status=status).validate(found.requests)
    return checking.wake_in(wake_in_s(spec.validation))


def passed_rollout(
    status: Status, resource: Resource, spec: ValidationSpec, now: datetime
) -> Status:
    """A rollout under these golden requests succeeded: what serves passed them."""
    version = status.rollout.version if status.rollout else "?"
    message = f"{version}, which serves: every pod answered every golden request as expected"
    status = _validated(status, resource, True, c.REASON_GOLDEN_PASSED, message, now)
    return replace(status, validated_spec=spec_digest(spec))


def _validated(
    status: Status, resource: Resource, value: bool, reason: str, message: str, now: datetime
) -> Status:
    conditions = set_condition(
        status.conditions, c.VALIDATED, value, reason, message, now, resource.generation
    )
    return replace(status, conditions=conditions)
