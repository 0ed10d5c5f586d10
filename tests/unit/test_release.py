"""What `kubectl modeldeploy wait` tells a pipeline: the release it was called for, judged."""

from __future__ import annotations

from modeldeploy.core.release import Release, judge, release_of
from modeldeploy.model.observed import Observed
from modeldeploy.model.resource import Resource
from tests.unit.builders import deployment, pod, select, serving_v1, step


def test_a_serving_release_succeeded() -> None:
    res = serving_v1()
    judged = judge(res, release_of(res))
    assert judged is not None
    assert judged.succeeded
    assert judged.message.startswith("v1 is serving")


def test_a_release_the_operator_has_not_seen_is_undecided() -> None:
    res = select(serving_v1(), "v2")
    assert judge(res, release_of(res)) is None


def failed_v2_and_reverted() -> tuple[Resource, Release]:
    res = serving_v1()
    bad = select(res, "v2")
    release = release_of(bad)
    bad, _ = step(bad, Observed(deployment=deployment(res)), 3)
    crashing = pod(bad, "v2", waiting_reason="CrashLoopBackOff", created=4)
    bad, _ = step(bad, Observed(deployment=deployment(bad, ready=0, old=2), pods=(crashing,)), 5)
    back = select(bad, "v1")  # the operator's revert landed
    back, _ = step(back, Observed(deployment=deployment(back, "v2", ready=0, old=2)), 6)
    back, _ = step(back, Observed(deployment=deployment(back)), 7)
    return back, release


def test_a_failed_and_reverted_release_failed_even_once_the_old_version_serves() -> None:
    back, release = failed_v2_and_reverted()
    assert release == Release("v2", 2)
    judged = judge(back, release)
    assert judged is not None
    assert not judged.succeeded
    assert "v2 failed (CrashLoopBackOff" in judged.message
    assert "reverted to v1" in judged.message


def test_called_after_the_revert_wait_still_judges_the_users_release() -> None:
    back, _ = failed_v2_and_reverted()
    release = release_of(back)
    assert release.version == "v2"
    judged = judge(back, release)
    assert judged is not None
    assert not judged.succeeded


def test_a_release_replaced_by_a_newer_spec_is_not_a_success() -> None:
    res = serving_v1(versions={"v1": "a:1", "v2": "a:2", "v3": "a:3"})
    bad = select(res, "v2")
    release = release_of(bad)
    newer, _ = step(select(bad, "v3"), Observed(deployment=deployment(res)), 3)
    judged = judge(newer, release)
    assert judged is not None
    assert not judged.succeeded
    assert "names v3" in judged.message
