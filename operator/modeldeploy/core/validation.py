"""Golden-request validation (docs/validation-and-config.md): Ready is not enough, the answer
must be right.

Part of the pure core, under `decide`: with `spec.validation`, each Ready pod of the
template being rolled out gets the golden requests, straight at its IP, before the
rollout counts as complete; a manual rollback's running pods get them before the
Deployment is switched (a revert's: core/target_check.py). This module says which
pods are due, folds the answers the validator edge hands back into
`status.validation`, and gives the verdict; it never sends anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from modeldeploy import constants as c
from modeldeploy.core import golden
from modeldeploy.core.plan import Problem, ValidationRequest
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
    """What validating one template's Ready pods found now."""

    record: ValidationRecord
    failure: str | None = None  # the first failure, in a sentence
    due: tuple[PodState, ...] = ()  # Ready pods that have not passed yet
    requests: tuple[ValidationRequest, ...] = ()
    ready: int = 0  # Ready pods of the template


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
    """Fold the answers of this template's pods into `record`; which Ready pods are due."""
    pods = owned_pods(observed, record.template_hash)
    present = {pod.name for pod in pods}
    passed = [name for name in record.passed_pods if name in present]
    failure = record.message if record.phase == FAILED else None
    for result in observed.validations:
        if result.template_hash != record.template_hash or result.at < record.started_at:
            continue  # another template's, or from before this validation began
        if result.passed and result.pod not in passed:
            passed.append(result.pod)
        elif not result.passed and failure is None:
            failure = result.message
    ready = [pod for pod in pods if pod.ready]
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
    requests = tuple(
        ValidationRequest(
            pod=pod.name,
            ip=pod.ip or "",
            port=port,
            template_hash=record.template_hash,
            requests=tuple(
                replace(
                    request,
                    path=golden.request_path(
                        request, resource.name, resource.namespace, record.version
                    ),
                )
                for request in spec.requests
            ),
        )
        for pod in due
        if failure is None
    )
    return Found(record, failure, due, requests, len(ready))


def _summary(passed: int, ready: int) -> str:
    return f"{passed}/{ready} Ready pods answered every golden request as expected"


def wake_in_s(spec: ValidationSpec) -> float:
    """When to ask again for pods still due: after every request could have timed out."""
    return sum(request.timeout_s for request in spec.requests) + SLACK_S


@dataclass(frozen=True)
class RolloutCheck:
    """Validation's word on a rollout: its verdict, the requests due, whether it must wait
    for answers, and whether the Deployment must wait too (a rollback's running pods are
    validated before the switch)."""

    status: Status
    verdict: Verdict
    requests: tuple[ValidationRequest, ...] = ()
    pending: bool = False
    hold: bool = False


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
        return RolloutCheck(status, Verdict(failure=failure))
    enough = len(found.record.passed_pods) >= spec.replicas
    if not found.due and (enough or not verdict.complete):
        return RolloutCheck(status, verdict)
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
    )
