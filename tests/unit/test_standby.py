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


def failing_before_promotion(standby: ChildState) -> tuple[Resource, Decision]:
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
        standby=standby,
    )
    return step(res, observed, 12)


def test_a_version_failing_before_promotion_drops_a_standby_that_is_not_warm() -> None:
    res, decision = failing_before_promotion(warm(ready=0))
    assert res.status.standby is None
    assert decision.remove_standby
    assert present(decision.spec_change).set_version == "v1"


def test_a_version_failing_before_promotion_switches_to_a_warm_standby_at_the_revert() -> None:
    """Rule 5: in its bake a version may have taken every old pod's place; a warm standby
    serves at once instead of waiting for the old version to load again."""
    res, decision = failing_before_promotion(warm())
    assert not decision.remove_standby
    assert present(decision.spec_change).set_version == "v1"
    # At the verdict itself, before the revert is written: the standby answers.
    assert present(decision.service)["spec"]["selector"] == {c.LABEL_STANDBY_OF: "m"}
    back = select(res, "v1")
    back, decision = step(back, Observed(deployment=deployment(back, "v2"), standby=warm()), 13)
    record = present(back.status.standby)
    assert (record.version, record.serving) == ("v1", True)
    assert present(decision.service)["spec"]["selector"] == {c.LABEL_STANDBY_OF: "m"}
    assert back.status.serving_version == "v1"  # SERVING says what answers


THREE = {"v1": "r/m:1", "v2": "r/m:2", "v3": "r/m:3"}


def promoted(res: Resource, version: str, seconds: float) -> Resource:
    """`version` released and promoted at `seconds` (its rollout starts a moment before)."""
    res = select(res, version)
    res, _ = step(res, Observed(deployment=deployment(res, res.status.serving_version)), seconds)
    res, _ = step(res, Observed(deployment=deployment(res, version), standby=warm()), seconds + 1)
    assert res.status.last_good_version == version
    return res


def test_a_release_in_the_window_moves_the_standby_to_the_new_last_good_version() -> None:
    res = with_standby(serving_v1(versions=THREE))
    res = promoted(res, "v2", 10)  # standby v1, its window running
    res = select(res, "v3")
    res, decision = step(res, Observed(deployment=deployment(res, "v2"), standby=warm()), 20)
    record = present(res.status.standby)
    assert (record.version, record.template_hash) == ("v2", digest(res, "v2"))
    assert record.ends_at is None  # its window starts again at v3's promotion
    labels = present(decision.standby)["spec"]["template"]["metadata"]["labels"]
    assert labels[c.LABEL_VERSION] == "v2"
    res, _ = step(res, Observed(deployment=deployment(res, "v3"), standby=warm()), 21)
    assert present(res.status.standby).ends_at == at(21 + 60)  # renewed at the promotion


def test_a_manual_rollback_to_the_standby_s_template_still_switches_at_once() -> None:
    res = with_standby(serving_v1(versions=THREE))
    res = promoted(res, "v2", 10)
    res = select(res, "v1")  # kubectl modeldeploy rollback, inside the window
    res, decision = step(res, Observed(deployment=deployment(res, "v2"), standby=warm()), 20)
    record = present(res.status.standby)
    assert (record.version, record.serving) == ("v1", True)
    assert present(decision.service)["spec"]["selector"] == {c.LABEL_STANDBY_OF: "m"}


def test_a_version_edited_in_place_is_never_rendered_under_its_observed_hash() -> None:
    res = with_standby(serving_v1(versions=THREE))
    res = promoted(res, "v2", 10)  # standby v1 as it was observed good
    spec = spec_of(res)
    edited = dict(THREE, v1="r/m:1-patched")  # v1's image changed in the spec
    res = replace(res, spec=replace(spec, versions=spec_of(serving_v1(versions=edited)).versions))
    res, decision = step(res, Observed(deployment=deployment(res, "v2"), standby=warm()), 20)
    assert decision.standby is None  # the standby's pods stay what was observed good
    assert present(res.status.standby).template_hash != digest(res, "v1")


def test_a_rollback_to_a_version_edited_since_never_switches_to_the_standby() -> None:
    """The standby holds v1 as it was observed good; v1 edited in place and selected is
    another template: the Service must not send its traffic to the old content."""
    res = with_standby(serving_v1(versions=THREE))
    res = promoted(res, "v2", 10)
    spec = spec_of(res)
    edited = dict(THREE, v1="r/m:1-patched")
    res = replace(res, spec=replace(spec, versions=spec_of(serving_v1(versions=edited)).versions))
    res = select(res, "v1")
    res, decision = step(res, Observed(deployment=deployment(res, "v2"), standby=warm()), 20)
    assert not present(res.status.standby).serving
    assert decision.service is None or decision.service["spec"]["selector"] != {
        c.LABEL_STANDBY_OF: "m"
    }
