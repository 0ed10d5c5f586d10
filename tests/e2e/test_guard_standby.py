"""Guarded promotion and the warm standby, their rules on the test bed (kwok pods).

The guard keeps judging a promoted version and reverts it when its checks fail; the
standby keeps the previous good version warm so a late revert is a Service switch.
The timing and zero-failed-request figures come from the real node
(tests/e2e/test_real_node.py) and the benchmarks.
"""

from __future__ import annotations

from typing import Any

from modeldeploy.constants import GROUP, LABEL_STANDBY_OF, PLURAL, VERSION
from testbed.metrics import Exporter
from testbed.support import OperatorProcess
from tests.e2e.helpers import (
    Kube,
    ServedEndpointSampler,
    model_deployment,
    ready,
    wait_for,
)

GOOD, GOOD_2 = "registry.example/m:1", "registry.example/m:2"
ERRORS = 'max(model_error_ratio{namespace="{{namespace}}",model="{{name}}",version="{{version}}"})'


def operator_allowing(operator: OperatorProcess, prometheus: str) -> None:
    operator.start(f"--allowed-analysis-source={prometheus}/")


def test_a_promoted_version_that_degrades_in_its_guard_window_is_reverted(
    kube: Kube,
    namespace: str,
    stopped_operator: OperatorProcess,
    exporter: Exporter,
    prometheus: str,
) -> None:
    operator_allowing(stopped_operator, prometheus)
    name = "guarded"
    body = model_deployment(name, {"v1": GOOD, "v2": GOOD_2}, "v1")
    body["spec"]["analysis"] = {
        "prometheus": prometheus,
        "bakeSeconds": 2,
        "intervalSeconds": 1,
        "guardSeconds": 600,
        "checks": [{"name": "error-rate", "query": ERRORS, "max": 0.05}],
    }
    exporter.serve(namespace, name, "v1", errors=0.01, accuracy=1)
    exporter.serve(namespace, name, "v2", errors=0.01, accuracy=1)
    kube.create(namespace, body)
    kube.wait_good(namespace, name, "v1")
    kube.select(namespace, name, "v2")
    wait_for(
        lambda: (
            kube.status(namespace, name).get("lastGoodVersion") == "v2"
            and kube.status(namespace, name)["analysis"]["phase"] == "Guarding"
        ),
        60,
        "v2 promoted and guarded",
    )
    exporter.serve(namespace, name, "v2", errors=0.5, accuracy=1)  # it degrades after promotion
    wait_for(
        lambda: kube.ledger(namespace, name).get("v2", {}).get("state") == "Failed",
        60,
        "v2 to fail its guard",
    )
    wait_for(lambda: kube.get(namespace, name)["spec"]["activeVersion"] == "v1", 30, "revert")
    status = kube.status(namespace, name)
    failed = next(h for h in status["history"] if h["version"] == "v2")
    assert (failed["outcome"], failed["reason"], failed["stage"]) == (
        "Failed",
        "AnalysisFailed",
        "Guard",
    )
    kube.wait_good(namespace, name, "v1")
    assert kube.delivered(namespace, name, "RolledBack") >= 1


def standby_model(name: str, seconds: int) -> dict[str, Any]:
    body = model_deployment(name, {"v1": GOOD, "v2": GOOD_2}, "v1", replicas=3)
    body["spec"]["rollout"]["standby"] = {"seconds": seconds}
    return body


def test_a_rollback_inside_the_standby_window_switches_the_service_and_keeps_capacity(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "warm"
    kube.create(namespace, standby_model(name, seconds=600))
    wait_for(lambda: ready(kube, namespace, name), 60, "v1 Ready")
    with ServedEndpointSampler(kube, namespace, name, 3) as served:
        wait_for(lambda: served.minimum is not None, 30, "the Service's endpoints")
        kube.select(namespace, name, "v2")
        standby = wait_for(
            lambda: (s := kube.status(namespace, name).get("standby", {})).get("endsAt") and s,
            60,
            "v2 promoted with v1 warm beside it",
        )
        assert standby["version"] == "v1"
        warm = kube.apps.read_namespaced_deployment(f"{name}-standby", namespace)
        assert warm.spec.template.metadata.labels["modeldeploy.io/version"] == "v1"
        assert "modeldeploy.io/name" not in warm.spec.template.metadata.labels
        kube.select(namespace, name, "v1")  # a manual rollback inside the window
        wait_for(
            lambda: (
                kube.core.read_namespaced_service(name, namespace).spec.selector
                == {LABEL_STANDBY_OF: name}
            ),
            30,
            "the Service switched to the standby",
        )
        wait_for(
            lambda: (
                kube.status(namespace, name).get("standby") is None and ready(kube, namespace, name)
            ),
            90,
            "the main Deployment back on v1 and the standby gone",
        )
    selector = kube.core.read_namespaced_service(name, namespace).spec.selector
    assert selector == {"modeldeploy.io/name": name}
    wait_for(
        lambda: kube.deployment_or_none(namespace, f"{name}-standby") is None,
        30,
        "the standby Deployment deleted",
    )
    assert served.minimum is not None
    assert served.minimum >= 3, f"ready endpoints fell to {served.minimum}"


def test_the_standby_is_removed_when_its_window_ends(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    name = "brief"
    kube.create(namespace, standby_model(name, seconds=3))
    wait_for(lambda: ready(kube, namespace, name), 60, "v1 Ready")
    kube.select(namespace, name, "v2")
    wait_for(
        lambda: kube.deployment_or_none(namespace, f"{name}-standby") is not None,
        30,
        "the standby created",
    )
    wait_for(
        lambda: (
            kube.status(namespace, name).get("lastGoodVersion") == "v2"
            and kube.deployment_or_none(namespace, f"{name}-standby") is None
        ),
        90,
        "the window to end and the standby to go",
    )
    assert kube.status(namespace, name).get("standby") is None
    custom = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert custom["spec"]["activeVersion"] == "v2"
