"""The standby (spec.rollout.standby), its life from rollout start to removal, via `decide`."""

from __future__ import annotations

from dataclasses import replace

from modeldeploy import constants as c
from modeldeploy.core.plan import Decision
from modeldeploy.model.observed import ChildState, ContainerState, Observed, PodState
from modeldeploy.model.resource import Resource
from modeldeploy.model.spec import Standby
from tests.unit.builders import (
    OURS,
    RS_UID,
    UID,
    at,
    deployment,
    digest,
    present,
    select,
    service,
    serving_v1,
    spec_of,
    step,
)

VERSIONS = {"v1": "r/m:1", "v2": "r/m:2"}


def with_standby(res: Resource, replicas: int | None = None) -> Resource:
    spec = spec_of(res)
    standby = Standby(seconds=60, replicas=replicas)
    return replace(res, spec=replace(spec, rollout=replace(spec.rollout, standby=standby)))


def warm(ready: int = 2, replicas: int = 2) -> ChildState:
    return ChildState(
        name="m-standby",
        controller_uid=UID,
        generation=1,
        observed_generation=1,
        replicas=replicas,
        ready_replicas=ready,
    )


def rolling_v2(replicas: int | None = None) -> tuple[Resource, Decision]:
    res = with_standby(select(serving_v1(versions=VERSIONS), "v2"), replicas)
    return step(res, Observed(deployment=deployment(res, "v1")), 10)


def promoted_v2() -> Resource:
    res, _ = rolling_v2()
    res, _ = step(res, Observed(deployment=deployment(res, "v2"), standby=warm()), 12)
    assert res.status.last_good_version == "v2"
    return res


def test_a_users_rollout_starts_the_previous_good_version_as_a_standby() -> None:
    res, decision = rolling_v2()
    record = present(res.status.standby)
    assert (record.version, record.ends_at, record.serving) == ("v1", None, False)
    manifest = present(decision.standby)
    assert manifest["metadata"]["name"] == "m-standby"
    assert manifest["spec"]["replicas"] == 2
    assert manifest["spec"]["selector"] == {"matchLabels": {c.LABEL_STANDBY_OF: "m"}}
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert labels[c.LABEL_VERSION] == "v1"
    assert c.LABEL_NAME not in labels  # never selected by the main Deployment or Service


def test_fewer_standby_replicas_are_kept_when_asked_for() -> None:
    _, decision = rolling_v2(replicas=1)
    assert present(decision.standby)["spec"]["replicas"] == 1


def test_promotion_starts_the_window_and_its_end_removes_the_standby() -> None:
    res = promoted_v2()
    assert present(res.status.standby).ends_at == at(12 + 60)
    res, decision = step(res, Observed(deployment=deployment(res, "v2"), standby=warm()), 40)
    assert decision.requeue_after is not None
    assert 31 < decision.requeue_after <= 33
    res, decision = step(res, Observed(deployment=deployment(res, "v2"), standby=warm()), 73)
    assert res.status.standby is None
    assert decision.remove_standby


def test_a_rollback_inside_the_window_switches_the_service_to_the_standby_at_once() -> None:
    res = select(promoted_v2(), "v1")  # a manual rollback to the standby's version
    res, decision = step(res, Observed(deployment=deployment(res, "v2"), standby=warm()), 30)
    assert present(res.status.standby).serving
    service = present(decision.service)
    assert service["spec"]["selector"] == {c.LABEL_STANDBY_OF: "m"}
    labels = present(decision.deployment)["spec"]["template"]["metadata"]["labels"]
    assert labels[c.LABEL_VERSION] == "v1"  # the main Deployment reloads v1 meanwhile
    # The main Deployment serves v1 again: the Service goes back, the standby goes.
    back = Observed(deployment=deployment(res, "v1"), standby=warm())
    res, decision = step(res, back, 60)
    assert res.status.standby is None
    assert decision.remove_standby
    assert present(decision.service)["spec"]["selector"] == {c.LABEL_NAME: "m"}


def test_a_standby_that_is_not_ready_is_not_switched_to() -> None:
    res = select(promoted_v2(), "v1")
    observed = Observed(deployment=deployment(res, "v2"), service=service(res), standby=warm(1))
    res, decision = step(res, observed, 30)
    assert not present(res.status.standby).serving
    assert decision.service is None  # the Service keeps its selector


def test_a_version_failing_before_promotion_drops_the_standby() -> None:
    res, _ = rolling_v2()
    crashing = PodState(
        name="m-2",
        owner="m",
        template_hash=digest(res, "v2"),
        created_at=at(11),
        controller_uid=RS_UID,
        containers=(ContainerState(name="model", waiting_reason="CrashLoopBackOff"),),
    )
    observed = Observed(
        deployment=deployment(res, "v2", ready=0, old=2),
        pods=(crashing,),
        replica_sets=OURS,
        standby=warm(),
    )
    res, decision = step(res, observed, 12)
    assert res.status.standby is None
    assert decision.remove_standby
    assert present(decision.spec_change).set_version == "v1"
