"""The guard after promotion (spec.analysis.guardSeconds), as scenarios through `decide`."""

from __future__ import annotations

from dataclasses import replace

from modeldeploy import constants as c
from modeldeploy.model.observed import Measurement, Observed
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import AnalysisSpec, Check
from tests.unit.builders import (
    at,
    condition,
    deployment,
    digest,
    present,
    select,
    serving_v1,
    spec_of,
    step,
)

ERRORS = Check(name="error-rate", query="errors", max=0.05)


def guarded(res: Resource, guard_s: int = 60) -> Resource:
    spec = spec_of(res)
    analysis = AnalysisSpec(checks=(ERRORS,), bake_s=5, interval_s=1, guard_s=guard_s)
    return replace(res, spec=replace(spec, analysis=analysis))


def errors(res: Resource, value: float, seconds: float, version: str = "v2") -> Observed:
    measurement = Measurement("error-rate", digest(res, version), at(seconds), value=value)
    return Observed(deployment=deployment(res, version), measurements=(measurement,))


def promoted_v2() -> Resource:
    """v1 served; v2 rolled out, passed its 5 s bake and is the last good version."""
    res = guarded(select(serving_v1(versions={"v1": "r/m:1", "v2": "r/m:2"}), "v2"))
    res, _ = step(res, Observed(deployment=deployment(res, "v1")), 10)
    res, _ = step(res, errors(res, 0.01, 11), 11)
    res, decision = step(res, errors(res, 0.01, 17), 17)
    assert res.status.last_good_version == "v2"
    record = present(res.status.analysis)
    assert (record.phase, record.previous_good) == ("Guarding", "v1")
    assert decision.requeue_after is not None
    return res


def test_a_promoted_version_keeps_being_measured_in_its_guard_window() -> None:
    res, decision = step(promoted_v2(), errors(promoted_v2(), 0.01, 30), 30)
    assert present(res.status.analysis).phase == "Guarding"
    assert [q.check for q in step(res, Observed(deployment=deployment(res, "v2")), 32)[1].queries]
    assert decision.spec_change is None
    assert condition(res, c.READY)[0] == "True"


def test_a_failed_check_in_the_guard_window_reverts_to_the_version_before() -> None:
    res = promoted_v2()
    res, decision = step(res, errors(res, 0.9, 40), 40)
    failed = present(res.status.version_record("v2"))
    assert (failed.state, failed.reason) == ("Failed", "AnalysisFailed")
    latest = res.status.history[0]
    assert (latest.version, latest.outcome, latest.stage) == ("v2", "Failed", "Guard")
    assert res.status.last_good_version == "v1"
    change = present(decision.spec_change)
    assert (change.set_version, change.expect_version) == ("v1", "v2")
    (said,) = [e.message for e in decision.events if e.reason == "RolloutFailed"]
    assert said.startswith("v2 failed in its guard window after promotion (AnalysisFailed)")


def test_after_the_window_the_version_is_judged_no_more() -> None:
    res = promoted_v2()
    res, decision = step(res, errors(res, 0.01, 100), 100)
    assert present(res.status.analysis).phase == "Passed"
    res, decision = step(res, errors(res, 0.9, 101), 101)
    assert decision.spec_change is None
    assert decision.queries == ()
    assert present(res.status.version_record("v2")).state == "Available"
