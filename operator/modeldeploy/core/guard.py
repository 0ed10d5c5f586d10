"""The guard after promotion (spec.analysis.guardSeconds): keep judging a version that
became last good, and take it back if it degrades (docs/analysis.md, "Guard").

Part of the pure core, beside the analysis it continues: the same checks, measured at
the same interval, now against the promoted version, until the guard window ends. A
check failing beyond its failureLimit in the window fails the version the same way a
failure before promotion would (status first, revert, quarantine), with stage Guard.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from modeldeploy import constants as c
from modeldeploy.core import analysis
from modeldeploy.model.spec import AnalysisSpec
from modeldeploy.model.status import AnalysisRecord, Status

GUARDING = c.ANALYSIS_GUARDING


def begin(
    record: AnalysisRecord, before: Status, spec: AnalysisSpec, now: datetime
) -> AnalysisRecord:
    """The passed analysis of a version just promoted turns into its guard, which
    remembers the last good version before it: the target of a guard revert."""
    return replace(
        record,
        phase=GUARDING,
        guard_ends_at=now + timedelta(seconds=spec.guard_s),
        previous_good=before.last_good_version,
        previous_good_hash=before.last_good_template_hash,
    )


def guarding(status: Status, digest: str) -> bool:
    record = status.analysis
    return record is not None and record.template_hash == digest and record.phase == GUARDING


def verdict(record: AnalysisRecord, spec: AnalysisSpec, now: datetime) -> tuple[str, str]:
    """(phase, message): Failed as soon as a check fails beyond its limit, Invalid while a
    query is refused, Passed once the window is over, else still Guarding."""
    phase, message = analysis.verdict(record, spec, now)
    if phase in (analysis.FAILED, analysis.INVALID):
        return phase, message
    ends = record.guard_ends_at
    if ends is None or now >= ends:
        return analysis.PASSED, f"guarded until {ends}: all checks held"
    return GUARDING, message


def next_wake_s(record: AnalysisRecord, spec: AnalysisSpec, now: datetime) -> float:
    wake = analysis.next_wake_s(record, spec, now)
    if record.guard_ends_at is not None and record.guard_ends_at > now:
        wake = min(wake, (record.guard_ends_at - now).total_seconds() + 0.05)
    return wake
