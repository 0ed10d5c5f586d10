"""The signal table (docs/signals.md), row by row: which evidence counts from when.

A rollout begins at T_START. "New" pods were created at or after it; "old" pods
(a revert's target still running) were there before, with restarts and readiness
history of their own that must never fail the rollout that begins now.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy import constants as c
from modeldeploy.core.signals import (
    REPLICA_FAILURE_GRACE_S,
    Verdict,
    Window,
    baseline,
    evaluate,
    next_deadline,
    owned_pods,
    pod_failure,
    rollout_complete,
)
from modeldeploy.model.observed import (
    ContainerState,
    DeploymentCondition,
    Observed,
    PodState,
    ReplicaSetState,
)
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import RolloutPolicy
from modeldeploy.model.status import Baseline, RolloutRecord
from tests.unit.builders import (
    OURS,
    RS_UID,
    at,
    deployment,
    digest,
    pod,
    replica_set,
    select,
    serving_v1,
    spec_of,
)

POLICY = RolloutPolicy(max_restarts=2, unschedulable_grace_s=60, ready_timeout_s=300)
T_START = 100.0


def window(*entries: Baseline) -> Window:
    return Window(at(T_START), {(b.pod, b.container): b.restarts for b in entries})


def a_pod(created: float, ready: bool = False, **container: Any) -> PodState:
    return PodState(
        name="m-1",
        owner="m",
        template_hash="h",
        created_at=at(created),
        controller_uid=RS_UID,
        ready=ready,
        containers=(ContainerState(name="model", ready=ready, **container),),
    )


NEW, OLD = T_START + 1, T_START - 50


def failure_of(pod: PodState, now: float, win: Window | None = None) -> str | None:
    found = pod_failure(pod, POLICY, win or window(), at(now))
    return found.reason if found else None


# ---------------------------------------------------- waiting reasons (row 1)


@pytest.mark.parametrize("reason", sorted(c.WAITING_FAILURES))
def test_a_waiting_reason_fails_a_new_pod_at_once_naming_pod_and_container(reason: str) -> None:
    found = pod_failure(
        a_pod(NEW, waiting_reason=reason, waiting_message="boom"), POLICY, window(), at(NEW)
    )
    assert found is not None
    assert (found.reason, found.message) == (reason, f"pod m-1: container model {reason}: boom")


def test_a_waiting_reason_of_an_old_pod_counts_only_after_it_fails_again() -> None:
    stuck = a_pod(OLD, waiting_reason="ImagePullBackOff", restart_count=4)
    before = window(Baseline("m-1", "model", 4))
    assert failure_of(stuck, NEW, before) is None
    assert failure_of(replace_restarts(stuck, 5), NEW, before) == "ImagePullBackOff"


def replace_restarts(pod: PodState, restarts: int) -> PodState:
    (container,) = pod.containers
    return replace(pod, containers=(replace(container, restart_count=restarts),))


# --------------------------------------------------------- restarts (rows 2, 3)


@pytest.mark.parametrize(
    ("container", "reason", "text"),
    [
        pytest.param(
            {
                "waiting_reason": "CrashLoopBackOff",
                "restart_count": 1,
                "last_terminated_reason": "Error",
                "last_exit_code": 1,
            },
            "CrashLoopBackOff",
            "restarted 1 time (exit 1 Error)",
            id="crashloop",
        ),
        pytest.param({"restart_count": 3}, "CrashLoopBackOff", "restarted 3 times", id="above-max"),
        pytest.param(
            {
                "waiting_reason": "CrashLoopBackOff",
                "restart_count": 2,
                "last_terminated_reason": "OOMKilled",
                "last_exit_code": 137,
            },
            "OOMKilled",
            "restarted 2 times (exit 137 OOMKilled)",
            id="oom-killed",
        ),
    ],
)
def test_a_new_pod_crashing_fails_the_rollout(
    container: dict[str, Any], reason: str, text: str
) -> None:
    found = pod_failure(a_pod(NEW, **container), POLICY, window(), at(NEW))
    assert found is not None
    assert found.reason == reason
    assert text in found.message


def test_a_new_pod_may_restart_up_to_max_restarts() -> None:
    assert failure_of(a_pod(NEW, restart_count=2), NEW) is None


def test_an_old_pods_lifetime_restarts_never_count_only_those_since_the_start() -> None:
    veteran = a_pod(OLD, ready=True, restart_count=5, last_terminated_reason="Error")
    before = window(Baseline("m-1", "model", 5))
    assert failure_of(veteran, NEW + 600, before) is None
    assert failure_of(replace_restarts(veteran, 7), NEW, before) is None  # 2 since: tolerated
    found = pod_failure(replace_restarts(veteran, 8), POLICY, before, at(NEW))
    assert found is not None
    assert found.reason == "CrashLoopBackOff"
    assert "restarted 3 times since the rollout began" in found.message


def test_an_old_pod_waiting_in_crashloop_from_before_the_start_does_not_count() -> None:
    backing_off = a_pod(OLD, waiting_reason="CrashLoopBackOff", restart_count=5)
    before = window(Baseline("m-1", "model", 5))
    assert failure_of(backing_off, NEW, before) is None
    assert failure_of(replace_restarts(backing_off, 6), NEW, before) == "CrashLoopBackOff"


def test_the_baseline_holds_only_containers_that_had_restarted() -> None:
    pods = (replace(a_pod(OLD, restart_count=5), name="m-b"), replace(a_pod(OLD), name="m-a"))
    assert baseline(pods) == (Baseline("m-b", "model", 5),)


# -------------------------------------------------- readiness timeout (row 4)


def test_a_new_pod_not_ready_fails_after_the_ready_timeout_from_its_creation() -> None:
    loading = a_pod(NEW)
    assert failure_of(loading, NEW + 299) is None
    assert next_deadline((loading,), POLICY, window(), at(NEW + 100)) == pytest.approx(200.05)
    found = pod_failure(loading, POLICY, window(), at(NEW + 300))
    assert found is not None
    assert (found.reason, found.message) == (
        "ReadyTimeout",
        "pod m-1: container model not Ready after 300s",
    )


def test_an_old_pod_not_ready_counts_its_timeout_from_the_rollout_start() -> None:
    blipping = a_pod(OLD - 1000)  # created long ago, not Ready right now
    assert failure_of(blipping, T_START + 299) is None
    assert failure_of(blipping, T_START + 300) == "ReadyTimeout"


def test_ready_pods_have_no_deadline() -> None:
    assert next_deadline((a_pod(NEW, ready=True),), POLICY, window(), at(NEW)) is None


# -------------------------------------------------- unschedulable (row 5)


UNBOUND = "0/3 nodes are available: 3 pod has unbound immediate PersistentVolumeClaims."


def test_unschedulable_fails_after_the_grace_counted_from_the_later_of_both_starts() -> None:
    """What is neither a full pool nor the version's own asking (test_capacity.py)."""
    waiting = replace(a_pod(NEW), unschedulable_since=at(NEW), unschedulable_message=UNBOUND)
    assert failure_of(waiting, NEW + 59) is None
    assert next_deadline((waiting,), POLICY, window(), at(NEW + 59)) == pytest.approx(1.05)
    found = pod_failure(waiting, POLICY, window(), at(NEW + 60))
    assert found is not None
    assert found.reason == "Unschedulable"
    assert "unbound immediate PersistentVolumeClaims" in found.message
    long_pending = replace(waiting, created_at=at(OLD), unschedulable_since=at(OLD))
    assert failure_of(long_pending, T_START + 59) is None
    assert failure_of(long_pending, T_START + 60) == "Unschedulable"


# ------------------------------------------ the Deployment's verdicts (rows 6, 7)


def rollout_at(res_digest: str, start: float) -> RolloutRecord:
    return RolloutRecord(
        revision=2, version="v2", template_hash=res_digest, trigger="Manual", started_at=at(start)
    )


QUOTA = (
    'pods "m-x" is forbidden: exceeded quota: pods, '
    "requested: pods=1, used: pods=2, limited: pods=2"
)


def their_verdicts(res: Resource, stated: float, kind: str, for_version: str = "v2") -> Observed:
    """The Deployment (and its ReplicaSets) showing the Deployment controller's verdict
    `kind` on the ReplicaSet of `for_version`, stated at `stated`."""
    rs = {v: replica_set(res, v) for v in ("v1", "v2")}
    child = deployment(res, ready=0, old=2)
    if kind == "progress":
        said = f'ReplicaSet "{rs[for_version].name}" has timed out progressing.'
        condition = DeploymentCondition(
            c.REASON_PROGRESS_DEADLINE, said, at(stated), replica_set=rs[for_version].name
        )
        child = replace(child, progress_deadline=condition)
    else:
        failure = DeploymentCondition("FailedCreate", QUOTA, at(stated))
        rs[for_version] = replace(rs[for_version], replica_failure=failure)
    return Observed(deployment=child, replica_sets=tuple(rs.values()))


@pytest.mark.parametrize(
    ("kind", "stated", "for_version", "now", "reason"),
    [
        ("progress", T_START + 5, "v2", T_START + 5, "ProgressDeadlineExceeded"),
        # the failed release's deadline, still on the Deployment when the revert starts
        ("progress", T_START, "v1", T_START + 1, None),
        ("progress", T_START + 5, "v1", T_START + 5, None),
        ("quota", T_START + 5, "v2", T_START + 5 + REPLICA_FAILURE_GRACE_S, "FailedCreate"),
        ("quota", T_START + 5, "v2", T_START + 6, None),
        ("quota", T_START - 60, "v2", T_START + 1, None),  # its grace counts from the start
        ("quota", T_START + 5, "v1", T_START + 60, None),  # another template's ReplicaSet
    ],
    ids=[
        "deadline-for-this-template",
        "deadline-of-the-failed-template-in-the-same-second",
        "deadline-for-another-template",
        "quota-after-grace",
        "quota-within-grace",
        "quota-from-before-the-start-within-grace",
        "quota-of-another-template",
    ],
)
def test_the_deployment_controllers_verdict_counts_for_this_templates_replica_set(
    kind: str, stated: float, for_version: str, now: float, reason: str | None
) -> None:
    bad = select(serving_v1(), "v2")
    observed = their_verdicts(bad, stated, kind, for_version)
    verdict = evaluate("m", spec_of(bad), observed, rollout_at(digest(bad), T_START), at(now))
    assert (verdict.failure.reason if verdict.failure else None) == reason
    if reason == "FailedCreate":
        assert verdict.failure is not None
        assert "exceeded quota" in verdict.failure.message


# ----------------------------------------------------- whose pods (row 8)


def test_only_pods_our_deployment_controls_count() -> None:
    res = serving_v1()
    bad = select(res, "v2")
    crashing = pod(bad, "v2", waiting_reason="CrashLoopBackOff", created=T_START + 1)
    foreign = replace(crashing, name="impostor", controller_uid="someone-elses-rs")
    child = deployment(bad, ready=0, old=2)
    ours = Observed(deployment=child, pods=(foreign, crashing), replica_sets=OURS)
    assert owned_pods(ours, digest(bad)) == (crashing,)
    theirs = Observed(
        deployment=child,
        pods=(foreign,),
        replica_sets=(*OURS, ReplicaSetState("someone-elses-rs", "another-deployment")),
    )
    verdict = evaluate("m", spec_of(bad), theirs, rollout_at(digest(bad), T_START), at(T_START + 2))
    assert verdict.failure is None


def test_only_pods_of_the_template_being_rolled_out_count() -> None:
    res = serving_v1()
    bad = select(res, "v2")
    old_crashing = pod(res, "v1", waiting_reason="CrashLoopBackOff", created=T_START + 1)
    observed = Observed(deployment=deployment(bad, ready=0, old=2), pods=(old_crashing,))
    verdict = evaluate(
        "m",
        spec_of(bad),
        replace(observed, replica_sets=OURS),
        rollout_at(digest(bad), T_START),
        at(T_START + 2),
    )
    assert verdict == Verdict()


@pytest.mark.parametrize(("ready", "old", "complete"), [(2, 0, True), (2, 1, False), (1, 0, False)])
def test_a_rollout_is_complete_only_with_all_new_replicas_and_no_old_ones(
    ready: int, old: int, complete: bool
) -> None:
    res = serving_v1()
    assert rollout_complete(deployment(res, ready=ready, old=old), digest(res), 2) is complete


# -------------------------------------------------------- the property


@st.composite
def veteran_pods(draw: st.DrawFn) -> tuple[PodState, list[tuple[float, float]]]:
    """An old pod, Ready when the rollout began, with restarts from its past, and the
    readiness blips (start, length) it will have after the start, each shorter than
    the ready timeout."""
    index = draw(st.integers(0, 99))
    pod = PodState(
        name=f"m-old-{index}",
        owner="m",
        template_hash="h",
        created_at=at(T_START - draw(st.integers(1, 100_000))),
        controller_uid=RS_UID,
        ready=True,
        containers=(
            ContainerState(
                name="model",
                ready=True,
                restart_count=draw(st.integers(0, 500)),
                last_terminated_reason=draw(st.sampled_from([None, "Error", "OOMKilled"])),
                last_exit_code=draw(st.sampled_from([None, 1, 137])),
                waiting_reason=None,
            ),
        ),
    )
    blips = draw(
        st.lists(
            st.tuples(st.floats(0, 3600), st.floats(0.5, POLICY.ready_timeout_s - 1)),
            max_size=5,
        )
    )
    return pod, sorted(blips)


def during(pod: PodState, blip: tuple[float, float], into: float) -> PodState:
    """`pod` `into` seconds into a readiness blip: not Ready since the blip began."""
    (container,) = pod.containers
    return replace(
        pod,
        ready=False,
        ready_since=at(T_START + blip[0]),
        containers=(replace(container, ready=False),),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(veteran_pods(), min_size=1, max_size=4, unique_by=lambda p: p[0].name))
def test_a_revert_to_ready_pods_never_fails_without_new_evidence(
    pods: list[tuple[PodState, list[tuple[float, float]]]],
) -> None:
    win = Window.of(replace(rollout_at("h", T_START), baseline=baseline(tuple(p for p, _ in pods))))
    for veteran, blips in pods:
        assert pod_failure(veteran, POLICY, win, at(T_START + 4000)) is None
        for blip in blips:
            for into in (0.0, blip[1] / 2, blip[1]):
                now = at(T_START + blip[0] + into)
                assert pod_failure(during(veteran, blip, into), POLICY, win, now) is None


@settings(max_examples=100, deadline=None)
@given(veteran_pods(), st.integers(1, 20))
def test_a_revert_fails_once_an_old_pod_restarts_beyond_the_limit_after_the_start(
    veteran: tuple[PodState, list[tuple[float, float]]], restarts: int
) -> None:
    pod, _ = veteran
    win = Window.of(replace(rollout_at("h", T_START), baseline=baseline((pod,))))
    again = replace_restarts(pod, pod.containers[0].restart_count + restarts)
    failed = pod_failure(again, POLICY, win, at(T_START + 1)) is not None
    assert failed is (restarts > POLICY.max_restarts)
