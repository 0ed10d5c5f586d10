"""Metric analysis on the real test bed with a real Prometheus scraping a loopback exporter.

A version that is Ready but serves badly (error rate, accuracy) is reverted with
AnalysisFailed; a healthy one becomes last good only after its analysis passes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.constants import GROUP, PLURAL, VERSION
from testbed.metrics import Exporter, Prometheus
from testbed.support import OperatorProcess, free_port
from tests.e2e.helpers import Kube, model_deployment, wait_for

GOOD = "registry.example/m:1"
ERRORS = 'max(model_error_ratio{namespace="{{namespace}}",model="{{name}}",version="{{version}}"})'
ACCURACY = 'min(model_accuracy{namespace="{{namespace}}",model="{{name}}",version="{{version}}"})'


@pytest.fixture
def operator(stopped_operator: OperatorProcess, prometheus: str) -> OperatorProcess:
    """The operator, allowed to query the test's Prometheus (docs/security.md: only
    URLs an admin allowed are contacted)."""
    stopped_operator.start(f"--allowed-analysis-source={prometheus}/")
    return stopped_operator


def analysed(name: str, bad: dict[str, float] | None = None, **analysis: Any) -> dict[str, Any]:
    body = model_deployment(name, {"v1": GOOD, "v2": "registry.example/m:2"}, "v1")
    body["spec"]["analysis"] = {
        "bakeSeconds": 4,
        "intervalSeconds": 1,
        "checks": [
            {
                "name": "error-rate",
                "query": ERRORS,
                "max": 0.05,
                "failureLimit": (bad or {}).get("limit", 0),
            },
            {"name": "accuracy", "query": ACCURACY, "min": 0.9},
        ],
        **analysis,
    }
    return body


def last_good(kube: Kube, ns: str, name: str) -> str | None:
    return kube.status(ns, name).get("lastGoodVersion")


def start_on_v1(kube: Kube, exporter: Exporter, ns: str, name: str, body: dict[str, Any]) -> None:
    exporter.serve(ns, name, "v1", errors=0.01, accuracy=0.95)
    kube.create(ns, body)
    wait_for(lambda: last_good(kube, ns, name) == "v1", 60, "v1 to pass its analysis")


def test_healthy_version_passes_analysis_and_becomes_last_good(
    kube: Kube, namespace: str, operator: OperatorProcess, exporter: Exporter, prometheus: str
) -> None:
    name = "healthy"
    start_on_v1(kube, exporter, namespace, name, analysed(name, prometheus=prometheus))
    exporter.serve(namespace, name, "v2", errors=0.01, accuracy=0.96)
    kube.select(namespace, name, "v2")
    wait_for(
        lambda: kube.status(namespace, name).get("analysis", {}).get("version") == "v2",
        30,
        "v2's analysis to start",
    )
    assert last_good(kube, namespace, name) == "v1"  # Ready alone does not promote
    wait_for(lambda: last_good(kube, namespace, name) == "v2", 60, "v2 to pass its analysis")
    analysis = kube.status(namespace, name)["analysis"]
    assert analysis["phase"] == "Passed"
    assert all(check["passed"] >= 1 and check["failed"] == 0 for check in analysis["checks"])


@pytest.mark.parametrize(
    ("errors", "accuracy", "check", "bound"),
    [
        pytest.param(0.2, 0.95, "error-rate", "above max 0.05", id="error-rate-above-max"),
        pytest.param(0.01, 0.8, "accuracy", "below min 0.9", id="accuracy-below-min"),
    ],
)
def test_badly_serving_version_is_reverted_with_analysis_failed(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    exporter: Exporter,
    prometheus: str,
    errors: float,
    accuracy: float,
    check: str,
    bound: str,
) -> None:
    name = "bad-metrics"
    start_on_v1(kube, exporter, namespace, name, analysed(name, prometheus=prometheus))
    exporter.serve(namespace, name, "v2", errors=errors, accuracy=accuracy)
    kube.select(namespace, name, "v2")
    wait_for(
        lambda: kube.ledger(namespace, name).get("v2", {}).get("state") == "Failed",
        60,
        "v2 to fail its analysis",
    )
    wait_for(lambda: kube.get(namespace, name)["spec"]["activeVersion"] == "v1", 30, "revert")
    failed = kube.ledger(namespace, name)["v2"]
    assert failed["reason"] == "AnalysisFailed"
    assert f"check {check}" in failed["message"]
    assert bound in failed["message"]
    assert "model_" not in failed["message"]  # names the check, never its whole query
    assert last_good(kube, namespace, name) == "v1"


def test_brief_spike_within_the_failure_limit_is_tolerated(
    kube: Kube, namespace: str, operator: OperatorProcess, exporter: Exporter, prometheus: str
) -> None:
    name = "spike"
    start_on_v1(
        kube,
        exporter,
        namespace,
        name,
        analysed(name, bad={"limit": 5}, prometheus=prometheus, bakeSeconds=10),
    )
    exporter.serve(namespace, name, "v2", errors=0.3, accuracy=0.95)  # the spike
    kube.select(namespace, name, "v2")

    def spiked() -> bool:
        checks = kube.status(namespace, name).get("analysis", {}).get("checks", [])
        return any(k["name"] == "error-rate" and k.get("failed", 0) >= 1 for k in checks)

    wait_for(spiked, 30, "the spike to be measured")
    exporter.serve(namespace, name, "v2", errors=0.01, accuracy=0.95)  # and it is over
    wait_for(lambda: last_good(kube, namespace, name) == "v2", 60, "v2 to pass despite the spike")
    errors = next(
        k for k in kube.status(namespace, name)["analysis"]["checks"] if k["name"] == "error-rate"
    )
    assert 1 <= errors["failed"] <= 5


def test_unreachable_prometheus_is_inconclusive_then_passes_when_it_returns(
    kube: Kube,
    namespace: str,
    stopped_operator: OperatorProcess,
    exporter: Exporter,
    tmp_path: Path,
) -> None:
    name = "blind"
    late = Prometheus(tmp_path / "late-prometheus", exporter.address, free_port())
    stopped_operator.start(f"--allowed-analysis-source={late.url}/")
    exporter.serve(namespace, name, "v1", errors=0.01, accuracy=0.95)
    kube.create(namespace, analysed(name, prometheus=late.url, bakeSeconds=1))

    def inconclusive() -> bool:
        analysis = kube.status(namespace, name).get("analysis", {})
        return analysis.get("phase") == "Inconclusive" and all(
            k.get("inconclusive", 0) >= 2 for k in analysis.get("checks", [])
        )

    wait_for(inconclusive, 60, "an inconclusive analysis while Prometheus is down")
    assert last_good(kube, namespace, name) is None  # never silently promoted
    assert "unreachable" in kube.status(namespace, name)["analysis"]["checks"][0]["message"]
    late.start()
    try:
        wait_for(
            lambda: last_good(kube, namespace, name) == "v1",
            60,
            "the analysis to pass once Prometheus is back",
        )
    finally:
        late.stop()


def test_operator_restarted_mid_window_resumes_the_window(
    kube: Kube, namespace: str, operator: OperatorProcess, exporter: Exporter, prometheus: str
) -> None:
    name = "resume"
    start_on_v1(
        kube, exporter, namespace, name, analysed(name, prometheus=prometheus, bakeSeconds=12)
    )
    exporter.serve(namespace, name, "v2", errors=0.01, accuracy=0.95)
    kube.select(namespace, name, "v2")

    def measuring() -> dict[str, Any] | None:
        analysis = kube.status(namespace, name).get("analysis") or {}
        measured = analysis.get("version") == "v2" and any(
            k.get("passed", 0) >= 1 for k in analysis.get("checks", [])
        )
        return analysis if measured and analysis.get("phase") == "Running" else None

    window = wait_for(measuring, 30, "v2's analysis to be under way")
    operator.stop(kill=True)
    operator.start()
    wait_for(lambda: last_good(kube, namespace, name) == "v2", 60, "v2 to pass after restart")
    analysis = kube.status(namespace, name)["analysis"]
    assert (analysis["startedAt"], analysis["endsAt"]) == (window["startedAt"], window["endsAt"])


# ---------------------------------------- every answer has a defined outcome


def test_an_infinite_measurement_is_compared_with_its_bound_and_never_wedges_status(
    kube: Kube, namespace: str, operator: OperatorProcess, exporter: Exporter, prometheus: str
) -> None:
    name = "infinite"
    start_on_v1(kube, exporter, namespace, name, analysed(name, prometheus=prometheus))
    exporter.serve(namespace, name, "v2", errors=math.inf, accuracy=0.95)  # x/0 upstream
    kube.select(namespace, name, "v2")
    wait_for(
        lambda: kube.ledger(namespace, name).get("v2", {}).get("state") == "Failed",
        60,
        "v2 to fail on +Inf above its max",
    )
    wait_for(lambda: kube.get(namespace, name)["spec"]["activeVersion"] == "v1", 30, "revert")
    failed = kube.ledger(namespace, name)["v2"]
    assert failed["reason"] == "AnalysisFailed"
    assert "= +Inf, above max 0.05" in failed["message"]


def test_a_nan_measurement_is_no_data_and_never_promotes(
    kube: Kube, namespace: str, operator: OperatorProcess, exporter: Exporter, prometheus: str
) -> None:
    name = "nan"
    start_on_v1(kube, exporter, namespace, name, analysed(name, prometheus=prometheus))
    exporter.serve(namespace, name, "v2", errors=math.nan, accuracy=0.95)  # 0/0: no traffic
    kube.select(namespace, name, "v2")
    checks = wait_for(
        lambda: (
            (a := kube.status(namespace, name).get("analysis", {})).get("phase") == "Inconclusive"
            and {k["name"]: k for k in a["checks"]}
        ),
        60,
        "the analysis to end Inconclusive",
    )
    assert checks["error-rate"]["lastValue"] == "NaN"
    assert checks["error-rate"]["inconclusive"] >= 1
    assert last_good(kube, namespace, name) == "v1"


@pytest.mark.parametrize(
    ("query", "said"),
    [
        pytest.param("sum(model_error_ratio", "Prometheus refused the query", id="syntax-error"),
        pytest.param("model_error_ratio[1m]", "returned a matrix", id="range-vector"),
        pytest.param('"a string"', "returned a string", id="string"),
        pytest.param("model_error_ratio", "series; a check needs one value", id="several-series"),
    ],
)
def test_a_query_that_cannot_be_judged_stalls_with_invalid_query_until_fixed(
    kube: Kube,
    namespace: str,
    operator: OperatorProcess,
    exporter: Exporter,
    prometheus: str,
    query: str,
    said: str,
) -> None:
    name = "invalid"
    exporter.serve(namespace, "other-model", "v1", errors=0.01, accuracy=0.95)  # a 2nd series
    start_on_v1(kube, exporter, namespace, name, analysed(name, prometheus=prometheus))
    exporter.serve(namespace, name, "v2", errors=0.01, accuracy=0.95)
    body = kube.get(namespace, name)
    checks = body["spec"]["analysis"]["checks"]
    checks[0]["query"] = query
    kube.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {
            "spec": {
                "activeVersion": "v2",
                "analysis": {**body["spec"]["analysis"], "checks": checks},
            }
        },
    )
    stalled = wait_for(
        lambda: (
            (k := kube.condition(namespace, name, "Stalled")).get("reason") == "InvalidQuery" and k
        ),
        30,
        "Stalled=True, InvalidQuery",
    )
    assert said in stalled["message"]
    assert "check error-rate" in stalled["message"]
    assert kube.delivered(namespace, name, "InvalidQuery") == 1
    checks[0]["query"] = ERRORS
    kube.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"spec": {"analysis": {**body["spec"]["analysis"], "checks": checks}}},
    )
    wait_for(lambda: last_good(kube, namespace, name) == "v2", 60, "v2 to pass once fixed")
    assert kube.condition(namespace, name, "Stalled")["status"] == "False"
