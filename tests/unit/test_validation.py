"""spec.validation: golden requests judged, folded and acted on by the pure core."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

import pytest

from modeldeploy import constants as c
from modeldeploy import metrics, outbound
from modeldeploy.core import golden
from modeldeploy.core.plan import Decision, ValidationRequest
from modeldeploy.core.revert_check import deadline_s
from modeldeploy.model.observed import Observed, PodState, ValidationResult
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import (
    SpecError,
    parse_json_path,
    parse_validation,
)
from modeldeploy.validator import Validator, validate
from testbed.support import wait_for
from tests.unit.builders import (
    at,
    condition,
    deployment,
    digest,
    pod,
    present,
    resource,
    select,
    spec_of,
    step,
)

BODY = {"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 3], "data": [3, 1, 2.5]}]}
GOLDEN = {
    "name": "known-fraud",
    "body": BODY,
    "expect": {
        "values": [
            {"path": "outputs[0].data[0]", "number": 0.999, "tolerance": 0.01},
            {"path": "$.model_name", "equals": "m"},
        ]
    },
}
VALIDATION = present(parse_validation({"requests": [GOLDEN]}))
REQUEST = VALIDATION.requests[0]
RIGHT = {"model_name": "m", "outputs": [{"data": [0.9992]}]}


# ------------------------------------------------------------- parsing the spec


def test_a_golden_request_defaults_to_the_oip_infer_path_post_200_and_five_seconds() -> None:
    bare = present(parse_validation({"requests": [{"name": "ping"}]})).requests[0]
    assert (bare.path, bare.method, bare.timeout_s, bare.expect.status, bare.body) == (
        "/v2/models/{{name}}/infer",
        "POST",
        5.0,
        200,
        None,
    )
    assert parse_validation(None) is None
    assert parse_validation({"requests": []}) is None


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("outputs[0].data[0]", ("outputs", 0, "data", 0)),
        ("$.outputs[0].data[0]", ("outputs", 0, "data", 0)),
        ("model_version", ("model_version",)),
        ("$['model-name']", ("model-name",)),
        ('parameters["a.b"][12]', ("parameters", "a.b", 12)),
    ],
)
def test_json_paths_read_keys_and_indexes(path: str, steps: tuple[Any, ...]) -> None:
    assert parse_json_path(path) == steps


@pytest.mark.parametrize("path", ["", "$", "outputs[x]", "outputs..data", "a[-1]", "a b"])
def test_a_path_that_is_not_one_is_an_invalid_spec(path: str) -> None:
    with pytest.raises(SpecError):
        parse_json_path(path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"path": "a"}, "needs equals"),
        ({"path": "a", "equals": "x", "number": 1}, "needs equals"),
        ({"path": "a", "equals": "x", "tolerance": 0.1}, "only to a number"),
        ({"path": "a", "number": 1, "tolerance": -1}, "must not be negative"),
    ],
)
def test_an_expectation_that_cannot_be_judged_is_an_invalid_spec(
    value: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        parse_validation({"requests": [{"name": "r", "expect": {"values": [value]}}]})


# ------------------------------------------------------------- judging answers


def answer(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_an_answer_within_the_tolerance_and_equal_strings_passes() -> None:
    assert golden.failed(REQUEST, "m-1", 200, answer(RIGHT)) is None
    near = {"model_name": "m", "outputs": [{"data": [0.99]}]}
    assert golden.failed(REQUEST, "m-1", 200, answer(near)) is None


@pytest.mark.parametrize(
    ("status", "document", "expected"),
    [
        (500, {"error": "inference failed"}, "expected status 200, got 500"),
        (200, {"model_name": "m", "outputs": [{"data": [0.0008]}]}, "got 0.0008"),
        (200, {"model_name": "x", "outputs": [{"data": [0.9992]}]}, 'model_name = "m", got "x"'),
        (200, {"outputs": []}, "outputs[0].data[0] = 0.999 ± 0.01, got nothing there"),
        (200, {"model_name": "m", "outputs": [{"data": ["0.9992"]}]}, 'got "0.9992"'),
        (200, {"model_name": "m", "outputs": [{"data": [True]}]}, "got true"),
        (200, {"model_name": 1, "outputs": [{"data": [0.9992]}]}, 'model_name = "m", got 1'),
    ],
)
def test_a_wrong_answer_names_the_request_the_pod_what_was_expected_and_what_came(
    status: int, document: Any, expected: str
) -> None:
    message = present(golden.failed(REQUEST, "m-1-abc", status, answer(document)))
    assert message.startswith("request known-fraud to pod m-1-abc: ")
    assert expected in message
    assert "; answer: {" in message


def test_the_excerpt_of_a_long_or_binary_answer_is_short_and_on_one_line() -> None:
    long = answer({"outputs": [{"data": list(range(1000))}]})
    message = present(golden.failed(REQUEST, "m-1", 200, long))
    quoted = message.split("; answer: ")[1]
    assert len(quoted) <= golden.EXCERPT_LIMIT
    assert quoted.endswith("…")
    assert golden.excerpt(b"\xff\xfe\nnot\n\njson") == "�� not json"
    assert "expected a JSON answer" in present(golden.failed(REQUEST, "m-1", 200, b"<html>"))


def test_paths_are_filled_in_with_name_namespace_and_version() -> None:
    custom = replace(
        REQUEST, path="/v2/models/{{name}}/versions/{{version}}/infer?ns={{namespace}}"
    )
    assert golden.request_path(custom, "fraud", "ml", "v2") == (
        "/v2/models/fraud/versions/v2/infer?ns=ml"
    )


# ------------------------------------------------------------- the rollout


def validated(**kwargs: Any) -> Resource:
    res = resource(**kwargs)
    return replace(res, spec=replace(spec_of(res), validation=VALIDATION))


def ready_pod(res: Resource, version: str, name: str, ip: str, created: float = 0) -> PodState:
    return replace(pod(res, version, name=name, ready=True, created=created), ip=ip)


def answered(res: Resource, version: str, pods: list[str], seconds: float, ok: bool = True) -> Any:
    return tuple(
        ValidationResult(
            pod=name,
            template_hash=digest(res, version),
            passed=ok,
            at=at(seconds),
            message=""
            if ok
            else f"request known-fraud to pod {name}: expected status 200, got 500",
        )
        for name in pods
    )


V1_PODS = ("m-1-a", "m-1-b")
V2_PODS = ("m-2-a", "m-2-b")


def v1_pods(res: Resource) -> tuple[PodState, ...]:
    return tuple(ready_pod(res, "v1", n, f"10.0.0.{i + 1}") for i, n in enumerate(V1_PODS))


def v2_pods(res: Resource) -> tuple[PodState, ...]:
    return tuple(
        ready_pod(res, "v2", n, f"10.0.1.{i + 1}", created=4) for i, n in enumerate(V2_PODS)
    )


def serving_v1_validated(**kwargs: Any) -> Resource:
    res = validated(**kwargs)
    res, _ = step(res, Observed(), 0)
    pods = v1_pods(res)
    res, decision = step(res, Observed(deployment=deployment(res), pods=pods), 1)
    assert res.status.last_good_version is None  # Ready, not validated yet
    assert {r.pod for r in decision.validations} == set(V1_PODS)
    done = Observed(
        deployment=deployment(res), pods=pods, validations=answered(res, "v1", list(V1_PODS), 1.5)
    )
    res, _ = step(res, done, 2)
    assert res.status.last_good_version == "v1"
    return res


def test_ready_pods_get_the_golden_requests_and_the_rollout_waits_for_their_answers() -> None:
    res = validated()
    res, _ = step(res, Observed(), 0)
    pods = v1_pods(res)
    res, decision = step(res, Observed(deployment=deployment(res), pods=pods), 1)
    assert present(res.status.rollout).outcome == "Progressing"
    assert condition(res, c.READY)[0] == "False"
    first = decision.validations[0]
    assert (first.pod, first.ip, first.port, first.template_hash) == (
        "m-1-a",
        "10.0.0.1",
        8080,
        digest(res),
    )
    assert first.requests[0].path == "/v2/models/m/infer"
    assert present(decision.requeue_after) <= REQUEST.timeout_s + 5.05
    # One pod answered: still waiting for the other, which is asked for again.
    one = answered(res, "v1", ["m-1-a"], 1.5)
    res, decision = step(res, Observed(deployment=deployment(res), pods=pods, validations=one), 2)
    assert [r.pod for r in decision.validations] == ["m-1-b"]
    assert present(res.status.validation).passed_pods == ("m-1-a",)
    two = answered(res, "v1", ["m-1-b"], 2.5)
    res, decision = step(res, Observed(deployment=deployment(res), pods=pods, validations=two), 3)
    assert res.status.last_good_version == "v1"
    record = present(res.status.validation)
    assert (record.phase, record.passed_pods) == ("Passed", V1_PODS)
    assert decision.validations == ()


def test_a_complete_deployment_waits_for_the_pod_watch_to_show_its_ready_pods() -> None:
    res = validated()
    res, _ = step(res, Observed(), 0)
    res, decision = step(res, Observed(deployment=deployment(res)), 1)
    assert present(res.status.rollout).outcome == "Progressing"
    assert decision.requeue_after is not None


def test_a_wrong_answer_fails_the_version_and_reverts_when_no_old_pod_is_ready() -> None:
    res = serving_v1_validated()
    bad = select(res, "v2")
    bad, _ = step(bad, Observed(deployment=deployment(res)), 3)
    pods = v2_pods(bad)
    wrong = answered(bad, "v2", ["m-2-a"], 4.5, ok=False)
    seen = Observed(deployment=deployment(bad, "v2"), pods=pods, validations=wrong)
    bad, decision = step(bad, seen, 5)
    record = present(bad.status.version_record("v2"))
    assert (record.state, record.reason) == ("Failed", "ValidationFailed")
    assert present(record.message).startswith("request known-fraud to pod m-2-a: expected")
    assert bad.status.last_good_version == "v1"
    change = present(decision.spec_change)
    assert (change.set_version, change.expect_version) == ("v1", "v2")
    assert present(bad.status.validation).phase == "Failed"


def fail_v2_with_v1_running(**kwargs: Any) -> tuple[Resource, Decision, tuple[PodState, ...]]:
    """v2 failed validation while v1's pods still run (maxUnavailable 0)."""
    res = serving_v1_validated(**kwargs)
    bad = select(res, "v2")
    bad, _ = step(bad, Observed(deployment=deployment(res)), 3)
    old = v1_pods(bad)
    pods = (*old, v2_pods(bad)[0])
    wrong = answered(bad, "v2", ["m-2-a"], 4.5, ok=False)
    seen = Observed(deployment=deployment(bad, "v2", ready=1, old=1), pods=pods, validations=wrong)
    bad, decision = step(bad, seen, 5)
    return bad, decision, old


def test_before_a_revert_the_targets_running_pods_are_validated_then_the_revert_is_written() -> (
    None
):
    bad, decision, old = fail_v2_with_v1_running()
    assert present(bad.status.version_record("v2")).reason == "ValidationFailed"
    assert decision.spec_change is None  # nothing written before the target answered
    assert bad.status.intent is None
    assert {r.pod for r in decision.validations} == set(V1_PODS)
    assert {r.template_hash for r in decision.validations} == {digest(bad, "v1")}
    check = present(bad.status.validation)
    assert (check.version, check.revision, check.phase) == ("v1", None, "Running")
    seen = Observed(
        deployment=deployment(bad, "v2", ready=1, old=1),
        pods=old,
        validations=answered(bad, "v1", list(V1_PODS), 5.5),
    )
    bad, decision = step(bad, seen, 6)
    change = present(decision.spec_change)
    assert (change.set_version, change.expect_version) == ("v1", "v2")
    assert present(bad.status.intent).version == "v1"
    assert c.EVENT_QUARANTINED not in [e.reason for e in decision.events]
    # The revert's rollout counts the pods that already passed: no second round.
    back = select(bad, "v1")
    back, decision = step(
        back, Observed(deployment=deployment(back, "v2", ready=1, old=1), pods=old), 7
    )
    assert decision.validations == ()
    assert decision.deployment is not None
    back, _ = step(back, Observed(deployment=deployment(back, "v1"), pods=old), 8)
    assert back.status.history[0].outcome == "Succeeded"


def test_a_revert_target_that_never_answers_is_reverted_to_at_the_check_s_deadline() -> None:
    bad, decision, old = fail_v2_with_v1_running()
    limit = deadline_s(VALIDATION)
    silent = Observed(deployment=deployment(bad, "v2", ready=1, old=1), pods=old)
    bad, decision = step(bad, silent, 5 + limit - 1)  # still waiting: nothing written
    assert decision.spec_change is None
    assert decision.requeue_after is not None and decision.requeue_after <= 1.1
    bad, decision = step(bad, silent, 5 + limit)
    change = present(decision.spec_change)
    assert (change.set_version, change.expect_version) == ("v1", "v2")
    said = [e for e in decision.events if e.reason == c.EVENT_TARGET_UNCHECKED]
    assert len(said) == 1 and "the revert's rollout validates its pods" in said[0].message


def test_a_revert_target_whose_running_pods_fail_validation_is_not_reverted_to() -> None:
    bad, _, old = fail_v2_with_v1_running()
    seen = Observed(
        deployment=deployment(bad, "v2", ready=1, old=1),
        pods=old,
        validations=answered(bad, "v1", ["m-1-b"], 5.5, ok=False),
    )
    bad, decision = step(bad, seen, 6)
    assert decision.spec_change is None
    assert decision.deployment is None
    stalled = next(k for k in bad.status.conditions if k.type == c.STALLED)
    assert (stalled.status, stalled.reason) == ("True", "RollbackTargetUnhealthy")
    assert "not reverting to v1, whose running pods failed validation" in stalled.message
    assert "pod m-1-b" in stalled.message
    # It stays so: no request goes out again, nothing is written again.
    bad, decision = step(bad, replace(seen, validations=()), 7)
    assert (decision.spec_change, decision.validations) == (None, ())
    assert condition(bad, c.STALLED) == ("True", "RollbackTargetUnhealthy")


def test_keep_spec_switches_the_deployment_back_only_after_the_target_passed() -> None:
    bad, decision, old = fail_v2_with_v1_running(onFailure="KeepSpec")
    assert decision.deployment is None
    assert {r.pod for r in decision.validations} == set(V1_PODS)
    seen = Observed(
        deployment=deployment(bad, "v2", ready=1, old=1),
        pods=old,
        validations=answered(bad, "v1", list(V1_PODS), 5.5),
    )
    bad, decision = step(bad, seen, 6)
    labels = present(decision.deployment)["spec"]["template"]["metadata"]["labels"]
    assert labels[c.LABEL_VERSION] == "v1"
    assert decision.spec_change is None


def test_keep_spec_with_a_failing_target_stalls_and_leaves_the_deployment() -> None:
    bad, _, old = fail_v2_with_v1_running(onFailure="KeepSpec")
    seen = Observed(
        deployment=deployment(bad, "v2", ready=1, old=1),
        pods=old,
        validations=answered(bad, "v1", ["m-1-a"], 5.5, ok=False),
    )
    bad, decision = step(bad, seen, 6)
    assert decision.deployment is None
    assert condition(bad, c.STALLED) == ("True", "RollbackTargetUnhealthy")


def test_a_manual_rollback_to_running_pods_validates_them_before_the_deployment_changes() -> None:
    res = serving_v1_validated(autoRollback=False, versions={"v1": "r/m:1", "v2": "r/m:2"})
    slow = select(res, "v2")
    slow, _ = step(slow, Observed(deployment=deployment(res)), 3)
    old = v1_pods(slow)
    stuck = Observed(deployment=deployment(slow, "v2", ready=0, old=2), pods=old)
    slow, _ = step(slow, stuck, 4)
    back = select(slow, "v1")  # the user goes back while v2 has not come up
    back, decision = step(back, stuck, 5)
    assert present(back.status.rollout).trigger == "Manual"
    assert decision.deployment is None  # held: v1's running pods answer first
    assert {r.pod for r in decision.validations} == set(V1_PODS)
    wrong = replace(stuck, validations=answered(back, "v1", ["m-1-a"], 5.5, ok=False))
    back, decision = step(back, wrong, 6)
    record = present(back.status.version_record("v1"))
    assert (record.state, record.reason) == ("Failed", "ValidationFailed")
    assert "before the Deployment was switched to it" in present(record.message)
    assert decision.deployment is None


def test_a_manual_rollback_whose_running_pods_pass_switches_the_deployment() -> None:
    res = serving_v1_validated(autoRollback=False)
    slow = select(res, "v2")
    slow, _ = step(slow, Observed(deployment=deployment(res)), 3)
    old = v1_pods(slow)
    stuck = Observed(deployment=deployment(slow, "v2", ready=0, old=2), pods=old)
    back = select(slow, "v1")
    back, _ = step(back, stuck, 5)
    passed = replace(stuck, validations=answered(back, "v1", list(V1_PODS), 5.5))
    back, decision = step(back, passed, 6)
    labels = present(decision.deployment)["spec"]["template"]["metadata"]["labels"]
    assert labels[c.LABEL_VERSION] == "v1"


def test_answers_from_before_the_validation_began_or_of_another_template_are_ignored() -> None:
    res = validated()
    res, _ = step(res, Observed(), 10)
    pods = v1_pods(res)
    stale = (
        *answered(res, "v1", ["m-1-a"], 5, ok=False),  # before this rollout's validation
        *answered(res, "v2", ["m-1-b"], 11, ok=False),  # another template's
    )
    res, _ = step(res, Observed(deployment=deployment(res), pods=pods, validations=stale), 11)
    assert present(res.status.rollout).outcome == "Progressing"
    assert present(res.status.validation).phase == "Running"


def test_a_ready_pod_without_an_ip_fails_validation() -> None:
    res = validated()
    res, _ = step(res, Observed(), 0)
    pods = tuple(replace(p, ip=None) for p in v1_pods(res))
    res, decision = step(res, Observed(deployment=deployment(res), pods=pods), 1)
    assert present(res.status.version_record("v1")).reason == "ValidationFailed"
    assert "has no IP address" in present(present(res.status.version_record("v1")).message)
    assert decision.validations == ()


# ------------------------------------------------------------- the validator edge


def request_to(pod_name: str = "m-1-a", ip: str = "10.0.0.1") -> ValidationRequest:
    return ValidationRequest(
        pod=pod_name, ip=ip, port=8080, template_hash="h", requests=(REQUEST, REQUEST)
    )


def counted(outcome: str) -> float:
    value = metrics.VALIDATION_REQUESTS.labels(outcome)._value.get()
    return float(value)


def test_validate_sends_each_request_to_the_pod_and_counts_the_outcomes() -> None:
    sent: list[tuple[Any, ...]] = []

    def send(*args: Any, **kwargs: Any) -> outbound.Answer:
        sent.append((*args, kwargs["body"]))
        return outbound.Answer(200, answer(RIGHT))

    before = counted("Passed")
    result = validate(request_to(), send)
    assert result.passed and result.message == ""
    assert counted("Passed") == before + 2
    method, ip, port, path, timeout, body = sent[0]
    assert (method, ip, port, path, timeout) == ("POST", "10.0.0.1", 8080, REQUEST.path, 5.0)
    assert json.loads(body) == BODY


def test_validate_stops_at_the_first_wrong_or_missing_answer() -> None:
    calls: list[int] = []

    def wrong(*args: Any, **kwargs: Any) -> outbound.Answer:
        calls.append(1)
        return outbound.Answer(500, b'{"error": "inference failed"}')

    before = counted("Failed")
    result = validate(request_to(), wrong)
    assert not result.passed and len(calls) == 1
    assert result.message.startswith("request known-fraud to pod m-1-a: expected status 200")
    assert counted("Failed") == before + 1

    def silent(*args: Any, **kwargs: Any) -> outbound.Answer:
        raise outbound.OutboundError("no answer within the deadline")

    result = validate(request_to(), silent)
    assert not result.passed
    assert "(10.0.0.1:8080) got no answer: no answer within the deadline" in result.message


@pytest.mark.parametrize("ip", ["127.0.0.1", "169.254.169.254", "::1", "fd00:ec2::254", "pod"])
def test_golden_requests_never_go_to_a_loopback_link_local_or_metadata_address(ip: str) -> None:
    with pytest.raises(outbound.OutboundError):
        outbound.to_pod("POST", ip, 8080, "/", 1.0)


def test_one_namespaces_hanging_pods_never_hold_every_validator_worker() -> None:
    release = threading.Event()
    woken: list[Any] = []

    def send(method: str, ip: str, *args: Any, **kwargs: Any) -> outbound.Answer:
        if ip.startswith("10.9."):  # the hostile tenant's pods: hold their worker
            release.wait(30)
        return outbound.Answer(200, answer(RIGHT))

    validator = Validator(wake=woken.append, send=send, workers=4)
    try:
        for i in range(8):  # more hanging pods than there are workers
            validator.request(("hostile", f"m{i}"), (request_to(f"p{i}", f"10.9.0.{i}"),))
        validator.request(("victim", "m"), (request_to("v", "10.0.0.1"),))
        wait_for(lambda: ("victim", "m") in woken, 10, "the other tenant's answer")
        (result,) = validator.take(("victim", "m"))
        assert result.passed
    finally:
        release.set()
        validator.close()


def test_the_validator_sends_a_pods_requests_once_until_its_answer_is_taken() -> None:
    woken: list[Any] = []
    calls: list[str] = []

    def send(method: str, ip: str, *args: Any, **kwargs: Any) -> outbound.Answer:
        calls.append(ip)
        return outbound.Answer(200, answer(RIGHT))

    validator = Validator(wake=woken.append, send=send, workers=1)
    key = ("ns", "m")
    try:
        validator.request(key, (request_to(),))
        validator.request(key, (request_to(),))  # asked again before the answer was taken
        wait_for(lambda: woken, 10, "the answer")
        validator.request(key, (request_to(),))  # answered, not taken: still not sent again
        (result,) = validator.take(key)
        assert result.passed and calls == ["10.0.0.1", "10.0.0.1"]  # two golden requests
        validator.request(key, (request_to(),))  # taken: a new round may go out
        wait_for(lambda: len(woken) >= 2, 10, "the second answer")
        assert len(validator.take(key)) == 1
    finally:
        validator.close()
