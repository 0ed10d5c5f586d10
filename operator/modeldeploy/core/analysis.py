"""Pure metric analysis: is a Ready version also serving well? (B5, AnalysisFailed)

Part of the pure core, used by `decide` once all new pods are Ready: it
says which checks are due for a measurement, folds measurements into the status
record, and gives the verdict. It never queries anything itself: reconcile.py hands
the queries to prometheus.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from modeldeploy import constants as c
from modeldeploy.model.observed import Measurement
from modeldeploy.model.spec import AnalysisSpec, Check
from modeldeploy.model.status import AnalysisRecord, CheckRecord
from modeldeploy.model.text import shorten
from modeldeploy.model.times import format_time

PASSED, FAILED, INCONCLUSIVE = c.ANALYSIS_PASSED, c.ANALYSIS_FAILED, c.ANALYSIS_INCONCLUSIVE
RUNNING, INVALID = c.ANALYSIS_RUNNING, c.ANALYSIS_INVALID


@dataclass(frozen=True)
class Query:
    """A measurement the edge should take: one check's PromQL, rendered."""

    check: str
    promql: str
    prometheus: str | None  # spec.analysis.prometheus; None: the operator's own
    template_hash: str
    namespace: str = ""  # the resource's: a tenancy proxy forces queries to it


def render_query(query: str, name: str, namespace: str, version: str) -> str:
    return (
        query.replace("{{name}}", name)
        .replace("{{namespace}}", namespace)
        .replace("{{version}}", version)
    )


def start(version: str, digest: str, spec: AnalysisSpec, now: datetime) -> AnalysisRecord:
    return AnalysisRecord(
        version=version,
        template_hash=digest,
        started_at=now,
        ends_at=now + timedelta(seconds=spec.bake_s),
        checks=tuple(CheckRecord(name=check.name) for check in spec.checks),
    )


def _record(record: AnalysisRecord, name: str) -> CheckRecord:
    return next((k for k in record.checks if k.name == name), CheckRecord(name=name))


def due(record: AnalysisRecord, spec: AnalysisSpec, now: datetime) -> list[Check]:
    """Checks never measured, or last measured an interval ago or more."""
    interval = timedelta(seconds=spec.interval_s)
    out = []
    for check in spec.checks:
        last = _record(record, check.name).last_measured_at
        if last is None or now - last >= interval:
            out.append(check)
    return out


def queries(
    record: AnalysisRecord, spec: AnalysisSpec, now: datetime, name: str, namespace: str
) -> tuple[Query, ...]:
    return tuple(
        Query(
            check=check.name,
            promql=render_query(check.query, name, namespace, record.version),
            prometheus=spec.prometheus,
            template_hash=record.template_hash,
            namespace=namespace,
        )
        for check in due(record, spec, now)
    )


def classify(check: Check, measurement: Measurement) -> tuple[str, str]:
    """(outcome, message) of one measurement against the check's bound.

    ±Inf compares like any number (+Inf is above every max); the message names the
    check, never its whole query, so status stays small.
    """
    if measurement.invalid:
        return INVALID, shorten(f"check {check.name}: {measurement.error}")
    if measurement.value is None:
        why = measurement.error or "the query returned no data"
        outcome = FAILED if check.on_no_data == c.NO_DATA_FAIL else INCONCLUSIVE
        return outcome, shorten(f"check {check.name}: {why}")
    value, text = measurement.value, measurement.text or f"{measurement.value:g}"
    if check.max is not None and value > check.max:
        return FAILED, f"check {check.name} = {text}, above max {check.max:g}"
    if check.min is not None and value < check.min:
        return FAILED, f"check {check.name} = {text}, below min {check.min:g}"
    return PASSED, f"check {check.name} = {text}, within bounds"


def fold(
    record: AnalysisRecord, spec: AnalysisSpec, measurements: Iterable[Measurement]
) -> AnalysisRecord:
    """Count each measurement of this record's template into its check."""
    checks = {check.name: check for check in spec.checks}
    counts = {k.name: k for k in record.checks}
    for measurement in measurements:
        check = checks.get(measurement.check)
        if check is None or measurement.template_hash != record.template_hash:
            continue
        outcome, message = classify(check, measurement)
        current = counts.get(check.name, CheckRecord(name=check.name))
        counts[check.name] = replace(
            current,
            passed=current.passed + (outcome == PASSED),
            failed=current.failed + (outcome == FAILED),
            inconclusive=current.inconclusive + (outcome == INCONCLUSIVE),
            last_outcome=outcome,
            last_value=measurement.text,
            last_measured_at=measurement.at,
            message=message,
        )
    return replace(
        record, checks=tuple(counts.get(c.name, CheckRecord(name=c.name)) for c in spec.checks)
    )


def verdict(record: AnalysisRecord, spec: AnalysisSpec, now: datetime) -> tuple[str, str]:
    """(phase, message): Failed as soon as a check fails beyond its limit; Passed only
    after the bake window when every check's latest measurement passed; never
    promoted on missing data (Inconclusive keeps measuring); Invalid while a check's
    query is one Prometheus refuses (measuring goes on, so a fixed query clears it)."""
    for check in spec.checks:
        counts = _record(record, check.name)
        if counts.failed > check.failure_limit:
            return FAILED, shorten(
                f"{counts.message} ({counts.failed} failed measurements, "
                f"failureLimit {check.failure_limit})"
            )
    invalid = [k.message or k.name for k in record.checks if k.last_outcome == INVALID]
    if invalid:
        return INVALID, shorten("; ".join(invalid))
    if now < record.ends_at:
        return RUNNING, f"measuring until {format_time(record.ends_at)}"
    pending = [k.name for c in spec.checks if (k := _record(record, c.name)).last_outcome != PASSED]
    if pending:
        return INCONCLUSIVE, f"no passing measurement yet for: {', '.join(pending)}"
    return PASSED, f"all {len(spec.checks)} checks passed"


def next_wake_s(record: AnalysisRecord, spec: AnalysisSpec, now: datetime) -> float:
    """Seconds until the next measurement is due or the window ends."""
    times = []
    for check in spec.checks:
        last = _record(record, check.name).last_measured_at
        times.append(now if last is None else last + timedelta(seconds=spec.interval_s))
    if record.ends_at > now:
        times.append(record.ends_at)
    return max(0.0, (min(times) - now).total_seconds()) + 0.05
