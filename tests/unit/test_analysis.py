"""The analysis verdict as a pure function of measurements, bounds, limits and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modeldeploy.core import analysis
from modeldeploy.model.observed import Measurement
from modeldeploy.model.spec import AnalysisSpec, Check

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ERRORS = Check(name="error-rate", query='errors{version="{{version}}"}', max=0.05, failure_limit=1)
ACCURACY = Check(name="accuracy", query="accuracy", min=0.9)
SPEC = AnalysisSpec(checks=(ERRORS, ACCURACY), bake_s=60, interval_s=10)


def measured(
    check: str, value: float | None, at: datetime, error: str | None = None, digest: str = "h1"
) -> Measurement:
    return Measurement(check=check, template_hash=digest, at=at, value=value, error=error)


def test_query_placeholders_are_filled_in() -> None:
    assert (
        analysis.render_query(
            'm{model="{{name}}",ns="{{namespace}}",v="{{version}}"}', "fraud", "ml", "v2"
        )
        == 'm{model="fraud",ns="ml",v="v2"}'
    )


@pytest.mark.parametrize(
    ("check", "measurement", "outcome", "text"),
    [
        pytest.param(
            ERRORS,
            measured("error-rate", 0.01, T0),
            "Passed",
            "within bounds",
            id="below-max-passes",
        ),
        pytest.param(
            ERRORS,
            measured("error-rate", 0.2, T0),
            "Failed",
            "above max 0.05",
            id="above-max-fails",
        ),
        pytest.param(
            ACCURACY, measured("accuracy", 0.8, T0), "Failed", "below min 0.9", id="below-min-fails"
        ),
        pytest.param(
            ACCURACY,
            measured("accuracy", None, T0),
            "Inconclusive",
            "no data",
            id="no-data-is-inconclusive",
        ),
        pytest.param(
            ACCURACY,
            measured("accuracy", None, T0, error="Prometheus unreachable"),
            "Inconclusive",
            "unreachable",
            id="unreachable-is-inconclusive",
        ),
        pytest.param(
            Check(name="x", query="q", max=1, on_no_data="Fail"),
            measured("x", None, T0),
            "Failed",
            "no data",
            id="no-data-can-fail",
        ),
    ],
)
def test_each_measurement_is_judged_against_its_bound(
    check: Check, measurement: Measurement, outcome: str, text: str
) -> None:
    got, message = analysis.classify(check, measurement)
    assert got == outcome
    assert text in message


def test_a_fresh_analysis_measures_every_check_at_once_then_each_interval() -> None:
    record = analysis.start("v2", "h1", SPEC, T0)
    assert [c.name for c in analysis.due(record, SPEC, T0)] == ["error-rate", "accuracy"]
    record = analysis.fold(
        record, SPEC, [measured("error-rate", 0.01, T0), measured("accuracy", 0.95, T0)]
    )
    assert analysis.due(record, SPEC, T0 + timedelta(seconds=9)) == []
    assert len(analysis.due(record, SPEC, T0 + timedelta(seconds=10))) == 2
    assert analysis.next_wake_s(record, SPEC, T0) == pytest.approx(10.05)


def test_queries_carry_the_rendered_promql_and_the_template() -> None:
    record = analysis.start("v2", "h1", SPEC, T0)
    (first, _) = analysis.queries(record, SPEC, T0, "fraud", "ml")
    assert (first.check, first.promql, first.template_hash) == (
        "error-rate",
        'errors{version="v2"}',
        "h1",
    )


def test_failing_beyond_the_limit_fails_at_once_even_inside_the_window() -> None:
    record = analysis.start("v2", "h1", SPEC, T0)
    for second in (0, 10):
        record = analysis.fold(
            record, SPEC, [measured("error-rate", 0.3, T0 + timedelta(seconds=second))]
        )
    phase, message = analysis.verdict(record, SPEC, T0 + timedelta(seconds=11))
    assert phase == "Failed"
    assert "check error-rate" in message
    assert "above max 0.05" in message
    assert "failureLimit 1" in message


def test_failures_within_the_limit_are_tolerated() -> None:
    record = analysis.start("v2", "h1", SPEC, T0)
    record = analysis.fold(record, SPEC, [measured("error-rate", 0.3, T0)])
    assert analysis.verdict(record, SPEC, T0 + timedelta(seconds=1))[0] == "Running"
    later = T0 + timedelta(seconds=61)
    record = analysis.fold(
        record, SPEC, [measured("error-rate", 0.01, later), measured("accuracy", 0.95, later)]
    )
    assert analysis.verdict(record, SPEC, later)[0] == "Passed"


def test_nothing_passes_before_the_window_ends() -> None:
    record = analysis.start("v2", "h1", SPEC, T0)
    record = analysis.fold(
        record, SPEC, [measured("error-rate", 0.0, T0), measured("accuracy", 0.99, T0)]
    )
    assert analysis.verdict(record, SPEC, T0 + timedelta(seconds=59))[0] == "Running"
    assert analysis.verdict(record, SPEC, T0 + timedelta(seconds=60))[0] == "Passed"


def test_missing_data_after_the_window_is_inconclusive_never_a_pass() -> None:
    record = analysis.start("v2", "h1", SPEC, T0)
    end = T0 + timedelta(seconds=70)
    record = analysis.fold(
        record,
        SPEC,
        [measured("error-rate", 0.01, end), measured("accuracy", None, end, error="unreachable")],
    )
    phase, message = analysis.verdict(record, SPEC, end)
    assert phase == "Inconclusive"
    assert "accuracy" in message
    record = analysis.fold(record, SPEC, [measured("accuracy", 0.95, end + timedelta(seconds=10))])
    assert analysis.verdict(record, SPEC, end + timedelta(seconds=10))[0] == "Passed"


def test_measurements_of_another_template_are_ignored() -> None:
    record = analysis.start("v2", "h1", SPEC, T0)
    record = analysis.fold(record, SPEC, [measured("error-rate", 0.9, T0, digest="old")])
    assert all(c.failed == 0 and c.last_measured_at is None for c in record.checks)
