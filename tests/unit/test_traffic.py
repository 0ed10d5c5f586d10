"""Validation before traffic and what serves while a failure is handled (B19, B22).

A validated version's pods carry a readiness gate the operator opens only once they
answered the golden requests; a failed version that was already receiving traffic is
left out of the Service as soon as a last good pod is Ready; SERVING says what answers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from modeldeploy import constants as c
from modeldeploy.cli import serving_line
from modeldeploy.core.plan import Decision
from modeldeploy.model.observed import Observed, PodState, ValidationResult
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Expect, GoldenRequest, ValidationSpec
from tests.unit.builders import (
    at,
    deployment,
    digest,
    pod,
    present,
    replica_set,
    select,
    serving_v1,
    spec_of,
    step,
)

VALIDATION = ValidationSpec(requests=(GoldenRequest(name="known", expect=Expect()),))


def validated(res: Resource) -> Resource:
    return replace(res, spec=replace(spec_of(res), validation=VALIDATION))


def gated_pod(res: Resource, version: str, name: str, ip: str, **state: Any) -> PodState:
    return replace(
        pod(res, version, name=name, created=4),
        ip=ip,
        gated=True,
        containers_ready=True,
        controller_uid=replica_set(res, version).uid,
        **state,
    )


def rs(res: Resource) -> tuple[Any, ...]:
    return (replica_set(res, "v1"), replica_set(res, "v2"))


def answer(res: Resource, version: str, name: str, ok: bool, seconds: float) -> ValidationResult:
    return ValidationResult(
        pod=name,
        template_hash=digest(res, version),
        passed=ok,
        at=at(seconds),
        message="" if ok else f"request known to pod {name}: expected status 200, got 500",
    )


# ------------------------------------------------------------ the readiness gate


def releasing_validated_v2() -> tuple[Resource, Decision]:
    res = select(validated(serving_v1()), "v2")
    return step(res, Observed(deployment=deployment(res, "v1"), replica_sets=rs(res)), 3)


def test_a_validated_version_s_pods_carry_the_readiness_gate() -> None:
    _, decision = releasing_validated_v2()
    template = present(decision.deployment)["spec"]["template"]["spec"]
    assert template["readinessGates"] == [{"conditionType": c.CONDITION_VALIDATED}]


def test_a_version_rolled_out_without_validation_is_reverted_to_as_it_was() -> None:
    """v1 ran without the gate; validation came with v2: the revert's Deployment must be
    v1's template exactly (its ReplicaSet, whose pods never left), so no gate."""
    res, _ = releasing_validated_v2()
    assert present(res.status.version_record("v1")).gated is False
    assert present(res.status.version_record("v2")).gated is True
    back = select(res, "v1")
    back, decision = step(
        back, Observed(deployment=deployment(back, "v2"), replica_sets=rs(back)), 6
    )
    template = present(decision.deployment)["spec"]["template"]["spec"]
    assert "readinessGates" not in template


def test_a_gated_pod_is_validated_before_it_is_ready_and_its_gate_opened_after() -> None:
    res, _ = releasing_validated_v2()
    waiting = gated_pod(res, "v2", "m-2-a", "10.0.1.1")
    seen = Observed(
        deployment=deployment(res, "v2", ready=0, old=2), pods=(waiting,), replica_sets=rs(res)
    )
    res, decision = step(res, seen, 4)
    assert [r.pod for r in decision.validations] == ["m-2-a"]  # not Ready, yet due
    assert decision.gates == ()
    passed = replace(seen, validations=(answer(res, "v2", "m-2-a", True, 4.5),))
    res, decision = step(res, passed, 5)
    (gate,) = decision.gates
    assert (gate.pod, gate.passed, gate.reason) == ("m-2-a", True, c.REASON_GOLDEN_PASSED)


def test_a_gated_pod_that_answers_wrong_is_shut_out_and_fails_the_version() -> None:
    res, _ = releasing_validated_v2()
    waiting = gated_pod(res, "v2", "m-2-a", "10.0.1.1")
    wrong = Observed(
        deployment=deployment(res, "v2", ready=0, old=2),
        pods=(waiting,),
        replica_sets=rs(res),
        validations=(answer(res, "v2", "m-2-a", False, 4.5),),
    )
    res, decision = step(res, wrong, 5)
    (gate,) = decision.gates
    assert (gate.pod, gate.passed, gate.reason) == ("m-2-a", False, c.REASON_GOLDEN_FAILED)
    assert "expected status 200, got 500" in gate.message
    assert present(res.status.version_record("v2")).reason == "ValidationFailed"
    assert present(decision.spec_change).set_version == "v1"  # the old pods never left


def test_a_pod_of_the_serving_version_that_comes_later_is_validated_before_traffic() -> None:
    res = validated(serving_v1())
    res = replace(
        res,
        status=replace(
            res.status,
            versions=tuple(replace(v, gated=True) for v in res.status.versions),
        ),
    )
    later = gated_pod(res, "v1", "m-1-new", "10.0.0.9")
    seen = Observed(deployment=deployment(res), pods=(later,), replica_sets=rs(res))
    res, decision = step(res, seen, 10)
    assert [r.pod for r in decision.validations] == ["m-1-new"]
    wrong = replace(seen, validations=(answer(res, "v1", "m-1-new", False, 10.5),))
    res, decision = step(res, wrong, 11)
    (gate,) = decision.gates
    assert gate.passed is False
    assert c.EVENT_POD_SHUT_OUT in [e.reason for e in decision.events]
    assert decision.spec_change is None  # never a revert for it


def test_without_validation_any_more_a_gated_pod_s_gate_opens_at_once() -> None:
    res = serving_v1()
    later = gated_pod(res, "v1", "m-1-new", "10.0.0.9")
    _, decision = step(
        res, Observed(deployment=deployment(res), pods=(later,), replica_sets=rs(res)), 10
    )
    (gate,) = decision.gates
    assert (gate.pod, gate.passed, gate.reason) == ("m-1-new", True, c.REASON_NOT_VALIDATED)


# ------------------------------------------------------ out of the Service at the verdict


def promoted_in_its_bake_then_failed(**rollout: Any) -> tuple[Resource, Observed]:
    """v2's rollout completed (every v1 pod gone) and then failed (its bake's analysis, say):
    what the cluster shows once the revert has brought one v1 pod back."""
    res = select(serving_v1(**rollout), "v2")
    res, _ = step(res, Observed(deployment=deployment(res, "v1"), replica_sets=rs(res)), 3)
    v2 = tuple(
        replace(
            pod(res, "v2", name=f"m-2-{i}", ready=True, created=4),
            controller_uid=replica_set(res, "v2").uid,
        )
        for i in range(2)
    )
    crashing = replace(
        v2[0], containers=(replace(v2[0].containers[0], waiting_reason="CrashLoopBackOff"),)
    )
    res, _ = step(
        res,
        Observed(
            deployment=deployment(res, "v2", ready=1, old=0),
            pods=(crashing, v2[1]),
            replica_sets=rs(res),
        ),
        5,
    )
    assert present(res.status.version_record("v2")).state == "Failed"
    back = select(res, "v1")
    v1 = replace(
        pod(back, "v1", name="m-1-x", ready=True, created=6),
        controller_uid=replica_set(back, "v1").uid,
    )
    return back, Observed(
        deployment=deployment(back, "v2", ready=2, old=0), pods=(*v2, v1), replica_sets=rs(back)
    )


def test_a_failed_version_still_ready_is_left_out_once_a_last_good_pod_is_ready() -> None:
    res, seen = promoted_in_its_bake_then_failed()
    res, decision = step(res, seen, 7)
    selector = present(decision.service)["spec"]["selector"]
    assert selector == {c.LABEL_NAME: "m", c.LABEL_TEMPLATE_HASH: digest(res, "v1")}
    assert res.status.serving_version == "v1"  # SERVING: what answers
    # The revert done: every pod of the Service's is v1 again, the selector as always.
    done = Observed(deployment=deployment(res, "v1"), replica_sets=rs(res))
    res, decision = step(res, done, 9)
    assert present(decision.service)["spec"]["selector"] == {c.LABEL_NAME: "m"}


def test_failed_traffic_keep_leaves_every_ready_pod_in_the_service() -> None:
    res, seen = promoted_in_its_bake_then_failed(failedTraffic="Keep")
    _, decision = step(res, seen, 7)
    assert present(decision.service)["spec"]["selector"] == {c.LABEL_NAME: "m"}


# ------------------------------------------------ golden requests added later (no rollout)


def test_golden_requests_added_later_check_the_serving_pods_and_never_revert() -> None:
    res = validated(serving_v1())  # v1 rolled out before there were golden requests
    pods = tuple(
        replace(
            pod(res, "v1", name=f"m-1-{i}", ready=True),
            ip=f"10.0.0.{i}",
            controller_uid=replica_set(res, "v1").uid,
        )
        for i in range(2)
    )
    seen = Observed(deployment=deployment(res), pods=pods, replica_sets=rs(res))
    res, decision = step(res, seen, 10)
    assert {r.pod for r in decision.validations} == {"m-1-0", "m-1-1"}
    assert present(res.status.rollout).outcome == "Succeeded"  # no rollout
    wrong = replace(seen, validations=(answer(res, "v1", "m-1-0", False, 10.5),))
    res, decision = step(res, wrong, 11)
    validated_condition = next(k for k in res.status.conditions if k.type == c.VALIDATED)
    assert (validated_condition.status, validated_condition.reason) == (
        "False",
        "GoldenRequestsFailed",
    )
    assert "v1, which serves:" in validated_condition.message
    assert [e.reason for e in decision.events].count(c.EVENT_SERVING_ANSWERS_WRONG) == 1
    assert decision.spec_change is None and decision.deployment is None
    res, decision = step(res, seen, 12)  # checked: not asked again, nothing more said
    assert decision.validations == () and not decision.events


def test_the_plugin_says_why_what_serves_is_not_the_active_version() -> None:
    standby = {"version": "v1", "serving": True}
    assert serving_line("v2", {"servingVersion": "v1", "standby": standby}) == (
        "v1 (the warm standby)"
    )
    assert serving_line("v2", {"servingVersion": "v1"}) == (
        "v1 (its pods alone: the Service leaves v2 out)"
    )
    assert serving_line("v1", {"servingVersion": "v1"}) == "v1"
    assert serving_line("v1", {}) == "-"
