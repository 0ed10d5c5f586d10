"""Room for new pods (B23): a full pool is a wait, never a verdict; a pod no node can ever
hold fails at once; Replace and Auto make room by taking old pods down.

The scheduler's messages below are the ones kube-scheduler v1.33 writes into a pod's
PodScheduled condition (its filters' reasons, then the preemption summary).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeldeploy import constants as c
from modeldeploy.core import capacity
from modeldeploy.core.signals import Window, next_deadline, pod_failure, room_for
from modeldeploy.model.observed import DeploymentCondition, Observed, PodState
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import RolloutPolicy
from modeldeploy.model.status import RolloutRecord, parse_status, to_json
from tests.unit.builders import (
    at,
    condition,
    deployment,
    digest,
    pod,
    present,
    replica_set,
    resource,
    select,
    serving_v1,
    spec_of,
    step,
)

FULL_POOL = (
    "0/3 nodes are available: 1 node(s) had untolerated taint "
    "{node-role.kubernetes.io/control-plane: }, 2 Insufficient nvidia.com/gpu. "
    "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
    "2 No preemption victims found for incoming pod."
)
NO_MATCH = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {gpu: pool}, "
    "2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are "
    "available: 3 Preemption is not helpful for scheduling."
)
# New nodes carry the node lifecycle controller's not-ready taint for a moment: with the
# other nodes ruled out by the pod's selector, that once failed a first version at once.
NOT_READY_YET = (
    "0/4 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, "
    "2 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. preemption: 0/4 "
    "nodes are available: 4 Preemption is not helpful for scheduling."
)
UNBOUND = "0/3 nodes are available: 3 pod has unbound immediate PersistentVolumeClaims."
TOO_LARGE = "it asks for 8 nvidia.com/gpu and the largest node has 1"


def test_the_scheduler_s_reasons_are_read_without_counts_or_preemption() -> None:
    assert capacity.reasons(FULL_POOL) == (
        "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
        "Insufficient nvidia.com/gpu",
    )
    assert capacity.reasons("0/2 nodes are available: 1 Insufficient cpu, 1 Too many pods.") == (
        "Insufficient cpu",
        "Too many pods",
    )
    assert capacity.reasons("no nodes available to schedule pods") == ()
    assert capacity.reasons(None) == ()


def waiting(message: str, name: str = "m-new-1") -> PodState:
    return PodState(
        name=name,
        owner="m",
        template_hash="h",
        created_at=at(101),
        unschedulable_since=at(101),
        unschedulable_message=message,
        requests=(("nvidia.com/gpu", "1"),),
    )


@pytest.mark.parametrize(
    ("message", "too_large", "kind"),
    [
        pytest.param(FULL_POOL, None, capacity.WAIT, id="full-pool"),
        pytest.param(FULL_POOL, TOO_LARGE, capacity.NEVER, id="larger-than-any-node"),
        pytest.param(NO_MATCH, None, capacity.NEVER, id="no-node-matches"),
        pytest.param(UNBOUND, None, capacity.UNKNOWN, id="something-else"),
        pytest.param(NOT_READY_YET, None, capacity.WAIT, id="new-nodes-not-ready-yet"),
        pytest.param(
            "0/2 nodes are available: 2 node(s) were unschedulable.",
            None,
            capacity.WAIT,
            id="cordoned-for-a-drain",
        ),
    ],
)
def test_each_scheduler_answer_is_a_wait_a_verdict_or_the_grace(
    message: str, too_large: str | None, kind: str
) -> None:
    assert capacity.placement(waiting(message), too_large).kind == kind


ROOM_REASONS = st.sampled_from(
    [
        "Insufficient nvidia.com/gpu",
        "Insufficient cpu",
        "Too many pods",
        "node(s) were unschedulable",
    ]
)
ANY_REASONS = st.sampled_from(
    [
        "node(s) had untolerated taint {gpu: pool}",
        "node(s) didn't match Pod's node affinity/selector",
        "pod has unbound immediate PersistentVolumeClaims",
        "node(s) had volume node affinity conflict",
    ]
)


@given(st.lists(ROOM_REASONS, min_size=1), st.lists(ANY_REASONS))
def test_lack_of_room_on_some_node_is_never_a_verdict(room: list[str], other: list[str]) -> None:
    """Whatever else the scheduler says about other nodes: if one is only full, wait."""
    groups = ", ".join(f"{i + 1} {reason}" for i, reason in enumerate(other + room))
    message = f"0/9 nodes are available: {groups}. preemption: not helpful."
    assert capacity.placement(waiting(message), None).kind == capacity.WAIT


POLICY = RolloutPolicy(unschedulable_grace_s=60, ready_timeout_s=300)
WINDOW = Window(at(100), {})


def test_a_pod_waiting_for_room_never_fails_and_sets_no_deadline() -> None:
    full = waiting(FULL_POOL)
    room = room_for(full, Observed())
    assert pod_failure(full, POLICY, WINDOW, at(100 + 86_400), room) is None
    assert next_deadline((full,), POLICY, WINDOW, at(200), Observed()) is None


def test_a_pod_no_node_can_hold_fails_at_once_saying_why() -> None:
    large = waiting(FULL_POOL)
    found = pod_failure(large, POLICY, WINDOW, at(101), room_for(large, too_large_for(large)))
    assert found is not None
    assert found.reason == c.REASON_UNSCHEDULABLE
    assert TOO_LARGE in found.message
    never = waiting(NO_MATCH)
    found = pod_failure(never, POLICY, WINDOW, at(101), room_for(never, Observed()))
    assert found is not None and "no node matches it" in found.message


def too_large_for(pending: PodState) -> Observed:
    return Observed(too_large=((pending.name, TOO_LARGE),))


# ------------------------------------------------- through decide: Surge, Auto, Replace


def released(**rollout: object) -> Resource:
    """v1 serving on a full pool; v2 (one GPU a pod) released."""
    res = serving_v1(**rollout)
    res = select(res, "v2")
    res, _ = step(res, Observed(deployment=deployment(res, "v1")), 10)
    return res


def full_pool(res: Resource, now: float = 12, message: str = FULL_POOL, **seen: object) -> Observed:
    """The surge pod of v2 the scheduler cannot place, v1's two pods serving."""
    rs = {v: replica_set(res, v) for v in ("v1", "v2")}
    pending = replace(
        pod(res, "v2", name="m-v2-1", created=11),
        controller_uid=rs["v2"].uid,
        unschedulable_since=at(11),
        unschedulable_message=message,
        requests=(("nvidia.com/gpu", "1"),),
    )
    child = deployment(res, "v2", ready=0, old=2)
    if seen.get("deadline"):
        stuck = DeploymentCondition(
            c.REASON_PROGRESS_DEADLINE, "timed out", at(now), replica_set=rs["v2"].name
        )
        child = replace(child, progress_deadline=stuck)
    return Observed(deployment=child, replica_sets=tuple(rs.values()), pods=(pending,))


def test_surge_on_a_full_pool_waits_says_so_and_never_fails_the_version() -> None:
    res = released()
    for now in (12, 100, 3_600):  # far past the unschedulable grace
        res, decision = step(res, full_pool(res, now), now)
        assert decision.spec_change is None
        assert present(res.status.version_record("v2")).state != c.STATE_FAILED
    rollout = present(res.status.rollout)
    assert (rollout.strategy, rollout.outcome) == (c.STRATEGY_SURGE, c.OUTCOME_PROGRESSING)
    assert (
        rollout.capacity_wait is not None and "Insufficient nvidia.com/gpu" in rollout.capacity_wait
    )
    assert condition(res, c.RECONCILING) == ("True", c.REASON_INSUFFICIENT_CAPACITY)


def test_the_progress_deadline_stalls_a_wait_for_room_and_fails_nothing() -> None:
    res = released()
    res, decision = step(res, full_pool(res, 400, deadline=True), 400)
    assert condition(res, c.STALLED) == ("True", c.REASON_INSUFFICIENT_CAPACITY)
    assert present(res.status.version_record("v2")).state != c.STATE_FAILED
    assert decision.spec_change is None


def test_auto_goes_on_as_replace_once_with_one_event_and_renders_it() -> None:
    res = released(strategy="Auto", maxUnavailable=1)
    assert present(res.status.rollout).strategy == c.STRATEGY_SURGE
    res, decision = step(res, full_pool(res), 12)
    switched = [e for e in decision.events if e.reason == c.EVENT_STRATEGY_SWITCHED]
    assert len(switched) == 1 and "up to 1 of 2 pods down" in switched[0].message
    assert present(res.status.rollout).strategy == c.STRATEGY_REPLACE
    rendered = present(decision.deployment)["spec"]["strategy"]["rollingUpdate"]
    assert rendered == {"maxSurge": 0, "maxUnavailable": 1}
    res, again = step(res, full_pool(res, 13), 13)
    assert not [e for e in again.events if e.reason == c.EVENT_STRATEGY_SWITCHED]


def test_replace_makes_room_from_the_start_and_states_the_cost() -> None:
    res = released(strategy="Replace", maxUnavailable=1)
    res, decision = step(res, Observed(deployment=deployment(res, "v2", ready=0, old=1)), 12)
    assert present(res.status.rollout).strategy == c.STRATEGY_REPLACE
    rendered = present(decision.deployment)["spec"]["strategy"]["rollingUpdate"]
    assert rendered == {"maxSurge": 0, "maxUnavailable": 1}
    reconciling = next(k for k in res.status.conditions if k.type == c.RECONCILING)
    assert "Replace: up to 1 of 2 pods down" in reconciling.message


def test_a_version_no_node_can_hold_fails_at_once_and_is_reverted() -> None:
    res = released()
    seen = replace(full_pool(res), too_large=(("m-v2-1", TOO_LARGE),))
    res, decision = step(res, seen, 12)  # a second after its pod was made: no grace
    failed = present(res.status.version_record("v2"))
    assert (failed.state, failed.reason) == (c.STATE_FAILED, c.REASON_UNSCHEDULABLE)
    assert TOO_LARGE in (failed.message or "")
    assert present(decision.spec_change).set_version == "v1"


def test_surge_is_what_a_new_rollout_begins_with_under_auto() -> None:
    policy = RolloutPolicy(strategy=c.STRATEGY_AUTO)
    assert capacity.started_strategy(policy) == c.STRATEGY_SURGE
    assert capacity.started_strategy(replace(policy, strategy=c.STRATEGY_REPLACE)) == (
        c.STRATEGY_REPLACE
    )


def test_a_record_of_the_strategy_survives_a_restart() -> None:
    res = released(strategy="Auto")
    res, _ = step(res, full_pool(res), 12)
    assert parse_status(to_json(res.status)) == res.status
    assert spec_of(res).rollout.strategy == c.STRATEGY_AUTO
    assert digest(res, "v2") == present(res.status.rollout).template_hash
    assert isinstance(present(res.status.rollout), RolloutRecord)


def test_a_first_rollout_waiting_for_room_stays_surge_there_is_nothing_to_replace() -> None:
    res = resource(strategy="Auto")
    res, _ = step(res, Observed(), 0)
    rs = replica_set(res, "v1")
    pending = replace(
        pod(res, "v1", name="m-v1-1", created=1),
        controller_uid=rs.uid,
        unschedulable_since=at(1),
        unschedulable_message=FULL_POOL,
    )
    seen = Observed(deployment=deployment(res, "v1", ready=0), replica_sets=(rs,), pods=(pending,))
    res, decision = step(res, seen, 2)
    assert not [e for e in decision.events if e.reason == c.EVENT_STRATEGY_SWITCHED]
    assert present(res.status.rollout).strategy == c.STRATEGY_SURGE
    assert condition(res, c.RECONCILING) == ("True", c.REASON_INSUFFICIENT_CAPACITY)
