"""Prometheus metrics, derived from what each reconcile changed in a resource's status.

Sits beside the kube layer, below the handlers: `observe(before, after)` turns
status transitions (a rollout finished, a revert recorded) into counters and
histograms, so metrics and status can never disagree.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from modeldeploy import constants as c
from modeldeploy.model.resource import Resource
from modeldeploy.model.status import RolloutRecord, Status

ROLLOUTS = Counter(
    "modeldeploy_rollouts_total",
    "Rollouts that finished, by outcome and trigger",
    ["outcome", "trigger"],
)
ROLLBACKS = Counter(
    "modeldeploy_rollbacks_total",
    "Rollbacks: automatic reverts (by failure reason) and manual ones",
    ["kind", "reason"],
)
DETECT = Histogram(
    "modeldeploy_time_to_detect_seconds",
    "From a rollout's start to its failure being recorded",
    # status times keep milliseconds (model/times.py): the low buckets are real
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
RECOVER = Histogram(
    "modeldeploy_time_to_recover_seconds",
    "From a failed rollout's start to the last good version serving again",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
GUARD_FAILURES = Counter(
    "modeldeploy_guard_failures_total",
    "Promoted versions that failed their guard window (spec.analysis.guardSeconds)",
)
STANDBY_SWITCHES = Counter(
    "modeldeploy_standby_switches_total",
    "Reverts served at once by the standby's warm pods (spec.rollout.standby)",
)
VALIDATION_REQUESTS = Counter(
    "modeldeploy_validation_requests_total",
    "Golden requests sent to pods (spec.validation), by outcome: Passed, Failed (a wrong "
    "answer) or Unanswered (no answer within the deadline, or no connection)",
    ["outcome"],
)
VALIDATION_SECONDS = Histogram(
    "modeldeploy_validation_duration_seconds",
    "How long one golden request took, connect to last byte (or to its deadline)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
NOTIFICATIONS_DROPPED = Counter(
    "modeldeploy_webhooks_dropped_total",
    "Owed notifications (Events and webhooks) given up on: still undelivered a day after "
    "they were owed, or pushed out of a full outbox; each is said in a Warning Event",
)
INFO = Gauge(
    "modeldeploy_resource_info",
    "One series per ModelDeployment: what it serves",
    ["namespace", "name", "serving", "last_good", "phase"],
)

_info_labels: dict[tuple[str, str], tuple[str, ...]] = {}


def serve(port: int, address: str = "127.0.0.1") -> None:
    """/metrics on `address`:`port`; it names every resource, so not on 0.0.0.0 unless
    asked (--metrics-address, set in deploy/ with a NetworkPolicy in front)."""
    start_http_server(port, addr=address)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def _finished(before: Status, after: Status) -> list[RolloutRecord]:
    """History entries that left Progressing in this reconcile."""
    was = {h.revision: h.outcome for h in before.history}
    return [
        h
        for h in after.history
        if h.outcome != c.OUTCOME_PROGRESSING and was.get(h.revision) == c.OUTCOME_PROGRESSING
    ]


def observe(resource: Resource, before: Status, after: Status) -> None:
    for rollout in _finished(before, after):
        ROLLOUTS.labels(rollout.outcome, rollout.trigger).inc()
        if rollout.outcome == c.OUTCOME_FAILED:
            took = _seconds(rollout.started_at, rollout.finished_at)
            if took is not None:
                DETECT.observe(took)
        if rollout.outcome == c.OUTCOME_SUCCEEDED and rollout.trigger == c.TRIGGER_AUTOMATIC:
            failed = next((h for h in after.history if h.revision == rollout.revision - 1), None)
            took = _seconds(failed.started_at if failed else None, rollout.finished_at)
            if took is not None:
                RECOVER.observe(took)
    guarded = {h.revision for h in before.history if h.stage == c.STAGE_GUARD}
    for entry in after.history:
        if entry.stage == c.STAGE_GUARD and entry.revision not in guarded:
            GUARD_FAILURES.inc()
    if after.standby and after.standby.serving and not (before.standby and before.standby.serving):
        STANDBY_SWITCHES.inc()
    if after.reverts and after.reverts[-1] not in before.reverts:
        reason = next((k.reason for k in after.conditions if k.type == c.ROLLED_BACK), "Unknown")
        ROLLBACKS.labels("automatic", reason).inc()
    started = after.rollout
    if (
        started
        and started != before.rollout
        and started.trigger == c.TRIGGER_MANUAL
        and started.outcome == c.OUTCOME_PROGRESSING
    ):
        record = before.version_record(started.version)
        if record and record.last_available_at:  # back to a version that served before
            ROLLBACKS.labels("manual", "Manual").inc()
    _set_info(resource, after)


def _set_info(resource: Resource, status: Status) -> None:
    key = (resource.namespace, resource.name)
    labels = (
        resource.namespace,
        resource.name,
        status.serving_version or "",
        status.last_good_version or "",
        status.phase,
    )
    previous = _info_labels.get(key)
    if previous == labels:
        return
    if previous:
        INFO.remove(*previous)
    INFO.labels(*labels).set(1)
    _info_labels[key] = labels


def forget(namespace: str, name: str) -> None:
    previous = _info_labels.pop((namespace, name), None)
    if previous:
        INFO.remove(*previous)
